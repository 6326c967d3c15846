"""Fast initialisation (keras_densenet/layers/initialization.py): same distributions
as Keras' initializers, reproducible, stock configs, on every backend."""

import json

import keras
import numpy as np
import pytest

import keras_densenet as kd
from keras_densenet.core import internals
from keras_densenet.layers import initialization
from keras_densenet.layers.initialization import fast_variables, sample

# A 3x3 conv kernel, 147k values: large enough for tight moment/KS checks.
SHAPE = (3, 3, 128, 128)
# Two-sample Kolmogorov-Smirnov critical value at alpha = 1e-4 is
# 2.15 * sqrt(2 / n) ~ 0.0079 for n = 147k; a wrong scale (e.g. fan_out for
# fan_in, or a missing truncation factor) gives > 0.05.
KS_LIMIT = 0.01

INITIALIZERS = {
    "he_normal": lambda: keras.initializers.HeNormal(seed=3),
    "glorot_uniform": lambda: keras.initializers.GlorotUniform(seed=3),
    "lecun_normal": lambda: keras.initializers.LecunNormal(seed=3),
    "variance_scaling_fan_avg_normal": lambda: keras.initializers.VarianceScaling(
        2.0, "fan_avg", "untruncated_normal", seed=3),
    "variance_scaling_fan_out_uniform": lambda: keras.initializers.VarianceScaling(
        0.5, "fan_out", "uniform", seed=3),
    "random_normal": lambda: keras.initializers.RandomNormal(0.1, 0.02, seed=3),
    "random_uniform": lambda: keras.initializers.RandomUniform(-0.3, 0.1, seed=3),
    "truncated_normal": lambda: keras.initializers.TruncatedNormal(0.2, 0.05, seed=3),
}
UNBOUNDED = ("variance_scaling_fan_avg_normal", "random_normal")


def _ks(a, b):
    """Two-sample Kolmogorov-Smirnov statistic."""
    a, b = np.sort(a.ravel()), np.sort(b.ravel())
    grid = np.concatenate([a, b])
    return np.abs(np.searchsorted(a, grid, "right") / a.size - np.searchsorted(b, grid, "right") / b.size).max()


@pytest.mark.parametrize("name", sorted(INITIALIZERS))
def test_sample_has_the_keras_initializers_distribution(name):
    init = INITIALIZERS[name]()
    ours = sample(init, SHAPE)
    theirs = keras.ops.convert_to_numpy(init(SHAPE, dtype="float32"))
    assert ours.shape == SHAPE and ours.dtype == np.float32
    scale = theirs.std()
    assert abs(ours.mean() - theirs.mean()) < 0.02 * scale + 1e-6
    assert abs(ours.std() / scale - 1) < 0.01
    if name not in UNBOUNDED:  # same support: the truncation / uniform limits
        spread = theirs.max() - theirs.min()
        assert abs(ours.min() - theirs.min()) < 0.01 * spread and abs(ours.max() - theirs.max()) < 0.01 * spread
    assert _ks(ours, theirs) < KS_LIMIT


def test_sample_constants_and_unknowns():
    inits = keras.initializers
    np.testing.assert_array_equal(sample(inits.Zeros(), (2, 3)), np.zeros((2, 3)))
    np.testing.assert_array_equal(sample(inits.Ones(), (4,)), np.ones(4))
    np.testing.assert_array_equal(sample(inits.Constant(0.5), (4,)), np.full(4, 0.5))
    # Reproduced only when the draw is Keras' own: otherwise None (fallback).
    assert sample(inits.Orthogonal(seed=1), (4, 4)) is None
    assert sample(inits.HeNormal(seed=keras.random.SeedGenerator(1)), (4, 4)) is None
    assert sample(inits.HeNormal(seed=1), (4,), dtype="int32") is None

    class Custom(inits.HeNormal):
        def __call__(self, shape, dtype=None):
            return keras.ops.ones(shape, dtype)

    assert sample(Custom(seed=1), (4, 4)) is None
    # Same integer seed, same values (as Keras' own seeded initializers).
    np.testing.assert_array_equal(sample(inits.HeNormal(seed=5), (9, 9)), sample(inits.HeNormal(seed=5), (9, 9)))


def _without(init, *names):
    """`init` as another Keras release may hold it: `names` not set on it."""
    for name in names:
        if name in vars(init):
            delattr(init, name)
    return init


def test_sample_without_input_axes_draws_keras_distribution():
    # Keras 3.8's VarianceScaling has no `input_axes`/`output_axes` (newer
    # releases added them): still the stock distribution, not AttributeError.
    init = _without(keras.initializers.HeNormal(seed=3), "input_axes", "output_axes")
    ours = sample(init, SHAPE)
    theirs = keras.ops.convert_to_numpy(keras.initializers.HeNormal(seed=3)(SHAPE, dtype="float32"))
    assert ours.shape == SHAPE and ours.dtype == np.float32
    assert abs(ours.std() / theirs.std() - 1) < 0.01
    assert _ks(ours, theirs) < KS_LIMIT


@pytest.mark.parametrize("init, missing", [
    (lambda: keras.initializers.HeNormal(seed=1), "mode"),
    (lambda: keras.initializers.GlorotUniform(seed=1), "distribution"),
    (lambda: keras.initializers.LecunNormal(seed=1), "scale"),
    (lambda: keras.initializers.RandomNormal(seed=1), "stddev"),
    (lambda: keras.initializers.TruncatedNormal(seed=1), "mean"),
    (lambda: keras.initializers.RandomUniform(seed=1), "maxval"),
    (lambda: keras.initializers.Constant(0.5), "value"),
])
def test_sample_falls_back_when_an_attribute_is_missing(init, missing):
    assert sample(_without(init(), missing), (4, 4)) is None


def test_sample_falls_back_on_values_it_does_not_know():
    init = keras.initializers.HeNormal(seed=1)
    init.mode = "fan_sideways"
    assert sample(init, (4, 4)) is None
    init = keras.initializers.HeNormal(seed=1)
    init.input_axes = (0, 1)  # fans over other axes (recent Keras)
    assert sample(init, (4, 4)) is None
    init = keras.initializers.RandomNormal(seed=1)
    init.stddev = "wide"
    assert sample(init, (4, 4)) is None


def test_fast_variables_falls_back_without_deferred_initialization(fast_everywhere, monkeypatch):
    def missing():
        raise ImportError("no keras.src.backend.common.global_state")

    monkeypatch.setattr(internals, "uninitialized_variables", missing)
    with fast_variables():
        assert not internals.in_stateless_scope()  # Keras' own path
        layer = keras.layers.Dense(2, kernel_initializer="ones")
        layer.build((None, 3))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.kernel), np.ones((3, 2)))


def _tiny(**kwargs):
    return kd.DenseNet((2, 2), growth_rate=8, num_init_features=16, input_shape=(16, 16, 3),
                       classes=5, **kwargs)


@pytest.fixture
def fast_everywhere(monkeypatch):
    """The fast path on, whatever the backend (default: JAX only)."""
    monkeypatch.setenv(initialization.ENV_SWITCH, "1")


@pytest.mark.parametrize("memory_efficient", [False, True])
def test_model_weights_follow_their_initializers(fast_everywhere, memory_efficient):
    model = _tiny(memory_efficient=memory_efficient, drop_rate=0.1)
    checked = 0
    for layer in internals.flatten_layers(model):
        if isinstance(layer, keras.layers.Conv2D):
            w = keras.ops.convert_to_numpy(layer.kernel)
            fan_in = np.prod(w.shape[:-1])
            limit = 2 * np.sqrt(2 / fan_in) / initialization.TRUNCATED_STD
            assert np.abs(w).max() <= limit * (1 + 1e-6) and w.std() > 0.2 * limit
            checked += 1
        if isinstance(layer, keras.layers.BatchNormalization):
            for v, value in ((layer.gamma, 1), (layer.beta, 0), (layer.moving_mean, 0), (layer.moving_variance, 1)):
                np.testing.assert_array_equal(keras.ops.convert_to_numpy(v), value)
    assert checked == 1 + 2 * 4 + 1  # stem, 2 convs per dense layer, transition
    # Stock initializers in the config: what .keras files save.
    config = json.loads(model.to_json())
    assert '"HeNormal"' in model.to_json() and "keras_densenet.layers.initialization" not in model.to_json()
    (stem,) = [layer for layer in config["config"]["layers"] if layer["name"] == "conv1_conv"]
    assert stem["config"]["kernel_initializer"]["module"] == "keras.initializers"
    # Dropout's seed generator (an unknown initializer) was initialised by Keras.
    x = np.random.default_rng(0).uniform(0, 1, (2, 16, 16, 3)).astype("float32")
    assert np.isfinite(keras.ops.convert_to_numpy(model(x, training=True))).all()


def test_builds_are_reproducible_with_the_keras_seed(fast_everywhere):
    keras.utils.set_random_seed(1)
    a = _tiny().get_weights()
    keras.utils.set_random_seed(1)
    b = _tiny().get_weights()
    keras.utils.set_random_seed(2)
    c = _tiny().get_weights()
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], c[0])
    # Different layers of one model get different draws.
    assert not np.array_equal(a[0].ravel()[:16], a[5].ravel()[:16])


def test_error_inside_leaves_nothing_pending(fast_everywhere):
    before = len(internals.uninitialized_variables())
    with pytest.raises(RuntimeError, match="boom"):
        with fast_variables():
            layer = keras.layers.Dense(2)
            layer.build((None, 3))
            raise RuntimeError("boom")
    assert len(internals.uninitialized_variables()) == before
    assert keras.ops.convert_to_numpy(layer.kernel).shape == (3, 2)  # initialised anyway


def test_switch(monkeypatch):
    monkeypatch.setenv(initialization.ENV_SWITCH, "0")
    assert not initialization.enabled()
    monkeypatch.setenv(initialization.ENV_SWITCH, "1")
    assert initialization.enabled()
    monkeypatch.delenv(initialization.ENV_SWITCH)
    assert initialization.enabled() == (keras.backend.backend() in initialization.DEFAULT_BACKENDS)
