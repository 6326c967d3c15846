"""FC-DenseNet (Jégou et al., 2017): the registry's arithmetic against the
built models and the paper, shapes, layouts, saving, errors, and
`segmentation_head`. Full-size variants are built shapes-only; the behaviour
is checked on a tiny FC-DenseNet."""

import keras
import numpy as np
import pytest

import keras_densenet as kd
from keras_densenet.core import registry
from keras_densenet.layers import initialization
from tests.helpers import assert_same_training_step, images, run

#: The smallest FC-DenseNet worth running: one transition down and up (sides
#: divisible by 2), a 2-layer bottleneck, k=4. Every test runs it on the
#: same shapes: on JAX each op compiles once per shape, and loading a
#: `.keras` file compiles Keras' initializer once per kernel shape.
TINY_FC = dict(down_blocks=(1,), bottleneck_layers=2, growth_rate=4, stem_filters=4, classes=3)
#: A DenseNet backbone for `segmentation_head`: strides 4 and 8 at 32x32.
TINY_BACKBONE = dict(blocks=(2, 2), growth_rate=4, num_init_features=8, include_top=False, weights=None)

#: Table 2 of the paper (11 CamVid classes).
PAPER_PARAMS = {"fc_densenet56": 1.5e6, "fc_densenet67": 3.5e6, "fc_densenet103": 9.4e6}
PAPER_TOLERANCE = 0.02
#: Table 2's FC-DenseNet56 count is 7% above what its description builds
#: (1,396,187 with the BN moving statistics; 1.4M trainable), while the same
#: arithmetic gives the table's 67 and 103 counts to 0.2%: conv biases add
#: 1.8k, and 1.5M would take a 6-layer bottleneck or a 64-filter stem.
PAPER_OFF = {"fc_densenet56"}


def _images(n, size, data_format="channels_last"):
    return images(n, size, data_format=data_format) / 255.0


@pytest.mark.parametrize("name", sorted(registry.FC_VARIANTS))
def test_every_variant_matches_its_arithmetic_and_the_paper(name):
    variant = registry.get_fc_variant(name)
    builder = getattr(kd, variant.builder)
    assert builder.__name__ == variant.builder and variant.builder in kd.__all__
    with initialization.shape_only():  # counting needs shapes only
        model = builder(input_shape=(64, 64, 3))
        efficient = builder(input_shape=(64, 64, 3), memory_efficient=True)
    assert model.count_params() == variant.arch.param_count(variant.classes) == variant.num_params
    assert [w.shape for w in efficient.weights] == [w.shape for w in model.weights]
    assert model.output_shape == (None, 64, 64, variant.classes)
    # The name is the depth: stem, dense layers, transitions down and up, classifier.
    convs = [layer for layer in model.layers if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose))]
    assert len(convs) == int(name.removeprefix("fc_densenet"))
    # Only the bottleneck's new maps go up: k maps per layer.
    assert model.get_layer("up1_tconv").filters == variant.arch.bottleneck_layers * variant.arch.growth_rate
    off_by = abs(variant.num_params / PAPER_PARAMS[name] - 1)
    assert (off_by > PAPER_TOLERANCE) if name in PAPER_OFF else (off_by <= PAPER_TOLERANCE)


def test_any_multiple_of_the_stride_gives_a_softmax_per_pixel():
    model = kd.FCDenseNet(**TINY_FC, input_shape=(None, None, 3))
    for layer in ("stem_conv", "down1_block1_conv", "down1_pool", "bottleneck_new", "up1_tconv", "predictions"):
        model.get_layer(layer)  # deterministic names
    y = run(model, _images(2, 96))
    assert y.shape == (2, 96, 96, 3)
    np.testing.assert_allclose(y.sum(axis=-1), 1.0, atol=1e-5)


def test_channels_first_gives_the_channels_last_outputs():
    last = kd.FCDenseNet(**TINY_FC, input_shape=(32, 32, 3))
    first = kd.FCDenseNet(**TINY_FC, input_shape=(3, 32, 32), data_format="channels_first")
    first.set_weights(last.get_weights())
    x = _images(2, 32)
    y_first = run(first, x.transpose(0, 3, 1, 2))
    assert y_first.shape == (2, 3, 32, 32)
    np.testing.assert_allclose(y_first.transpose(0, 2, 3, 1), run(last, x), atol=1e-5)


def test_memory_efficient_has_the_same_weights_steps_and_outputs():
    tiny = dict(TINY_FC, dropout=0.0)  # no random masks: the two graphs draw them differently
    standard = kd.FCDenseNet(**tiny, input_shape=(32, 32, 3))
    efficient = kd.FCDenseNet(**tiny, input_shape=(32, 32, 3), memory_efficient=True)
    efficient.set_weights(standard.get_weights())
    x = _images(2, 32)
    y = keras.utils.to_categorical(np.random.default_rng(0).integers(0, 3, (2, 32, 32)), 3)
    assert_same_training_step(standard, efficient, x, y)  # loss, gradients, moving statistics
    np.testing.assert_allclose(run(efficient, x), run(standard, x), atol=1e-5)


@pytest.mark.parametrize("memory_efficient", [False, True], ids=["standard", "memory_efficient"])
def test_keras_file_round_trip_in_safe_mode(tmp_path, memory_efficient):
    model = kd.FCDenseNet(**TINY_FC, input_shape=(32, 32, 3), memory_efficient=memory_efficient)
    path = str(tmp_path / "fc.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    x = _images(2, 32)
    np.testing.assert_array_equal(run(loaded, x), run(model, x))


def test_input_tensor():
    tensor = keras.Input((32, 32, 1))
    model = kd.FCDenseNet(**TINY_FC, input_tensor=tensor)
    assert model.inputs[0] is tensor and model.output_shape == (None, 32, 32, 3)
    with pytest.raises(ValueError, match="`input_shape` must have height and width divisible by 4"):
        kd.FCDenseNet(**dict(TINY_FC, down_blocks=(1, 1)), input_tensor=keras.Input((30, 32, 1)))


@pytest.mark.parametrize(
    "changes, argument",
    [
        (dict(input_shape=(50, 50, 3)), "input_shape"),
        (dict(input_shape=(64, 64)), "input_shape"),
        (dict(down_blocks=()), "down_blocks"),
        (dict(down_blocks=(4, 0)), "down_blocks"),
        (dict(bottleneck_layers=0), "bottleneck_layers"),
        (dict(up_blocks=(4, 4)), "up_blocks"),
        (dict(growth_rate=0), "growth_rate"),
        (dict(stem_filters=0), "stem_filters"),
        (dict(dropout=1.0), "dropout"),
        (dict(classes=0), "classes"),
        (dict(data_format="nhwc"), "data_format"),
        (dict(memory_efficient=1), "memory_efficient"),
    ],
)
def test_bad_arguments_raise_naming_them(changes, argument):
    arguments = dict(down_blocks=(4,) * 5, bottleneck_layers=4, growth_rate=12) | changes
    with pytest.raises(ValueError, match=f"`{argument}`"):
        kd.FCDenseNet(**arguments)


def test_named_builders_and_registry_refuse_bad_values():
    with pytest.raises(ValueError, match="divisible by 32"):
        kd.FCDenseNet56(input_shape=(50, 50, 3))
    with pytest.raises(ValueError, match="`dropout`"):
        kd.FCDenseNet103(dropout=-0.1)
    with pytest.raises(ValueError, match="fc_densenet56, fc_densenet67, fc_densenet103"):
        registry.get_fc_variant("fc_densenet57")


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_segmentation_head_on_a_tiny_densenet(data_format):
    shape = (32, 32, 3) if data_format == "channels_last" else (3, 32, 32)
    backbone = kd.DenseNet(**TINY_BACKBONE, input_shape=shape, data_format=data_format)
    model = kd.segmentation_head(backbone, classes=5, filters=8)
    assert model.input is backbone.input
    if data_format == "channels_first":  # shapes only: the layout is checked above
        assert model.output_shape == (None, 5, 32, 32)
        return
    y = run(model, _images(2, 32))
    assert y.shape == (2, 32, 32, 5)
    np.testing.assert_allclose(y.sum(axis=-1), 1.0, atol=1e-5)


def test_segmentation_head_needs_a_densenet():
    cifar = kd.DenseNet(**TINY_BACKBONE, stem="cifar", input_shape=(8, 8, 3))
    assert kd.segmentation_head(cifar, classes=2).output_shape == (None, 8, 8, 2)  # stride 1: no final upsample
    with pytest.raises(ValueError, match="dense block outputs"):
        kd.segmentation_head(kd.FCDenseNet(**TINY_FC, input_shape=(32, 32, 3)), classes=2)
    with pytest.raises(ValueError, match="`classes`"):
        kd.segmentation_head(cifar, classes=0)


#: The suite of the full-size `.keras` round trips: TensorFlow's was the fastest.
@pytest.mark.one_backend("tensorflow", "torch", "jax", reason="the .keras format is backend-independent: one suite "
                         "saves and loads every full-size variant; the others' round trip is the tiny one above")
@pytest.mark.parametrize("name", sorted(registry.FC_VARIANTS))
def test_every_variant_saves_and_loads_in_safe_mode(name, tmp_path):
    """Full size, real weights: the `.keras` file holds every weight (no
    forward pass; the tiny round trip above checks the outputs, on every
    backend). The file is the same whichever backend writes or reads it:
    one suite saves and loads the full-size variants (on JAX, loading draws
    every variable with Keras' initializer, one XLA program per kernel
    shape: 35 s for FC-DenseNet56 alone here)."""
    model = getattr(kd, registry.get_fc_variant(name).builder)(input_shape=(None, None, 3))
    path = str(tmp_path / f"{name}.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert loaded.count_params() == registry.get_fc_variant(name).num_params
    for a, b in zip(model.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
