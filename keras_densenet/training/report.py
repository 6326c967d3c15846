"""What a training command reports besides its results: where the wall time
went (the imports included) and the data warnings, as plain lines.

Example:

>>> ticks = iter([0.0, 6.0, 50.0])  # started, imports done, run done
>>> clock = RunClock(now=lambda: next(ticks))
>>> clock.imports_done()
>>> clock.run_done()
>>> clock.timings({"setup": 0.5, "epochs": 40.0, "total": 42.0})
{'setup': 2.5, 'epochs': 40.0, 'total': 50.0, 'imports': 6.0}
"""

from __future__ import annotations

import contextlib
import sys
import time
import warnings
from typing import Callable, Optional

from keras_densenet.data.datasets import DataWarning


class RunClock:
    """The wall time of a command that imports keras, then runs a trainer.

    Made before the imports; `imports_done` and `run_done` mark the phases.
    The trainer's own timings (``setup`` ... ``total``) become the command's:
    ``imports`` is added, ``total`` is the whole command, and what ran
    between the imports and the trainer (the distribution plan, the compile
    cache) counts as ``setup``, so the phases still add up to the total.

    Args:
        now: the clock (default `time.perf_counter`).
    """

    def __init__(self, now: Callable[[], float] = time.perf_counter):
        self._now = now
        self.started = now()
        self.imported: Optional[float] = None
        self.finished: Optional[float] = None

    def imports_done(self) -> None:
        """Marks the end of the imports (keras, its backend, the trainer)."""
        self.imported = self._now()

    def run_done(self) -> None:
        """Marks the end of the run (default: when the timings are asked for)."""
        self.finished = self._now()

    def timings(self, run_timings: dict) -> dict:
        """`run_timings` (a trainer result's ``timings``, with ``"setup"`` and
        ``"total"``) as the command's: with ``"imports"``, and ``"total"`` from
        the clock's start."""
        finished = self._now() if self.finished is None else self.finished
        imported = self.started if self.imported is None else self.imported
        timings = dict(run_timings, imports=imported - self.started, total=finished - self.started)
        timings["setup"] = timings.get("setup", 0.0) + (finished - imported) - run_timings["total"]
        return timings

    def summary(self, run_timings: dict, epochs_run: int) -> str:
        """`timings` as one line: ``time: TOTAL s = imports I s + ...``."""
        from keras_densenet.training.timing import format_timings  # imports keras

        return format_timings(self.timings(run_timings), epochs_run)


@contextlib.contextmanager
def data_warnings_as_lines(prefix: str, stream=None):
    """Within: every `DataWarning` (a corrupt file skipped) at once, as one
    plain line ``PREFIX: warning: MESSAGE`` on `stream` (default stderr);
    other warnings as usual.

    Example::

        with data_warnings_as_lines("keras-densenet train"):
            train(config)
    """
    with warnings.catch_warnings():
        warnings.simplefilter("always", DataWarning)
        default_show = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, DataWarning):
                print(f"{prefix}: warning: {message}", file=stream or sys.stderr)
            else:
                default_show(message, category, filename, lineno, file, line)

        warnings.showwarning = show  # restored by catch_warnings
        yield
