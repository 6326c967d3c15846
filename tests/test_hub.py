"""keras-hub presets, both ways (keras_densenet/hub/): keras-hub's own presets
load into this package's models by layer name, this package's models load in
keras-hub (backbone, classifier with its preprocessing) and as timm
directories, and what keras-hub cannot express is refused in one line."""

import json
import os
import shutil

import h5py
import keras
import numpy as np
import pytest

keras_hub = pytest.importorskip("keras_hub", reason="keras-hub is not installed (the [hub] extra)")

import keras_densenet  # noqa: E402
from keras_densenet import cli  # noqa: E402
from keras_densenet.core import extras, internals  # noqa: E402
from keras_densenet.hub.convert import keras_to_preset, preset_to_keras  # noqa: E402
from keras_densenet.hub.save import save_preset  # noqa: E402
from keras_densenet.hub.timm import save_timm  # noqa: E402
from keras_densenet.layers.initialization import fast_variables  # noqa: E402
from keras_densenet.weights import hub_names as names  # noqa: E402
from keras_densenet.weights.presets import load_preset, read_h5_layers, read_preset, read_with_keras_hub  # noqa: E402
from tests.helpers import TINY_CIFAR, images, run  # noqa: E402

#: The smallest DenseNet keras-hub expresses: its 64-filter stem, 2 blocks.
SMALL = dict(blocks=(2, 3), growth_rate=8, num_init_features=64)
#: What does not depend on the engine (refusals decided by the architecture,
#: the weights' bytes copied from file to file) runs in one suite: the
#: cheapest for building and saving full-size models.
files_only = pytest.mark.one_backend(
    "tensorflow", "torch", "jax", reason="decided by the architecture and the files, not the engine")


def randomize_bn(model, seed=0):
    """Random BatchNormalization statistics (the defaults, mean 0 and
    variance 1, would hide a swapped or shifted tensor)."""
    rng = np.random.default_rng(seed)
    for layer in internals.flatten_layers(model):  # nested backbones too
        if isinstance(layer, keras.layers.BatchNormalization):
            shape = layer.gamma.shape
            layer.set_weights([rng.uniform(0.5, 1.5, shape), rng.normal(0, 0.1, shape),
                               rng.normal(0, 0.1, shape), rng.uniform(0.5, 1.5, shape)])


def one_line_error(call) -> str:
    with pytest.raises(ValueError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.fixture(scope="module")
def small_hub_preset(tmp_path_factory):
    """A preset written by keras-hub itself: a 2-block DenseNetBackbone."""
    path = str(tmp_path_factory.mktemp("hub") / "small")
    with fast_variables():
        backbone = keras_hub.models.DenseNetBackbone(stackwise_num_repeats=[2, 3], growth_rate=8)
    randomize_bn(backbone)
    backbone.save_to_preset(path)
    return path


@files_only
def test_the_name_table_reads_both_ways():
    for hub_name, _ in names.hub_weight_layers([6, 12, 24, 16]):
        assert names.hub_layer(names.our_layer(hub_name)) == hub_name
    assert names.our_layer("stack3_block24_2_bn") == "conv4_block24_1_bn"
    assert names.hub_layer("conv5_block16_0_bn") == "stack4_block16_1_bn"


def test_keras_hub_preset_loads_into_densenet121(tmp_path):
    """keras-hub's DenseNet-121, saved by keras-hub: same features at an odd
    size; at 224 the stems differ only by their padding."""
    path = str(tmp_path / "hub121")
    with fast_variables():  # JAX: seconds instead of compiling every initializer
        hub = keras_hub.models.DenseNetBackbone(stackwise_num_repeats=[6, 12, 24, 16])
    randomize_bn(hub)
    hub.save_to_preset(path)
    assert json.load(open(os.path.join(path, "config.json")))["registered_name"] == names.BACKBONE_CLASS
    ours = keras_densenet.DenseNet121(include_top=False, weights=path, input_shape=(None, None, 3))
    hub_names = {name for name, _ in names.hub_weight_layers([6, 12, 24, 16])}
    assert {names.hub_layer(layer.name) for layer in ours.layers if layer.weights} == hub_names
    assert ours.get_layer("bn").epsilon == hub.get_layer("bn").epsilon  # keras-hub's, not PyTorch's
    x = images(2, 97, seed=1) / 255.0
    np.testing.assert_allclose(run(ours, x), run(hub, x), rtol=0, atol=1e-5)

    def stem(model):
        return keras.Model(model.input, model.get_layer("pool1").output)

    x224 = images(1, 224, seed=2) / 255.0
    ours_stem, hub_stem = run(stem(ours), x224), run(stem(hub), x224)
    assert ours_stem.shape == hub_stem.shape == (1, 56, 56, 64)
    assert np.abs(ours_stem - hub_stem).max() > 1e-2  # "same" pads 2 before, 3 after at 224
    # One zero row and column appended: keras-hub's "same" now pads 3 and 3,
    # this package's padding, and the stems agree on the common 56x56.
    padded = np.pad(x224, ((0, 0), (0, 1), (0, 1), (0, 0)))
    np.testing.assert_allclose(run(stem(hub), padded)[:, :56, :56], ours_stem, rtol=0, atol=1e-5)


def test_builders_take_a_preset_and_refuse_what_does_not_fit(small_hub_preset, tmp_path):
    model = keras_densenet.DenseNet(**SMALL, include_top=False, weights=small_hub_preset)
    reference = keras_densenet.DenseNet(**SMALL, include_top=False, weights=None)
    load_preset(reference, small_hub_preset, include_top=False)
    for a, b in zip(reference.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    message = one_line_error(lambda: keras_densenet.DenseNet121(include_top=False, weights=small_hub_preset))
    assert "blocks=(2, 3)" in message and "blocks=(6, 12, 24, 16)" in message
    message = one_line_error(lambda: keras_densenet.DenseNet(**SMALL, weights=small_hub_preset))
    assert "no classifier" in message and small_hub_preset in message
    (tmp_path / "empty").mkdir()
    message = one_line_error(lambda: keras_densenet.DenseNet121(weights=str(tmp_path / "empty")))
    assert "empty" in message and "config.json" in message


def test_older_files_without_layer_names_load_by_key(small_hub_preset, tmp_path):
    weights = os.path.join(small_hub_preset, names.WEIGHTS_FILE)
    copy = str(tmp_path / "unnamed.weights.h5")
    shutil.copy(weights, copy)
    with h5py.File(copy, "r+") as f:
        for key in f["layers"]:
            f[f"layers/{key}/vars"].attrs.pop("name", None)
    keys = names.h5_keys([2, 3])
    by_name, by_key = read_h5_layers(weights, keys), read_h5_layers(copy, keys)
    assert sorted(by_name) == sorted(by_key) == sorted(keys)
    for name in keys:
        for a, b in zip(by_name[name], by_key[name], strict=True):
            np.testing.assert_array_equal(a, b)


def test_keras_hub_machinery_reads_the_same_weights(small_hub_preset):
    local, through_hub = read_preset(small_hub_preset), read_with_keras_hub(small_hub_preset, include_top=False)
    assert local.arch == through_hub.arch and sorted(local.table) == sorted(through_hub.table)
    for name, values in local.table.items():
        for a, b in zip(values, through_hub.table[name], strict=True):
            np.testing.assert_array_equal(a, b)


def test_another_architecture_is_refused_naming_both(small_hub_preset):
    model = keras_densenet.DenseNet((2, 2), 8, num_init_features=64, include_top=False, weights=None)
    before = [w.copy() for w in model.get_weights()]
    message = one_line_error(lambda: load_preset(model, small_hub_preset, include_top=False))
    assert "blocks=(2, 3)" in message and "blocks=(2, 2)" in message
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))
    message = one_line_error(lambda: load_preset(model, small_hub_preset, include_top=True))
    assert "no classifier" in message


def test_memory_efficient_and_fused_models_load_by_name(small_hub_preset):
    standard = keras_densenet.DenseNet(**SMALL, include_top=False, weights=None)
    load_preset(standard, small_hub_preset, include_top=False)
    for options in (dict(memory_efficient=True), dict(fused_bn=True)):
        model = keras_densenet.DenseNet(**SMALL, include_top=False, weights=None, **options)
        load_preset(model, small_hub_preset, include_top=False)
        for a, b in zip(standard.get_weights(), model.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)


@files_only
def test_remote_handles_need_the_hub_extra(monkeypatch):
    monkeypatch.setattr(extras, "installed", lambda module: module != "keras_hub")
    with pytest.raises(extras.MissingExtraError, match=r"\[hub\]") as info:
        load_preset(keras_densenet.DenseNet(**SMALL, include_top=False), "kaggle://keras/densenet/keras/x")
    assert "\n" not in str(info.value)


def test_densenet121_classifier_loads_in_keras_hub_with_its_preprocessing(tmp_path):
    path = str(tmp_path / "ours121")
    model = keras_densenet.DenseNet121(weights=None, input_shape=(97, 97, 3))
    randomize_bn(model)
    assert save_preset(model, path) == path
    classifier = keras_hub.models.ImageClassifier.from_preset(path)
    assert isinstance(classifier, keras_hub.models.DenseNetImageClassifier)
    raw = images(2, 97, seed=3)
    expected = run(model, keras_densenet.preprocess_input(raw.copy()))
    np.testing.assert_allclose(classifier.predict(raw, verbose=0), expected, rtol=0, atol=1e-4)
    metadata = json.load(open(os.path.join(path, names.METADATA_FILE)))
    assert metadata["keras_densenet"]["parameter_count"] == model.count_params() == 8062504
    assert metadata["keras_densenet"]["version"] == keras_densenet.__version__
    # ... and back, with the head.
    again = keras_densenet.DenseNet121(weights=None, input_shape=(97, 97, 3))
    load_preset(again, path)
    for a, b in zip(model.get_weights(), again.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


@files_only
@pytest.mark.timeout(600)  # loading a .keras DenseNet-169 on JAX compiles every initializer
def test_densenet169_round_trips_keras_preset_model(tmp_path):
    model = keras_densenet.DenseNet169(include_top=False, weights=None, input_shape=(None, None, 3))
    randomize_bn(model)
    model.save(tmp_path / "m.keras")
    path = keras_to_preset(str(tmp_path / "m.keras"), str(tmp_path / "preset169"))
    again = preset_to_keras(path, str(tmp_path / "again.keras"))  # model_from_preset, then saved
    assert os.path.isfile(tmp_path / "again.keras")
    assert again.name == "densenet169" and len(again.weights) == len(model.weights)
    for a, b in zip(model.get_weights(), again.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


@files_only
def test_what_keras_hub_cannot_express_is_refused_writing_nothing(tmp_path):
    out = tmp_path / "out"
    model = keras_densenet.DenseNet161(include_top=False, weights=None, input_shape=(None, None, 3))
    message = one_line_error(lambda: save_preset(model, out))
    assert "96 filters" in message and "densenet161" in message
    message = one_line_error(lambda: save_preset(keras_densenet.DenseNet(**TINY_CIFAR), out))
    assert "'cifar'" in message
    model = keras_densenet.DenseNet((2, 2), 8, bottleneck=False, num_init_features=64, include_top=False)
    assert "bottleneck" in one_line_error(lambda: save_preset(model, out))
    assert os.listdir(tmp_path) == []


def trained_style_classifier(backbone, classes=4):
    """`keras-densenet train`'s model (training/classifier.py): resize,
    rescale, ImageNet normalisation, a nested DenseNet, a softmax head."""
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Resizing(33, 33, name="resize")(inputs, training=False)
    x = keras.layers.Rescaling(1.0 / 255, name="rescale")(x)
    x = keras.layers.Normalization(mean=[0.485, 0.456, 0.406], variance=[0.229**2, 0.224**2, 0.225**2])(x)
    outputs = keras.layers.Dense(classes, activation="softmax", name="predictions")(backbone(x, training=False))
    return keras.Model(inputs, outputs, name="trained")


def test_a_trained_classifier_moves_its_preprocessing_into_the_converter(tmp_path):
    backbone = keras_densenet.DenseNet(**SMALL, include_top=False, pooling="avg", input_shape=(33, 33, 3))
    model = trained_style_classifier(backbone)
    randomize_bn(model)
    path = save_preset(model, str(tmp_path / "trained"))
    converter = json.load(open(os.path.join(path, names.IMAGE_CONVERTER_FILE)))["config"]
    assert converter["image_size"] == [33, 33] and converter["crop_to_aspect_ratio"] is False
    np.testing.assert_allclose(converter["scale"], [1 / (255 * s) for s in (0.229, 0.224, 0.225)], rtol=1e-6)
    classifier = keras_hub.models.ImageClassifier.from_preset(path)
    raw = np.random.default_rng(4).uniform(0, 255, (2, 40, 50, 3)).astype("float32")
    np.testing.assert_allclose(classifier.predict(raw, verbose=0), run(model, raw), rtol=0, atol=1e-4)
    message = one_line_error(lambda: save_preset(model, str(tmp_path / "x"), preprocessing="torch"))
    assert "`preprocessing` must be 'auto'" in message


@files_only
def test_the_digits_model_of_train_is_refused():
    from keras_densenet.training.classifier import build_classifier
    from keras_densenet.training.config import TrainConfig

    model, _ = build_classifier(TrainConfig(depth=10, growth_rate=4), num_classes=10, channels=1)
    assert "'cifar'" in one_line_error(lambda: save_preset(model, "unused"))


def test_timm_directory_loads_through_keras_hub_and_back(tmp_path):
    path = str(tmp_path / "timm121")
    model = keras_densenet.DenseNet121(weights=None, input_shape=(65, 65, 3), classes=10)
    randomize_bn(model)
    assert save_timm(model, path) == path
    config = json.load(open(os.path.join(path, "config.json")))
    assert config["architecture"] == "densenet121" and config["num_classes"] == 10
    assert config["pretrained_cfg"]["input_size"] == [3, 65, 65]
    np.testing.assert_allclose(config["pretrained_cfg"]["mean"], [0.485, 0.456, 0.406], rtol=1e-6)
    hub = keras_hub.models.Backbone.from_preset(path)
    features = keras.Model(model.input, model.get_layer("relu").output)
    x = keras_densenet.preprocess_input(images(2, 65, seed=5))
    np.testing.assert_allclose(run(hub, x), run(features, x), rtol=0, atol=1e-4)
    again = keras_densenet.DenseNet121(weights=None, input_shape=(65, 65, 3), classes=10)
    load_preset(again, path)
    for a, b in zip(model.get_weights(), again.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-12)
    message = one_line_error(lambda: save_timm(keras_densenet.DenseNet(**SMALL, include_top=False), "unused"))
    assert "timm names only" in message


def convert(capsys, *argv) -> tuple:
    """``keras-densenet convert ARGV`` in this process: (exit code, stdout, stderr)."""
    code = cli.main(["convert", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


@files_only
@pytest.mark.timeout(600)  # building, saving and loading DenseNet-161
def test_cli_refuses_densenet161_as_a_keras_hub_preset_writing_nothing(tmp_path, capsys):
    model = keras_densenet.DenseNet161(include_top=False, weights=None, input_shape=(None, None, 3))
    model.save(tmp_path / "d161.keras")
    code, _, err = convert(capsys, tmp_path / "d161.keras", tmp_path / "out", "--to", "keras-hub")
    assert code == 2 and err.count("\n") == 1 and "96 filters" in err and "Traceback" not in err
    assert os.listdir(tmp_path) == ["d161.keras"]


def test_cli_converts_presets_both_ways(small_hub_preset, tmp_path, capsys):
    code, out, _ = convert(capsys, small_hub_preset, tmp_path / "small.keras")  # keras-hub's preset -> .keras
    assert code == 0 and "parameters" in out
    model = keras.saving.load_model(tmp_path / "small.keras")
    reference = keras_densenet.DenseNet(**SMALL, include_top=False, weights=small_hub_preset)
    for a, b in zip(reference.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    code, out, _ = convert(capsys, tmp_path / "small.keras", tmp_path / "again", "--to", "keras-hub")  # and back
    assert code == 0 and names.CONFIG_FILE in out
    backbone = keras_hub.models.Backbone.from_preset(str(tmp_path / "again"))
    x = images(2, 65, seed=6) / 255.0
    np.testing.assert_allclose(run(backbone, x), run(model, x), rtol=0, atol=1e-5)
    refused = [
        ((small_hub_preset, tmp_path / "a.keras", "--to", "timm"), "--to does not apply"),
        ((tmp_path / "small.keras", tmp_path / "b", "--no-top"), "--no-top does not apply"),
        ((tmp_path / "small.keras", tmp_path / "c.keras"), "must be a directory"),
        ((tmp_path / "d.pth", tmp_path / "d.keras", "--preprocessing", "torch"), "--preprocessing does not apply"),
        ((tmp_path / "small.keras", tmp_path / "e", "--to", "timm"), "timm names only"),
    ]
    for argv, words in refused:
        code, _, err = convert(capsys, *argv)
        assert code == 2 and err.count("\n") == 1 and words in err, (argv, err)
    assert sorted(os.listdir(tmp_path)) == ["again", "small.keras"]


@files_only
def test_cli_names_the_hub_extra(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(extras, "installed", lambda module: module != "keras_hub")
    for argv in ((tmp_path / "m.keras", tmp_path / "out"), ("hf://someone/densenet", tmp_path / "o.keras")):
        code, _, err = convert(capsys, *argv)
        assert code == 2 and err.count("\n") == 1 and "[hub]" in err
    assert os.listdir(tmp_path) == []
