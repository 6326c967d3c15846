"""The checks every fuzz input must pass.

An input ends in a valid result or in the documented `ValueError` naming
the file, and never in another exception; within `MAX_SECONDS`; with the
process's peak memory grown by at most `MAX_GROWTH_BYTES`; without a write
outside the case's own temporary directory; and without running anything
(no ``os.system``, no process started, no marker file created).

Writes and code execution are watched by a Python audit hook (`sys.addaudithook`,
active only inside `run_case`): opens for writing, renames, removals,
``os.system``, process starts, ``marshal.loads`` and unpickling of globals
outside torch/NumPy. Native libraries (HDF5, ONNX Runtime) bypass the hook;
for them the input's directory and its parents are compared before and
after, and the marker file is checked.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import shutil
import signal
import sys
import tempfile
import time
from typing import Optional

#: The most one input may take.
MAX_SECONDS = 10.0
#: The most the peak memory (RSS) may grow for one input.
MAX_GROWTH_BYTES = 1 << 30
#: A runaway input is interrupted after this long (Python code only).
_ALARM_SECONDS = 60

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_RUN_EVENTS = {"os.system", "subprocess.Popen", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
               "marshal.loads", "exec"}
_PATH_EVENTS = {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.symlink", "os.link", "os.truncate",
                "os.chmod", "os.chown", "os.utime", "shutil.rmtree", "shutil.move", "shutil.copyfile"}
#: Unpickling these globals is reading data, not running code.
_PICKLE_OK = ("torch", "collections", "numpy", "_codecs", "copyreg")


class _Hang(Exception):
    pass


class _Audit:
    """State of the audit hook: inactive outside `run_case`."""

    active = False
    allowed: tuple = ()
    events: list = []


def _under(path, roots) -> bool:
    if isinstance(path, int):
        return True  # a descriptor: its open was checked
    if isinstance(path, bytes):
        path = path.decode(errors="replace")
    path = os.path.realpath(os.fspath(path))
    return path == os.devnull or path.endswith(".pyc") or any(
        path == r or path.startswith(r + os.sep) for r in roots)


def _importing() -> bool:
    """Whether the event comes from Python's import system (a module
    imported lazily, such as a text codec: its code is not the file's)."""
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _is_probe(event: str, args) -> bool:
    """The package's own HDF5 probe (keras_densenet.core.hdf5): a child
    Python running the probe's code, not the file's."""
    if event != "subprocess.Popen":
        return False
    from keras_densenet.core import hdf5

    argv = list(args[1]) if len(args) > 1 and args[1] else []
    return len(argv) > 2 and argv[0] == sys.executable and argv[1] == "-c" and argv[2] == hdf5._PROBE


def _hook(event: str, args) -> None:
    if not _Audit.active:
        return
    try:
        if event in _RUN_EVENTS:
            if not (event in ("marshal.loads", "exec") and _importing()) and not _is_probe(event, args):
                _Audit.events.append(f"{event} {args!r:.200}")
        elif event == "pickle.find_class" and not str(args[0]).startswith(_PICKLE_OK):
            _Audit.events.append(f"unpickles {args[0]}.{args[1]}")
        elif event == "open" and len(args) >= 3 and args[0] is not None:
            path, mode, flags = args[0], args[1], args[2] or 0
            writing = (mode and any(c in str(mode) for c in "wax+")) or (flags & _WRITE_FLAGS)
            if writing and not _under(path, _Audit.allowed):
                _Audit.events.append(f"writes {path!r}")
        elif event in _PATH_EVENTS:
            paths = [a for a in args if isinstance(a, (str, bytes, os.PathLike))]
            outside = [p for p in paths if not _under(p, _Audit.allowed)]
            if outside:
                _Audit.events.append(f"{event} {outside!r:.200}")
    except Exception as e:  # never break the code under test
        _Audit.events.append(f"audit hook error {e!r}")


_installed = False


def install_audit_hook() -> None:
    """Installs the hook once per process (hooks cannot be removed)."""
    global _installed
    if not _installed:
        sys.addaudithook(_hook)
        _installed = True


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def _listing(folder: str) -> list:
    try:
        return sorted(os.listdir(folder))
    except OSError:
        return []


@dataclasses.dataclass
class Outcome:
    """What one input did: `failure` is ``None`` when every check passed."""

    case: str
    result: str  # "valid", "ValueError" or the exception's type
    seconds: float
    growth_bytes: int
    failure: Optional[str] = None
    message: str = ""

    def describe(self) -> str:
        return f"{self.case}: {self.failure} ({self.result}: {self.message[:300]})"


def run_case(target, data, workdir: str, marker: str, case: str = "") -> Outcome:
    """Feeds `data` (bytes: written as ``target.filename``; a mapping: passed
    as is to an environment target) to `target` and checks the outcome.

    Args:
        target: a `targets.Target`, or ``(load, check_result)`` for the
            environment.
        data: the input.
        workdir: a directory of the caller's; the case's files live in a
            fresh subdirectory that is removed afterwards.
        marker: the file that appears if an input ran code.
        case: a name for reports.
    """
    install_audit_hook()
    box = tempfile.mkdtemp(dir=workdir, prefix="case-")
    in_dir, out_dir, tmp_dir = (os.path.join(box, d) for d in ("in", "out", "tmp"))
    for d in (in_dir, out_dir, tmp_dir):
        os.mkdir(d)
    if isinstance(data, (bytes, bytearray)):
        path = os.path.join(in_dir, target.filename)
        with open(path, "wb") as f:
            f.write(data)
        load, check, named = (lambda: target.load(path, out_dir)), target.check_result, os.path.basename(path)
    else:
        load, check = (lambda: target[0](data)), target[1]
        named, path = "KERAS_DISTRIBUTION_", None
    parents = {d: _listing(d) for d in (workdir, os.path.dirname(workdir))}
    old_tempdir, old_cwd = tempfile.tempdir, os.getcwd()
    tempfile.tempdir = tmp_dir  # libraries' temporary files land in the box
    os.chdir(out_dir)
    _Audit.allowed, _Audit.events, _Audit.active = (os.path.realpath(box),), [], True
    previous = signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(_Hang()))
    signal.alarm(_ALARM_SECONDS)
    peak, start = _peak_rss(), time.perf_counter()
    result, message, failure, value = "valid", "", None, None
    try:
        value = load()
    except _Hang:
        result, failure = "hang", f"still running after {_ALARM_SECONDS} s"
    except ValueError as e:
        result, message = "ValueError", str(e)
        if named not in message:
            failure = f"the ValueError does not name {named!r}"
    except BaseException as e:  # noqa: B036 - anything but ValueError is the failure under test
        if isinstance(e, KeyboardInterrupt):
            raise
        result, message, failure = type(e).__name__, str(e), f"raised {type(e).__name__}, not ValueError"
    finally:
        seconds = time.perf_counter() - start
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        _Audit.active = False
        os.chdir(old_cwd)
        tempfile.tempdir = old_tempdir
    growth = _peak_rss() - peak
    if failure is None and result == "valid" and check is not None:
        try:
            check(value)
        except AssertionError as e:
            failure = f"invalid result: {e}"
    if failure is None and seconds > MAX_SECONDS:
        failure = f"took {seconds:.1f} s"
    if failure is None and growth > MAX_GROWTH_BYTES:
        failure = f"peak memory grew by {growth / 2**30:.1f} GB"
    if failure is None and _Audit.events:
        failure = "; ".join(_Audit.events[:3])
    if failure is None and os.path.exists(marker):
        failure = "code ran: the marker file exists"
    changed = [d for d, before in parents.items() if _listing(d) != before]
    if failure is None and changed:
        failure = f"wrote beside the input: {changed}"
    if failure is None and path is not None and _listing(in_dir) != [os.path.basename(path)]:
        failure = f"wrote beside the input: {_listing(in_dir)}"
    if os.path.exists(marker):
        os.remove(marker)
    shutil.rmtree(box, ignore_errors=True)
    del value
    return Outcome(case, result, seconds, growth, failure, message)


def warm_up(target, workdir: str, marker: str) -> None:
    """Loads every seed twice before the fuzzing: the first time imports
    what the loader imports lazily (its memory, its .pyc files and module
    code are not charged to the first input), the second must pass every
    check: the seeds are valid."""
    for attempt in range(2):
        for i, seed in enumerate(target.seeds):
            outcome = run_case(target, seed, workdir, marker, f"seed {i}")
            if outcome.result != "valid" or (attempt and outcome.failure):
                raise AssertionError(f"{target.name}: a valid seed fails: {outcome.describe()}")
