"""What each ``keras-densenet bench`` child process measures: one job (a
JSON object) in, one JSON line out.

`spawn` starts ``python -m keras_densenet.benchmarks.bench_worker '{job}'``
with the job's Keras backend in the child's environment: the backend is fixed when keras is
imported, and peak RSS is per process. The functions also run in-process,
on the current backend.

Example::

    KERAS_BACKEND=jax python -m keras_densenet.benchmarks.bench_worker \
        '{"measure": "activations", "variant": "densenet121", "memory_efficient": true, "image_size": 224}'
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
from typing import Optional

from keras_densenet.core import internals, registry
from keras_densenet.training import config

#: What `keras-densenet train` runs without options: the `step` measure's job.
TRAIN_DEFAULTS = config.TrainConfig()
#: The default training data (the embedded digits): gray images, 10 classes.
DIGITS_CHANNELS = 1
DIGITS_CLASSES = 10
#: `train_on_batch` calls before timing: compilation, optimizer state.
STEP_WARMUP = 3
#: ``TF_ENABLE_ONEDNN_OPTS`` of the TensorFlow child by ``--onednn`` value
#: (``None``: unset, TensorFlow's own default).
ONEDNN = {"default": None, "on": "1", "off": "0"}


def residual_bytes(model, batch_size: int) -> int:
    """Bytes JAX saves for the backward pass of one training step of `model`.

    Only on the JAX backend. The loss is the mean of the model output, so its
    own residuals are nil; residuals that are arguments (trainable weights,
    the input batch) are not counted.

    Args:
        model: a built Keras model with a static input shape.
        batch_size: the batch size to trace with.

    Returns:
        The total size in bytes of the saved residuals.

    Example::

        # KERAS_BACKEND=jax
        import keras_densenet
        from keras_densenet.benchmarks.bench_worker import residual_bytes
        residual_bytes(keras_densenet.DenseNetBC(40, 12), batch_size=1)
    """
    import jax
    import keras

    if keras.backend.backend() != "jax":
        raise ValueError(
            "residual_bytes needs KERAS_BACKEND=jax. "
            f"Received backend: {keras.backend.backend()!r}"
        )
    non_trainable = [v.value for v in model.non_trainable_variables]

    def loss_fn(trainable, x):
        y, _ = model.stateless_call(trainable, non_trainable, x, training=True)
        y = y if not isinstance(y, (list, tuple)) else y[-1]
        return keras.ops.mean(y)

    trainable = [jax.ShapeDtypeStruct(tuple(v.shape), v.dtype) for v in model.trainable_variables]
    x = jax.ShapeDtypeStruct((batch_size,) + tuple(model.input_shape[1:]), "float32")
    total = 0
    for aval, source in internals.saved_residuals(loss_fn, trainable, x):
        if not source.startswith("from the argument"):
            total += aval.size * aval.dtype.itemsize
    return total


def _build(variant: str, memory_efficient: bool, image_size: int, drop_rate: float = 0.0):
    import keras_densenet

    return keras_densenet.build(
        variant,
        input_shape=(image_size, image_size, 3),
        memory_efficient=memory_efficient,
        drop_rate=drop_rate,
    )


def activations_per_image(variant: str, memory_efficient: bool, image_size: int = 224) -> float:
    """Activation bytes saved per image for one training step (JAX backend)."""
    model = _build(variant, memory_efficient, image_size)
    return float(residual_bytes(model, 2) - residual_bytes(model, 1))


def _timed_steps(model, x, y, warmup: int, steps: int) -> list:
    """Seconds of each of `steps` ``train_on_batch`` calls after `warmup` untimed ones."""
    import time

    for _ in range(warmup):  # compilation, optimizer state
        model.train_on_batch(x, y)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        model.train_on_batch(x, y)  # returns the metrics as numbers: the step is done
        times.append(time.perf_counter() - start)
    return times


def step_time(variant: str, memory_efficient: bool, image_size: int, batch_size: int, steps: int) -> float:
    """Median seconds per ``train_on_batch`` step on the current backend."""
    import numpy as np

    model = _build(variant, memory_efficient, image_size)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (batch_size, image_size, image_size, 3)).astype("float32")
    y = rng.integers(0, model.output_shape[-1], (batch_size,))
    return float(np.median(_timed_steps(model, x, y, warmup=2, steps=steps)))


def peak_rss(variant: str, memory_efficient: bool, image_size: int, batch_size: int, steps: int) -> dict:
    """Peak RSS in MB of this process around ``model.fit`` (call it in a fresh one)."""
    import resource

    import numpy as np

    model = _build(variant, memory_efficient, image_size)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (batch_size * steps, image_size, image_size, 3)).astype("float32")
    y = rng.integers(0, model.output_shape[-1], (batch_size * steps,))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"peak_before_fit_mib": before, "peak_mib": after}


def build_seconds(variant: str, source: str) -> float:
    """Seconds of one builder call (``weights=None``) in this process."""
    import time

    import keras

    from keras_densenet.models import densenet

    start = time.perf_counter()
    if source == "keras_applications":
        getattr(keras.applications, registry.KERAS_APPLICATIONS[variant])(weights=None)
    else:
        densenet.build(variant)
    return time.perf_counter() - start


def train_step_ms(image_size: int, steps: int, warmup: int = STEP_WARMUP) -> dict:
    """Milliseconds per ``train_on_batch`` step of ``keras-densenet train``'s model.

    The model, optimizer and loss are the trainer's defaults
    (`training.train.build_classifier` on `TRAIN_DEFAULTS` at `image_size`,
    gray digits-sized input, 10 classes); the batch is random pixels in
    [0, 255] of `TRAIN_DEFAULTS.batch_size` images. Runs on the current
    backend: call it in a fresh process.

    Returns:
        ``{"ms_per_step": median, "min_ms", "max_ms", "steps_ms": [...],
        "model", "params", "machine": throughput.machine(),
        "tf_enable_onednn_opts": the environment variable or None}``.
    """
    import keras
    import numpy as np

    from keras_densenet.benchmarks import throughput
    from keras_densenet.training import train as train_lib

    cfg = dataclasses.replace(TRAIN_DEFAULTS, image_size=image_size)
    keras.utils.set_random_seed(cfg.seed)
    model, _ = train_lib.build_classifier(cfg, DIGITS_CLASSES, DIGITS_CHANNELS)
    train_lib.compile_classifier(model, cfg.lr)
    rng = np.random.default_rng(cfg.seed)
    x = rng.uniform(0, 255, (cfg.batch_size, image_size, image_size, DIGITS_CHANNELS)).astype("float32")
    y = rng.integers(0, DIGITS_CLASSES, (cfg.batch_size,))
    times = [1000 * t for t in _timed_steps(model, x, y, warmup, steps)]
    return {
        "ms_per_step": float(statistics.median(times)), "min_ms": min(times), "max_ms": max(times),
        "steps_ms": times, "model": model.name, "params": int(model.count_params()),
        "machine": throughput.machine(), "tf_enable_onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
    }


def worker(job: dict) -> dict:
    """Runs `job` (``{"measure": ..., **arguments}``) here; returns its JSON-ready result."""
    kind = job.pop("measure")
    if kind == "build":
        return {"seconds": build_seconds(**job)}
    if kind == "throughput":
        from keras_densenet.benchmarks import throughput

        return throughput.measure(job.pop("variant"), **job)
    if kind == "activations":
        return {"bytes_per_image": activations_per_image(**job)}
    if kind == "time":
        return {"seconds_per_step": step_time(**job)}
    if kind == "step":
        return train_step_ms(**job)
    return peak_rss(**job)


def spawn(backend: str, job: dict, onednn: Optional[str] = None) -> dict:
    """`worker(job)` in a fresh process on `backend`; `onednn`: a key of
    `ONEDNN` sets the child's ``TF_ENABLE_ONEDNN_OPTS`` (``None``: inherited)."""
    # JAX must not take most of the GPU at start-up: native PyTorch shares it.
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3", XLA_PYTHON_CLIENT_PREALLOCATE="false")
    if onednn is not None:
        env.pop("TF_ENABLE_ONEDNN_OPTS", None)  # "default": TensorFlow's own choice
        if ONEDNN[onednn] is not None:
            env["TF_ENABLE_ONEDNN_OPTS"] = ONEDNN[onednn]
    proc = subprocess.run(
        [sys.executable, "-m", "keras_densenet.benchmarks.bench_worker", json.dumps(job)],
        env=env,
        capture_output=True,
        text=True,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"bench worker {job} on {backend} failed: {tail}")
    return json.loads(lines[-1])


if __name__ == "__main__":  # python -m keras_densenet.benchmarks.bench_worker '{json job}'
    print(json.dumps(worker(json.loads(sys.argv[1]))))
