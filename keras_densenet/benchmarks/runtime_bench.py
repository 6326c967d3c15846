"""CPU inference by runtime: ``keras-densenet bench runtimes``.

Images per second of one registered variant (default DenseNet-121,
224x224, batch 16) through every way this package can run it on a CPU:

* Keras ``predict_on_batch`` on each backend (``keras_tensorflow``,
  ``keras_jax``, ``keras_torch``), loading the benchmark's ``.keras`` file;
* its serving artifacts (`keras_densenet.deployment.writers`), run by
  `keras_densenet.deployment.runtimes.open_artifact`: LiteRT float32 and
  int8 (``litert``, ``litert_int8``), OpenVINO float32 and int8 through NNCF
  (``openvino``, ``openvino_int8``), ONNX Runtime (``onnx``) and
  ``torch.export`` (``torch_export``);
* native PyTorch eager (``native_torch``): the same architecture as a
  ``torch.nn.Module`` (`keras_densenet.benchmarks.torch_densenet`), ``eval()``,
  ``torch.no_grad()``, channels-first input. The table's ratios are to it.

This module plans, runs and reports; each job runs in a child process of
`keras_densenet.benchmarks.runtime_worker`, which measures. Preparation
writes the ``.keras`` file and each artifact under a backend that can write
it (`writers.backend_for`), one child process per writing backend; int8
artifacts are calibrated on random images, so the figures are speed only
(int8 accuracy is checked on the digits by ``keras-densenet export
--quantize int8``).

Timing runs every candidate in a fresh process per round, rounds
alternating over the candidates (so no two thread pools ever share the
CPUs, and load changes hit all alike), all on the same thread count
(``OMP_NUM_THREADS`` here, each runtime's own setting in the worker);
images/s is ``batch * iters / seconds``.

A candidate whose package is missing is skipped with its reason; one that
fails prints its error in one line and the others go on.

Example::

    keras-densenet bench runtimes --json runtimes.json
    keras-densenet bench runtimes --candidates onnx,openvino,native_torch \\
        --size 64 --rounds 3 --iters 3
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
from typing import Optional

from keras_densenet.benchmarks import runtime_worker
from keras_densenet.benchmarks.runtime_worker import (
    ARTIFACTS,
    CALIBRATION_IMAGES,
    KERAS_PREFIX,
    NATIVE,
    RESULT_PREFIX,
    SEED,
    WARMUP_CALLS,
    artifact_path,
)
from keras_densenet.core import backends as backends_lib
from keras_densenet.core import extras, registry
from keras_densenet.deployment import runtimes, writers

#: Every candidate, in table order.
CANDIDATES = ("keras_tensorflow", "keras_jax", "keras_torch", "litert", "litert_int8", "openvino",
              "openvino_int8", "onnx", "torch_export", "native_torch")
#: Modules a candidate needs beyond its writing backend's (`writers.WRITERS`):
#: its runtime, and what int8 quantization imports.
RUNTIME_MODULES = {
    "litert": ("ai_edge_litert",), "litert_int8": ("ai_edge_litert", "tensorflow"), "openvino": ("openvino",),
    "openvino_int8": ("openvino", "nncf"), "onnx": ("onnxruntime",), "torch_export": ("torch",),
    "native_torch": ("torch",),
}
#: How the table names what runs each candidate.
LABELS = {
    "keras_tensorflow": "Keras predict_on_batch, TensorFlow", "keras_jax": "Keras predict_on_batch, JAX",
    "keras_torch": "Keras predict_on_batch, PyTorch", "litert": "LiteRT float32", "litert_int8": "LiteRT int8",
    "openvino": "OpenVINO float32", "openvino_int8": "OpenVINO int8 (NNCF)", "onnx": "ONNX Runtime float32",
    "torch_export": "torch.export float32", "native_torch": "PyTorch eager float32",
}
#: Backends that build the model and write the artifacts, by preference:
#: TensorFlow writes LiteRT, OpenVINO and ONNX (tf2onnx) itself; JAX's ONNX
#: exporter wrote a MaxPool that ONNX Runtime refused ("Unsupported pooling
#: size"). The others go to `writers.backend_for`'s choice.
WRITER_PREFERENCE = ("tensorflow", "torch", "jax")
#: A child process running longer than this is stopped and reported.
CHILD_TIMEOUT_S = 3600
MB = 1e6
#: Describes the `bench runtimes --dir` content, so a later run reuses what matches.
MANIFEST = "manifest.json"


# --- planning ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Setup:
    """What one run measures (from `keras_densenet.benchmarks.bench.BenchOptions`)."""

    variant: str
    size: int
    batch: int
    rounds: int
    iters: int
    threads: int

    @classmethod
    def from_options(cls, options) -> Setup:
        threads = options.runtimes_threads or os.cpu_count() or 1
        return cls(options.runtimes_variant, options.runtimes_size, options.runtimes_batch, options.rounds,
                   options.iters, threads)


def native_skip_reason(variant: str) -> Optional[str]:
    """Why native PyTorch cannot run `variant` (``None``: it can).

    torchvision's DenseNet is the DenseNet-BC family (bottleneck layers,
    transitions halving the channels); the CIFAR stem is swapped in
    (`runtime_worker.native_module`)."""
    arch = registry.get_variant(variant).arch
    if not arch.bottleneck or arch.compression != 0.5:
        return f"{variant} is not a DenseNet-BC with compression 0.5, as torchvision's DenseNet is"
    return None


#: The pip extra of each module a candidate needs: the writers' and the runtimes'.
MODULE_EXTRAS = {**writers.MODULE_EXTRAS, **{m.split(".")[0]: extra for extra, m in runtimes.RUNTIMES.values()}}


def _missing_line(modules) -> str:
    """``"nncf not installed: pip install ..."`` for the missing `modules`."""
    hints = sorted({extras.install_hint(MODULE_EXTRAS.get(m, m)) for m in modules})
    return f"{', '.join(modules)} not installed: {'; '.join(hints)}"


def build_backend() -> Optional[str]:
    """The backend that builds the ``.keras`` file and writes the artifacts
    it can: the first installed of `WRITER_PREFERENCE` (``None``: none is)."""
    return next((b for b in WRITER_PREFERENCE if extras.installed(b)), None)


def plan(options) -> tuple:
    """``(runnable, skipped)``: candidate -> its writing backend (``None``
    for native PyTorch), and candidate -> why it is skipped.

    Keras candidates run only for backends among ``options.backends``."""
    builder = build_backend()
    runnable, skipped = {}, {}
    for name in (c for c in CANDIDATES if c in options.runtimes_candidates):
        if name.startswith(KERAS_PREFIX):
            backend = name[len(KERAS_PREFIX):]
            if backend not in options.backends:
                continue
            if not extras.installed(backend):
                skipped[name] = _missing_line([backend])
                continue
            runnable[name] = builder
            continue
        missing = [m for m in RUNTIME_MODULES[name] if not extras.installed(m)]
        if missing:
            skipped[name] = _missing_line(missing)
        elif name == NATIVE and native_skip_reason(options.runtimes_variant):
            skipped[name] = native_skip_reason(options.runtimes_variant)
        elif name == NATIVE:
            runnable[name] = None
        else:
            try:
                runnable[name] = writers.backend_for(ARTIFACTS[name][0], active=builder)
            except ValueError as e:  # no installed backend writes the format
                skipped[name] = str(e)
    return runnable, skipped


# --- child processes -----------------------------------------------------------


def _thread_env(threads: int) -> dict:
    """Environment pinning OpenMP/MKL pools (torch, oneDNN) to `threads`."""
    return {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
            "TF_NUM_INTRAOP_THREADS": str(threads)}


def spawn(job: dict, backend: Optional[str], threads: int) -> dict:
    """`runtime_worker.run_job(job)` in a fresh process (on `backend`, when
    given); ``{"error": one line}`` when the process fails."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", XLA_PYTHON_CLIENT_PREALLOCATE="false", **_thread_env(threads))
    if backend is not None:
        env["KERAS_BACKEND"] = backend
    try:
        proc = subprocess.run([sys.executable, "-m", runtime_worker.__name__, json.dumps(job)], env=env,
                              capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"stopped after {CHILD_TIMEOUT_S} s"}
    lines = [line[len(RESULT_PREFIX):] for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {proc.returncode}: {tail[:300]}"}
    return json.loads(lines[-1])


# --- preparation: the .keras file and the artifacts ---------------------------


def _manifest_config(setup: Setup) -> dict:
    return {"variant": setup.variant, "size": setup.size, "seed": SEED, "calibration": CALIBRATION_IMAGES}


def _reusable(directory: str, setup: Setup) -> dict:
    """Files a previous run left in `directory` for the same model:
    ``{"keras" or candidate: {"bytes", "backend"}}`` (empty when none)."""
    try:
        with open(os.path.join(directory, MANIFEST)) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return {}
    if manifest.get("config") != _manifest_config(setup) or not os.path.isfile(os.path.join(directory, "model.keras")):
        return {}  # another model: everything is written again
    paths = {k: os.path.join(directory, "model.keras") if k == "keras" else artifact_path(directory, k)
             for k in manifest.get("files", {}) if k == "keras" or k in ARTIFACTS}
    return {k: dict(manifest["files"][k], path=p) for k, p in paths.items() if os.path.exists(p)}


def prepare(runnable: dict, builder: str, setup: Setup, directory: str, say) -> tuple:
    """Writes the ``.keras`` file (on `builder`) and every runnable artifact
    (on its writing backend) into `directory`, one process per backend.

    Returns:
        ``(files, failed)``: ``{"keras" or candidate: {"path", "bytes",
        "backend"}}`` and ``{"keras" or candidate: one line}``.
    """
    if all(writer is None for writer in runnable.values()):  # native PyTorch only: no file
        return {}, {}
    files, failed = _reusable(directory, setup), {}
    keras_path = os.path.join(directory, "model.keras")
    by_backend = {builder: {}}  # backend -> {candidate: path}; the builder first, it makes the model
    for name, backend in runnable.items():
        if name in ARTIFACTS and name not in files:
            by_backend.setdefault(backend, {})[name] = artifact_path(directory, name)
    _remove_stale(directory, files)
    for backend, todo in by_backend.items():
        build = "keras" not in files
        if not todo and not build:
            continue
        say(f"(preparing with the {backend} backend: {', '.join((['model.keras'] if build else []) + list(todo))})")
        result = spawn(dict(job="prepare", variant=setup.variant, size=setup.size, keras_path=keras_path,
                            build=build, artifacts=todo), backend, setup.threads)
        if "error" in result:  # the process itself failed: so did everything it had to write
            result = {name: result for name in (["keras"] if build else []) + list(todo)}
        for name, r in result.items():
            if "error" in r:
                failed[name] = r["error"]
            else:
                path = keras_path if name == "keras" else todo[name]
                files[name] = {"path": path, "bytes": r["bytes"], "backend": backend}
        if "keras" not in files:
            break  # nothing else can be written without the model
    _write_manifest(directory, setup, files)
    return files, failed


def _remove_stale(directory: str, files: dict) -> None:
    """Deletes the artifacts in `directory` that `files` does not list (an
    earlier run's, of another model): OpenVINO int8 would quantize a stale
    float ``.xml``."""
    for name in ARTIFACTS:
        path = artifact_path(directory, name)
        for stale in (path, path[: -len(".xml")] + ".bin" if path.endswith(".xml") else None):
            if stale and name not in files and os.path.isfile(stale):
                os.remove(stale)


def _write_manifest(directory: str, setup: Setup, files: dict) -> None:
    with open(os.path.join(directory, MANIFEST), "w") as f:
        json.dump({"config": _manifest_config(setup), "files": files}, f, indent=1)


# --- timed rounds ------------------------------------------------------------------


def _job(name: str, setup: Setup, files: dict) -> Optional[dict]:
    """The timing job of candidate `name` (``None``: its file is missing)."""
    key = "keras" if name.startswith(KERAS_PREFIX) else name
    if name != NATIVE and key not in files:
        return None
    return dict(job="time", candidate=name, variant=setup.variant, size=setup.size, batch=setup.batch,
                iters=setup.iters, threads=setup.threads, path=files.get(key, {}).get("path"))


def timed_rounds(jobs: dict, setup: Setup, say) -> tuple:
    """Every job once per round, in turn, each in a fresh process.

    Returns:
        ``(timings, failed)``: candidate -> ``{"rounds": [images/s...],
        "load_s": [...], "version"}``, and candidate -> the one-line error of
        those that failed (a failed candidate leaves the later rounds).
    """
    timings = {name: {"rounds": [], "load_s": [], "version": None} for name in jobs}
    failed = {}
    for _ in range(setup.rounds):
        for name, job in jobs.items():
            if name in failed:
                continue
            backend = name[len(KERAS_PREFIX):] if name.startswith(KERAS_PREFIX) else None
            result = spawn(job, backend, setup.threads)
            if "error" in result:
                failed[name] = result["error"]
                say(f"({name} failed: {result['error']})")
                continue
            timings[name]["rounds"].append(result["images_per_s"])
            timings[name]["load_s"].append(result["load_s"])
            timings[name]["version"] = result["version"]
    return {n: t for n, t in timings.items() if n not in failed}, failed


# --- the report --------------------------------------------------------------------


def _rows(timings: dict, files: dict) -> dict:
    """The JSON rows: images/s of each round, median, min, max, ratio to
    native PyTorch, load seconds, runtime version, file and its writer."""
    native = statistics.median(timings[NATIVE]["rounds"]) if NATIVE in timings else None
    rows = {}
    for name, t in timings.items():
        r = t["rounds"]
        median = statistics.median(r)
        file = files.get("keras" if name.startswith(KERAS_PREFIX) else name, {})
        rows[name] = {
            "runtime": LABELS[name], "version": t["version"], "rounds": r, "images_per_s": median,
            "min": min(r), "max": max(r), "ratio": median / native if native else None, "load_s": t["load_s"],
            "path": file.get("path"), "bytes": file.get("bytes"), "written_by": file.get("backend"),
        }
    return rows


def machine(load_before: Optional[float]) -> dict:
    """CPU, cores, AVX-512, and the 1-minute load average before and after."""
    info = backends_lib.cpu_info()
    info["load_average_before"] = load_before
    info["load_average_after"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    info["python"] = sys.version.split()[0]
    return info


def _header(setup: Setup) -> str:
    s = setup
    return (f"\nCPU inference, images/s: {s.variant} {s.size}x{s.size}, batch {s.batch}, {s.threads} threads, "
            f"median [min-max] of {s.rounds} alternating rounds of {s.iters} calls after {WARMUP_CALLS} warm-up "
            "calls, each candidate in a fresh process per round; random weights; int8 calibrated on "
            f"{CALIBRATION_IMAGES} random images (speed only: int8 accuracy is measured on the digits by "
            "keras-densenet export --quantize int8)")


def print_table(result: dict, out) -> None:
    """The Markdown table of `measure`'s result, then the machine line."""
    print("| candidate | runtime | file (written by) | images/s | x PyTorch eager | file MB |\n"
          "|---|---|---|---:|---:|---:|", file=out)
    for name, r in result["rows"].items():
        file = "-" if r["path"] is None else f"{os.path.basename(r['path'])} ({r['written_by']})"
        ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "-"
        size = f"{r['bytes'] / MB:.1f}" if r["bytes"] is not None else "-"
        print(f"| {name} | {r['runtime']} | {file} | {r['images_per_s']:.1f} [{r['min']:.1f}-{r['max']:.1f}] "
              f"| {ratio} | {size} |", file=out)
    m = result["machine"]
    avx = {True: "yes", False: "no", None: "unknown"}[m["avx512"]]
    loads = [m["load_average_before"], m["load_average_after"]]
    load = (f", load average {loads[0]:.1f} before, {loads[1]:.1f} after" if None not in loads else "")
    print(f"(machine: {m['cpu']}, {m['cpu_count']} cores, AVX-512: {avx}{load})", file=out, flush=True)


# --- the measure ---------------------------------------------------------------------


def _run_in(directory: str, setup: Setup, runnable: dict, builder: str, say) -> tuple:
    """Preparation then the timed rounds; ``(rows, failed)``."""
    files, failed = prepare(runnable, builder, setup, directory, say)
    keras_error = failed.pop("keras", None)
    jobs = {name: _job(name, setup, files) for name in runnable}
    for name, job in jobs.items():
        if job is None and name not in failed:  # it needed the .keras file that failed
            failed[name] = f"model.keras: {keras_error}"
    for name, error in failed.items():
        say(f"({name} failed: {error})")
    jobs = {name: job for name, job in jobs.items() if job is not None}
    timings, time_failed = timed_rounds(jobs, setup, say)
    failed.update(time_failed)
    return _rows(timings, files), failed


def measure(options, out) -> dict:
    """The ``runtimes`` measure: prints the table, returns the JSON result.

    Args:
        options: a `keras_densenet.benchmarks.bench.BenchOptions`.
        out: a text stream.

    Returns:
        ``{"config", "machine", "rows": {candidate: {"runtime", "version",
        "rounds": [images/s...], "images_per_s" (median), "min", "max",
        "ratio" (to native PyTorch), "path", "bytes", "written_by"}},
        "skipped": {candidate: reason}, "failed": {candidate: error}}``.
    """
    setup = Setup.from_options(options)
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None

    def say(line):
        print(line, file=out, flush=True)

    say(_header(setup))
    runnable, skipped = plan(options)
    builder = build_backend()
    for name, reason in skipped.items():
        say(f"({name} skipped: {reason})")
    if options.runtimes_dir:
        os.makedirs(options.runtimes_dir, exist_ok=True)
        rows, failed = _run_in(os.path.abspath(options.runtimes_dir), setup, runnable, builder, say)
    else:
        with tempfile.TemporaryDirectory(prefix="kd-runtimes-") as directory:
            rows, failed = _run_in(directory, setup, runnable, builder, say)
    config = dict(dataclasses.asdict(setup), warmup=WARMUP_CALLS, calibration_images=CALIBRATION_IMAGES, seed=SEED,
                  tf_enable_onednn_opts=os.environ.get("TF_ENABLE_ONEDNN_OPTS"))
    result = {"config": config, "machine": machine(load_before), "rows": rows, "skipped": skipped,
              "failed": failed}
    print_table(result, out)
    return result
