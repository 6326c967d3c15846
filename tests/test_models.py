"""Builders: keras.applications parity, every registered variant, options."""

import functools
import inspect
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_densenet as kd
from keras_densenet.core import registry
from keras_densenet.layers import initialization
from keras_densenet.layers.efficient import EfficientDenseLayer
from keras_densenet.tools import connectivity, counts
from tests.helpers import PAPER_DEPTH, SCRIPTS, TINY, images, run

#: The variants keras.applications has too, by the registry.
KERAS_APPS = sorted(name for name, v in registry.VARIANTS.items() if v.keras_application)


def _weighted(model):
    return [(layer.name, [tuple(w.shape) for w in layer.weights]) for layer in model.layers if layer.weights]


def test_registry_knows_keras_applications():
    assert KERAS_APPS == ["densenet121", "densenet169", "densenet201"]


#: Predictions compared (at ImageNet's 224x224) for one variant. The others
#: run the same builder code with other block counts: their weighted layers
#: (names, order, weight shapes) and parameter counts are compared from
#: shapes, without a forward pass (every registry row is also counted in
#: `test_every_registered_variant`).
FULL_SIZE_PARITY = "densenet121"


@pytest.mark.parametrize("variant", KERAS_APPS)
def test_keras_applications_parity(variant):
    """Same weighted layers and parameter count as keras.applications for
    every variant it has; the same predictions for `FULL_SIZE_PARITY`."""
    row = registry.get_variant(variant)
    keras_builder, params = getattr(keras.applications, row.builder), row.num_params
    if variant != FULL_SIZE_PARITY:
        with initialization.shape_only():
            theirs = keras_builder(weights=None, input_shape=(224, 224, 3))
            ours = kd.build(variant, input_shape=(224, 224, 3))
        assert ours.count_params() == theirs.count_params() == params
        assert _weighted(ours) == _weighted(theirs)
        return
    size = 224
    # Their initial values are replaced below: draw them the fast way (on
    # JAX, Keras' own initializers compile once per kernel shape).
    with initialization.fast_variables(active=True):
        theirs = keras_builder(weights=None, input_shape=(size, size, 3))
    ours = kd.build(variant, input_shape=(size, size, 3))
    assert ours.count_params() == theirs.count_params() == params
    assert _weighted(ours) == _weighted(theirs)

    ours.set_weights(theirs.get_weights())
    x = kd.preprocess_input(images(2, size, seed=1))
    diff = np.abs(run(ours, x) - run(theirs, x)).max()
    assert diff <= 1e-5


# Published parameter counts (trainable, classifier included): the paper's
# Table 2 for DenseNet-BC on 10 classes (in millions), torchvision for 161.
PUBLISHED_PARAMS = {
    "densenet161": 28_681_000,
    "densenet_bc_100_k12": 0.8e6,
    "densenet_bc_250_k24": 15.3e6,
    "densenet_bc_190_k40": 25.6e6,
}


def _registered_builder(variant):
    """The row's public builder (DenseNet121...) where it has one, else `build`."""
    if variant.builder is None:
        return functools.partial(kd.build, variant.name)
    assert variant.builder in kd.__all__
    builder = getattr(kd, variant.builder)
    assert builder.__name__ == variant.builder
    return builder


@pytest.mark.parametrize("name", sorted(registry.VARIANTS))
def test_every_registered_variant(name):
    """Each row built at its smallest input, standard and memory-efficient
    (shapes only): parameters, channels, depth and connections as the
    registry, its arithmetic and the paper say; the memory-efficient graph
    has the standard weight list and its block structure."""
    variant = registry.get_variant(name)
    arch = variant.arch
    size = arch.min_input_size
    builder = _registered_builder(variant)
    with initialization.shape_only():
        model = builder(weights=None, input_shape=(size, size, 3), classes=variant.classes)
        efficient = builder(weights=None, input_shape=(size, size, 3), classes=variant.classes,
                            memory_efficient=True)
    # Parameters: the registry row's count is the built model's, and the arithmetic's.
    assert model.count_params() == variant.num_params == arch.param_count(variant.classes)
    if name in PUBLISHED_PARAMS:
        trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
        published = PUBLISHED_PARAMS[name]
        if published % 100_000:  # published exactly
            assert trainable == published
        else:  # the paper's 0.1M precision
            assert round(trainable, -5) == published
    # Channels: stem, every dense block's output (k0 + L*k, then compression), 1x1 at the end.
    assert model.get_layer("conv1_conv").output.shape[-1] == arch.num_init_features
    assert tuple(model.get_layer("relu").output.shape[1:]) == (1, 1, arch.num_features)
    channels, expected = arch.num_init_features, []
    for n in arch.blocks:
        expected.append((channels, channels + arch.growth_rate * n))
        channels = int(expected[-1][1] * arch.compression)
    assert [(b.input_channels, b.output_channels) for b in connectivity.dense_blocks(model)] == expected
    # Depth and direct connections, counted from the graph: L(L+1)/2 per block.
    for graph in (model, efficient):
        assert counts.weighted_depth(graph) == PAPER_DEPTH[name]
        assert [b.connections for b in connectivity.dense_blocks(graph)] == [n * (n + 1) // 2 for n in arch.blocks]
    # Memory-efficient structure: one layer per dense layer, one concatenation
    # per block under its standard name, the same weight list.
    dense = [layer for layer in efficient.layers if isinstance(layer, EfficientDenseLayer)]
    assert len(dense) == sum(arch.blocks)
    assert not any(layer.name.endswith("_0_bn") for layer in efficient.layers)
    concats = [layer.name for layer in efficient.layers if isinstance(layer, keras.layers.Concatenate)]
    assert concats == [f"conv{s + 2}_block{n}_concat" for s, n in enumerate(arch.blocks)]
    assert [tuple(w.shape) for w in efficient.weights] == [tuple(w.shape) for w in model.weights]


NAMED = sorted(name for name, v in registry.VARIANTS.items()
               if v.builder and v.builder.startswith("DenseNet") and v.builder != "DenseNetBC")


@pytest.mark.parametrize("name", NAMED)
def test_named_builder_signature_is_keras_applications(name):
    """keras.applications' parameters first, in its order (DenseNet121's for
    the variants it lacks); the defaults that differ per variant are the
    registry's; the docstring's architecture is the registry's."""
    variant = registry.get_variant(name)
    ours = inspect.signature(getattr(kd, variant.builder)).parameters
    reference = getattr(keras.applications, variant.builder, keras.applications.DenseNet121)
    theirs = inspect.signature(reference).parameters
    assert list(ours)[: len(theirs)] == list(theirs)
    per_variant = {"weights": variant.default_weights, "classes": variant.classes, "name": variant.name}
    for param in theirs.values():
        expected = per_variant.get(param.name, param.default)
        assert ours[param.name].default == expected, param.name
        assert ours[param.name].kind == param.kind
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in list(ours.values())[len(theirs):])
    doc = getattr(kd, variant.builder).__doc__
    assert f"dense blocks {variant.arch.blocks}, growth rate {variant.arch.growth_rate}" in doc
    assert f"{variant.arch.num_features} features" in doc and "Args:" in doc


def test_models_saved_by_earlier_versions_load(tmp_path):
    """tests/data/legacy: a memory-efficient model with fused BatchNormalization,
    saved before the package moved into subpackages; safe mode, same outputs."""
    legacy = os.path.join(os.path.dirname(__file__), "data", "legacy")
    model = keras.saving.load_model(os.path.join(legacy, "tiny_memory_efficient.keras"), safe_mode=True)
    assert any(isinstance(layer, EfficientDenseLayer) for layer in model.layers)
    expected = np.load(os.path.join(legacy, "tiny_memory_efficient_output.npy"))
    x = np.random.default_rng(0).uniform(0, 255, (4, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(run(model, x), expected, rtol=1e-4, atol=1e-6)


def test_densenet_bc_depth_sets_layers_per_block():
    model = kd.DenseNetBC(depth=22, growth_rate=4, bn_momentum=0.9)
    assert [model.get_layer(f"conv{s}_block3_concat") for s in (2, 3, 4)]
    assert "conv2_block4_concat" not in {layer.name for layer in model.layers}
    assert model.get_layer("conv1_conv").output.shape[-1] == 8  # 2k stem channels
    probs = run(model, images(2, 32) / 255.0)
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, rtol=1e-5)


def test_d2l_densenet_in_one_call():
    """d2l.ai's DenseNet: 4 blocks of 4 layers, k=32, no bottleneck, theta=0.5."""
    model = kd.DenseNet((4, 4, 4, 4), growth_rate=32, bottleneck=False, compression=0.5,
                        input_shape=(96, 96, 1), classes=10)
    names = {layer.name for layer in model.layers}
    assert "conv2_block1_2_conv" in names and "conv2_block1_1_conv" not in names
    # 64 stem channels + 4*32 = 192 -> transition keeps 96, as in d2l.
    assert model.get_layer("pool2_conv").output.shape[-1] == 96
    assert model.output_shape == (None, 10)


def test_growth_rate_and_compression_shape_channels():
    model = kd.DenseNet((3, 2), growth_rate=5, compression=0.6, num_init_features=10,
                        include_top=False, input_shape=(32, 32, 3))
    assert model.get_layer("conv2_block3_concat").output.shape[-1] == 10 + 3 * 5
    assert model.get_layer("pool2_conv").output.shape[-1] == int(0.6 * 25)
    assert model.get_layer("conv2_block1_1_conv").output.shape[-1] == 4 * 5  # bn_size * k
    assert model.output_shape[-1] == 15 + 2 * 5


#: DenseNet-121's four blocks, stem, transitions and head with 6 dense
#: layers instead of 58: every layer type of a full-size variant, the same
#: total stride.
FOUR_BLOCKS = dict(blocks=(2, 1, 1, 2), growth_rate=8, num_init_features=16)


@pytest.mark.parametrize(
    "input_shape, pooling, rank",
    [((32, 32, 3), None, 4), ((45, 61, 3), "avg", 2), ((None, None, 3), "max", 2),
     ((None, None, 3), None, 4)],
)
def test_headless_any_input_size(input_shape, pooling, rank):
    """DenseNet-121's builder takes each shape (built shapes-only); a
    4-block DenseNet, its layers and total stride, runs on it."""
    with initialization.shape_only():
        named = kd.DenseNet121(include_top=False, weights=None, input_shape=input_shape, pooling=pooling)
    assert len(named.output_shape) == rank and named.output_shape[-1] == 1024
    model = kd.DenseNet(**FOUR_BLOCKS, include_top=False, input_shape=input_shape, pooling=pooling)
    size = input_shape[:2] if input_shape[0] else (32, 64)
    out = run(model, images(1, 1)[:, :1, :1].repeat(size[0], 1).repeat(size[1], 2))
    assert out.ndim == rank and out.shape[-1] == registry.ArchConfig(**FOUR_BLOCKS).num_features
    if rank == 4:  # total stride 32, floor at every pooling
        assert out.shape[1:3] == (size[0] // 32, size[1] // 32)


def test_channels_first_matches_channels_last():
    last = kd.DenseNet(**FOUR_BLOCKS, include_top=False, input_shape=(32, 32, 3), pooling="avg")
    first = kd.DenseNet(**FOUR_BLOCKS, include_top=False, input_shape=(3, 32, 32),
                        pooling="avg", data_format="channels_first")
    first.set_weights(last.get_weights())
    x = images(2, 32)
    expected = run(last, x)
    np.testing.assert_allclose(run(first, x.transpose(0, 3, 1, 2)), expected,
                               atol=1e-4, rtol=1e-4)
    # The named builder takes the layout too: channels first, stride 32.
    with initialization.shape_only():
        named = kd.DenseNet121(weights=None, include_top=False, input_shape=(3, 64, 64),
                               data_format="channels_first")
    assert named.output_shape == (None, 1024, 2, 2)


#: The fresh-process `.keras` check runs in one suite: the file and the
#: layers `import keras_densenet` registers are the same on every backend
#: (the in-process round trips of tests/test_memory_efficient.py,
#: test_fused.py and test_fcdensenet.py run on each); a torch process starts
#: fastest.
on_file_checks_backend = pytest.mark.one_backend(
    "torch", "tensorflow", "jax", reason="a backend-independent .keras file in a fresh process")


def _fresh_process(script, *args, env=None):
    """Runs tests/scripts/`script` with `args` on this suite's backend."""
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend(), **(env or {}))
    proc = subprocess.run([sys.executable, str(SCRIPTS / script), *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.parametrize("onednn", [
    "default",
    pytest.param("off", marks=pytest.mark.backends(
        "tensorflow", reason="TF_ENABLE_ONEDNN_OPTS concerns TensorFlow's kernels only")),
])
def test_channels_first_on_every_cpu(onednn):
    """channels_first builds, predicts and trains with channels_last's
    outputs, also where TensorFlow's CPU refuses NCHW convolutions (CPUs
    without AVX-512 run it without oneDNN; TF_ENABLE_ONEDNN_OPTS=0 does the
    same here)."""
    _fresh_process("channels_first.py", env={"TF_ENABLE_ONEDNN_OPTS": "0"} if onednn == "off" else {})


def test_multiscale_features_call_does_not_warn():
    import warnings

    features = kd.multiscale_features(kd.DenseNet(**TINY, include_top=False, input_shape=(32, 32, 3)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        features(images(1, 32))
        run(features, images(1, 32))
    # Keras' "The structure of `inputs` doesn't match the expected structure".
    assert not [w for w in caught if "structure" in str(w.message)], [str(w.message) for w in caught]


@on_file_checks_backend
@pytest.mark.parametrize("order", ["keras_densenet first", "keras first"])
def test_import_keras_densenet_registers_layers_in_any_order(tmp_path, order):
    kd.DenseNet(**TINY, input_shape=(32, 32, 3), classes=3, memory_efficient=True).save(tmp_path / "me.keras")
    imports = "keras_densenet,keras" if order == "keras_densenet first" else "keras,keras_densenet"
    _fresh_process("load_keras_file.py", imports, tmp_path / "me.keras")


def test_channels_first_from_keras_config():
    keras.config.set_image_data_format("channels_first")
    model = kd.DenseNet(**TINY, include_top=False, input_shape=(3, 32, 32))
    assert model.output_shape[1] == registry.ArchConfig(**TINY).num_features


def test_multiscale_features_strides():
    """DenseNet-121's block outputs at strides 4 to 32 (built shapes-only);
    a 4-block DenseNet's features run with the shapes they declare."""
    with initialization.shape_only():
        backbone = kd.DenseNet121(include_top=False, weights=None, input_shape=(64, 64, 3))
    shapes = [tuple(s) for s in kd.multiscale_features(backbone).output_shape]
    assert shapes == [(None, 16, 16, 256), (None, 8, 8, 512), (None, 4, 4, 1024), (None, 2, 2, 1024)]
    features = kd.multiscale_features(kd.DenseNet(**FOUR_BLOCKS, include_top=False, input_shape=(64, 64, 3)))
    declared = [(1,) + tuple(s)[1:] for s in features.output_shape]
    assert [tuple(o.shape) for o in run(features, images(1, 64))] == declared
    assert [s[1] for s in declared] == [16, 8, 4, 2]


def test_multiscale_features_rejects_other_models():
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="dense block outputs"):
        kd.multiscale_features(model)


def test_input_tensor():
    inp = keras.Input((40, 40, 3))
    model = kd.DenseNet(**TINY, include_top=False, input_tensor=inp, pooling="avg")
    assert model.inputs[0] is inp


def test_drop_rate_adds_dropout_after_each_dense_layer():
    model = kd.DenseNet(**TINY, drop_rate=0.5, input_shape=(32, 32, 3), classes=3,
                        classifier_activation=None)
    drops = [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert len(drops) == sum(TINY["blocks"]) and all(d.rate == 0.5 for d in drops)
    x = images(2, 32)
    train, infer = (keras.ops.convert_to_numpy(model(x, training=t)) for t in (True, False))
    assert not np.allclose(train, infer)


def test_bn_options_reach_every_batch_norm():
    model = kd.DenseNet(**TINY, bn_epsilon=1e-3, bn_momentum=0.9, input_shape=(32, 32, 3))
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert bns and all(b.epsilon == 1e-3 and b.momentum == 0.9 for b in bns)


def test_fit_runs_a_few_steps():
    model = kd.DenseNet(**TINY, input_shape=(32, 32, 3), classes=3, bn_momentum=0.9)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x, y = images(8, 32) / 255.0, np.arange(8) % 3
    before = [w.copy() for w in model.get_weights()]
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["loss"]).all()
    assert any(not np.allclose(a, b) for a, b in zip(before, model.get_weights(), strict=True))


@on_file_checks_backend
def test_keras_file_round_trip_in_fresh_process(tmp_path):
    model = kd.DenseNet(**TINY, input_shape=(32, 32, 3), classes=4)
    x = images(2, 32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", model.predict(x, verbose=0))
    model.save(tmp_path / "m.keras")
    _fresh_process("predict_keras_file.py", tmp_path)


def test_preprocess_input_is_keras_applications():
    x = images(2, 8)
    np.testing.assert_array_equal(
        kd.preprocess_input(x.copy()), keras.applications.densenet.preprocess_input(x.copy())
    )
    first = kd.preprocess_input(x.transpose(0, 3, 1, 2).copy(), data_format="channels_first")
    np.testing.assert_allclose(first.transpose(0, 2, 3, 1), kd.preprocess_input(x.copy()), rtol=1e-6)


def test_decode_predictions_is_keras_applications(monkeypatch):
    from keras.src.applications import (
        imagenet_utils,  # its class index, patched: no download
    )

    index = {str(i): [f"n{i:08d}", f"class_{i}"] for i in range(1000)}
    monkeypatch.setattr(imagenet_utils, "CLASS_INDEX", index)  # no download
    preds = np.random.default_rng(0).random((2, 1000))
    ours = kd.decode_predictions(preds, top=3)
    assert ours == keras.applications.densenet.decode_predictions(preds, top=3)
    assert ours[0][0][1] == f"class_{int(preds[0].argmax())}"


def test_generic_builder_finds_registered_weights():
    variant = registry.find_variant(registry.ArchConfig(blocks=(6, 12, 24, 16)))
    assert variant is not None and variant.name == "densenet121"
    assert registry.find_variant(registry.ArchConfig(**TINY)) is None


# ---- bad input: one test per case, each message names the argument ---------

BAD_ARGUMENTS = [
    (dict(growth_rate=0), "growth_rate"),
    (dict(growth_rate=-4), "growth_rate"),
    (dict(blocks=()), "blocks"),
    (dict(blocks=(2, 0)), "blocks"),
    (dict(compression=0.0), "compression"),
    (dict(compression=1.5), "compression"),
    (dict(drop_rate=1.0), "drop_rate"),
    (dict(drop_rate=-0.1), "drop_rate"),
    (dict(pooling="mean", include_top=False), "pooling"),
    (dict(stem="resnet"), "stem"),
    (dict(bn_size=0), "bn_size"),
    (dict(bn_momentum=1.0), "bn_momentum"),
    (dict(data_format="NHWC"), "data_format"),
    (dict(weights="imagenet22k"), "weights"),
    (dict(weights="missing/densenet.weights.h5"), "not found"),
    (dict(include_top=False, input_shape=(4, 4, 3)), "at least"),
    (dict(classes=0), "classes"),
]


@pytest.mark.parametrize("kwargs, message", BAD_ARGUMENTS, ids=[m for _, m in BAD_ARGUMENTS])
def test_bad_arguments_raise_value_error(kwargs, message):
    args = {**TINY, "input_shape": (32, 32, 3), **kwargs}
    with pytest.raises(ValueError, match=message):
        kd.DenseNet(**args)


def test_unknown_weights_lists_allowed_names():
    with pytest.raises(ValueError, match="'imagenet'.*'torchvision'"):
        kd.DenseNet121(weights="imagenet21k")


def test_imagenet_weights_require_1000_classes_with_top():
    with pytest.raises(ValueError, match="classes"):
        kd.DenseNet121(weights="imagenet", classes=10)


def test_imagenet_weights_require_three_channels():
    with pytest.raises(ValueError, match="3 channels"):
        kd.DenseNet121(weights="imagenet", include_top=False, input_shape=(64, 64, 1))


def test_input_too_small_for_variant():
    with pytest.raises(ValueError, match="at least 32x32"):
        kd.DenseNet169(weights=None, include_top=False, input_shape=(31, 64, 3))


@pytest.mark.parametrize("depth", [99, 0, 4, 40.0, "100"])
def test_invalid_densenet_bc_depth(depth):
    with pytest.raises(ValueError, match="depth"):
        kd.DenseNetBC(depth=depth)


def test_unknown_variant_lists_registry():
    with pytest.raises(ValueError, match="densenet121"):
        kd.build("densenet122")
