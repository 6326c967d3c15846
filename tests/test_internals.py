"""The private Keras and JAX APIs the package relies on, all wrapped in
keras_densenet/core/internals.py. If a test here fails, Keras or JAX changed one
of them: update the function of the same name in internals.py. Everything
else in the package uses public APIs only (checked below)."""

import os
import pathlib
import re

import keras
import numpy as np
import pytest

from keras_densenet.core import internals

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "keras_densenet"


def test_private_apis_are_used_in_internals_only():
    private = re.compile(
        r"keras\.src\b|jax\._src\b|\._flatten_layers\b|\._deferred_initialize\b|\._initializer\b|\._nodes_by_depth\b"
    )
    offenders = [
        f"{path.relative_to(PACKAGE)}:{n}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "internals.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if private.search(line.split("#")[0])
    ]
    assert offenders == []


def test_keras_home_is_where_get_file_caches(tmp_path):
    home = internals.keras_home()
    assert os.path.isabs(os.path.expanduser(home))
    # get_file's default cache root is the same directory.
    src = tmp_path / "blob.bin"
    src.write_bytes(b"x")
    path = keras.utils.get_file("kd-internals-probe.bin", src.as_uri(), cache_subdir="kd-probe")
    try:
        assert os.path.dirname(os.path.dirname(path)) == os.path.expanduser(home)
    finally:
        os.remove(path)
        os.rmdir(os.path.dirname(path))  # the test's own sub-directory


def test_obtain_input_shape_and_validate_activation():
    shape = internals.obtain_input_shape(
        input_shape=None, default_size=224, min_size=32, data_format="channels_last",
        require_flatten=True, weights=None,
    )
    assert tuple(shape) == (224, 224, 3)
    with pytest.raises(ValueError, match="at least 32x32"):
        internals.obtain_input_shape(
            input_shape=(16, 16, 3), default_size=224, min_size=32, data_format="channels_last",
            require_flatten=False, weights=None,
        )
    internals.validate_activation("softmax", "imagenet")
    with pytest.raises(ValueError):
        internals.validate_activation("relu", "imagenet")


def test_flatten_layers_reaches_nested_layers():
    inner = keras.Sequential([keras.Input((3,)), keras.layers.BatchNormalization(name="inner_bn")])
    outer = keras.Sequential([keras.Input((3,)), inner, keras.layers.Dense(2, name="head")])
    names = [layer.name for layer in internals.flatten_layers(outer)]
    assert names[0] == outer.name and "inner_bn" in names and "head" in names


def test_functional_nodes_walk_every_call_inputs_first():
    x = keras.Input((3,), name="x")
    dense = keras.layers.Dense(3, name="shared")
    model = keras.Model(x, dense(dense(x)))  # one layer, two calls
    names = [node.operation.name for node in internals.functional_nodes(model)]
    assert names == ["x", "shared", "shared"]
    assert internals.functional_nodes(keras.layers.Dense(2)) is None


def test_deferred_variable_initialization():
    assert internals.supports_deferred_initialization()
    assert not internals.in_stateless_scope()
    init = keras.initializers.HeNormal(seed=1)
    with keras.StatelessScope(initialize_variables=False):
        assert internals.in_stateless_scope()
        layer = keras.layers.Dense(3, kernel_initializer=init)
        layer.build((None, 2))
    pending = internals.uninitialized_variables()
    assert any(v is layer.kernel for v in pending) and any(v is layer.bias for v in pending)
    assert internals.variable_initializer(layer.kernel) is init
    for v in (layer.kernel, layer.bias):
        del pending[[id(p) for p in pending].index(id(v))]
    internals.initialize_with(layer.kernel, np.full((2, 3), 7.0, "float32"))
    internals.initialize_with(layer.bias)  # its own initializer: zeros
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.kernel), np.full((2, 3), 7.0))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.bias), np.zeros(3))


@pytest.mark.backends("jax", reason="JAX's residuals; JAX is imported on the JAX backend only")
def test_saved_residuals():
    import jax
    import jax.numpy as jnp

    def f(x):
        return jnp.sum(jnp.sin(x) * x)

    residuals = internals.saved_residuals(f, jax.ShapeDtypeStruct((4,), "float32"))
    assert residuals and all(hasattr(aval, "shape") and isinstance(src, str) for aval, src in residuals)




@pytest.mark.backends("jax", reason="JAX's distributed runtime; JAX is imported on the JAX backend only")
def test_distributed_client_gloo_address_and_keras_rng(tmp_path):
    import inspect
    import socket
    import subprocess
    import sys

    from jax._src import xla_bridge

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = str(PACKAGE.parent)
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    # The suite's full-float32 setting: JAX before 0.4.31 refuses "highest" in the environment.
    env.pop("JAX_DEFAULT_MATMUL_PRECISION", None)
    child = os.path.join(root, "tests", "scripts", "jax_job_child.py")
    out = subprocess.run([sys.executable, child, str(port)], env=env, cwd=root, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    _, told, ran = out.stdout.split()[-3:]
    # Where JAX's factory takes collectives, ours is used; an older JAX says it cannot.
    assert told == str("collectives" in inspect.signature(xla_bridge.make_cpu_client).parameters)
    assert ran in ("True", "False")
