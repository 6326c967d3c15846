"""Writing files whole: readers never see half a file.

Keras-free, so every module can use it (the benchmark's parent process
must not import keras: its workers choose their own backends).

Example:

>>> import os, tempfile
>>> from keras_densenet.files import atomic_write
>>> path = os.path.join(tempfile.mkdtemp(), "note.txt")
>>> def write(tmp):
...     with open(tmp, "w") as f:
...         f.write("done")
>>> atomic_write(path, write)
>>> open(path).read()
'done'
"""

from __future__ import annotations

import os
import tempfile
from typing import Callable


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """Calls ``write(tmp_path)`` on a temporary file beside `path`, then
    renames it to `path`; on any error the temporary file is removed and
    `path` is left as it was."""
    directory, base = os.path.split(path)
    fd, tmp = tempfile.mkstemp(dir=directory or ".", prefix=f".{base}.", suffix=os.path.splitext(base)[1])
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
