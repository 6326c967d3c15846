"""The keras-densenet command line: train, predict, export, table, bad input."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from PIL import Image

import keras_densenet
from keras_densenet import cli
from keras_densenet.core import registry
from keras_densenet.training.train import TrainConfig, build_classifier
from tests.helpers import BACKEND, TINY_TRAIN, cli_args, one_backend

TINY_ARGS = cli_args(**TINY_TRAIN, epochs=1)
#: The suite of the checks whose child process drops $KERAS_BACKEND (as a
#: user's shell has none) or names its own: they run the same in every suite.
CHILD_SUITE = one_backend("torch", "tensorflow", "jax")
child_suite_only = pytest.mark.skipif(
    BACKEND != CHILD_SUITE, reason=f"the child process ignores this suite's backend: runs in the {CHILD_SUITE} suite")


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def saved_model(tmp_path):
    """A tiny classifier as `train` saves it, with its class names."""
    model, _ = build_classifier(TrainConfig(depth=10, growth_rate=4), 3, 3)
    path = tmp_path / "model" / "model.keras"
    path.parent.mkdir()
    model.save(path)
    (path.parent / "class_names.json").write_text(json.dumps(["cat", "dog", "emu"]))
    return path


@pytest.fixture
def png(tmp_path):
    path = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 40, 3), dtype="uint8")).save(path)
    return path


#: `table` builds every model shapes-only: the listing is the same on every
#: backend (its counts are checked on each in tests/test_analysis.py).
TABLE_SUITE = one_backend("jax", "torch", "tensorflow")


@pytest.mark.skipif(BACKEND != TABLE_SUITE, reason=f"the same listing on every backend: the {TABLE_SUITE} suite")
def test_table_lists_every_variant(capsys):
    code, out, _ = run(capsys, "table")
    assert code == 0
    for name in registry.VARIANTS:
        assert name in out


HIDE_MODULES = os.path.join(os.path.dirname(__file__), "hide_modules")
#: The cheapest command that prints the backend it ran on: `table` of one
#: small model (all models take 3x as long).
TABLE = ("table", "--models", "densenet_bc_100_k12")


def run_cli(*argv, hide=(), keras_json=None, home=None, env=None):
    """The CLI in a fresh process without $KERAS_BACKEND, as a user runs it.

    `hide` makes packages look not installed (tests/hide_modules); `home` is
    a fresh $HOME (no ~/.keras/keras.json unless `keras_json` names a backend).
    """
    env = {k: v for k, v in {**os.environ, **(env or {})}.items() if k not in ("KERAS_BACKEND", "KERAS_HOME")}
    if home is not None:
        env["HOME"] = str(home)
        if keras_json is not None:
            (home / ".keras").mkdir(parents=True, exist_ok=True)
            (home / ".keras" / "keras.json").write_text(json.dumps({"backend": keras_json}))
    if hide:
        env["PYTHONPATH"] = os.pathsep.join([HIDE_MODULES, env.get("PYTHONPATH", "")])
        env["KD_HIDE_MODULES"] = ",".join(hide)
    return subprocess.run(
        [sys.executable, "-c", "import sys; from keras_densenet.cli import main; sys.exit(main())", *argv],
        env=env, capture_output=True, text=True, timeout=600,
    )


@pytest.mark.parametrize("position", ["before", "after"])
def test_backend_option_takes_effect(position, tmp_path):
    other = "jax" if keras.backend.backend() != "jax" else "tensorflow"
    if other == "jax" and BACKEND != one_backend("tensorflow", "torch"):  # the same child in both suites
        pytest.skip("the child runs --backend jax without $KERAS_BACKEND: as in the tensorflow suite")
    pytest.importorskip(other)
    argv = ["--backend", other, *TABLE] if position == "before" else [*TABLE, "--backend", other]
    proc = run_cli(*argv, home=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"backend: {other}" in proc.stdout
    assert "using the" not in proc.stderr  # chosen, so nothing to announce


@child_suite_only
@pytest.mark.parametrize("keras_json", [None, "tensorflow"])
def test_cli_picks_an_installed_backend_without_tensorflow(keras_json, tmp_path):
    """README command 1 installs only JAX; keras then writes "tensorflow" into
    a new ~/.keras/keras.json. The next commands must still run."""
    pytest.importorskip("jax")
    proc = run_cli(*TABLE, hide=("tensorflow",), home=tmp_path, keras_json=keras_json)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "backend: jax" in proc.stdout
    notes = [line for line in proc.stderr.splitlines() if line.startswith("keras-densenet:")]
    assert len(notes) == 1 and "using the jax backend" in notes[0], proc.stderr
    if keras_json:
        assert "keras.json names 'tensorflow', which is not installed" in notes[0]


def test_cli_requested_backend_not_installed_is_one_line(tmp_path):
    proc = run_cli("--backend", "tensorflow", *TABLE, hide=("tensorflow",), home=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert "tensorflow is not installed" in proc.stderr


@pytest.mark.parametrize("hidden", ["sklearn", "matplotlib", "PIL"])
@pytest.mark.parametrize("command", ["train", "predict", "reuse"])
def test_missing_train_extra_is_one_line_naming_it(command, hidden, tmp_path):
    """A core install (no [train] extra): the commands that need it say so at
    once, in one line with the install command, exit 2, and the library
    functions raise the same error."""
    argv = {"train": ["train", "--out", str(tmp_path / "run")],
            "predict": ["predict", "--model", DIGITS_MODEL, DIGITS_MODEL],
            "reuse": ["reuse", "densenet_bc_100_k12", "--weights", "none", "--out", str(tmp_path)]}[command]
    proc = run_cli(*argv, hide=(hidden,), home=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"keras-densenet {command}: error:" in proc.stderr
    assert f"{hidden} not installed" in proc.stderr
    assert 'pip install "keras-densenet[train]"' in proc.stderr
    assert not (tmp_path / "run").exists()


def test_missing_extra_in_the_library_names_it():
    code = ("from keras_densenet.data import datasets as data\n"
            "try:\n    data.load_digits_dataset()\n"
            "except ImportError as e:\n    print(type(e).__name__, e)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([HIDE_MODULES, os.environ.get("PYTHONPATH", "")]),
           "KD_HIDE_MODULES": "sklearn"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300).stdout
    assert out.startswith("MissingExtraError the bundled digits dataset needs the [train] extra"), out
    assert 'pip install "keras-densenet[train]"' in out


def test_bad_arguments_are_answered_before_keras_is_imported(tmp_path):
    """`train --epochs 0` must not wait for keras and a backend to load."""
    code = (
        "import sys; from keras_densenet.cli import main; rc = main(sys.argv[1:]);"
        "assert 'keras' not in sys.modules, 'keras was imported'; sys.exit(rc)"
    )
    for argv in (["train", "--epochs", "0"], ["train", "--depth", "11"], ["predict", "x.png"],
                 ["export", str(tmp_path / "missing.keras"), "--format", "onnx", "out.onnx"]):
        env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
        proc = subprocess.run([sys.executable, "-c", code, *argv], env=env, capture_output=True, text=True)
        assert proc.returncode == 2, (argv, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.mark.parametrize(
    "arch",
    [
        registry.ArchConfig((1, 2), 8, num_init_features=12),  # ImageNet stem, DenseNet-BC
        registry.ArchConfig((2, 3), 8, bottleneck=False, compression=1.0, stem="cifar"),
    ],
)
def test_param_count_matches_built_model(arch):
    model = keras_densenet.DenseNet(**arch.builder_kwargs(), input_shape=(32, 32, 3), classes=5)
    assert arch.param_count(5) == model.count_params()
    notop = keras_densenet.DenseNet(**arch.builder_kwargs(), input_shape=(32, 32, 1), include_top=False)
    assert arch.param_count(None, in_channels=1) == notop.count_params()


def test_train_on_image_folder_skips_corrupt_files(capsys, image_folder, tmp_path):
    pytest.importorskip("tensorflow", reason="--data uses tf.data pipelines")
    (image_folder / "dark" / "bad.jpg").write_bytes(b"garbage")
    out_dir = tmp_path / "out"
    # The 10 training images in one batch: one training step to compile, not two.
    one_batch = cli_args(**dict(TINY_TRAIN, batch_size=16), epochs=1)
    code, out, err = run(capsys, "train", "--data", str(image_folder), "--output", str(out_dir), *one_batch)
    assert code == 0, err
    # Reported once, as a warning naming the file.
    assert (out + err).count("corrupt") == 1 and "skipped 1 corrupt" in err and "bad.jpg" in err
    assert json.loads((out_dir / "class_names.json").read_text()) == ["bright", "dark"]
    model = keras.saving.load_model(out_dir / "model.keras")
    assert model.input_shape == (None, None, None, 3)  # any size: resized inside
    assert model.get_layer("resize").get_config()["height"] == TrainConfig().image_size  # the default


def test_predict_with_saved_model_uses_class_names(capsys, saved_model, png):
    code, out, err = run(capsys, "predict", str(png), str(png), "--model", str(saved_model), "--top", "2")
    assert code == 0, err
    lines = out.splitlines()
    assert lines.count(str(png)) == 2
    scores = [line.split() for line in lines if line.startswith("  ")]
    assert len(scores) == 4 and all(s[1] in ("cat", "dog", "emu") for s in scores)


#: `predict --arch` of a full-size ImageNet variant: its resizing and name
#: decoding are the CLI's own; the builder and the weights file it loads are
#: checked on every backend in tests/test_models.py and test_weights.py.
IMAGENET_PREDICT_SUITE = one_backend("torch", "tensorflow", "jax")


@pytest.mark.skipif(BACKEND != IMAGENET_PREDICT_SUITE, reason="the CLI's resizing and ImageNet names do not depend "
                    f"on the backend: runs in the {IMAGENET_PREDICT_SUITE} suite")
def test_predict_imagenet_arch_decodes_names(capsys, png, tmp_path, monkeypatch):
    from keras.src.applications import imagenet_utils

    # A local class index: nothing is downloaded.
    monkeypatch.setattr(imagenet_utils, "CLASS_INDEX", {str(i): [f"n{i:08d}", f"class_{i}"] for i in range(1000)})
    weights = tmp_path / "densenet121.weights.h5"
    model = keras_densenet.build("densenet121")
    model.save_weights(weights)
    # Bilinear, as image_dataset_from_directory and Keras' Resizing layer.
    image = keras.utils.img_to_array(keras.utils.load_img(png))[None]
    resized = keras.ops.convert_to_numpy(keras.ops.image.resize(image, (224, 224), interpolation="bilinear"))
    expected = model.predict(keras_densenet.preprocess_input(resized), verbose=0)
    code, out, err = run(capsys, "predict", str(png), "--arch", "densenet121", "--weights", str(weights), "--top", "3")
    assert code == 0, err
    best = int(np.argmax(expected[0]))
    assert out.splitlines()[1].split()[-1] == f"class_{best}"


def _bad_inputs(tmp_path, image_folder, png):
    not_a_model = tmp_path / "fake.keras"
    not_a_model.write_text("this is not a zip")
    empty = tmp_path / "empty"
    empty.mkdir()
    single = tmp_path / "single"
    (single / "only").mkdir(parents=True)
    Image.open(png).save(single / "only" / "a.png")
    all_corrupt = tmp_path / "corrupt"
    for label in ("a", "b"):
        (all_corrupt / label).mkdir(parents=True)
        (all_corrupt / label / "x.png").write_bytes(b"nope")
    a_file = tmp_path / "file.txt"
    a_file.write_text("")
    return {
        "missing data dir": (["train", "--data", str(tmp_path / "nope")], "not found"),
        "empty data dir": (["train", "--data", str(empty)], "no readable images"),
        "single class": (["train", "--data", str(single)], "only one class"),
        "only corrupt images": (["train", "--data", str(all_corrupt)], "2 corrupt"),
        "image size below 8": (["train", "--image-size", "7"], "`--image-size` must be an integer >= 8"),
        "image size below the stride": (["train", "--arch", "densenet121", "--image-size", "16"],
                                        "`--image-size` must be at least 32 for densenet121"),
        "unknown arch": (["train", "--arch", "densenet99"], "densenet121"),
        "unwritable output": (["train", "--output", str(a_file / "sub")], "--output"),
        "predict not a model": (["predict", str(png), "--model", str(not_a_model)], "not a loadable Keras model"),
        "export not a model": (["export", str(not_a_model), "--format", "onnx", str(tmp_path / "m.onnx")], "not a loadable Keras model"),
        "predict missing image": (["predict", str(tmp_path / "no.png"), "--arch", "densenet121"], "image file not found"),
    }


@pytest.mark.parametrize(
    "case",
    ["missing data dir", "empty data dir", "single class", "only corrupt images", "image size below 8",
     "image size below the stride",
     "unknown arch", "unwritable output", "predict not a model", "export not a model", "predict missing image"],
)
def test_bad_input_is_one_line_exit_2(case, capsys, tmp_path, image_folder, png):
    argv, expected = _bad_inputs(tmp_path, image_folder, png)[case]
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert expected in err


#: README command 1's trained model (see tests/data/README.md).
DIGITS_MODEL = os.path.join(os.path.dirname(__file__), "data", "digits_run", "model.keras")


def _validation_scans(directory):
    """The validation split's raw 8x8 scans as grayscale PNGs, with labels."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    # The split of `data.load_digits_dataset` (same call, same seed).
    _, val = train_test_split(np.arange(len(digits.target)), test_size=0.2,
                              stratify=digits.target, random_state=0)
    paths = []
    for i in val:
        path = directory / f"{i}.png"
        Image.fromarray(np.round(digits.images[i] * 255 / 16).astype("uint8"), mode="L").save(path)
        paths.append(str(path))
    return paths, digits.target[val]


def test_predict_raw_8x8_scans_like_training(capsys, tmp_path):
    """The README's demo: `predict` must resize as training did (on these
    360 scans the model is 100% correct with the training resize, 97.2% with
    a nearest-neighbour one)."""
    paths, labels = _validation_scans(tmp_path)
    code, out, err = run(capsys, "predict", *paths, "--model", DIGITS_MODEL, "--top", "1")
    assert code == 0, err
    lines = out.splitlines()
    predicted = [int(lines[lines.index(p) + 1].split()[-1]) for p in paths]
    accuracy = np.mean(np.array(predicted) == labels)
    assert accuracy >= 0.99, accuracy
    # The model resizes inside, exactly as the training data was resized.
    from keras_densenet.data import datasets as data
    from keras_densenet.deployment import export

    model = keras.saving.load_model(DIGITS_MODEL)
    (size, _) = export.resize_size(model)
    scans = np.stack([keras.utils.img_to_array(keras.utils.load_img(p, color_mode="grayscale")) for p in paths[:8]])
    np.testing.assert_allclose(
        model.predict(scans, verbose=0), model.predict(data.resize_images(scans, size), verbose=0), atol=1e-5
    )


def test_predict_without_model_or_arch_says_which(capsys, png):
    code, _, err = run(capsys, "predict", str(png))
    assert code == 2 and "--model" in err and "--arch" in err and "not both" not in err


@pytest.mark.parametrize("avx512, noted", [(True, False), (False, True), (None, False)])
def test_enable_onednn_unless_the_user_chose(monkeypatch, avx512, noted):
    from keras_densenet.core import backends

    monkeypatch.setattr(backends, "cpu_info", lambda: {"cpu": "x", "cpu_count": 2, "avx512": avx512})
    env = {}
    note = backends.enable_onednn(env)
    assert env == {"TF_ENABLE_ONEDNN_OPTS": "1"}
    assert (note is not None) == noted
    if noted:  # it changes TensorFlow's default: said, with the way back
        assert "TF_ENABLE_ONEDNN_OPTS=0" in note
    for chosen in ("0", "1", ""):
        env = {"TF_ENABLE_ONEDNN_OPTS": chosen}
        assert backends.enable_onednn(env) is None and env == {"TF_ENABLE_ONEDNN_OPTS": chosen}


@pytest.mark.parametrize("preset", [None])  # a user's setting: test_enable_onednn_unless_the_user_chose
def test_cli_turns_onednn_on_for_tensorflow_only_when_unset(preset, tmp_path):
    pytest.importorskip("tensorflow")
    if BACKEND != "tensorflow":
        pytest.skip("the child runs --backend tensorflow without $KERAS_BACKEND, as in the tensorflow suite")
    code = ("import os, sys; from keras_densenet.cli import main; rc = main(sys.argv[1:]);"
            "print('onednn=' + os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'unset')); sys.exit(rc)")
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "TF_ENABLE_ONEDNN_OPTS")}
    if preset is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = preset
    proc = subprocess.run([sys.executable, "-c", code, "--backend", "tensorflow", *TABLE],
                          env={**env, "HOME": str(tmp_path)}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"onednn={preset or '1'}" in proc.stdout
