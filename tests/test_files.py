"""Atomic, durable writes (keras_densenet/core/files.py): flushes, the order
of a directory's replacement, what a killed writer leaves and who cleans it."""

import os
import subprocess
import sys
import time

import pytest

from keras_densenet.core import files
from keras_densenet.core.files import atomic_path, atomic_write, recover, recover_in, remove_whole
from tests.helpers import SCRIPTS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: Keras-free and backend-independent: one suite runs them.
pytestmark = pytest.mark.one_backend("jax", "torch", "tensorflow", reason="keras-free file writing")


def _dead_pid() -> int:
    """The id of a process that has exited."""
    proc = subprocess.Popen([sys.executable, str(SCRIPTS / "sleep.py")])
    proc.wait(timeout=30)
    return proc.pid


def _sibling(folder, base, kind, pid, tail="abcd1234"):
    return os.path.join(folder, f".{base}.{kind}-{files._host_id()}-{pid}-{tail}")


def _write_dir(tmp, text):
    """A SavedModel-like directory result: files and a subdirectory."""
    os.makedirs(os.path.join(tmp, "variables"))
    for name in ("saved_model.pb", os.path.join("variables", "data")):
        with open(os.path.join(tmp, name), "w") as f:
            f.write(text)


def _read_dir(path):
    with open(os.path.join(path, "saved_model.pb")) as f1, open(os.path.join(path, "variables", "data")) as f2:
        return f1.read(), f2.read()


@pytest.fixture
def fsyncs(monkeypatch):
    """Records, in order, the inode of every fsync'ed descriptor and every rename."""
    events = []
    real_fsync, real_replace, real_rename = os.fsync, os.replace, os.rename

    def fsync(fd):
        st = os.fstat(fd)
        events.append(("fsync", st.st_ino, os.path.stat.S_ISDIR(st.st_mode)))
        return real_fsync(fd)

    def replace(a, b):
        events.append(("rename", a, b))
        return real_replace(a, b)

    def rename(a, b):
        events.append(("rename", a, b))
        return real_rename(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "rename", rename)
    return events


def test_a_file_is_flushed_before_its_rename_and_the_directory_after(tmp_path, fsyncs):
    path = tmp_path / "model.keras"
    atomic_write(path, lambda tmp: open(tmp, "w").close())
    renames = [i for i, e in enumerate(fsyncs) if e[0] == "rename"]
    assert len(renames) == 1 and fsyncs[renames[0]][2] == str(path)
    before, after = fsyncs[: renames[0]], fsyncs[renames[0] + 1:]
    assert ("fsync", os.stat(path).st_ino, False) in before  # the file itself, under its temporary name
    assert ("fsync", os.stat(tmp_path).st_ino, True) in after  # the rename


def test_every_file_and_folder_of_a_directory_result_is_flushed(tmp_path, fsyncs):
    path = tmp_path / "saved"
    atomic_write(path, lambda tmp: _write_dir(tmp, "new"))
    first_rename = next(i for i, e in enumerate(fsyncs) if e[0] == "rename")
    flushed = {e[1] for e in fsyncs[:first_rename]}
    under = [os.path.join(r, n) for r, ds, fs in os.walk(path) for n in [*ds, *fs]] + [str(path)]
    assert len(under) == 4 and {os.stat(p).st_ino for p in under} <= flushed
    assert ("fsync", os.stat(tmp_path).st_ino, True) in fsyncs[first_rename:]


def test_an_existing_directory_is_renamed_aside_before_the_new_one_comes_in(tmp_path, fsyncs):
    path = tmp_path / "saved"
    atomic_write(path, lambda tmp: _write_dir(tmp, "old"))
    fsyncs.clear()
    atomic_write(path, lambda tmp: _write_dir(tmp, "new"))
    renames = [e for e in fsyncs if e[0] == "rename"]
    assert len(renames) == 2
    (_, src1, aside), (_, src2, dst2) = renames
    assert src1 == str(path) and os.path.basename(aside).startswith(".saved.old-")
    assert dst2 == str(path) and os.path.basename(os.path.dirname(src2)).startswith(".saved.tmp-")
    assert _read_dir(path) == ("new", "new")
    assert os.listdir(tmp_path) == ["saved"]  # the aside-copy is gone


def test_a_file_and_a_directory_replace_each_other(tmp_path):
    path = tmp_path / "out"
    atomic_write(path, lambda tmp: _write_dir(tmp, "dir"))
    atomic_write(path, lambda tmp: open(tmp, "w").write("file"))
    assert path.read_text() == "file"
    atomic_write(path, lambda tmp: _write_dir(tmp, "dir2"))
    assert _read_dir(path) == ("dir2", "dir2") and os.listdir(tmp_path) == ["out"]


def test_a_failed_write_leaves_the_old_copy_and_nothing_else(tmp_path):
    path = tmp_path / "saved"
    atomic_write(path, lambda tmp: _write_dir(tmp, "old"))

    def fail(tmp):
        _write_dir(tmp, "half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, fail)
    assert _read_dir(path) == ("old", "old") and os.listdir(tmp_path) == ["saved"]


def test_a_failed_rename_puts_the_old_directory_back(tmp_path, monkeypatch):
    path = tmp_path / "saved"
    atomic_write(path, lambda tmp: _write_dir(tmp, "old"))
    real_rename = os.rename

    def rename(a, b):
        if str(b) == str(path) and ".saved.tmp-" in str(a):
            raise OSError("rename failed")
        return real_rename(a, b)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError, match="rename failed"):
        atomic_write(path, lambda tmp: _write_dir(tmp, "new"))
    assert _read_dir(path) == ("old", "old") and os.listdir(tmp_path) == ["saved"]


def test_a_writer_killed_at_any_step_leaves_a_complete_copy_that_recover_restores(tmp_path):
    """Kills a writer replacing a directory at each of its file-system steps:
    afterwards `path` or its aside-copy holds a complete copy, and `recover`
    leaves exactly one complete copy at `path` and nothing else."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    path = str(tmp_path / "saved")
    killed_between_renames = 0
    for step in range(1, 40):
        atomic_write(path, lambda tmp: _write_dir(tmp, "old"))
        proc = subprocess.run([sys.executable, str(SCRIPTS / "crashing_writer.py"), path, "new", str(step)],
                              env=env, timeout=60, capture_output=True, text=True)
        assert proc.returncode in (0, 9), proc.stderr
        asides = [n for n in os.listdir(tmp_path) if n.startswith(".saved.old-")]
        assert os.path.isdir(path) or asides, f"step {step}: neither copy exists"
        if not os.path.exists(path):
            killed_between_renames += 1
            assert _read_dir(os.path.join(tmp_path, asides[0])) == ("old", "old")
        recover(path)
        assert os.listdir(tmp_path) == ["saved"], f"step {step}: {os.listdir(tmp_path)}"
        assert _read_dir(path) in {("old", "old"), ("new", "new")}
        if proc.returncode == 0:
            assert _read_dir(path) == ("new", "new")
            break
    else:
        pytest.fail("the writer never finished")
    assert step > 5 and killed_between_renames == 1


def test_recover_removes_stale_leftovers_and_restores_a_lost_directory(tmp_path):
    dead = _dead_pid()
    base = "model.keras"
    stale_tmp = _sibling(tmp_path, base, "tmp", dead)
    os.makedirs(os.path.join(stale_tmp, base))  # a killed SavedModel write
    aside = _sibling(tmp_path, base, "old", dead, "zzzz0000")
    _write_dir(aside, "old")
    legacy = os.path.join(tmp_path, f".{base}.k2j4h6g8")  # an earlier version's, a week old
    os.makedirs(legacy)
    open(os.path.join(legacy, base), "w").close()
    week_ago = time.time() - 7 * 24 * 3600
    os.utime(os.path.join(legacy, base), (week_ago, week_ago))
    os.utime(legacy, (week_ago, week_ago))
    done = recover(tmp_path / base)
    assert sorted(a for a, _ in done) == ["removed", "removed", "restored"]
    assert _read_dir(tmp_path / base) == ("old", "old")
    assert os.listdir(tmp_path) == [base]


def test_recover_leaves_live_writers_other_destinations_and_other_files_alone(tmp_path):
    base = "model.keras"
    live = subprocess.Popen([sys.executable, str(SCRIPTS / "sleep.py"), "60"])
    try:
        mine = [
            _sibling(tmp_path, base, "tmp", live.pid),  # a concurrent writer's
            _sibling(tmp_path, base, "old", live.pid),  # ...in the middle of its replacement
            _sibling(tmp_path, "other.keras", "tmp", _dead_pid()),  # another destination's
            _sibling(tmp_path, base, "tmp", os.getpid()),  # this process's (another thread's)
            os.path.join(tmp_path, f".{base}.notes"),  # a user's
            os.path.join(tmp_path, f".{base}.abcd1234"),  # fresh: an old version may be writing
        ]
        for entry in mine:
            os.makedirs(entry)
        assert recover(tmp_path / base) == []
        assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(e) for e in mine)
    finally:
        live.kill()
        live.wait(timeout=30)
    assert recover(tmp_path / base) != []  # now that it is gone


def test_a_concurrent_writer_keeps_its_temporary_directory(tmp_path):
    path, go = str(tmp_path / "log.csv"), str(tmp_path / "go")
    slow = subprocess.Popen([sys.executable, str(SCRIPTS / "blocked_writer.py"), path, go],
                            env=dict(os.environ, PYTHONPATH=ROOT), stdout=subprocess.PIPE, text=True)
    try:
        assert slow.stdout.readline().strip() == "writing"
        theirs = [n for n in os.listdir(tmp_path) if n.startswith(".log.csv.tmp-")]
        assert len(theirs) == 1
        atomic_write(path, lambda tmp: open(tmp, "w").write("fast"))  # calls recover() first
        assert os.path.isdir(tmp_path / theirs[0])
        assert open(path).read() == "fast"
        open(go, "w").close()
        assert slow.wait(timeout=60) == 0
    finally:
        slow.kill()
    assert open(path).read() == "slow" and sorted(os.listdir(tmp_path)) == ["go", "log.csv"]


def test_the_trace_names_each_write(tmp_path, monkeypatch):
    trace = tmp_path / "trace"
    monkeypatch.setenv(files.TRACE_VARIABLE, str(trace))
    path = tmp_path / "a.txt"
    atomic_write(path, lambda tmp: open(tmp, "w").close())
    with atomic_path(path):
        pass  # nothing written
    with pytest.raises(RuntimeError):
        with atomic_path(path):
            raise RuntimeError
    pid = os.getpid()
    assert trace.read_text().splitlines() == [
        f"enter {pid} {path}", f"leave {pid} {path} written",
        f"enter {pid} {path}", f"leave {pid} {path} nothing",
        f"enter {pid} {path}", f"leave {pid} {path} error",
    ]
    monkeypatch.delenv(files.TRACE_VARIABLE)
    atomic_write(path, lambda tmp: open(tmp, "w").close())
    assert len(trace.read_text().splitlines()) == 6


def test_files_stays_small_and_keras_free():
    source = open(files.__file__).read()
    assert len(source.splitlines()) <= 500 and "import keras" not in source


def test_recover_in_restores_or_removes_every_destinations_leftovers(tmp_path):
    dead = _dead_pid()
    _write_dir(_sibling(tmp_path, "backup", "old", dead), "old")  # killed between its two renames
    os.makedirs(_sibling(tmp_path, "model.keras", "tmp", dead))  # killed while saving
    open(tmp_path / "log.csv", "w").close()
    done = recover_in(tmp_path)
    assert sorted(a for a, _ in done) == ["removed", "restored"]
    assert sorted(os.listdir(tmp_path)) == ["backup", "log.csv"] and _read_dir(tmp_path / "backup") == ("old", "old")


def test_remove_whole_leaves_the_directory_whole_or_gone(tmp_path, fsyncs):
    path = tmp_path / "backup"
    _write_dir(path, "old")
    remove_whole(path)
    renames = [e for e in fsyncs if e[0] == "rename"]
    # Renamed to a temporary name first (which recover removes), then deleted.
    assert len(renames) == 1 and os.path.basename(renames[0][2]).startswith(".backup.tmp-")
    assert os.listdir(tmp_path) == []
    remove_whole(path)  # nothing there: nothing done
