"""Where the wall time of a training run goes.

`Stopwatch` charges wall time to the phases of `TIMED_PHASES`, so that they
add up to the total; `CompileTimer`, a Keras callback, estimates how much
of a `fit` was spent compiling its first steps, so that the trainers can
charge it to ``compilation`` instead of ``epochs``; `format_timings` writes
the result as the line ``keras-densenet train`` and ``segment`` end with.

Example:

>>> from keras_densenet.training.timing import format_timings
>>> format_timings({"data": 0.4, "compilation": 9.8, "epochs": 24.3, "total": 34.5}, epochs_run=8)
'time: 34.5 s = data 0.4 s + compilation 9.8 s + 8 epochs 24.3 s (3.0 s/epoch)'
"""

from __future__ import annotations

import statistics
import time

import keras

#: The phases of a run's timings, in the order they run; their seconds add
#: up to ``timings["total"]``.
TIMED_PHASES = ("setup", "data", "model", "compilation", "epochs", "writing")

#: Phases `format_timings` always shows; the others only from this many
#: seconds on (below it they would print as 0.0 s).
_ALWAYS_SHOWN = ("imports", "data", "compilation", "epochs")
_SHOWN_FROM_S = 0.05


def format_timings(timings: dict, epochs_run: int) -> str:
    """Where the wall time of a run went, as one line.

    Args:
        timings: seconds per phase (`train.TrainResult.timings`, optionally
            with ``"imports"`` as the CLI adds it) and their ``"total"``.
        epochs_run: the epochs of the ``"epochs"`` phase.

    Returns:
        ``time: TOTAL s = PHASE s + ...``; phases other than imports, data,
        compilation and epochs only where they took at least 0.05 s.

    Example:

    >>> format_timings({"setup": 0.01, "data": 0.4, "model": 1.2, "compilation": 9.8,
    ...                 "epochs": 24.3, "writing": 0.6, "total": 36.31}, epochs_run=8)
    'time: 36.3 s = data 0.4 s + model 1.2 s + compilation 9.8 s + 8 epochs 24.3 s (3.0 s/epoch) + writing 0.6 s'
    """
    parts = []
    for phase in ("imports", *TIMED_PHASES):
        seconds = timings.get(phase)
        if seconds is None or (phase not in _ALWAYS_SHOWN and seconds < _SHOWN_FROM_S):
            continue
        if phase != "epochs":
            parts.append(f"{phase} {seconds:.1f} s")
            continue
        per_epoch = f" ({seconds / epochs_run:.1f} s/epoch)" if epochs_run > 1 else ""
        parts.append(f"{epochs_run} epoch{'' if epochs_run == 1 else 's'} {seconds:.1f} s{per_epoch}")
    return f"time: {timings['total']:.1f} s = " + " + ".join(parts)


class Stopwatch:
    """Wall time per phase: each `lap` charges the time since the last lap
    to one phase, so the phases add up to the total."""

    def __init__(self):
        self.seconds = dict.fromkeys(TIMED_PHASES, 0.0)
        self._start = self._last = time.perf_counter()

    def lap(self, phase: str) -> float:
        """Charges the time since the last lap to `phase`; returns it."""
        now = time.perf_counter()
        elapsed, self._last = now - self._last, now
        self.seconds[phase] += elapsed
        return elapsed

    def move(self, seconds: float, source: str, target: str) -> None:
        """Charges `seconds` of phase `source` to phase `target` instead."""
        self.seconds[source] -= seconds
        self.seconds[target] += seconds

    def timings(self) -> dict:
        """Seconds per phase, plus their ``"total"``."""
        return {**self.seconds, "total": self._last - self._start}


class CompileTimer(keras.callbacks.Callback):
    """Measures what the first steps of a `fit` cost beyond a normal step.

    Keras compiles the training step inside the first training step and the
    evaluation step inside the first validation step (JAX and TensorFlow:
    tracing plus XLA; PyTorch runs eagerly, so there it is the first call's
    warm-up). `seconds` is that compilation: the first training step's time
    minus the median of the later training steps, plus the same for the
    validation steps. A kind with no later step to compare with counts its
    first step whole (one step's work included). Recompilations for another
    batch shape later on (the last, smaller batch of an image folder) count
    as epoch time.

    A step lasts from its `on_train_batch_begin` (`on_test_batch_begin`) to
    the next step's, the validation's start or end, or the epoch's end:
    hooks that Keras runs synchronously, also when it dispatches the
    ``*_batch_end`` hooks asynchronously.

    Attributes:
        steps: seconds per step, by kind (``"train"``, ``"test"``).
        epochs: epochs finished.
    """

    def __init__(self):
        super().__init__()
        self.steps = {"train": [], "test": []}
        self.epochs = 0
        self._running = None  # (kind, start) of the step under way

    def _end_step(self):
        if self._running is not None:
            kind, start = self._running
            self.steps[kind].append(time.perf_counter() - start)
            self._running = None

    def _begin_step(self, kind):
        self._end_step()
        self._running = (kind, time.perf_counter())

    def on_train_batch_begin(self, batch, logs=None):
        self._begin_step("train")

    def on_test_batch_begin(self, batch, logs=None):
        self._begin_step("test")

    def on_test_begin(self, logs=None):
        self._end_step()

    def on_test_end(self, logs=None):
        self._end_step()

    def on_epoch_end(self, epoch, logs=None):
        self._end_step()
        self.epochs += 1

    @property
    def seconds(self) -> float:
        """The compilation estimate described above (>= 0)."""
        total = 0.0
        for durations in self.steps.values():
            if len(durations) == 1:
                total += durations[0]
            elif durations:
                total += max(0.0, durations[0] - statistics.median(durations[1:]))
        return total
