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
from tests.helpers import SCRIPTS, TINY_TRAIN, cli_args

TINY_ARGS = cli_args(**TINY_TRAIN, epochs=1)
#: The checks whose child process drops $KERAS_BACKEND (as a user's shell
#: has none) or names its own run the same in every suite: one runs them.
child_suite_only = pytest.mark.one_backend(
    "torch", "tensorflow", "jax", reason="the child process ignores this suite's backend")


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
@pytest.mark.one_backend("jax", "torch", "tensorflow", reason="the same listing on every backend")
def test_table_lists_every_variant(capsys):
    code, out, _ = run(capsys, "table")
    assert code == 0
    for name in registry.VARIANTS:
        assert name in out


HIDE_MODULES = os.path.join(os.path.dirname(__file__), "hide_modules")
#: Seconds a CLI child process may take: up to 50 s on a 2-core machine
#: loaded 5x over; less than a test's default limit (300 s, pyproject.toml),
#: so that a hung child fails with its own output.
CHILD_TIMEOUT_S = 240
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
    return subprocess.run([sys.executable, "-m", "keras_densenet", *argv], env=env, capture_output=True, text=True,
                          timeout=CHILD_TIMEOUT_S)


@child_suite_only
@pytest.mark.parametrize("other", ["jax", "tensorflow"])
@pytest.mark.parametrize("position", ["before", "after"])
def test_backend_option_takes_effect(position, other, tmp_path):
    pytest.importorskip(other)
    argv = ["--backend", other, *TABLE] if position == "before" else [*TABLE, "--backend", other]
    proc = run_cli(*argv, home=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"backend: {other}" in proc.stdout
    assert "using the" not in proc.stderr  # chosen, so nothing to announce


@child_suite_only
@pytest.mark.parametrize("keras_json", [None, "tensorflow"])
def test_cli_picks_an_installed_backend_without_tensorflow(keras_json, tmp_path):
    """The digits quick start installs only JAX; keras then writes "tensorflow" into
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
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([HIDE_MODULES, os.environ.get("PYTHONPATH", "")]),
           "KD_HIDE_MODULES": "sklearn"}
    out = subprocess.run([sys.executable, str(SCRIPTS / "missing_extra.py")], env=env, capture_output=True, text=True,
                         timeout=CHILD_TIMEOUT_S).stdout
    assert out.startswith("MissingExtraError the bundled digits dataset needs the [train] extra"), out
    assert 'pip install "keras-densenet[train]"' in out


def test_bad_arguments_are_answered_before_keras_is_imported(tmp_path):
    """`train --epochs 0` must not wait for keras and a backend to load."""
    for argv in (["train", "--epochs", "0"], ["train", "--depth", "11"], ["predict", "x.png"],
                 ["export", str(tmp_path / "missing.keras"), "--format", "onnx", "out.onnx"]):
        env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
        proc = subprocess.run([sys.executable, str(SCRIPTS / "cli_without_keras.py"), *argv], env=env,
                              capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
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


@pytest.mark.timeout(600)  # 130 s on a 2-core machine loaded 5x over (JAX); the default is 300 s
def test_train_on_image_folder_skips_unreadable_files_when_asked(capsys, image_folder, tmp_path):
    """No TensorFlow needed: the folder is read by the PyDataset pipeline on every backend."""
    (image_folder / "dark" / "bad.jpg").write_bytes(b"garbage")
    out_dir = tmp_path / "out"
    # The 10 training images in one batch: one training step to compile, not two.
    one_batch = cli_args(**dict(TINY_TRAIN, batch_size=16), epochs=1)
    code, out, err = run(capsys, "train", "--data", str(image_folder), "--output", str(out_dir), "--skip-unreadable",
                         *one_batch)
    assert code == 0, err
    # The file named once, in one line with the reason; then the count.
    named = [line for line in err.splitlines() if "bad.jpg" in line]
    assert len(named) == 1 and named[0].startswith("skipped ") and "not an image" in named[0]
    assert (out + err).count("corrupt") == 1 and "skipped 1 corrupt" in err
    assert json.loads((out_dir / "class_names.json").read_text()) == ["bright", "dark"]
    model = keras.saving.load_model(out_dir / "model.keras")
    assert model.input_shape == (None, None, None, 3)  # any size: resized inside
    # With --data, DenseNet-BC's own size, not the digits' 12.
    assert model.get_layer("resize").get_config()["height"] == 32


def test_train_on_image_folder_stops_at_an_unreadable_file(capsys, image_folder, tmp_path):
    (image_folder / "dark" / "bad.jpg").write_bytes(b"garbage")
    out_dir = tmp_path / "out"
    code, out, err = run(capsys, "train", "--data", str(image_folder), "--output", str(out_dir), *TINY_ARGS)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "bad.jpg" in err and "not an image" in err and "--skip-unreadable" in err
    assert "epoch" not in out.lower() and not (out_dir / "model.keras").exists()  # before the first epoch


def test_train_skipping_every_file_is_one_line_per_file_then_the_error(capsys, tmp_path):
    all_corrupt = tmp_path / "corrupt"
    for label in ("a", "b"):
        (all_corrupt / label).mkdir(parents=True)
        (all_corrupt / label / "x.png").write_bytes(b"nope")
    code, _, err = run(capsys, "train", "--data", str(all_corrupt), "--skip-unreadable", "--output",
                       str(tmp_path / "out"))
    lines = err.strip().splitlines()
    assert code == 2 and "Traceback" not in err
    assert [line.split(":")[0] for line in lines[:2]] == [f"skipped {all_corrupt / label / 'x.png'}" for label in "ab"]
    assert len(lines) == 3 and "no readable images" in lines[2] and "2 corrupt" in lines[2]


def test_train_output_for_logs_is_one_plain_line_per_epoch(capsys, tmp_path):
    """stdout is not a terminal (captured): no progress bar, no ANSI escapes."""
    code, out, err = run(capsys, "train", *cli_args(**TINY_TRAIN, epochs=2, limit=64), "--output", str(tmp_path / "o"))
    assert code == 0, err
    assert "\x1b" not in out + err and "\r" not in out
    assert [line.split(":")[0] for line in out.splitlines() if line.startswith("epoch ")] == ["epoch 1/2", "epoch 2/2"]
    assert "best validation accuracy" in out and len(out.splitlines()) <= 2 + 2 + 3  # header, epochs, summary


def test_predict_with_saved_model_uses_class_names(capsys, saved_model, png, tmp_path):
    other = tmp_path / "other.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (30, 52, 3), dtype="uint8")).save(other)
    code, out, err = run(capsys, "predict", str(png), str(other), "--model", str(saved_model), "--top", "2")
    assert code == 0, err
    lines = out.splitlines()
    assert [line for line in lines if not line.startswith("  ")] == [str(png), str(other)]
    scores = [line.split() for line in lines if line.startswith("  ")]
    assert len(scores) == 4 and all(s[1] in ("cat", "dog", "emu") for s in scores)


def _folder_with_bad_files(root):
    good = []
    for i, size in enumerate([(20, 30), (44, 28), (16, 16)]):
        good.append(root / "sub" / f"{i}.png" if i == 2 else root / f"{i}.png")
        good[-1].parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (*size, 3), dtype="uint8")).save(good[-1])
    Image.new("CMYK", (10, 8), (0, 255, 0, 0)).save(root / "cmyk.jpg")  # readable
    (root / "empty.png").write_bytes(b"")
    (root / "text.png").write_text("not a png")
    return [str(p) for p in good]


@pytest.mark.parametrize("ending", [".csv", ".jsonl"])
def test_predict_a_folder_to_a_row_file_skipping_bad_files_exits_3(capsys, saved_model, tmp_path, ending):
    folder = tmp_path / "photos"
    _folder_with_bad_files(folder)
    rows = tmp_path / f"preds{ending}"
    code, out, err = run(capsys, "predict", str(folder), "--model", str(saved_model), "--output", str(rows),
                         "--batch-size", "2", "--workers", "2", "--top", "2")
    assert code == 3, err
    skipped = [line for line in err.splitlines() if line.startswith("skipped ")]
    assert sorted(line.split(":")[0].rsplit("/", 1)[-1] for line in skipped) == ["empty.png", "text.png"]
    assert "\x1b" not in out + err and "wrote 4 rows" in out
    text = rows.read_text().splitlines()
    if ending == ".csv":
        assert text[0].startswith("path,class_id_1,class_name_1,score_1")
        paths = [line.split(",")[0] for line in text[1:]]
    else:
        paths = [json.loads(line)["path"] for line in text]
    # Sorted: the folder's files, then its sub-folder's; no row for the bad files.
    assert [os.path.relpath(p, folder) for p in paths] == ["0.png", "1.png", "cmyk.jpg", "sub/2.png"]


@pytest.mark.one_backend("jax", "torch", "tensorflow", reason="the CLI's spelling of None")
def test_weights_none_means_random_initial_weights(capsys, png):
    code, out, err = run(capsys, "predict", str(png), "--arch", "densenet_bc_100_k12", "--weights", "none",
                         "--top", "1")
    assert code == 0, err
    assert out.splitlines()[0] == str(png) and len(out.splitlines()) == 2
    from keras_densenet.cli import common

    assert common.weights_value("None") is None and common.weights_value("imagenet") == "imagenet"


#: `predict --arch` of a full-size ImageNet variant: its resizing and name
#: decoding are the CLI's own; the builder and the weights file it loads are
#: checked on every backend in tests/test_models.py and test_weights.py.
@pytest.mark.one_backend("torch", "tensorflow", "jax",
                         reason="the CLI's resizing and ImageNet names do not depend on the backend")
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
        "only corrupt images": (["train", "--data", str(all_corrupt)], "cannot read image"),
        "image size below 8": (["train", "--image-size", "7"], "`--image-size` must be an integer >= 8"),
        "image size below the stride": (["train", "--arch", "densenet121", "--image-size", "16"],
                                        "`--image-size` must be at least 32 for densenet121"),
        "unknown arch": (["train", "--arch", "densenet99"], "densenet121"),
        "unwritable output": (["train", "--output", str(a_file / "sub")], "--output"),
        "predict not a model": (["predict", str(png), "--model", str(not_a_model)], "not a loadable Keras model"),
        "export not a model": (["export", str(not_a_model), "--format", "onnx", str(tmp_path / "m.onnx")],
                               "not a loadable Keras model"),
        "predict missing image": (["predict", str(tmp_path / "no.png"), "--arch", "densenet121"],
                                  "image file not found"),
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


#: The digits quick start's trained model (see tests/data/README.md).
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


@pytest.mark.one_backend("tensorflow", reason="the child runs --backend tensorflow without $KERAS_BACKEND")
@pytest.mark.parametrize("preset", [None])  # a user's setting: test_enable_onednn_unless_the_user_chose
def test_cli_turns_onednn_on_for_tensorflow_only_when_unset(preset, tmp_path):
    pytest.importorskip("tensorflow")
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "TF_ENABLE_ONEDNN_OPTS")}
    if preset is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = preset
    proc = subprocess.run([sys.executable, str(SCRIPTS / "cli_onednn.py"), "--backend", "tensorflow", *TABLE],
                          env={**env, "HOME": str(tmp_path)}, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"onednn={preset or '1'}" in proc.stdout
