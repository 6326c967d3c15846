"""What the tests share: the backend under test, tiny models, inference as
NumPy, random images. Fixtures live in conftest.py; plain helpers here, so
test files import them by name (``from tests.helpers import TINY, run``)."""

import csv
import os
import pathlib
import time

import keras
import numpy as np

from keras_densenet.core import cluster
from keras_densenet.core.registry import ArchConfig

#: The backend of this run: the suite runs once per backend.
BACKEND = keras.backend.backend()
#: Every backend the suite runs on, one run each.
BACKENDS = ("tensorflow", "jax", "torch")
#: The repository's root: child processes import this checkout first.
ROOT = str(pathlib.Path(__file__).resolve().parent.parent)
#: The scripts tests run in child processes (``[sys.executable, str(SCRIPTS / "name.py"), ...]``).
SCRIPTS = pathlib.Path(__file__).resolve().parent / "scripts"


def one_backend(*preference: str) -> str:
    """The backend whose suite runs a backend-independent check: the first
    installed of `preference` (cheapest first), else this run's backend
    (where the test's own capability check then skips it). Tests select
    suites with the ``one_backend`` marker (tests/conftest.py), which calls
    this."""
    from keras_densenet.core import extras

    return next((b for b in preference if extras.installed(b)), BACKEND)


#: The smallest DenseNet worth testing: 2 dense blocks of 2 and 3 layers,
#: k=4, 8 stem channels (ImageNet stem). ``DenseNet(**TINY, ...)``.
TINY = dict(blocks=(2, 3), growth_rate=4, num_init_features=8)
#: `TINY` with the CIFAR stem on 8x8 RGB images, 3 classes: cheap to train.
TINY_CIFAR = dict(TINY, stem="cifar", input_shape=(8, 8, 3), classes=3)
#: A tiny torchvision-style DenseNet for the converter: k=8, bn_size=2.
TORCH_TINY_ARCH = ArchConfig(blocks=(2, 3), growth_rate=8, bn_size=2, num_init_features=16, default_size=32)
#: Depth as the papers name it, for every model of the `table` command.
#: DenseNet-264's blocks (6, 12, 64, 48) give 1 + 2 * 130 + 3 + 1 = 265
#: weighted layers (the paper's name is one short).
PAPER_DEPTH = {
    "densenet121": 121, "densenet161": 161, "densenet169": 169, "densenet201": 201,
    "densenet264": 265, "densenet_bc_100_k12": 100, "densenet_bc_250_k24": 250,
    "densenet_bc_190_k40": 190, "resnet50": 50, "resnet101": 101, "resnet152": 152,
}
#: The smallest `TrainConfig` options of the CLI's and the library's tests.
TINY_TRAIN = dict(depth=10, growth_rate=4, batch_size=8)


def torch_kwargs(arch: ArchConfig) -> dict:
    """torchvision's DenseNet arguments for `arch` (tests/torch_reference.py)."""
    return dict(growth_rate=arch.growth_rate, block_config=arch.blocks,
                num_init_features=arch.num_init_features, bn_size=arch.bn_size)


def cli_args(**options) -> list:
    """``train`` options as command-line arguments: ``--depth 10 ...``."""
    return [a for k, v in options.items() for a in (f"--{k.replace('_', '-')}", str(v))]


#: Layers above which `run` compiles on torch; on JAX every model compiles.
_EAGER_LAYERS = 0 if BACKEND == "jax" else 100


def run(model, x):
    """Inference (``training=False``) as NumPy. Deep models on torch go
    through `predict`, which compiles: its eager op-by-op mode is several
    times slower on a deep DenseNet; small ones run eagerly, where compiling
    would cost more than it saves. JAX's eager mode compiles every operation
    for every new shape: one compiled `predict` is cheaper even for a tiny
    DenseNet (0.8 s instead of 5 s for a 4-block one). TF's eager mode is fast."""
    if BACKEND != "tensorflow" and len(model.layers) > _EAGER_LAYERS:
        return model.predict(x, verbose=0)
    out = model(x, training=False)
    if isinstance(out, (list, tuple)):
        return [keras.ops.convert_to_numpy(o) for o in out]
    return keras.ops.convert_to_numpy(out)


def images(n=2, size=32, channels=3, seed=0, data_format="channels_last"):
    """A float32 batch of random images in [0, 255]."""
    shape = (n, size, size, channels) if data_format == "channels_last" else (n, channels, size, size)
    return np.random.default_rng(seed).uniform(0, 255, shape).astype("float32")


def save_legacy_h5(model, path) -> None:
    """Writes `model`'s weights as a legacy Keras 2 ``.h5`` file, the format
    of keras.applications' published ImageNet files. Keras 3 writes it only
    through a private function (its public `save_weights` wants
    ``.weights.h5``); tests only, to produce such files offline."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)


def loss_grads_stats(model, x, y):
    """Loss, gradients and updated non-trainable variables of one training-mode step."""

    def loss_of(out):
        return keras.ops.mean(keras.losses.categorical_crossentropy(y, out))

    if BACKEND == "jax":
        import jax

        nontrainable = [v.value for v in model.non_trainable_variables]

        def f(trainable):
            out, new = model.stateless_call(trainable, nontrainable, x, training=True)
            return loss_of(out), new

        step = jax.jit(jax.value_and_grad(f, has_aux=True))
        (loss, stats), grads = step([v.value for v in model.trainable_variables])
    elif BACKEND == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = loss_of(model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        stats = model.non_trainable_variables
    else:
        loss = loss_of(model(x, training=True))
        loss.backward()
        grads = [v.value.grad for v in model.trainable_variables]
        stats = model.non_trainable_variables
    to_np = keras.ops.convert_to_numpy
    return float(to_np(loss)), [to_np(g) for g in grads], [to_np(s) for s in stats]


def assert_same_training_step(reference, model, x, y) -> list:
    """One training-mode step of `reference` and `model` gives the same loss,
    gradients and moving statistics; returns `model`'s statistics."""
    import pytest

    loss_r, grads_r, stats_r = loss_grads_stats(reference, x, y)
    loss_m, grads_m, stats_m = loss_grads_stats(model, x, y)
    assert loss_m == pytest.approx(loss_r, rel=1e-5)
    assert_close(grads_r, grads_m)
    assert_close(stats_r, stats_m)
    return stats_m


def assert_close(a, b, rtol=1e-5):
    """Relative to each tensor's scale, so near-zero entries don't dominate."""
    for u, v in zip(a, b, strict=True):
        assert u.shape == v.shape
        assert np.max(np.abs(u - v)) <= rtol * max(np.max(np.abs(u)), 1e-12)


# --- multi-process jobs (tests/test_multiprocess.py, tests/test_hosts.py) ----


def child_env(**variables) -> dict:
    """The environment of a process of a multi-process test: this checkout
    first on the path, CPU devices only, TensorFlow quiet, and none of the
    suite's own job, device-count or gloo variables; then `variables`
    (values as strings)."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="")
    for name in (*cluster.JOB_VARIABLES, "XLA_FLAGS", "TF_CONFIG", "KERAS_DENSENET_GLOO_ADDRESS"):
        env.pop(name, None)
    env.update({k: str(v) for k, v in variables.items()})
    return env


def job_env(coordinator: str, process_id: int, num_processes: int = 2, **variables) -> dict:
    """`child_env` of process `process_id` of a job whose coordinator listens
    at `coordinator` (``HOST:PORT``): Keras' three job variables set."""
    return child_env(**{cluster.JOB_ADDRESSES: coordinator, cluster.NUM_PROCESSES: num_processes,
                        cluster.PROCESS_ID: process_id}, **variables)


def wait_all(procs: list, timeout: float) -> list:
    """The exit codes of `procs`, all waited for within `timeout` seconds
    together; kills what still runs when that time is out (and re-raises
    `subprocess.TimeoutExpired`)."""
    deadline = time.monotonic() + timeout
    try:
        return [p.wait(timeout=max(1.0, deadline - time.monotonic())) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)


def log_rows(output) -> list:
    """The rows of ``log.csv`` in the training output directory `output`
    (``[]`` before the first epoch ends), as dicts."""
    path = os.path.join(output, "log.csv")
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
