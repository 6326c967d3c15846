"""Progress fit for terminals and for logs.

On a terminal: Keras' progress bars (`keras.utils.Progbar`, ``verbose=1``).
Anywhere else (a log file, a pipe, CI), a bar redrawn many times a second
becomes thousands of lines: `keras_verbose` picks ``verbose=2`` (no bar) for
``predict`` / ``evaluate`` there, `fit_output` swaps ``fit``'s own lines (two
per epoch at ``verbose=2``) for `epoch_lines`, one plain line per epoch, and
`Progress` writes one plain line at most every `PLAIN_EVERY` seconds.

Example:

>>> import io
>>> keras_verbose(io.StringIO())  # not a terminal: one line per epoch
2
>>> out = io.StringIO()
>>> p = Progress(10, label="predict", bar=False, stream=out, every=0)
>>> p.update(4)
>>> out.getvalue().split(",")[0]
'predict: 4/10 images (40%)'
>>> fit_output("auto", stream=io.StringIO())[0]  # not a terminal: epoch_lines print
0
"""

from __future__ import annotations

import functools
import sys
import time
from typing import Callable, Optional

#: Seconds between two plain progress lines.
PLAIN_EVERY = 5.0


def is_terminal(stream=None) -> bool:
    """Whether `stream` (default ``sys.stdout``) is an interactive terminal."""
    stream = sys.stdout if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def keras_verbose(stream=None):
    """The ``verbose`` for ``model.fit`` / ``model.evaluate`` /
    ``model.predict``: ``"auto"`` (a progress bar) when `stream` (default
    ``sys.stdout``, where Keras writes) is a terminal, else ``2`` (one line
    per epoch, no bar)."""
    return "auto" if is_terminal(stream) else 2


def epoch_line(epoch: int, epochs: Optional[int], seconds: float, logs: dict) -> str:
    """One plain line per epoch: its number, its time and its logs.

    Example:

    >>> epoch_line(2, 10, 3.14, {"loss": 0.51234, "accuracy": 0.875, "learning_rate": 0.001})
    'epoch 3/10: 3.1 s, loss 0.5123, accuracy 0.8750'
    """
    values = ", ".join(f"{k} {v:.4f}" for k, v in (logs or {}).items()
                       if k != "learning_rate" and isinstance(v, (int, float)))
    of = f"/{epochs}" if epochs else ""
    return f"epoch {epoch + 1}{of}: {seconds:.1f} s" + (f", {values}" if values else "")


@functools.lru_cache(maxsize=None)
def _epoch_lines_class():
    import keras

    class EpochLines(keras.callbacks.Callback):
        """Prints `epoch_line` at the end of every epoch (after the
        callbacks before it have added their logs)."""

        def __init__(self, epochs: Optional[int] = None, stream=None):
            super().__init__()
            self.epochs, self.stream, self.start = epochs, stream, None

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.monotonic()

        def on_epoch_end(self, epoch, logs=None):
            seconds = time.monotonic() - (self.start or time.monotonic())
            epochs = self.epochs or self.params.get("epochs")
            print(epoch_line(epoch, epochs, seconds, logs), file=self.stream or sys.stdout, flush=True)

    return EpochLines


def epoch_lines(epochs: Optional[int] = None, stream=None):
    """A Keras callback that prints one plain line per epoch on `stream`
    (default ``sys.stdout``), numbered out of `epochs` (default: the
    ``epochs`` of the ``fit`` call). Put it last among the callbacks."""
    return _epoch_lines_class()(epochs, stream)


def fit_output(verbose="auto", epochs: Optional[int] = None, stream=None) -> tuple:
    """``(verbose, callbacks)`` for ``model.fit``: `verbose` and no callback,
    except ``"auto"`` where `stream` (default ``sys.stdout``) is not a
    terminal: ``0`` and `epoch_lines`, one plain line per epoch (Keras'
    ``verbose=2`` writes two, the epoch's number and its metrics).

    Example::

        verbose, lines = fit_output("auto", epochs=10)
        model.fit(x, y, epochs=10, verbose=verbose, callbacks=[*callbacks, *lines])
    """
    if verbose != "auto" or is_terminal(stream):
        return verbose, []
    return 0, [epoch_lines(epochs, stream)]


def duration(seconds: float) -> str:
    """A short duration: ``"42 s"``, ``"3 min 05 s"``, ``"2 h 07 min"``.

    Example:

    >>> duration(42.4), duration(185), duration(7620)
    ('42 s', '3 min 05 s', '2 h 07 min')
    """
    seconds = int(round(max(seconds, 0)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Progress:
    """Progress through `total` items: a Keras progress bar on a terminal
    (items/s, ETA), else a plain line on `stream` at most every `every`
    seconds, and a last line at `close`.

    Args:
        total: items expected.
        label: the line's first word.
        what: the items' name (plural).
        bar: force the bar (True) or plain lines (False); default: a bar
            when ``sys.stdout`` is a terminal.
        stream: where plain lines go (default ``sys.stderr``).
        every: seconds between plain lines.
        clock: seconds (for tests).
    """

    def __init__(self, total: int, label: str = "progress", what: str = "images", bar: Optional[bool] = None,
                 stream=None, every: float = PLAIN_EVERY, clock: Callable[[], float] = time.monotonic):
        self.total, self.label, self.what, self.every, self.clock = total, label, what, every, clock
        self.stream = stream
        self.start = clock()
        self.last_line = None
        self.done = self.skipped = 0
        self.elapsed = 0.0
        self.bar = None
        if bar if bar is not None else is_terminal():
            import keras

            rate = f"{what}/s"
            self.bar = keras.utils.Progbar(total, unit_name=what.rstrip("s"), stateful_metrics=[rate, "skipped"])

    def rate(self) -> float:
        """Items per second up to the last `update`."""
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    def line(self) -> str:
        """The plain progress line."""
        rate = self.rate()
        text = f"{self.label}: {self.done}/{self.total} {self.what} ({self.done / max(self.total, 1):.0%}), "
        text += f"{rate:.1f} {self.what}/s"
        if rate > 0 and self.done < self.total:
            text += f", ETA {duration((self.total - self.done) / rate)}"
        return text + (f", {self.skipped} skipped" if self.skipped else "")

    def update(self, done: int, skipped: int = 0) -> None:
        """`done` items so far (skipped ones included), `skipped` of them
        skipped."""
        now = self.clock()
        self.done, self.skipped, self.elapsed = done, skipped, now - self.start
        if self.bar is not None:
            values = [(f"{self.what}/s", self.rate())] + ([("skipped", skipped)] if skipped else [])
            self.bar.update(done, values=values)
            return
        if self.last_line is None or now - self.last_line >= self.every:
            self.last_line = now
            print(self.line(), file=self.stream or sys.stderr, flush=True)

    def close(self) -> None:
        """The last line (plain lines only: the bar ends itself at `total`)."""
        if self.bar is None:
            self.elapsed = self.clock() - self.start
            print(f"{self.label}: {self.done} {self.what} in {duration(self.elapsed)} ({self.rate():.1f} {self.what}/s)"
                  + (f", {self.skipped} skipped" if self.skipped else ""), file=self.stream or sys.stderr, flush=True)
