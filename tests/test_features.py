"""Feature extraction at volume (keras_densenet.deployment.features): rows
equal to ``model.predict`` on the same preprocessed images, paths aligned,
skipped files without rows, nothing at the final names after a failure."""

import os

import keras
import numpy as np
import pytest
from PIL import Image

import keras_densenet as kd
from keras_densenet.data import images
from keras_densenet.deployment import features
from tests.helpers import TINY


@pytest.fixture
def photos(tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(7):
        size = (20 + 3 * i, 24) if i % 2 else (40, 32)
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype="uint8")).save(d / f"{i}.png")
    Image.fromarray(rng.integers(0, 256, (64, 48, 3), dtype="uint8")).save(d / "7.jpg")
    return d


@pytest.fixture(scope="module")
def classifier():
    """A tiny DenseNet classifier taking raw pixels, as `train` writes them."""
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Resizing(16, 16)(inputs)
    x = keras.layers.Rescaling(1 / 255)(x)
    x = kd.DenseNet(**TINY, include_top=False, pooling="avg", input_shape=(16, 16, 3))(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))


def _reference(model, paths, size):
    x = np.stack([images.decode(p, 3, size) for p in paths])
    return keras.ops.convert_to_numpy(model.predict(x, verbose=0))


def test_rows_equal_model_predict_with_paths_aligned(photos, tmp_path, classifier):
    out = tmp_path / "feats.npy"
    result = features.extract_features(str(photos), out, model=classifier, batch_size=3, workers=2)
    x = np.load(out)
    paths = (tmp_path / "feats.paths.txt").read_text().splitlines()
    assert x.shape == result.shape == (8, classifier.layers[-1].input.shape[-1]) and x.dtype == np.float32
    assert paths == sorted(paths, key=lambda p: os.path.basename(p)) and len(paths) == 8
    net = features.feature_model(classifier)
    np.testing.assert_allclose(x, _reference(net, paths, (16, 16)), atol=1e-5, rtol=1e-5)


def test_skipped_files_have_no_row_and_max_pooling_of_a_layer(photos, tmp_path, classifier, capsys):
    (photos / "8.png").write_text("not a png")
    (photos / "9.jpg").write_bytes(b"")
    backbone = kd.DenseNet(**TINY, include_top=False, input_shape=(16, 16, 3))
    conv = [layer.name for layer in backbone.layers if isinstance(layer, keras.layers.Conv2D)][2]
    out = tmp_path / "f.npy"
    result = features.extract_features([str(photos)], out, model=backbone, layer=conv, pool="max", batch_size=4,
                                       preprocess=lambda x: x / 255.0)
    assert result.count == 8 and [os.path.basename(p) for p, _ in result.skipped] == ["8.png", "9.jpg"]
    assert capsys.readouterr().err.count("skipped ") == 2
    paths = open(result.paths_file).read().splitlines()
    assert len(paths) == 8 and not any(p.endswith(("8.png", "9.jpg")) for p in paths)
    sub = keras.Model(backbone.inputs, backbone.get_layer(conv).output)
    x = np.stack([images.decode(p, 3, 16) for p in paths]) / 255.0
    maps = keras.ops.convert_to_numpy(sub.predict(x, verbose=0))
    np.testing.assert_allclose(np.load(out), maps.max(axis=(1, 2)), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="`layer` 'nope'"):
        features.feature_model(classifier, "nope")


def test_a_failed_run_leaves_nothing_at_the_final_names(photos, tmp_path, classifier, monkeypatch):
    out = tmp_path / "f.npy"
    net_calls = []
    real = features.deploy.keras_runner

    def failing(model, batch_size, count):
        def run_or_fail(x):
            net_calls.append(len(x))
            if len(net_calls) == 2:
                raise KeyboardInterrupt
            return real(model, batch_size, count)(x)

        return run_or_fail

    monkeypatch.setattr(features.deploy, "keras_runner", failing)
    with pytest.raises(KeyboardInterrupt):
        features.extract_features(str(photos), out, model=classifier, batch_size=3)
    assert sorted(os.listdir(tmp_path)) == ["photos"]


def test_bad_arguments_are_named(photos, tmp_path, classifier):
    with pytest.raises(ValueError, match="must end in .npy"):
        features.extract_features(str(photos), tmp_path / "f.csv", model=classifier)
    with pytest.raises(ValueError, match="pool"):
        features.extract_features(str(photos), tmp_path / "f.npy", model=classifier, pool="sum")
    with pytest.raises(ValueError, match="give one model"):
        features.extract_features(str(photos), tmp_path / "f.npy")
    with pytest.raises(ValueError, match="none of the 1 image files"):
        (tmp_path / "bad.png").write_text("x")
        features.extract_features(str(tmp_path / "bad.png"), tmp_path / "f.npy", model=classifier,
                                  on_skip=lambda *_: None)
    assert not (tmp_path / "f.npy").exists()


def test_features_command_rows_paths_and_bad_files(photos, tmp_path, classifier, capsys):
    """``keras-densenet features``: rows equal to ``model.predict``, paths
    aligned, each unreadable file named on stderr, exit status 3."""
    from keras_densenet import cli

    model_path = tmp_path / "model.keras"
    classifier.save(model_path)
    (photos / "8.png").write_text("not a png")
    out = tmp_path / "feats.npy"
    code = cli.main(["features", str(photos), "--model", str(model_path), "--output", str(out),
                     "--batch-size", "3", "--workers", "2"])
    stdout, err = capsys.readouterr()
    assert code == 3, err
    assert [line for line in err.splitlines() if line.startswith("skipped ")] == [
        f"skipped {photos / '8.png'}: not an image Pillow can read"]
    assert "\x1b" not in stdout + err and "wrote 8 x" in stdout
    paths = (tmp_path / "feats.paths.txt").read_text().splitlines()
    assert [os.path.basename(p) for p in paths] == [f"{i}.png" for i in range(7)] + ["7.jpg"]
    net = features.feature_model(classifier)
    np.testing.assert_allclose(np.load(out), _reference(net, paths, (16, 16)), atol=1e-5, rtol=1e-5)
