"""fused_bn=True (keras_densenet/layers/fused.py): PyTorch's fused BatchNormalization
on the torch backend gives the stock layer's outputs, gradients and moving
statistics, in the standard and memory-efficient graphs; files move between
fused and stock models. On other backends the layer is Keras' own."""

import keras
import numpy as np
import pytest

import keras_densenet as kd
from keras_densenet.layers import fused
from keras_densenet.training.distribute import batch_norm_layers
from tests.helpers import TINY_CIFAR as TINY
from tests.helpers import assert_same_training_step, images, run

_torch_only = pytest.mark.backends(
    "torch", reason="fused_bn runs Keras' own BatchNormalization on other backends: one case suffices")


@pytest.mark.parametrize("data_format, memory_efficient", [
    pytest.param("channels_last", False, marks=_torch_only),
    ("channels_last", True),
    pytest.param("channels_first", False, marks=_torch_only),
    pytest.param("channels_first", True, marks=_torch_only),
])
def test_same_outputs_gradients_and_moving_statistics(memory_efficient, data_format):
    shape = (8, 8, 3) if data_format == "channels_last" else (3, 8, 8)
    kw = dict(TINY, data_format=data_format, input_shape=shape)
    reference = kd.DenseNet(**kw)
    model = kd.DenseNet(**kw, memory_efficient=memory_efficient, fused_bn=True)
    # Non-trivial statistics and affine parameters.
    rng = np.random.default_rng(1)
    weights = [w + rng.uniform(0.1, 0.5, w.shape).astype("float32") if w.ndim == 1 else w
               for w in reference.get_weights()]
    reference.set_weights(weights)
    model.set_weights(weights)
    if not memory_efficient:
        assert all(type(layer) is fused.BatchNormalization for layer in batch_norm_layers(model))
    x = images(4, 8, data_format=data_format) / 255.0
    np.testing.assert_allclose(run(model, x), run(reference, x), rtol=1e-5, atol=1e-6)
    y = keras.ops.one_hot(np.array([0, 1, 2, 1]), 3)
    stats_f = assert_same_training_step(reference, model, x, y)
    assert not np.allclose(stats_f[0], weights[2])  # the moving mean moved


def test_layer_matches_keras_on_channels_last_and_first():
    rng = np.random.default_rng(0)
    for axis, shape in ((-1, (3, 5, 5, 6)), (1, (3, 6, 5, 5)), (-1, (7, 6)), (-1, (1, 1, 1, 6))):
        x = rng.normal(2.0, 3.0, shape).astype("float32")
        ours = fused.BatchNormalization(axis=axis, momentum=0.9)
        stock = keras.layers.BatchNormalization(axis=axis, momentum=0.9)
        ours.build(shape)
        stock.build(shape)
        to_np = keras.ops.convert_to_numpy
        np.testing.assert_allclose(to_np(ours(x, training=True)), to_np(stock(x, training=True)), rtol=1e-5, atol=1e-5)
        for a, b in zip(ours.weights, stock.weights, strict=True):
            np.testing.assert_allclose(to_np(a), to_np(b), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(to_np(ours(x)), to_np(stock(x)), rtol=1e-5, atol=1e-5)


def test_files_move_between_fused_and_stock_models(tmp_path):
    stock = kd.DenseNet(**TINY)
    model = kd.DenseNet(**TINY, fused_bn=True)
    x = images(2, 8)
    expected = run(model, x)
    path = str(tmp_path / "fused.weights.h5")
    model.save_weights(path)
    stock.load_weights(path)  # same group names: the class is called BatchNormalization
    np.testing.assert_allclose(run(stock, x), expected, rtol=1e-5, atol=1e-6)
    keras_path = str(tmp_path / "fused.keras")
    model.save(keras_path)
    loaded = keras.saving.load_model(keras_path, safe_mode=True)
    assert type(loaded.get_layer("bn")) is fused.BatchNormalization
    np.testing.assert_allclose(run(loaded, x), expected, rtol=1e-5, atol=1e-6)


def test_fused_bn_must_be_bool():
    with pytest.raises(ValueError, match="fused_bn"):
        kd.DenseNet(**TINY, fused_bn="yes")
