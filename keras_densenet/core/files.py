"""Writing files whole: readers never see half a file.

One helper for every writer of the package (trained models, converted
checkpoints, exports, tables, plots, cached conversions). Keras-free, so
every module can use it (the benchmark's parent process must not import
keras: its workers choose their own backends).

Example:

>>> import os, tempfile
>>> from keras_densenet.core.files import atomic_path, atomic_write
>>> path = os.path.join(tempfile.mkdtemp(), "note.txt")
>>> def write(tmp):
...     with open(tmp, "w") as f:
...         f.write("done")
>>> atomic_write(path, write)
>>> open(path).read()
'done'
>>> with atomic_path(path) as tmp:  # the same, as a context manager
...     with open(tmp, "w") as f:
...         _ = f.write("again")
>>> open(path).read()
'again'
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Callable, Iterator


@contextlib.contextmanager
def atomic_path(path) -> Iterator[str]:
    """Yields a path to write instead of `path`, then moves it onto `path`.

    The temporary path lies in a hidden directory beside `path` (same file
    system, so the final rename is atomic) and keeps `path`'s base name, so
    writers that check the ending (``.keras``, ``.weights.h5``, ``.onnx``)
    accept it. It may become a file or a directory (a SavedModel); an
    existing directory at `path` is replaced. If nothing was written (a
    writer that decided not to, like a checkpoint callback without a new
    best), or on any error, `path` is left as it was and nothing is left
    behind.

    Raises:
        ValueError: the directory of `path` does not exist or is not
            writable (the message names `path`).
    """
    path = os.path.abspath(os.fspath(path))
    directory, base = os.path.split(path)
    if not os.path.isdir(directory) or not os.access(directory, os.W_OK):
        raise ValueError(f"cannot write {path!r}: {directory!r} is not a writable directory")
    tmp_dir = tempfile.mkdtemp(dir=directory, prefix=f".{base}.")
    try:
        tmp = os.path.join(tmp_dir, base)
        yield tmp
        if not os.path.exists(tmp):
            return
        if os.path.isdir(tmp) and os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)  # os.replace cannot replace a non-empty directory
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def atomic_write(path, write: Callable[[str], None]) -> None:
    """Calls ``write(tmp_path)``, then renames the result to `path` (see
    `atomic_path`); on any error `path` is left as it was."""
    with atomic_path(path) as tmp:
        write(tmp)


def prepare_output_dir(output) -> str:
    """Creates directory `output` and checks that files can be written there.

    Raises:
        ValueError: the directory cannot be created or is not writable.
    """
    output = os.fspath(output)
    try:
        os.makedirs(output, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=output):
            pass
    except OSError as e:
        raise ValueError(
            f"`output` directory {output!r} is not writable: {e.strerror or e}"
        ) from None
    return output
