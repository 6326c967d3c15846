"""One job of ``keras-densenet bench runtimes``, in a process of its own.

`keras_densenet.benchmarks.runtime_bench` runs every job as
``python -m keras_densenet.benchmarks.runtime_worker '{json job}'``, so no two
runtimes' thread pools ever share a process; the job's result is the last
stdout line that starts with `RESULT_PREFIX` (runtimes print to stdout too).
Two kinds of job:

* ``"prepare"`` (`prepare_here`): builds the variant with random weights
  (seeded) and saves it as a ``.keras`` file, or loads that file, then writes
  the serving artifacts this process's backend can write
  (`keras_densenet.deployment.writers.write_artifact`; int8 through
  `keras_densenet.deployment.quantize.write_int8`, calibrated on
  `CALIBRATION_IMAGES` random images: the figures are speed only).
* ``"time"`` (`time_here`): loads one candidate (the ``.keras`` file with
  Keras, an artifact with `keras_densenet.deployment.runtimes.open_artifact`,
  or the variant as native PyTorch eager), runs `WARMUP_CALLS` untimed calls,
  then times ``iters`` calls on one fixed random batch, on the job's thread
  count (each runtime's own setting and, with fewer threads than CPUs, the
  process's CPU affinity: XLA has no thread setting).

Example::

    python -m keras_densenet.benchmarks.runtime_worker '{"job": "time", "candidate": "native_torch",
        "variant": "densenet_bc_100_k12", "size": 32, "batch": 2, "iters": 3, "threads": 2, "path": null}'
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import sys
import time
from typing import Optional

from keras_densenet.core import registry
from keras_densenet.deployment import quantize, runtimes, writers
from keras_densenet.models import saved

#: The native PyTorch candidate (the ratios' reference).
NATIVE = "native_torch"
#: Prefix of the Keras candidates: ``keras_`` and the backend.
KERAS_PREFIX = "keras_"
#: Artifact candidate -> (`export` format, int8).
ARTIFACTS = {
    "litert": ("litert", False), "litert_int8": ("litert", True), "openvino": ("openvino", False),
    "openvino_int8": ("openvino", True), "onnx": ("onnx", False), "torch_export": ("torch", False),
}
#: Pip distribution whose version each runtime reports (JSON ``version``).
DISTRIBUTIONS = {"litert": "ai-edge-litert", "openvino": "openvino", "onnx": "onnxruntime", "torch": "torch"}
#: Untimed calls in each process before timing (graph compilation, caches).
WARMUP_CALLS = 2
#: Random images the int8 artifacts are calibrated on (speed figures only).
CALIBRATION_IMAGES = 32
#: Seed of the weights, the calibration images and the timed batch.
SEED = 0
#: Prefix of the result line on stdout.
RESULT_PREFIX = "runtime-bench-result: "


def artifact_path(directory: str, name: str) -> str:
    """Where candidate `name`'s artifact lives in `directory`:
    ``model.onnx``, ``model_int8.tflite``..."""
    fmt, int8 = ARTIFACTS[name]
    return os.path.join(directory, ("model_int8" if int8 else "model") + runtimes.SUFFIXES[fmt])


def one_line(error: BaseException) -> str:
    """``"Type: first line of the message"``, at most 300 characters of it."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0][:300]}" if text else type(error).__name__


def _random_images(n: int, size: int, seed: int):
    import numpy as np

    return np.random.default_rng(seed).uniform(-1, 1, (n, size, size, 3)).astype("float32")


# --- preparing: the .keras file and the artifacts ------------------------------


def _write_one(model, name: str, path: str, calibration) -> None:
    """Writes candidate `name`'s artifact; OpenVINO int8 quantizes the float
    ``.xml`` (written first when absent)."""
    fmt, int8 = ARTIFACTS[name]
    if not int8:
        return writers.write_artifact(model, fmt, path)
    float_path = None
    if fmt == "openvino":
        float_path = artifact_path(os.path.dirname(path), "openvino")
        if not os.path.isfile(float_path):
            writers.write_artifact(model, fmt, float_path)
    quantize.write_int8(model, fmt, path, calibration, float_path=float_path)


def prepare_here(job: dict) -> dict:
    """Builds (or loads) the ``.keras`` file and writes ``job["artifacts"]``
    ({candidate: path}) on this process's backend.

    Returns:
        ``{candidate: {"bytes": n} or {"error": one line}}``, with
        ``"keras"`` when the model was built here.
    """
    import keras

    from keras_densenet.models import densenet

    results = {}
    if job["build"]:
        keras.utils.set_random_seed(SEED)
        model = densenet.build(job["variant"], input_shape=(job["size"], job["size"], 3))
        model.save(job["keras_path"])
        results["keras"] = {"bytes": writers.artifact_bytes(job["keras_path"])}
    else:
        model = saved.load_keras_model(job["keras_path"])
    calibration = _random_images(CALIBRATION_IMAGES, job["size"], SEED + 1)
    for name, path in job["artifacts"].items():
        try:
            _write_one(model, name, path, calibration)
            results[name] = {"bytes": writers.artifact_bytes(path)}
        except Exception as e:  # noqa: BLE001 - reported, the other artifacts go on
            results[name] = {"error": one_line(e)}
    return results


# --- timing: one candidate ----------------------------------------------------------


def native_module(variant: str):
    """``(torch module, source)``: `variant` as native PyTorch (random weights).

    The CIFAR stem (one 3x3 conv, stride 1, no bias) replaces torchvision's
    ImageNet stem where the variant has it."""
    from torch import nn

    from keras_densenet.benchmarks.torch_densenet import native_densenet

    spec = registry.get_variant(variant)
    arch = spec.arch
    module, source = native_densenet(arch.blocks, arch.growth_rate, arch.num_init_features, arch.bn_size,
                                     num_classes=spec.classes)
    if arch.stem == "cifar":
        module.features.conv0 = nn.Conv2d(3, arch.num_init_features, 3, padding=1, bias=False)
        for name in ("norm0", "relu0", "pool0"):
            setattr(module.features, name, nn.Identity())
    return module, source


def _pin_cpus(threads: int) -> None:
    """Keeps this process on `threads` CPUs, so runtimes without a thread
    option (XLA) use no more."""
    if hasattr(os, "sched_setaffinity") and threads < len(os.sched_getaffinity(0)):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:threads])


def _version(distribution: str) -> Optional[str]:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _keras_call(job: dict, x):
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(job["threads"])
    elif backend == "torch":
        import torch

        torch.set_num_threads(job["threads"])
    model = saved.load_keras_model(job["path"])
    version = getattr(sys.modules[backend], "__version__", None)
    return (lambda: model.predict_on_batch(x)), f"keras {keras.__version__}, {backend} {version}"


def _native_call(job: dict, x):
    import numpy as np
    import torch

    torch.set_num_threads(job["threads"])
    module, source = native_module(job["variant"])
    module.eval()
    channels_first = torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))

    def call():
        with torch.no_grad():
            return module(channels_first)

    return call, f"torch {torch.__version__} ({source})"


def _artifact_call(job: dict, x):
    # Every artifact here was written by this benchmark: .pt2 files may be unpickled.
    artifact = runtimes.open_artifact(job["path"], threads=job["threads"], trust_pickle=True)
    dist = DISTRIBUTIONS[artifact.format]
    return (lambda: artifact(x)), f"{dist} {_version(dist)}"


def time_here(job: dict) -> dict:
    """Loads candidate ``job["candidate"]``, runs `WARMUP_CALLS` calls, then
    times ``job["iters"]`` calls on one random batch.

    Returns:
        ``{"images_per_s", "seconds", "load_s", "version"}``.
    """
    _pin_cpus(job["threads"])
    x = _random_images(job["batch"], job["size"], SEED)
    name = job["candidate"]
    start = time.perf_counter()
    opener = _keras_call if name.startswith(KERAS_PREFIX) else _native_call if name == NATIVE else _artifact_call
    call, version = opener(job, x)
    load_s = time.perf_counter() - start
    for _ in range(WARMUP_CALLS):
        call()
    start = time.perf_counter()
    for _ in range(job["iters"]):
        call()
    seconds = time.perf_counter() - start
    return {"images_per_s": job["batch"] * job["iters"] / seconds, "seconds": seconds, "load_s": load_s,
            "version": version}


def run_job(job: dict) -> dict:
    """`prepare_here` or `time_here`; ``{"error": one line}`` when it fails."""
    try:
        return prepare_here(job) if job["job"] == "prepare" else time_here(job)
    except Exception as e:  # noqa: BLE001 - the parent prints it in one line
        return {"error": one_line(e)}


if __name__ == "__main__":
    print(RESULT_PREFIX + json.dumps(run_job(json.loads(sys.argv[1]))), flush=True)
