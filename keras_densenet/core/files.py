"""Writing files whole and durably: readers never see half a file, and a
power cut or a killed process never loses the last complete copy. And the
checks every reader of an untrusted file shares (`FileError`,
`check_zip_members`; HDF5's own in `keras_densenet.core.hdf5`).

One helper for every writer of the package (trained models, converted
checkpoints, exports, tables, plots, cached conversions). Keras-free, so
every module can use it (the benchmark's parent process must not import
keras: its workers choose their own backends).

What `atomic_path` guarantees:

- the result is written under a temporary name beside `path`, flushed to
  disk (``fsync`` of the file, or of every file and directory of a
  directory result), then renamed onto `path`, and the rename itself is
  flushed (``fsync`` of the parent directory);
- an existing directory at `path` (a SavedModel) is first renamed aside
  (``.NAME.old-...``), then the new one is renamed in, then the old one is
  removed: at every moment `path` or its aside-copy holds a complete copy;
- what a killed process leaves behind (its ``.NAME.tmp-...`` directory, an
  aside-copy) is cleaned up by the next write to the same `path`
  (`recover`): removed, or, for an aside-copy whose destination is missing,
  renamed back. Only this package's names for that exact `path` are
  touched, and only those of a process that no longer runs (the process id
  is part of the name), so concurrent writers never remove each other's
  work.

Tracing: with the environment variable ``KERAS_DENSENET_WRITE_TRACE`` set to
a file name, every `atomic_path` appends ``enter PID PATH`` when it starts
and ``leave PID PATH STATUS`` (``written``, ``nothing`` or ``error``) when
it ends to that file; tests use it to tell whether a killed process was
inside a write. Unset (the default), nothing is traced.

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
>>> sorted(os.listdir(os.path.dirname(path)))  # nothing left behind
['note.txt']
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import socket
import stat
import tempfile
import time
import uuid
import zlib
from typing import Callable, Iterator, Optional

#: Environment variable naming a file that `atomic_path` appends its
#: ``enter``/``leave`` lines to (tests only; unset: no tracing).
TRACE_VARIABLE = "KERAS_DENSENET_WRITE_TRACE"
#: A leftover of another host (or of a process id since reused) counts as
#: stale after this long: no write of this package takes a day.
STALE_AFTER_S = 24 * 3600
#: Kinds of hidden siblings: the write under way, the replaced directory.
_TMP, _OLD = "tmp", "old"
# fsync errors that mean "this file system does not flush" (some network
# and FUSE file systems, directories on some platforms): nothing to wait for.
_UNSUPPORTED = {errno.EINVAL, errno.ENOTSUP, errno.EBADF, errno.EISDIR, errno.EACCES, errno.EPERM}


def _host_id() -> str:
    """8 hex digits naming this machine, so that a process id in a temporary
    name is only checked on the host that wrote it (shared file systems)."""
    return f"{zlib.crc32(socket.gethostname().encode()) & 0xFFFFFFFF:08x}"


def _sibling_prefix(base: str, kind: str) -> str:
    return f".{base}.{kind}-{_host_id()}-{os.getpid()}-"


def _sibling_pattern(base: str) -> re.Pattern:
    """Matches this package's hidden siblings of `base`, and only them:
    ``.BASE.tmp-HOST-PID-XXXXXXXX``, ``.BASE.old-HOST-PID-XXXXXXXX``, and
    ``.BASE.XXXXXXXX`` (the temporary directories of earlier versions,
    which carry no process id)."""
    return re.compile(
        rf"^\.{re.escape(base)}\.(?:(?P<kind>{_TMP}|{_OLD})-(?P<host>[0-9a-f]{{8}})-(?P<pid>\d+)-)?[a-z0-9_]{{8}}$"
    )


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)  # signal 0: checks only
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    except OSError:
        return True  # cannot tell: keep its files
    return True


def _age_s(entry: str) -> float:
    """Seconds since `entry` (or, for a directory, its newest direct child)
    last changed."""
    try:
        newest = os.lstat(entry).st_mtime
        if os.path.isdir(entry) and not os.path.islink(entry):
            for child in os.scandir(entry):
                newest = max(newest, child.stat(follow_symlinks=False).st_mtime)
    except OSError:
        return 0.0
    return time.time() - newest


def _is_stale(entry: str, host: Optional[str], pid: Optional[int]) -> bool:
    """A leftover whose writer is gone: its process (on this host) no longer
    runs, or it has not changed for `STALE_AFTER_S`."""
    if host == _host_id() and pid != os.getpid() and not _pid_alive(pid):
        return True
    return _age_s(entry) > STALE_AFTER_S


def _is_legacy_tmp(entry: str, base: str) -> bool:
    """An earlier version's temporary directory: a directory holding at
    most `base` (never a user's file that happens to match the name)."""
    try:
        return os.path.isdir(entry) and not os.path.islink(entry) and set(os.listdir(entry)) <= {base}
    except OSError:
        return False


def _remove(entry: str) -> None:
    if os.path.isdir(entry) and not os.path.islink(entry):
        shutil.rmtree(entry, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            os.remove(entry)


def recover(path) -> list:
    """Cleans up what interrupted writes to `path` left beside it.

    Stale temporary directories (``.NAME.tmp-...``) are removed. A stale
    aside-copy (``.NAME.old-...``, a directory being replaced) is renamed
    back to `path` if `path` is missing (the writer died between its two
    renames), else removed. Only names of this package's pattern for this
    exact `path` are considered, and only those of writers that no longer
    run (see `STALE_AFTER_S`). `atomic_path` calls it first.

    Args:
        path: the destination of the writes.

    Returns:
        What was done, as ``(action, name)`` pairs (``"removed"``,
        ``"restored"``), for logs and tests.

    Example:

    >>> import os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> os.mkdir(os.path.join(folder, ".model.keras.tmp-00000000-1-abcdefgh"))  # another host's
    >>> recover(os.path.join(folder, "model.keras"))  # not stale yet: kept
    []
    """
    path = os.path.abspath(os.fspath(path))
    directory, base = os.path.split(path)
    pattern = _sibling_pattern(base)
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    done, asides = [], []
    for name in sorted(names):
        match = pattern.match(name)
        if not match:
            continue
        entry = os.path.join(directory, name)
        if match["kind"] is None and not _is_legacy_tmp(entry, base):
            continue
        if not _is_stale(entry, match["host"], int(match["pid"]) if match["pid"] else None):
            continue
        if match["kind"] == _OLD:
            asides.append(entry)
        else:
            _remove(entry)
            done.append(("removed", name))
    if asides and not os.path.lexists(path):
        # The newest aside-copy is the last complete one.
        keep = max(asides, key=lambda e: os.lstat(e).st_mtime)
        try:
            os.rename(keep, path)
            _fsync_dir(directory)
            done.append(("restored", os.path.basename(keep)))
            asides.remove(keep)
        except OSError:
            asides = []  # keep them all: a later write or a person can restore one
    for entry in asides:
        _remove(entry)
        done.append(("removed", os.path.basename(entry)))
    return done


def recover_in(directory) -> list:
    """`recover` for every destination in `directory` that an interrupted
    write left something beside: what a command calls on start, before it
    reads what an earlier run wrote there (an aside-copy is renamed back).

    Returns:
        What was done, as `recover` says it, for every destination.

    Example:

    >>> import tempfile
    >>> recover_in(tempfile.mkdtemp())
    []
    """
    directory = os.fspath(directory)
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    kinds = rf"\.(?:{_TMP}|{_OLD})-[0-9a-f]{{8}}-\d+-[a-z0-9_]{{8}}$"
    bases = sorted({m.group(1) for m in (re.match(rf"^\.(.+?){kinds}", n) for n in names) if m})
    return [action for base in bases for action in recover(os.path.join(directory, base))]


def remove_whole(path) -> None:
    """Removes file or directory `path` so that it is either whole or gone:
    renamed first to a temporary name (which `recover` removes, should the
    process be killed), then deleted. Nothing there: nothing done.

    Example:

    >>> import os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> os.makedirs(os.path.join(folder, "backup", "phase"))
    >>> remove_whole(os.path.join(folder, "backup"))
    >>> os.listdir(folder)
    []
    """
    path = os.path.abspath(os.fspath(path))
    if not os.path.lexists(path):
        return
    directory, base = os.path.split(path)
    doomed = os.path.join(directory, _sibling_prefix(base, _TMP) + uuid.uuid4().hex[:8])
    os.rename(path, doomed)
    _fsync_dir(directory)
    _remove(doomed)


def _fsync_fd_of(entry: str, flags: int) -> None:
    try:
        fd = os.open(entry, flags)
    except OSError as e:
        if e.errno in _UNSUPPORTED:
            return
        raise
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in _UNSUPPORTED:
            raise
    finally:
        os.close(fd)


def _fsync_dir(directory: str) -> None:
    """Flushes a directory's entries (names, renames) to disk, where the
    platform can (POSIX; Windows has no directory handles to flush)."""
    if hasattr(os, "O_DIRECTORY"):
        _fsync_fd_of(directory, os.O_RDONLY | os.O_DIRECTORY)


def fsync_tree(entry: str) -> None:
    """Flushes file `entry`, or every file and directory under directory
    `entry` (itself included), to disk. Symbolic links are not followed."""
    if os.path.islink(entry):
        return
    if not os.path.isdir(entry):
        _fsync_fd_of(entry, os.O_RDONLY)
        return
    for root, _dirs, files in os.walk(entry, topdown=False):
        for name in files:
            child = os.path.join(root, name)
            if not os.path.islink(child):
                _fsync_fd_of(child, os.O_RDONLY)
        _fsync_dir(root)


def _trace(event: str, path: str, status: Optional[str] = None) -> None:
    trace = os.environ.get(TRACE_VARIABLE)
    if not trace:
        return
    line = f"{event} {os.getpid()} {path}" + (f" {status}" if status else "") + "\n"
    # One write of O_APPEND: lines of concurrent processes never interleave.
    fd = os.open(trace, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _aside_name(directory: str, base: str) -> str:
    while True:
        aside = os.path.join(directory, _sibling_prefix(base, _OLD) + uuid.uuid4().hex[:8])
        if not os.path.lexists(aside):
            return aside


def _move_into_place(tmp: str, path: str, directory: str, base: str) -> None:
    """Renames finished result `tmp` onto `path`; an existing directory (or
    an entry of the other kind) is renamed aside first and removed last."""
    replace_aside = os.path.lexists(path) and (
        (os.path.isdir(path) and not os.path.islink(path)) or os.path.isdir(tmp)
    )
    if not replace_aside:
        os.replace(tmp, path)  # atomic: a reader sees the old file or the new one
        _fsync_dir(directory)
        return
    # os.replace cannot put a directory over a non-empty one (or over a
    # file): rename the old one aside, so that one of the two is always there.
    aside = _aside_name(directory, base)
    os.rename(path, aside)
    try:
        os.rename(tmp, path)
    except BaseException:
        os.rename(aside, path)  # put the old one back
        raise
    _fsync_dir(directory)
    _remove(aside)


@contextlib.contextmanager
def atomic_path(path) -> Iterator[str]:
    """Yields a path to write instead of `path`, then moves it onto `path`.

    The temporary path lies in a hidden directory beside `path` (same file
    system, so the final rename is atomic) and keeps `path`'s base name, so
    writers that check the ending (``.keras``, ``.weights.h5``, ``.onnx``)
    accept it. It may become a file or a directory (a SavedModel); an
    existing directory at `path` is replaced, renamed aside until the new
    one is in place. The result is flushed to disk before the rename and
    the rename after it (see the module's docstring). If nothing was
    written (a writer that decided not to, like a checkpoint callback
    without a new best), or on any error, `path` is left as it was and
    nothing is left behind. Leftovers of killed writers to `path` are
    cleaned up first (`recover`).

    Raises:
        ValueError: the directory of `path` does not exist or is not
            writable (the message names `path`).
    """
    path = os.path.abspath(os.fspath(path))
    directory, base = os.path.split(path)
    if not os.path.isdir(directory) or not os.access(directory, os.W_OK):
        raise ValueError(f"cannot write {path!r}: {directory!r} is not a writable directory")
    recover(path)
    _trace("enter", path)
    status = "error"
    tmp_dir = tempfile.mkdtemp(dir=directory, prefix=_sibling_prefix(base, _TMP))
    try:
        tmp = os.path.join(tmp_dir, base)
        yield tmp
        if not os.path.lexists(tmp):
            status = "nothing"
            return
        fsync_tree(tmp)
        _move_into_place(tmp, path, directory, base)
        status = "written"
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        _trace("leave", path, status)


def atomic_write(path, write: Callable[[str], None]) -> None:
    """Calls ``write(tmp_path)``, then renames the result to `path` (see
    `atomic_path`); on any error `path` is left as it was."""
    with atomic_path(path) as tmp:
        write(tmp)


class FileError(ValueError):
    """A `ValueError` about one input file, whose message names the file.

    Loaders re-raise it as it is, and wrap any other failure of the library
    that reads the file (h5py, zipfile, safetensors, torch) into one, so a
    damaged or hostile file always ends in this documented error.
    """


def file_error(path, problem: str) -> FileError:
    """The `ValueError` for a problem with file `path`; the message names it.

    Example:

    >>> str(file_error("w.h5", "truncated"))
    "'w.h5': truncated"
    """
    return FileError(f"{os.fspath(path)!r}: {problem}")


def reason(error: BaseException, limit: int = 300) -> str:
    """The first line of `error`'s message (its type if it has none), cut to
    `limit` characters, for wrapping a library's failure into a `file_error`."""
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:limit]


def check_readable(path) -> None:
    """Raises a `ValueError` naming `path` if it is missing or empty."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise file_error(path, "no such file")
    if os.path.getsize(path) == 0:
        raise file_error(path, "the file is empty (an interrupted download?)")


#: A zip member may expand this many times (zlib reaches ~1000 on zeros;
#: weights barely compress)...
MAX_EXPANSION = 50
#: ...once larger than this.
BOMB_FLOOR_BYTES = 64 << 20


def check_zip_members(path, archive) -> None:
    """Refuses a zip archive that could trick its reader: a member whose
    name leaves the archive (``../``, an absolute path), a symbolic link, or
    a decompression bomb (a member over `BOMB_FLOOR_BYTES` that expands more
    than `MAX_EXPANSION` times).

    Args:
        path: the file, named in errors.
        archive: the open `zipfile.ZipFile`.

    Raises:
        ValueError: naming the file and the member.
    """
    for info in archive.infolist():
        name = info.filename.replace("\\", "/")
        if name.startswith("/") or ".." in name.split("/") or re.match(r"^[A-Za-z]:", name):
            raise file_error(path, f"archive member {info.filename!r} points outside the archive")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise file_error(path, f"archive member {info.filename!r} is a symbolic link")
        if info.file_size > BOMB_FLOOR_BYTES and info.file_size > MAX_EXPANSION * max(info.compress_size, 1):
            raise file_error(path, f"archive member {info.filename!r} expands from {info.compress_size} to "
                                   f"{info.file_size} bytes (a decompression bomb?)")


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
