"""Shared fixtures (plain helpers are in tests/helpers.py). The suite runs once
per backend (KERAS_BACKEND is read when keras is imported), e.g.
``KERAS_BACKEND=jax python -m pytest tests``.

Which backends' suites run a test is said by a marker (registered in
pyproject.toml), and decided here at collection: the other suites skip the
test, their reason naming the suite that runs it.

- ``@pytest.mark.backends("jax", reason=...)``: runs in those backends'
  suites only (it tests what they do).
- ``@pytest.mark.one_backend("torch", "tensorflow", reason=...)``: a
  backend-independent check (a child process, a file format) runs in exactly
  one suite: the first backend of the preference list whose engine is
  installed (`tests.helpers.one_backend`).

Skips that depend on what is installed or on the machine stay in the tests,
at run time, with their reasons.

Every test has a time limit (pytest-timeout: ``timeout`` in pyproject.toml,
``@pytest.mark.timeout(seconds)`` on the few that need more), so a hang
fails that test by name. A test's child processes get a shorter
``subprocess`` timeout than the test, so that a hung child fails with its
own output.
"""

import gc
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# The suite runs in two processes (`pytest -n 2`) that may share one GPU: JAX
# and TensorFlow would each reserve most of its memory when they start, so the
# second process would fail; allocate on demand instead (no effect on a CPU).
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
# The CLI's JAX compilation cache (keras_densenet/training/compile_cache.py) stays off
# in tests: no writes to ~/.cache; test_compile_cache.py turns it on itself.
os.environ.setdefault("KERAS_DENSENET_COMPILATION_CACHE", "0")

#: tests/oldest/ is the version-floors job's smoke subset (.ci/oldest runs it
#: by path); the suite covers the same ground with stronger checks.
collect_ignore = ["oldest"]

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tests.helpers import BACKEND, BACKENDS, one_backend  # noqa: E402


def _full_float32_precision():
    """Numerical tests compare float32 results at 1e-5..1e-4: on GPUs, cuDNN
    and XLA compute float32 convolutions and matmuls in TF32 by default (10
    mantissa bits), so the suite asks every backend for full float32. On a
    CPU these settings change nothing."""
    if BACKEND == "torch":
        import torch

        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    elif BACKEND == "jax":
        import jax

        jax.config.update("jax_default_matmul_precision", "highest")
    else:
        import tensorflow as tf

        tf.config.experimental.enable_tensor_float_32_execution(False)
    # Subprocesses started by tests (CLI, examples) inherit these.
    os.environ["JAX_DEFAULT_MATMUL_PRECISION"] = "highest"
    os.environ["NVIDIA_TF32_OVERRIDE"] = "0"


_full_float32_precision()
# The modules imported so far (keras, the backend, torch...) live for the whole
# run: frozen, Python's garbage collector stops walking their ~600k objects
# again at every full collection (0.4 s each).
gc.freeze()


def _suites(mark, item) -> str:
    """"the jax suite", "the tensorflow and torch suites": where `mark` runs tests."""
    unknown = [n for n in mark.args if n not in BACKENDS]
    if unknown:
        raise pytest.UsageError(f"{item.nodeid}: unknown backend(s) {unknown} in a suite marker; known: {BACKENDS}")
    return "the " + " and ".join(mark.args) + (" suites" if len(mark.args) > 1 else " suite")


def _skip_reason(where: str, mark) -> str:
    why = mark.kwargs.get("reason")
    return f"runs in {where}: {why}" if why else f"runs in {where}"


def _suite_skip(item):
    """The reason this suite skips `item`, from its ``backends`` and
    ``one_backend`` markers (all of them: a module's and a test's); None
    where it runs here."""
    for mark in item.iter_markers("backends"):
        if not mark.args:
            raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.backends() names no backend")
        where = _suites(mark, item)
        if BACKEND not in mark.args:
            return _skip_reason(where, mark)
    for mark in item.iter_markers("one_backend"):
        _suites(mark, item)  # known names only
        suite = one_backend(*mark.args)
        if suite != BACKEND:
            return _skip_reason(f"the {suite} suite", mark)
    return None


def pytest_collection_modifyitems(config, items):
    """Skips the tests whose suite markers leave out this backend."""
    for item in items:
        reason = _suite_skip(item)
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(autouse=True)
def _clean_keras_state():
    """Each test starts from Keras defaults and a fixed seed."""
    # No forced gc.collect() per test (0.4-0.7 s each, 2 min per backend):
    # Python's own collections free the last test's models.
    keras.utils.clear_session(free_memory=False)
    keras.utils.set_random_seed(0)
    keras.config.set_image_data_format("channels_last")
    keras.config.set_dtype_policy("float32")
    yield
    keras.config.set_image_data_format("channels_last")
    keras.config.set_dtype_policy("float32")


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    """An empty Keras cache directory, so downloads never hit the real cache."""
    from keras_densenet.core import internals

    home = tmp_path / "keras_home"
    home.mkdir()
    # keras reads $KERAS_HOME once, at import; the package asks for the cache
    # root through this one function.
    monkeypatch.setattr(internals, "keras_home", lambda: str(home))
    return home


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def image_folder(tmp_path):
    """An image folder with two classes of 6 small PNGs each (dark vs bright)."""
    from PIL import Image

    root = tmp_path / "images"
    for label, value in (("dark", 30), ("bright", 220)):
        (root / label).mkdir(parents=True)
        for i in range(6):
            pixels = np.full((40, 40, 3), value, "uint8") + np.uint8(i)
            Image.fromarray(pixels).save(root / label / f"{i}.png")
    return root
