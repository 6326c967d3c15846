"""`bench step` (keras_densenet/benchmarks/bench.py): the training-step
time of the model `keras-densenet train` fits by default. A tiny real run
checks the table and JSON structure and that the model is the trainer's;
a fake worker checks the oneDNN rows and the child's environment without
starting TensorFlow. No speed is asserted: figures come from running the
command itself."""

import json
import subprocess

import pytest

from keras_densenet import cli
from keras_densenet.benchmarks import bench, bench_worker
from keras_densenet.data.datasets import MIN_IMAGE_SIZE
from tests.helpers import BACKEND

#: The smallest size the bench takes, 16 where the trainer allows it.
SIZE = max(16, MIN_IMAGE_SIZE)
STEPS = 2
#: The real runs start the measured work in child processes of the bench's
#: own: what they check (the table, the JSON, the trainer's model, one
#: process per graph) is the parent's bookkeeping, so one suite runs each.
#: The step table runs in TensorFlow's, the backend with the oneDNN row
#: (the other rows' labels: `test_onednn_rows_set_the_tensorflow_childs_environment`).
step_suite = pytest.mark.one_backend(
    "tensorflow", "torch", "jax", reason="the step table's bookkeeping does not depend on the suite")
#: `bench time` in torch's, where its two child processes start fastest
#: (on JAX, XLA compiles the two DenseNet-BC-100 steps in ~50 s).
time_suite = pytest.mark.one_backend(
    "torch", "tensorflow", "jax", reason="backend-independent dispatch to child processes")


@pytest.fixture(scope="module")
def step_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "step.json"
    argv = ["bench", "step", "--backends", BACKEND, "--sizes", str(SIZE), "--steps", str(STEPS), "--json", str(path)]
    return argv, path


@step_suite
def test_step_table_and_json(step_run, capsys):
    argv, path = step_run
    assert cli.main(argv) == 0
    table = capsys.readouterr().out
    assert f"| backend | {SIZE}x{SIZE} |" in table
    assert f"median [min-max] of {STEPS} train_on_batch steps" in table
    result = json.loads(path.read_text())["step"]
    assert set(result["rows"]) == {BACKEND}
    row = result["rows"][BACKEND]
    run = row["sizes"][str(SIZE)]
    assert len(run["steps_ms"]) == STEPS and all(t > 0 for t in run["steps_ms"])
    assert run["min_ms"] <= run["ms_per_step"] <= run["max_ms"]
    assert f"| {BACKEND} | {run['ms_per_step']:.1f} [{run['min_ms']:.1f}-{run['max_ms']:.1f}] |" in table
    assert result["config"]["batch_size"] == bench.TRAIN_DEFAULTS.batch_size
    assert result["config"]["image_sizes"] == [SIZE] and result["config"]["steps"] == STEPS
    assert row["onednn"] == ("default" if BACKEND == "tensorflow" else None)  # oneDNN: TensorFlow only
    assert row["backend"] == BACKEND and row["params"] > 0
    machine = result["machine"]
    assert machine["cpu_count"] >= 1 and machine["avx512"] in (True, False, None)
    assert f"{machine['cpu_count']} cores, AVX-512: " in table


@step_suite
def test_step_measures_the_trainers_model(step_run):
    """The child's model has the parameters and name of `build_classifier`'s."""
    import dataclasses

    from keras_densenet.training import train

    argv, path = step_run
    if not path.exists():
        assert cli.main(argv) == 0
    row = json.loads(path.read_text())["step"]["rows"][BACKEND]
    cfg = dataclasses.replace(train.TrainConfig(), image_size=SIZE)
    model, _ = train.build_classifier(cfg, bench.DIGITS_CLASSES, bench.DIGITS_CHANNELS)
    assert row["params"] == model.count_params() and row["model"] == model.name


def test_machine_reports_avx512_from_cpuinfo():
    from keras_densenet.benchmarks import throughput

    info = throughput.machine()
    try:
        with open("/proc/cpuinfo") as f:
            flags = next(line.split(":", 1)[1].split() for line in f if line.startswith("flags"))
    except (OSError, StopIteration):
        assert info["avx512"] is None
        return
    assert info["avx512"] == ("avx512f" in flags)


def _fake_worker(monkeypatch, envs):
    """Replaces the worker process: records each child's environment and
    answers a well-formed step result."""
    def run(cmd, env, **kwargs):
        job = json.loads(cmd[-1])
        envs.append((env["KERAS_BACKEND"], job["image_size"], env.get("TF_ENABLE_ONEDNN_OPTS")))
        ms = float(len(envs))
        out = {"ms_per_step": ms, "min_ms": ms - 0.5, "max_ms": ms + 1, "steps_ms": [ms], "model": "m", "params": 1,
               "machine": {"cpu": "cpu", "cpu_count": 2, "avx512": True, "keras": "3", env["KERAS_BACKEND"]: "1"},
               "tf_enable_onednn_opts": env.get("TF_ENABLE_ONEDNN_OPTS")}
        return subprocess.CompletedProcess(cmd, 0, stdout=json.dumps(out) + "\n", stderr="")

    monkeypatch.setattr(bench_worker.subprocess, "run", run)


def test_onednn_rows_set_the_tensorflow_childs_environment(monkeypatch, capsys):
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "1")  # "default" must not inherit it
    envs = []
    _fake_worker(monkeypatch, envs)
    options = bench.BenchOptions(backends=["jax", "tensorflow"], step_sizes=[32, 64], onednn=["default", "on", "off"])
    result = bench.run(["step"], options)["step"]
    assert list(result["rows"]) == ["jax", "tensorflow", "tensorflow (oneDNN on)", "tensorflow (oneDNN off)"]
    assert envs == [("jax", 32, "1"), ("jax", 64, "1"),  # other backends: the environment as it is
                    ("tensorflow", 32, None), ("tensorflow", 64, None),
                    ("tensorflow", 32, "1"), ("tensorflow", 64, "1"),
                    ("tensorflow", 32, "0"), ("tensorflow", 64, "0")]
    assert result["rows"]["tensorflow (oneDNN off)"]["onednn"] == "off"
    assert result["rows"]["tensorflow"]["onednn"] == "default" and result["rows"]["jax"]["onednn"] is None
    assert result["rows"]["jax"]["versions"] == {"keras": "3", "jax": "1"}
    table = capsys.readouterr().out
    assert "| backend | 32x32 | 64x64 |\n|---|---:|---:|" in table
    assert "| tensorflow (oneDNN on) | 5.0 [4.5-6.0] | 6.0 [5.5-7.0] |" in table
    assert "(machine: cpu, 2 cores, AVX-512: yes" in table


def test_default_step_size_is_the_trainers():
    assert bench.BenchOptions().step_sizes == (bench.TRAIN_DEFAULTS.image_size,)
    args = cli.build_parser().parse_args(["bench", "step"])
    assert args.step_sizes == str(bench.TRAIN_DEFAULTS.image_size) and args.step_count == 20


@pytest.mark.parametrize("argv, option", [
    (["--sizes", "0"], "--sizes"),
    (["--sizes", "7"], "--sizes"),
    (["--sizes", f"{SIZE},{MIN_IMAGE_SIZE - 1}"], "--sizes"),
    (["--sizes", "big"], "--sizes"),
    (["--sizes", ","], "--sizes"),
    (["--onednn", "fast"], "--onednn"),
    (["--steps", "0"], "--steps"),
])
def test_bad_step_options_exit_2(argv, option, capsys):
    assert cli.main(["bench", "step", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("keras-densenet bench step: error:") and option in err[0]


@time_suite
@pytest.mark.timeout(600)  # 95 s on a 2-core machine loaded 3x over (torch); the default is 300 s
def test_time_measure_runs_both_graphs(capsys):
    """`bench time` end to end on a tiny input: a row per backend, the
    standard and the memory-efficient graph each timed in its own process."""
    argv = ["bench", "time", "--backends", BACKEND, "--size", "8", "--steps", "1"]
    assert cli.main(argv) == 0
    row = [line for line in capsys.readouterr().out.splitlines() if line.startswith(f"| {BACKEND} |")]
    assert len(row) == 1
    times = [float(cell.rstrip(" s")) for cell in row[0].strip("|").split("|")[1:3]]
    assert all(t > 0 for t in times), row
