"""SIGKILL at seeded moments of `keras-densenet train` and `export`, some
inside a save, then the checks a user relies on.

After each kill: every file at its final name (``model.keras``, ``log.csv``,
the backups, ``class_names.json``, the curve, the export) loads or is
absent. The relaunch resumes (or redoes the export) and completes; a
temporary directory of the killed process does not survive the next run
that writes the same file; a completed training's ``log.csv`` holds each
epoch exactly once.

How a kill is known to land inside a write: the processes run with
``KERAS_DENSENET_WRITE_TRACE`` (`keras_densenet.core.files`), so every
`atomic_path` appends ``enter``/``leave`` lines to a trace file; the test
reads it while the process runs, kills on an ``enter`` it chose, and a
process whose last ``enter`` has no ``leave`` was killed inside that write.
Writes that do not go through `atomic_path` (the appended ``log.csv``) are
watched by polling the files, and the process is killed the moment they
change. The moments come from ``random.Random(KD_KILL_SEED)`` (default 0).

The commands are backend-independent files and processes: one suite runs
the module, the export in a directory format that suite's backend writes
itself (OpenVINO on PyTorch, a SavedModel on TensorFlow).
"""

import csv
import glob
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from keras_densenet.core import extras
from keras_densenet.core.files import TRACE_VARIABLE
from tests.helpers import BACKEND, SCRIPTS, TINY_TRAIN, cli_args

#: Killing a command does not depend on the backend (the files do not):
#: one suite, the first with an in-process directory export.
pytestmark = pytest.mark.one_backend("torch", "tensorflow", "jax", reason="the same files on every backend")
SEED = int(os.environ.get("KD_KILL_SEED", "0"))
#: Directory formats and their artifact's name, in order of preference.
EXPORT_FORMATS = (("openvino", "model.xml"), ("savedmodel", "model_savedmodel"))
#: 20 kills in all.
TRAIN_KILLS, EXPORT_KILLS = 12, 8
#: One process may take this long (a bounded wait: it is killed after).
LAUNCH_TIMEOUT_S = 240
DIGITS_RUN = os.path.join(os.path.dirname(__file__), "data", "digits_run")


class Launch:
    """One run of the CLI in its own process group, killed at `moment`.

    Moments: ``("time", s)``: `s` seconds after the start; ``("write", k)``:
    at the `k`-th ``enter`` of the trace (inside an `atomic_path` write);
    ``("changes", pattern)``: when a file matching the glob `pattern`
    appears or changes (a write outside `atomic_path`); ``None``: never.
    """

    def __init__(self, argv, env, log_path, trace):
        self.trace, self.offset = trace, os.path.getsize(trace) if os.path.exists(trace) else 0
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "keras_densenet", *argv], env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.pid, self.killed, self.lines = self.proc.pid, False, []

    def _read_trace(self):
        if os.path.exists(self.trace):
            with open(self.trace) as f:
                f.seek(self.offset)
                chunk = f.read()
            complete = chunk[: chunk.rfind("\n") + 1]
            self.offset += len(complete.encode())
            self.lines += [line.split(" ", 2) for line in complete.splitlines() if line.split(" ")[1] == str(self.pid)]

    def enters(self) -> int:
        return sum(1 for event, _, _ in self.lines if event == "enter")

    def run(self, moment) -> int:
        start, seen = time.monotonic(), None
        if moment and moment[0] == "changes":
            seen = _stamps(moment[1])
        while self.proc.poll() is None:
            self._read_trace()
            elapsed = time.monotonic() - start
            due = (moment is not None and (
                (moment[0] == "time" and elapsed >= moment[1])
                or (moment[0] == "write" and self.enters() >= moment[1])
                or (moment[0] == "changes" and _stamps(moment[1]) != seen)))
            if due or elapsed > LAUNCH_TIMEOUT_S:
                os.killpg(self.pid, signal.SIGKILL)
                self.killed = True
                assert elapsed <= LAUNCH_TIMEOUT_S, f"{self.proc.args} still running after {LAUNCH_TIMEOUT_S} s"
                break
            time.sleep(0.002)
        code = self.proc.wait(timeout=60)
        self.log.close()
        self._read_trace()
        return code

    def inside(self) -> list:
        """The writes this (killed) process had entered and not left."""
        open_writes = []
        for event, _, rest in self.lines:
            path = rest.rsplit(" ", 1)[0] if event == "leave" else rest
            if event == "enter":
                open_writes.append(path)
            elif path in open_writes:
                open_writes.remove(path)
        return open_writes

    def output(self) -> str:
        with open(self.log.name) as f:
            return f.read()


def _stamps(pattern: str) -> dict:
    out = {}
    for path in glob.glob(pattern):
        try:
            st = os.stat(path)
            out[path] = (st.st_mtime_ns, st.st_size)
        except OSError:
            pass
    return out


def _hidden(folder: str) -> set:
    """Hidden entries: temporary directories and aside-copies of writes."""
    return {n for n in os.listdir(folder) if n.startswith(".")} if os.path.isdir(folder) else set()


class Checker:
    """The checks after each kill; `violations` collects what failed, by
    kind, for one report at the end."""

    def __init__(self):
        self.loaded = {}
        self.violations = {}

    def note(self, kind: str, text: str) -> None:
        self.violations.setdefault(kind, []).append(text)

    def _changed(self, path: str) -> bool:
        files = [path] if not os.path.isdir(path) else [
            os.path.join(root, n) for root, _, names in os.walk(path) for n in names]
        stamp = sorted(_stamps(f).items() for f in files)
        if self.loaded.get(path) == stamp:
            return False
        self.loaded[path] = stamp
        return True

    def keras_model(self, path: str) -> None:
        if os.path.exists(path) and self._changed(path):
            from keras_densenet.models import saved

            saved.load_keras_model(path)  # raises if half-written

    def artifact(self, path: str) -> bool:
        if not os.path.exists(path):
            return False
        if self._changed(path):
            from keras_densenet.deployment import runtimes

            runtimes.open_artifact(path)
        return True

    @staticmethod
    def json_list(path: str) -> None:
        if os.path.exists(path):
            with open(path) as f:
                assert isinstance(json.load(f), list), path

    @staticmethod
    def png(path: str) -> None:
        if os.path.exists(path):
            from PIL import Image

            with Image.open(path) as image:
                image.verify()

    def log(self, path: str, complete_epochs=None) -> None:
        if not os.path.exists(path):
            return
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
        if rows and any(len(r) != len(rows[0]) for r in rows):
            self.note("log", f"a partial row in log.csv: {rows[-1]}")
        epochs = [int(r[0]) for r in rows[1:] if r and r[0].isdigit()]
        if len(set(epochs)) != len(epochs) or epochs != sorted(epochs):
            self.note("log", f"log.csv repeats epochs: {epochs}")
        if complete_epochs is not None and epochs != list(range(complete_epochs)):
            self.note("log", f"a completed run's log.csv holds epochs {epochs}, not 0..{complete_epochs - 1}")

    def backups(self, output: str) -> None:
        import h5py

        for path in glob.glob(os.path.join(output, "backup", "**", "*.weights.h5"), recursive=True):
            try:
                with h5py.File(path, "r") as f:
                    f.visititems(lambda name, obj: obj[()] if isinstance(obj, h5py.Dataset) else None)
            except Exception as e:
                self.note("backup", f"{os.path.relpath(path, output)} unreadable after a kill: {str(e)[:120]}")
        for path in glob.glob(os.path.join(output, "backup", "**", "*.json"), recursive=True):
            try:
                with open(path) as f:
                    json.load(f)
            except ValueError as e:
                self.note("backup", f"{os.path.relpath(path, output)} unreadable after a kill: {e}")


def _env(trace: str) -> dict:
    return {**os.environ, "KERAS_BACKEND": BACKEND, "TF_CPP_MIN_LOG_LEVEL": "3", TRACE_VARIABLE: trace}


#: `atomic_path`'s temporary and aside names (keras_densenet/core/files.py).
_ATOMIC = re.compile(r"^\.(?P<base>.+)\.(?:tmp|old)-[0-9a-f]{8}-\d+-[a-z0-9_]{8}$")


def _campaign(argv, moments, folder, trace, check_files, tmp_path, kills_wanted, checker):
    """Launches `argv` again and again, each killed at the next moment,
    until `kills_wanted` kills landed; then once more to completion.

    A temporary entry of `atomic_path` left by a kill must be gone after
    the next run that writes the same destination, and no hidden entry at
    all may survive the completing run.

    Returns:
        ``(kills, inside)``: the kills, and, for those inside a save, the
        file being saved (an `atomic_path` write entered and not left).
    """
    kills, inside, launches = 0, [], 0
    pending = {}  # atomic leftovers -> their destination
    for moment in moments:
        if kills == kills_wanted:
            break
        launches += 1
        before = _hidden(folder)
        launch = Launch(argv, _env(trace), tmp_path / f"launch{launches}.log", trace)
        code = launch.run(moment)
        written = {rest for event, _, rest in launch.lines if event == "enter"}
        for entry, destination in list(pending.items()):
            if destination in written:
                assert not os.path.exists(os.path.join(folder, entry)), \
                    f"{entry} of a killed write outlived the next write to {destination}"
                del pending[entry]
        if not launch.killed:
            assert code == 0, f"a relaunch failed (exit {code}): {launch.output()[-600:]}"
            check_files(final=True)
            continue
        kills += 1
        if launch.inside():
            inside.append(os.path.relpath(launch.inside()[-1], folder))
        check_files(final=False)
        for entry in _hidden(folder) - before:
            match = _ATOMIC.match(entry)
            assert match, f"a killed run left {entry}, which is not atomic_path's"
            pending[entry] = os.path.join(folder, match["base"])
    launch = Launch(argv, _env(trace), tmp_path / "final.log", trace)
    code = launch.run(None)
    assert code == 0, f"the final relaunch failed (exit {code}): {launch.output()[-600:]}"
    check_files(final=True)
    assert _hidden(folder) == set(), f"temporary entries survived a completed run: {sorted(_hidden(folder))}"
    return kills, inside


def _moments(rng: random.Random, kinds: list, count: int) -> list:
    """`count` seeded moments per cycle of `kinds`, shuffled, plus spares
    for launches that finish before their moment."""
    out = []
    while len(out) < count * 3:
        cycle = []
        for kind in kinds:
            name, draw = kind
            cycle.append((name, draw(rng)))
        rng.shuffle(cycle)
        out += cycle
    return out


def _report(what: str, kills: int, wanted: int, inside: list, checker: Checker) -> None:
    """Prints the figures (``-s`` shows them); fails on any violation."""
    print(f"\n{what}: {kills} kills, {len(inside)} inside a write ({', '.join(inside)})")
    assert checker.violations == {}, checker.violations
    assert kills == wanted, f"{kills} kills of {wanted}"
    assert len(inside) >= 2, f"only {len(inside)} kills landed inside a write"


@pytest.mark.timeout(900)
def test_train_survives_sigkill_at_seeded_moments(tmp_path):
    extras.require("train", "the kill test")
    out, trace = str(tmp_path / "run"), str(tmp_path / "trace")
    epochs = 3
    argv = ["train", *cli_args(**TINY_TRAIN, epochs=epochs, limit=60), "--output", out]
    rng = random.Random(SEED)
    kinds = [
        ("time", lambda r: r.uniform(0.5, 4.0)),
        ("write", lambda r: r.randint(1, 3)),
        ("write", lambda r: r.randint(2, 5)),
        ("changes", lambda r: os.path.join(out, "log.csv")),  # between the log and the backup
        ("write", lambda r: r.randint(1, 6)),
        ("write", lambda r: r.randint(3, 8)),
    ]
    checker = Checker()

    def check_files(final):
        checker.keras_model(os.path.join(out, "model.keras"))
        checker.json_list(os.path.join(out, "class_names.json"))
        checker.png(os.path.join(out, "learning_curve.png"))
        checker.log(os.path.join(out, "log.csv"), complete_epochs=epochs if final else None)
        checker.backups(out)
        if final:
            assert not os.path.exists(os.path.join(out, "backup")), "a completed run keeps its backup"

    start = time.monotonic()
    kills, inside = _campaign(argv, _moments(rng, kinds, TRAIN_KILLS), out, trace, check_files, tmp_path,
                              TRAIN_KILLS, checker)
    print(f"train kill test: {time.monotonic() - start:.0f} s")
    _report("train", kills, TRAIN_KILLS, inside, checker)


def _directory_format():
    """``(format, artifact name)``: the first directory format this suite's
    backend writes itself (no child process), else any it can write."""
    from keras_densenet.deployment import writers

    possible = []
    for fmt, name in EXPORT_FORMATS:
        try:
            possible.append((writers.backend_for(fmt, BACKEND) != BACKEND, fmt, name))
        except ValueError:
            continue
    if not possible:
        pytest.skip(f"no directory format can be exported here ({', '.join(f for f, _ in EXPORT_FORMATS)})")
    return min(possible)[1:]


@pytest.mark.timeout(900)
def test_export_survives_sigkill_at_seeded_moments(tmp_path):
    fmt, name = _directory_format()
    run = tmp_path / "run"
    shutil.copytree(DIGITS_RUN, run)
    folder, trace = str(tmp_path / "export"), str(tmp_path / "trace")
    os.mkdir(folder)
    out = os.path.join(folder, name)
    argv = ["export", str(run / "model.keras"), "--format", fmt, out]
    staging = os.path.join(folder, f".{name}.tmp-*")
    kinds = [
        ("time", lambda r: r.uniform(0.5, 3.0)),
        ("changes", lambda r: os.path.join(staging, name)),  # the artifact is being written
        ("write", lambda r: 1),  # inside the artifact's write
        ("write", lambda r: r.randint(1, 3)),  # the artifact, its .bin, class_names.json
    ]
    checker, existed = Checker(), [False]

    def check_files(final):
        present = checker.artifact(out)
        if existed[0] and not present:
            checker.note("publish", f"{name} vanished after a kill")
        existed[0] = existed[0] or present
        checker.json_list(os.path.join(folder, "class_names.json"))
        if final:
            assert present, f"a completed export left no {name}"

    start = time.monotonic()
    kills, inside = _campaign(argv, _moments(random.Random(SEED + 1), kinds, EXPORT_KILLS), folder, trace,
                              check_files, tmp_path, EXPORT_KILLS, checker)
    print(f"export ({fmt}) kill test: {time.monotonic() - start:.0f} s")
    _report(f"export --format {fmt}", kills, EXPORT_KILLS, inside, checker)


def _write_log(path, epochs):
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([["epoch", "accuracy"], *[[e, 0.5] for e in range(epochs)]])


def test_a_resume_drops_log_rows_the_backup_does_not_hold(tmp_path):
    """Killed after logging epoch 3 but before its backup: the relaunch
    runs epoch 3 again, so its row goes (each epoch once in log.csv)."""
    from keras_densenet.training.backups import backup_epochs, resume_state

    phase = tmp_path / "backup" / "all"
    phase.mkdir(parents=True)
    (phase / "training_metadata.json").write_text(json.dumps({"epoch": 2, "batch": 0}))
    _write_log(tmp_path / "log.csv", 3)
    assert backup_epochs(str(tmp_path / "backup")) == 2
    state = resume_state(str(tmp_path), str(tmp_path / "log.csv"))
    assert state.resuming and [row["epoch"] for row in state.previous] == [0, 1]
    with open(tmp_path / "log.csv", newline="") as f:
        assert [r[0] for r in csv.reader(f)] == ["epoch", "0", "1"]


def test_a_resume_restores_a_backup_killed_between_its_two_renames(tmp_path):
    """A kill between renaming the old backup aside and the new one in: the
    next run renames the old one back before reading it."""
    from keras_densenet.core import files
    from keras_densenet.training.backups import resume_state

    dead = subprocess.Popen([sys.executable, str(SCRIPTS / "sleep.py")])
    dead.wait(timeout=60)
    aside = tmp_path / "backup" / f".all.old-{files._host_id()}-{dead.pid}-abcd1234"
    aside.mkdir(parents=True)
    (aside / "training_metadata.json").write_text(json.dumps({"epoch": 1, "batch": 0}))
    _write_log(tmp_path / "log.csv", 1)
    state = resume_state(str(tmp_path), str(tmp_path / "log.csv"))
    assert os.listdir(tmp_path / "backup") == ["all"] and len(state.previous) == 1


def test_a_backup_is_saved_whole_and_restored_by_keras(tmp_path):
    """`save_backup` writes Keras' files into a new directory put in place of
    the old one (the epoch before kept as ``*.bkp``); Keras restores it."""
    import keras
    import numpy as np

    from keras_densenet.training.backups import LocalBackupAndRestore, save_backup

    def model():
        m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        m.compile(optimizer="adam", loss="mse")
        return m

    first, backup = model(), str(tmp_path / "backup" / "all")
    x, y = np.ones((4, 3), "float32"), np.zeros((4, 2), "float32")
    first.fit(x, y, epochs=2, verbose=0, callbacks=[LocalBackupAndRestore(backup, double_checkpoint=True,
                                                                          delete_checkpoint=False)])
    assert sorted(os.listdir(backup)) == ["latest.weights.h5", "latest.weights.h5.bkp", "training_metadata.json",
                                          "training_metadata.json.bkp"]
    assert os.listdir(tmp_path / "backup") == ["all"]  # no temporary directory left
    with open(os.path.join(backup, "training_metadata.json")) as f:
        assert json.load(f)["epoch"] == 2
    second = model()
    epochs = []
    second.fit(x, y, epochs=3, verbose=0, callbacks=[
        LocalBackupAndRestore(backup, delete_checkpoint=False),
        keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: epochs.append(e))])
    assert epochs == [2]  # resumed after the 2 saved epochs
    save_backup(second, backup, 3)
    with open(os.path.join(backup, "training_metadata.json")) as f:
        assert json.load(f)["epoch"] == 3
