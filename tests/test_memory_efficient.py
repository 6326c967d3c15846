"""memory_efficient=True: same math and weights as the standard graph, every
builder trains, weight files and .keras round trips, linear memory growth.

`import keras_densenet` registers `EfficientDenseLayer` (as soon as keras is
imported), so `.keras` files load with safe mode on and no custom_objects.
"""


import keras
import numpy as np
import pytest

import keras_densenet as kd
from keras_densenet import cli
from keras_densenet.layers import blocks, efficient, initialization
from keras_densenet.layers.efficient import EfficientDenseLayer
from tests.helpers import TINY_CIFAR as TINY
from tests.helpers import assert_same_training_step, images, run


def _pair(**kw):
    """A standard and a memory-efficient model with the same weights."""
    standard = kd.DenseNet(**{**TINY, **kw})
    efficient = kd.DenseNet(**{**TINY, **kw}, memory_efficient=True)
    efficient.set_weights(standard.get_weights())
    return standard, efficient


@pytest.mark.parametrize("bottleneck", [True, False])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_same_loss_gradients_and_moving_statistics(bottleneck, data_format):
    shape = (8, 8, 3) if data_format == "channels_last" else (3, 8, 8)
    standard, efficient = _pair(bottleneck=bottleneck, data_format=data_format, input_shape=shape)
    x = images(4, 8, data_format=data_format) / 255.0
    y = keras.ops.one_hot(np.array([0, 1, 2, 1]), 3)
    stats_e = assert_same_training_step(standard, efficient, x, y)
    # The moving statistics really moved (momentum 0.99 from 0/1).
    assert not np.allclose(stats_e[0], 0.0)


def test_weight_lists_are_interchangeable():
    standard, efficient = _pair()
    assert [tuple(w.shape) for w in standard.weights] == [tuple(w.shape) for w in efficient.weights]
    # Same variables in the same order: ME paths nest the standard layer names.
    for s, e in zip(standard.weights, efficient.weights, strict=True):
        assert e.path.endswith(s.path), (s.path, e.path)
    dense_layers = [layer for layer in efficient.layers if isinstance(layer, EfficientDenseLayer)]
    assert [layer.name for layer in dense_layers] == [
        "conv2_block1", "conv2_block2", "conv3_block1", "conv3_block2", "conv3_block3"]
    # Block outputs keep their standard names, so multiscale_features works.
    features = kd.multiscale_features(efficient)
    assert [tuple(s) for s in features.output_shape] == [(None, 8, 8, 16), (None, 4, 4, 20)]


@pytest.mark.parametrize("source_efficient", [False, True])
def test_weight_files_load_into_either_graph(tmp_path, source_efficient):
    standard, efficient = _pair()
    x = images(2, 8)
    source = efficient if source_efficient else standard
    path = str(tmp_path / "model.weights.h5")
    source.save_weights(path)
    expected = run(source, x)
    for memory_efficient in (False, True):
        loaded = kd.DenseNet(**TINY, weights=path, memory_efficient=memory_efficient)
        assert any(isinstance(layer, EfficientDenseLayer) for layer in loaded.layers) == memory_efficient
        np.testing.assert_allclose(run(loaded, x), expected, rtol=1e-5, atol=1e-6)


def test_keras_round_trip(tmp_path):
    # No custom_objects: `import keras_densenet` registered the layer.
    model = kd.DenseNet(**TINY, memory_efficient=True, drop_rate=0.2)
    path = str(tmp_path / "me.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    layer = loaded.get_layer("conv3_block2")
    assert isinstance(layer, EfficientDenseLayer)
    assert layer.get_config() == model.get_layer("conv3_block2").get_config()
    x = images(2, 8)
    np.testing.assert_allclose(run(loaded, x), run(model, x), rtol=1e-6)


BUILDERS = {
    "DenseNet": lambda: kd.DenseNet(**TINY, drop_rate=0.1, memory_efficient=True),
    "DenseNetBC": lambda: kd.DenseNetBC(10, 4, input_shape=(8, 8, 3), classes=3, drop_rate=0.1, memory_efficient=True),
}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_fit_evaluate_predict_with_dropout(name):
    model = BUILDERS[name]()
    dense = [layer for layer in model.layers if isinstance(layer, EfficientDenseLayer)]
    model.compile(optimizer=keras.optimizers.SGD(1e-3), loss="sparse_categorical_crossentropy")
    x, y = images(4, 8) / 255.0, np.array([0, 2, 1, 0])
    before = keras.ops.convert_to_numpy(dense[0].bn0.moving_mean)
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    # fit (compiled on every backend) updated the recomputed BN's statistics.
    assert not np.allclose(keras.ops.convert_to_numpy(dense[0].bn0.moving_mean), before)
    assert np.isfinite(model.evaluate(x, y, verbose=0))
    probs = model.predict(x, verbose=0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_bad_memory_efficient_argument():
    with pytest.raises(ValueError, match="memory_efficient"):
        kd.DenseNet(**TINY, memory_efficient="yes")


def _residuals(L, memory_efficient):
    from keras_densenet.benchmarks.bench import residual_bytes

    x = keras.Input((8, 8, 16))
    dense_block = efficient.dense_block if memory_efficient else blocks.dense_block
    # The weights' values play no part (only shapes are traced): drawn the
    # fast way, as the builders do on JAX (Keras' own initializers compile
    # once per kernel shape: 10 s of this test).
    with initialization.fast_variables(active=True):
        y = dense_block(x, L, 8, "conv2", blocks.LayerOptions())
    return residual_bytes(keras.Model(x, y), 2)


@pytest.mark.backends("jax", reason="residual bytes are read from JAX's VJP; backend-independent graph")
def test_memory_grows_linearly_with_depth():
    me = [_residuals(L, True) for L in (6, 12, 24)]
    std = [_residuals(L, False) for L in (6, 12, 24)]
    # Memory-efficient: a constant increment per layer.
    assert (me[1] - me[0]) / 6 == pytest.approx((me[2] - me[1]) / 12, rel=1e-9)
    # Standard: the per-layer increment grows with depth (quadratic total).
    assert (std[2] - std[1]) / 12 > 1.5 * (std[1] - std[0]) / 6
    assert me[2] < std[2]


@pytest.mark.parametrize(
    "argv", [["--measure", "speed"], ["--backends", "numpy"], ["--steps", "0"], ["--variants", "densenet999"]])
def test_bench_bad_input_exits_2(argv, capsys):
    assert cli.main(["bench", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("keras-densenet bench: error:")
