"""`bench runtimes` (keras_densenet/benchmarks/runtime_bench.py): CPU
inference by runtime. One tiny real run (DenseNet-BC-100 at 32x32, batch 2,
one round of one call) checks the table, the JSON and the ratios; fake child
processes check the alternating rounds and that a failing candidate leaves
the others running; a hidden package is skipped with its reason. No speed is
asserted: figures come from running the command itself."""

import json
import subprocess

import pytest

from keras_densenet import cli
from keras_densenet.benchmarks import bench, runtime_bench, runtime_worker
from keras_densenet.core import extras
from tests.helpers import BACKEND

#: The smallest registered variant (0.8M parameters); its CIFAR stem is
#: also native PyTorch's swapped stem. 8x8 is what its three blocks take.
VARIANT = "densenet_bc_100_k12"
SIZE, BATCH = 8, 2
#: Every candidate runs in a child process of its own (the model is built
#: and the artifacts written by `runtime_bench.build_backend()`, whatever
#: the suite's backend): the real run is the same in every suite, so one
#: suite runs it, with the Keras rows of TensorFlow and torch.
runs_in_one_suite = pytest.mark.one_backend(
    "torch", "tensorflow", "jax", reason="every candidate runs in a child process, the same from any suite")
#: The Keras rows: TensorFlow's and torch's (not JAX's: XLA compiling the
#: model took this test over a minute).
KERAS_BACKENDS = ("tensorflow", "torch")
#: Cheap candidates: the Keras models, the ONNX and OpenVINO exports and
#: native PyTorch (LiteRT int8 calibration and torch.export are slow).
CANDIDATES = tuple("keras_" + b for b in KERAS_BACKENDS) + ("openvino", "onnx", "native_torch")
ROW_KEYS = {"runtime", "version", "rounds", "images_per_s", "min", "max", "ratio", "load_s", "path", "bytes",
            "written_by"}


def _table_rows(text: str) -> dict:
    """Candidate -> cells of each row of the printed table."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0] in runtime_bench.CANDIDATES:
            rows[cells[0]] = cells
    return rows


@pytest.fixture(scope="module")
def runtimes_run(tmp_path_factory):
    if not extras.installed("torch"):
        pytest.skip("native PyTorch, the ratios' reference, needs torch")
    path = tmp_path_factory.mktemp("bench") / "runtimes.json"
    argv = ["bench", "runtimes", "--backends", ",".join(KERAS_BACKENDS), "--variant", VARIANT,
            "--size", str(SIZE), "--batch", str(BATCH), "--rounds", "1", "--iters", "1",
            "--candidates", ",".join(CANDIDATES), "--json", str(path)]
    return argv, path


@runs_in_one_suite
@pytest.mark.timeout(600)  # 150 s on a 2-core machine loaded 3x over (torch); the default is 300 s
def test_runtimes_table_and_json(runtimes_run, capsys):
    argv, path = runtimes_run
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    result = json.loads(path.read_text())["runtimes"]
    assert f"{VARIANT} {SIZE}x{SIZE}, batch {BATCH}, " in out and "1 alternating rounds of 1 calls" in out
    assert set(result["rows"]) | set(result["skipped"]) == set(CANDIDATES)
    assert result["failed"] == {}, result["failed"]
    assert runtime_bench.NATIVE in result["rows"]
    native = result["rows"][runtime_bench.NATIVE]["images_per_s"]
    table = _table_rows(out)
    assert list(table) == list(result["rows"])  # the table's rows, in CANDIDATES order
    for name, row in result["rows"].items():
        assert set(row) == ROW_KEYS
        assert len(row["rounds"]) == 1 and all(r > 0 for r in row["rounds"])
        assert row["min"] <= row["images_per_s"] <= row["max"]
        assert row["ratio"] == pytest.approx(row["images_per_s"] / native)
        assert table[name][3] == f"{row['images_per_s']:.1f} [{row['min']:.1f}-{row['max']:.1f}]"
        assert table[name][4] == f"{row['ratio']:.2f}"
        if name != runtime_bench.NATIVE:  # a file, written by a backend that can write it
            assert row["bytes"] > 0 and row["written_by"] in bench.BACKENDS
    assert result["rows"][runtime_bench.NATIVE]["ratio"] == 1.0
    config, machine = result["config"], result["machine"]
    assert (config["variant"], config["size"], config["batch"], config["rounds"], config["iters"]) == (
        VARIANT, SIZE, BATCH, 1, 1)
    assert config["threads"] >= 1 and f"{config['threads']} threads" in out
    assert f"(machine: {machine['cpu']}, {machine['cpu_count']} cores, AVX-512: " in out


def test_missing_runtime_is_skipped_with_its_reason(monkeypatch, capsys):
    hidden = {"onnxruntime", "nncf"}
    real = extras.installed
    monkeypatch.setattr(extras, "installed", lambda module: module not in hidden and real(module))
    monkeypatch.setattr(runtime_bench, "spawn", lambda *a, **k: pytest.fail("nothing is left to run"))
    options = bench.BenchOptions(backends=[BACKEND], runtimes_candidates=["onnx", "openvino_int8"])
    result = bench.run(["runtimes"], options)["runtimes"]
    assert result["rows"] == {} and result["failed"] == {}
    assert result["skipped"] == {
        "onnx": 'onnxruntime not installed: pip install "keras-densenet[onnx]"',
        "openvino_int8": 'nncf not installed: pip install "keras-densenet[openvino]"',
    }
    out = capsys.readouterr().out
    assert '(onnx skipped: onnxruntime not installed: pip install "keras-densenet[onnx]")' in out
    assert "(openvino_int8 skipped: nncf not installed" in out


def _fake_children(monkeypatch, calls, failing):
    """Replaces the child processes: preparation writes every artifact;
    candidate `failing` fails; the others run at 10 images/s per call so far."""
    def spawn(job, backend, threads):
        if job["job"] == "prepare":
            return {name: {"bytes": 1000} for name in (["keras"] if job["build"] else []) + list(job["artifacts"])}
        calls.append(job["candidate"])
        if job["candidate"] == failing:
            return {"error": "RuntimeError: no kernel"}
        return {"images_per_s": 10.0 * len(calls), "seconds": 1.0, "load_s": 0.5, "version": "1"}

    monkeypatch.setattr(runtime_bench, "spawn", spawn)
    monkeypatch.setattr(extras, "installed", lambda module: True)


def test_rounds_alternate_and_a_failure_goes_on(monkeypatch, capsys):
    calls = []
    _fake_children(monkeypatch, calls, failing="onnx")
    options = bench.BenchOptions(backends=["jax"], rounds=2, runtimes_candidates=["native_torch", "onnx", "keras_jax"])
    result = bench.run(["runtimes"], options)["runtimes"]
    # CANDIDATES order, every round; the failed one leaves after its first try.
    assert calls == ["keras_jax", "onnx", "native_torch", "keras_jax", "native_torch"]
    assert result["failed"] == {"onnx": "RuntimeError: no kernel"}
    rows = result["rows"]
    assert rows["keras_jax"]["rounds"] == [10.0, 40.0] and rows["native_torch"]["rounds"] == [30.0, 50.0]
    assert rows["keras_jax"]["ratio"] == pytest.approx(25.0 / 40.0)
    assert rows["keras_jax"]["written_by"] == runtime_bench.build_backend()
    out = capsys.readouterr().out
    assert out.count("(onnx failed: RuntimeError: no kernel)") == 1
    assert "| keras_jax | Keras predict_on_batch, JAX | model.keras (" in out and "| 25.0 [10.0-40.0] | 0.62 |" in out


def test_bench_runs_every_child_in_a_process_of_its_own(monkeypatch):
    """The child's environment: the Keras backend of Keras rows, the thread count."""
    seen = []

    def run(cmd, env, **kwargs):
        seen.append((cmd[1:3], env.get("KERAS_BACKEND"), env["OMP_NUM_THREADS"]))
        result = {"images_per_s": 1.0, "seconds": 1.0, "load_s": 0, "version": "1"}
        out = runtime_worker.RESULT_PREFIX + json.dumps(result)
        return subprocess.CompletedProcess(cmd, 0, stdout="noise\n" + out + "\n", stderr="")

    monkeypatch.setattr(runtime_bench.subprocess, "run", run)
    job = {"job": "time", "candidate": "keras_torch"}
    assert runtime_bench.spawn(job, "torch", 3)["images_per_s"] == 1.0
    assert seen == [(["-m", "keras_densenet.benchmarks.runtime_worker"], "torch", "3")]


def test_its_own_torch_export_file_is_timed(tmp_path):
    """torch.export.load unpickles: open_artifact refuses a .pt2 file unless
    trusted, and the benchmark trusts the files it wrote."""
    import os

    torch = pytest.importorskip("torch")

    class Mean(torch.nn.Module):
        def forward(self, x):
            return x.mean(dim=(1, 2))

    path = str(tmp_path / "model.pt2")
    torch.export.save(torch.export.export(Mean(), (torch.zeros(BATCH, 4, 4, 3),)), path)
    threads = torch.get_num_threads()
    job = {"job": "time", "candidate": "torch_export", "path": path, "variant": VARIANT, "size": 4, "batch": BATCH,
           "iters": 2, "threads": os.cpu_count()}  # all CPUs: the process's affinity stays
    try:
        result = runtime_worker.time_here(job)
    finally:
        torch.set_num_threads(threads)
    assert result["images_per_s"] > 0 and result["version"].startswith("torch ")


@pytest.mark.parametrize("argv, option", [
    (["--candidates", "tensorrt"], "--candidates"),
    (["--candidates", ","], "--candidates"),
    (["--size", "16"], "--size"),  # DenseNet-121 needs 32
    (["--batch", "0"], "--batch"),
    (["--threads", "0"], "--threads"),
    (["--variant", "densenet7"], "densenet7"),
])
def test_bad_runtimes_options_exit_2(argv, option, capsys):
    assert cli.main(["bench", "runtimes", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("keras-densenet bench runtimes: error:") and option in err[0]


def test_runtimes_defaults():
    options = bench.BenchOptions()
    assert (options.runtimes_variant, options.runtimes_size, options.runtimes_batch) == ("densenet121", 224, 16)
    assert options.runtimes_candidates == runtime_bench.CANDIDATES and options.runtimes_threads is None
    args = cli.build_parser().parse_args(["bench", "runtimes"])
    assert args.runtimes_candidates == ",".join(runtime_bench.CANDIDATES)
