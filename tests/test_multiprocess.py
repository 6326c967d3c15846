"""Several processes (keras_densenet.core.cluster, distribute): tested over loopback.

The JAX tests start real multi-process jobs on this machine: 2 processes
with 2 CPU devices each, Keras' three variables set in each, gloo
collectives, a free loopback port. Every wait is bounded, so a hang fails
the test, not the run. TensorFlow's MultiWorkerMirroredStrategy is kept as
an expected failure (Keras 3 cannot fit under it).
"""

import contextlib
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from keras_densenet.core import cluster
from tests.helpers import ROOT, child_env, job_env, log_rows, wait_all

#: Bound of one job of the tests (2 processes compiling a tiny model each).
JOB_TIMEOUT_S = 300
#: How soon the processes left must stop after one is killed (the bound docs/several-hosts.md states).
LOST_PROCESS_BOUND_S = 120

only_jax = pytest.mark.backends("jax", reason="multi-process jobs: keras.distribution on JAX")
only_tf = pytest.mark.backends("tensorflow", reason="tf.distribute: TensorFlow backend")
#: Child-process scripts of these tests.
STEP_SCRIPT = os.path.join(ROOT, "tests", "scripts", "multiprocess_step.py")
TF_WORKER_SCRIPT = os.path.join(ROOT, "tests", "scripts", "tf_multi_worker.py")


def _free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _job_env(port: int, process_id: int, num_processes: int = 2) -> dict:
    return job_env(f"localhost:{port}", process_id, num_processes)


def _start(command: list, env: dict, log, err=subprocess.STDOUT) -> subprocess.Popen:
    return subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=err, text=True)


def _cli(*args) -> list:
    return [sys.executable, "-m", "keras_densenet.cli", "--backend", "jax", *args]


# --- the job and the shares (backend-independent) ----------------------------


def test_job_comes_from_keras_variables_and_bad_values_name_the_variable():
    env = {cluster.JOB_ADDRESSES: "192.0.2.1:1234,192.0.2.2:1234", cluster.NUM_PROCESSES: "2",
           cluster.PROCESS_ID: "1"}
    job = cluster.job_from_environment(env)
    assert (job.coordinator, job.num_processes, job.process_id, job.is_writer) == ("192.0.2.1:1234", 2, 1, False)
    assert cluster.job_from_environment({}) is None
    bad = {
        cluster.PROCESS_ID: ({**env, cluster.PROCESS_ID: "2"}, "must be below"),
        cluster.NUM_PROCESSES: ({**env, cluster.NUM_PROCESSES: "two"}, "must be an integer"),
        cluster.JOB_ADDRESSES: ({**env, cluster.JOB_ADDRESSES: "192.0.2.1"}, "host:port"),
    }
    for name, (values, text) in bad.items():
        with pytest.raises(ValueError, match=name) as info:
            cluster.job_from_environment(values)
        assert text in str(info.value)
    with pytest.raises(ValueError, match="lists 2 addresses but"):
        cluster.job_from_environment({**env, cluster.NUM_PROCESSES: "3"})
    with pytest.raises(ValueError, match="missing: KERAS_DISTRIBUTION_PROCESS_ID"):
        cluster.job_from_environment({k: v for k, v in env.items() if k != cluster.PROCESS_ID})


@pytest.mark.parametrize("n, processes, devices", [(1437, 2, 2), (360, 2, 1), (1000, 3, 4), (16, 4, 4)])
def test_shares_are_disjoint_equal_fixed_by_the_seed_and_cover_the_split(n, processes, devices):
    shares = [cluster.shard_indices(n, processes, p, seed=3, multiple=devices) for p in range(processes)]
    together = np.concatenate(shares)
    assert len(set(together.tolist())) == len(together)  # disjoint
    assert {len(s) for s in shares} == {cluster.share_size(n, processes, devices)}  # equal
    assert len(shares[0]) % devices == 0
    assert n - len(together) < processes * devices  # everything but the remainder
    again = [cluster.shard_indices(n, processes, p, seed=3, multiple=devices) for p in range(processes)]
    assert all(np.array_equal(a, b) for a, b in zip(shares, again, strict=True))  # same every epoch
    other_seed = cluster.shard_indices(n, processes, 0, seed=4, multiple=devices)
    assert not np.array_equal(other_seed, shares[0])
    with pytest.raises(ValueError, match="cannot give each of"):
        cluster.shard_indices(processes * devices - 1, processes, 0, seed=0, multiple=devices)


@only_tf  # tf.data itself; the same on every backend
def test_image_folder_shares_cover_each_epoch_once(tmp_path):
    from PIL import Image

    from keras_densenet.data import datasets as data

    # 2 classes x 13 images, each of one gray level of its own: the level names the file.
    for c in range(2):
        os.makedirs(tmp_path / f"c{c}")
        for i in range(13):
            Image.fromarray(np.full((8, 8), 7 * (13 * c + i) + 3, "uint8")).save(tmp_path / f"c{c}" / f"{i}.png")
    shares = [data.image_folder_datasets(tmp_path, 8, batch_size=4, validation_split=0.25, seed=5,
                                         channels=1, shard=(2, p, 2))[:2] for p in range(2)]
    for _epoch in range(2):  # the shares are disjoint in every epoch
        seen = {"train": [], "val": []}
        for train_ds, val_ds in shares:
            for name, ds in (("train", train_ds), ("val", val_ds)):
                batches = [x.numpy() for x, _ in ds]
                assert all(len(b) % 2 == 0 for b in batches)  # splits over 2 local devices
                # (the brightest pixel: augmentation shifts images by under a pixel)
                seen[name].append([int(round(v)) for b in batches for v in b.max(axis=(1, 2, 3))])
        for share_0, share_1 in seen.values():
            assert len(share_0) == len(share_1) > 0  # the same steps in both processes
            assert not set(share_0) & set(share_1)  # disjoint
        total = len(seen["train"][0]) * 2 + len(seen["val"][0]) * 2
        assert 26 - total < 2 * 2 * 2  # every image but each split's remainder (< 4 devices)


# --- JAX: one step, two processes against one --------------------------------



def _weights(path, key):
    with np.load(path) as f:
        return [f[f"{key}_{i}"] for i in range(sum(k.startswith(key + "_") for k in f.files))]


def _max_diff(a, b):
    return max(float(np.max(np.abs(u - v))) for u, v in zip(a, b, strict=True))


@only_jax
@pytest.mark.timeout(2 * JOB_TIMEOUT_S + 60)  # a 2-process job, then one process
def test_two_processes_take_the_step_of_one_process_on_as_many_devices(tmp_path):
    script = STEP_SCRIPT
    port = _free_port()
    with open(tmp_path / "job.log", "w") as log:
        procs = [_start([sys.executable, str(script), "2", str(tmp_path / "two.npz")], _job_env(port, p), log)
                 for p in range(2)]
        assert wait_all(procs, JOB_TIMEOUT_S) == [0, 0], (tmp_path / "job.log").read_text()[-3000:]
    one = subprocess.run([sys.executable, str(script), "4", str(tmp_path / "one.npz")], env=child_env(),
                         cwd=ROOT, capture_output=True, text=True, timeout=JOB_TIMEOUT_S)
    assert one.returncode == 0, one.stderr[-3000:]
    two_out = json.loads((tmp_path / "job.log").read_text().strip().splitlines()[-1])
    one_out = json.loads(one.stdout.strip().splitlines()[-1])
    assert (two_out["devices"], two_out["processes"], one_out["devices"], one_out["processes"]) == (4, 2, 4, 1)
    two = _weights(tmp_path / "two.npz", "same")
    same, reordered = _weights(tmp_path / "one.npz", "same"), _weights(tmp_path / "one.npz", "reordered")
    floor = _max_diff(same, reordered)  # the same batch in another order: float32 round-off
    assert floor < 1e-5
    # Two processes differ from one by no more than that.
    assert _max_diff(two, same) <= 10 * floor + 1e-7, (_max_diff(two, same), floor)
    assert abs(two_out["loss_same"] - one_out["loss_same"]) <= 10 * abs(
        one_out["loss_reordered"] - one_out["loss_same"]) + 1e-6


# --- JAX: the CLI job: one writer, a lost process, a relaunch ----------------

#: A tiny job: 640 training digits, 320 per process, 10 steps per epoch.
_TRAIN = ["train", "--distribute", "--cpu-devices", "2", "--depth", "10", "--growth-rate", "4",
          "--batch-size", "16", "--image-size", "8", "--limit", "800", "--epochs", "8",
          "--connect-timeout", "120"]


def _launch_training(tmp_path, port: int, tag: str) -> tuple:
    """Starts the 2-process job; stdout to ``{tag}{p}.log``, stderr to ``{tag}{p}.err``."""
    logs = [open(tmp_path / f"{tag}{p}.{kind}", "w") for p in range(2) for kind in ("log", "err")]
    procs = [_start(_cli(*_TRAIN, "--output", str(tmp_path / f"out{p}")), _job_env(port, p), *logs[2 * p:2 * p + 2])
             for p in range(2)]
    return procs, logs


@only_jax
@pytest.mark.timeout(2 * JOB_TIMEOUT_S + LOST_PROCESS_BOUND_S + 60)  # a job, a loss, a relaunch
def test_cli_job_one_writer_a_lost_process_stops_the_other_and_the_relaunch_resumes(tmp_path):
    procs, logs = _launch_training(tmp_path, _free_port(), "first")
    deadline = time.monotonic() + JOB_TIMEOUT_S
    # Kill process 1 once both processes are past the first epoch's backup.
    while time.monotonic() < deadline and not (
        log_rows(tmp_path / "out0")
        and os.path.exists(tmp_path / "out1" / "backup" / "process-1" / "all" / "training_metadata.json")
    ):
        assert all(p.poll() is None for p in procs), (tmp_path / "first0.err").read_text()[-3000:]
        time.sleep(0.1)
    procs[1].kill()
    killed = time.monotonic()
    try:
        code = procs[0].wait(timeout=LOST_PROCESS_BOUND_S)
    finally:
        wait_all(procs, 10)
        [log.close() for log in logs]
    stopped_after = time.monotonic() - killed
    first0 = (tmp_path / "first0.err").read_text()
    assert code == 1, first0[-3000:]
    errors = [line for line in first0.splitlines() if "error:" in line]
    assert len(errors) == 1 and "lost process 1 of the 2-process job" in errors[0], first0[-3000:]
    assert "Traceback" not in first0
    assert stopped_after < LOST_PROCESS_BOUND_S
    done = len(log_rows(tmp_path / "out0"))
    assert 1 <= done < 8  # killed mid-run

    # The same commands again: they resume; nothing completed is lost or repeated.
    procs, logs = _launch_training(tmp_path, _free_port(), "second")
    try:
        codes = wait_all(procs, JOB_TIMEOUT_S)
    finally:
        [log.close() for log in logs]
    second0 = (tmp_path / "second0.log").read_text()
    assert codes == [0, 0], (tmp_path / "second0.err").read_text()[-3000:]
    first_line = second0.splitlines()[0]
    assert "in 2 processes" in first_line and "process 0" in first_line and "global batch 64" in first_line
    resumed = [line for line in second0.splitlines() if line.startswith("resuming from epoch")]
    assert len(resumed) == 1 and int(resumed[0].split()[3]) in (done, done + 1), second0[-3000:]
    assert [int(r["epoch"]) for r in log_rows(tmp_path / "out0")] == list(range(8))
    # Only process 0 wrote outputs; process 1 kept only its backup, now removed.
    assert sorted(os.listdir(tmp_path / "out0")) == ["class_names.json", "learning_curve.png", "log.csv",
                                                     "model.keras"]
    assert os.listdir(tmp_path / "out1") == []
    assert float(log_rows(tmp_path / "out0")[-1]["val_accuracy"]) > 0.5  # it learned
    # Validation is global: process 1's best of this run is that of process 0's log rows.
    resumed_at = int(resumed[0].split()[3]) - 1
    rows = log_rows(tmp_path / "out0")[resumed_at:]
    best_1 = [line for line in (tmp_path / "second1.log").read_text().splitlines()
              if line.startswith("best validation accuracy")]
    assert best_1 == [f"best validation accuracy: {max(float(r['val_accuracy']) for r in rows):.4f}"]
    assert "process 1 of 2: done (process 0 wrote the outputs)" in (tmp_path / "second1.log").read_text()


# --- JAX: a job that cannot form fails fast ---------------------------------


@only_jax
def test_an_unreachable_coordinator_fails_fast_with_one_line(tmp_path):
    port = _free_port()  # nothing listens there
    started = time.monotonic()
    proc = subprocess.run(_cli(*_TRAIN, "--output", str(tmp_path / "out"), "--connect-timeout", "5"),
                          env=_job_env(port, 1), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert f"could not form the job within 5 s: check that localhost:{port}" in lines[0]
    assert time.monotonic() - started < 90
    assert not os.path.exists(tmp_path / "out" / "model.keras")


# --- TensorFlow: MultiWorkerMirroredStrategy --------------------------------



class KerasMultiWorkerFailure(Exception):
    """Keras 3's fit under MultiWorkerMirroredStrategy, as reported upstream."""


@only_tf
@pytest.mark.xfail(raises=KerasMultiWorkerFailure, strict=True,
                   reason="Keras 3 fit under tf.distribute.MultiWorkerMirroredStrategy: "
                          "https://github.com/keras-team/keras/issues/20585")
@pytest.mark.timeout(JOB_TIMEOUT_S + 60)
def test_tf_multi_worker_mirrored_strategy_over_loopback(tmp_path):
    ports = [_free_port(), _free_port()]
    cluster_spec = {"worker": [f"localhost:{p}" for p in ports]}
    with open(tmp_path / "w.log", "w") as log:
        configs = [json.dumps({"cluster": cluster_spec, "task": {"type": "worker", "index": i}}) for i in range(2)]
        procs = [_start([sys.executable, TF_WORKER_SCRIPT], child_env(TF_CONFIG=c), log) for c in configs]
        codes = wait_all(procs, JOB_TIMEOUT_S)
    text = (tmp_path / "w.log").read_text()
    if codes != [0, 0]:
        failure = next((line for line in text.splitlines() if line.startswith("ValueError")), text[-500:])
        if "PerReplica" in text and "unsupported type" in text:
            raise KerasMultiWorkerFailure(failure)  # the reported error, exactly
        pytest.fail(f"another failure than the one reported upstream: {text[-3000:]}")
    assert text.count("loss") == 2


@only_tf
def test_tf_cli_refuses_a_multi_worker_tf_config_naming_the_report(tmp_path):
    tf_config = json.dumps({"cluster": {"worker": ["localhost:1", "localhost:2"]},
                            "task": {"type": "worker", "index": 0}})
    proc = subprocess.run(
        [sys.executable, "-m", "keras_densenet.cli", "--backend", "tensorflow", "train", "--distribute",
         "--output", str(tmp_path / "out")],
        env=child_env(TF_CONFIG=tf_config), cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "keras-team/keras/issues/20585" in proc.stderr and "TF_CONFIG describes 2 workers" in proc.stderr


@pytest.mark.parametrize("args, env, expected", [
    (["--distribute"], {cluster.JOB_ADDRESSES: "localhost:1", cluster.NUM_PROCESSES: "2", cluster.PROCESS_ID: "2"},
     "KERAS_DISTRIBUTION_PROCESS_ID must be below"),
    ([], {cluster.JOB_ADDRESSES: "localhost:1", cluster.NUM_PROCESSES: "2", cluster.PROCESS_ID: "0"},
     "add --distribute"),
    (["--cpu-devices", "2"], {}, "--cpu-devices applies with --distribute only"),
    (["--distribute", "--connect-timeout", "0"], {}, "--connect-timeout"),
    (["--distribute"], {cluster.NUM_PROCESSES: "2"}, "missing: KERAS_DISTRIBUTION_JOB_ADDRESSES"),
])
def test_cli_checks_the_job_options_before_anything_starts(tmp_path, monkeypatch, capsys, args, env, expected):
    from keras_densenet import cli

    for name in cluster.JOB_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code = cli.main(["train", *args, "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err
    assert not os.path.exists(tmp_path / "out")
