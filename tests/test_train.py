"""Training library: digits data, image folders, fit/resume, fine-tuning."""

import json
import os
import re

import keras
import numpy as np
import pytest

import keras_densenet
from keras_densenet import cli
from keras_densenet.core import internals
from keras_densenet.data import datasets as data
from keras_densenet.training import train
from keras_densenet.training.classifier import build_classifier
from keras_densenet.training.config import BACKUP_DIR, TrainConfig
from keras_densenet.training.outputs import read_log
from keras_densenet.training.timing import TIMED_PHASES, CompileTimer, format_timings
from tests.helpers import TINY_TRAIN, cli_args

TINY = dict(TINY_TRAIN, limit=60, batch_size=16, verbose=0)


def assert_timings_add_up(timings):
    """Every phase is there, none is negative, and they make up the total."""
    assert set(timings) == {*TIMED_PHASES, "total"}
    assert all(seconds >= 0 for seconds in timings.values()), timings
    assert sum(timings[p] for p in TIMED_PHASES) == pytest.approx(timings["total"], abs=1e-6)
    assert timings["epochs"] > 0 and timings["total"] > 0


class StopAfter(keras.callbacks.Callback):
    """Simulates a crash after epoch `epoch` (0-based) has been saved."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("simulated interruption")


class RecordEpochs(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs, self.trainable = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)
        self.trainable.append(len(self.model.trainable_weights))


def test_digits_are_upsampled_and_stratified():
    ds = data.load_digits_dataset(image_size=40, channels=3, validation_split=0.25, seed=1)
    assert ds.x_train.shape[1:] == (40, 40, 3) and ds.x_train.dtype == np.float32
    assert len(ds.x_train) + len(ds.x_val) == 1797
    # Bilinear weights sum to 1 up to float32 rounding (torch's: 255.00002).
    assert -1e-3 <= ds.x_train.min() and ds.x_train.max() <= 255 + 1e-3 and ds.x_train.max() > 200
    val, total = np.bincount(ds.y_val), np.bincount(np.concatenate([ds.y_train, ds.y_val]))
    assert np.all(np.abs(val / total - 0.25) < 0.01)  # stratified: 25% of every class
    assert ds.class_names == [str(d) for d in range(10)]


def test_augmented_batches_shift_but_keep_labels():
    x = np.zeros((10, 32, 32, 1), "float32")
    x[:, 14:18, 14:18] = 255
    y = np.arange(10)
    batches = data.augmented_batches(x, y, batch_size=4, max_shift=2, seed=0, drop_remainder=False)
    assert len(batches) == 3
    xb, yb = batches[0]
    assert sorted(yb) == sorted(y[batches.order[:4]])
    assert all(xb[i].sum() == x[0].sum() for i in range(len(xb)))  # shifted, not cropped
    assert any(not np.array_equal(xb[i], x[0]) for i in range(len(xb)))


def test_scan_counts_corrupt_files(image_folder):
    (image_folder / "dark" / "broken.png").write_bytes(b"not a png")
    scan = data.scan_image_folder(image_folder)
    assert scan.class_names == ["bright", "dark"]
    assert [os.path.basename(p) for p in scan.corrupt] == ["broken.png"]
    assert len(scan.files["dark"]) == 6


def test_image_folder_datasets_skip_corrupt(image_folder):
    pytest.importorskip("tensorflow", reason="image_dataset_from_directory needs tf.data")
    (image_folder / "bright" / "truncated.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    with pytest.warns(UserWarning, match="skipped 1 corrupt"):
        train_ds, val_ds, names, corrupt = data.image_folder_datasets(
            image_folder, 32, batch_size=4, validation_split=0.25
        )
    assert names == ["bright", "dark"] and corrupt == 1
    n_train = sum(int(x.shape[0]) for x, _ in train_ds)
    n_val = sum(int(x.shape[0]) for x, _ in val_ds)
    assert n_train + n_val == 12
    x, _ = next(iter(train_ds))
    assert tuple(x.shape[1:]) == (32, 32, 3)


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(image_size=4), "image_size"),
        (dict(image_size=16, arch="densenet121"), "image_size. must be at least 32 for densenet121"),
        (dict(image_size=2, depth=10), "image_size"),
        (dict(arch="densenet99"), "Unknown DenseNet variant"),
        (dict(depth=11), "depth"),
        (dict(epochs=0), "epochs"),
        (dict(mixed_precision="int8"), "mixed_precision"),
        (dict(bn_momentum=1.5), "bn_momentum"),
        (dict(epochs=2, head_epochs=2), "head_epochs"),
    ],
)
def test_invalid_config(bad, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        train.train(TrainConfig(output=str(tmp_path), **{**TINY, **bad}))


def test_train_writes_outputs_and_resumes_after_interruption(tmp_path, capsys):
    config = TrainConfig(epochs=3, output=str(tmp_path / "run"), **{**TINY, "verbose": 2})
    with pytest.raises(RuntimeError, match="simulated"):
        train.train(config, callbacks=[StopAfter(1)])
    assert [row["epoch"] for row in read_log(str(tmp_path / "run" / "log.csv"))] == [0, 1]
    out = capsys.readouterr().out
    # Said before the first (slow) compiled step; no resume on a fresh run.
    assert "compiling the training step" in out and "resuming" not in out

    recorder = RecordEpochs()
    result = train.train(config, callbacks=[recorder])
    assert recorder.epochs == [2]  # the completed epochs are not redone
    assert "resuming from epoch 3 of 3" in capsys.readouterr().out
    assert [row["epoch"] for row in result.history] == [0, 1, 2]
    assert not os.path.exists(tmp_path / "run" / BACKUP_DIR)
    with open(result.plot_path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(result.class_names_path) as f:
        assert json.load(f) == [str(d) for d in range(10)]
    model = keras.saving.load_model(result.model_path)
    assert model.output_shape == (None, 10) and model.input_shape == (None, None, None, 1)
    assert result.best_val_accuracy == max(row["val_accuracy"] for row in result.history)
    assert result.epochs_run == 1  # this call's epochs only
    assert_timings_add_up(result.timings)


def test_fine_tune_freezes_backbone_first(tmp_path):
    backbone = keras_densenet.DenseNetBC(
        10, 4, include_top=False, pooling="avg", input_shape=(32, 32, 3)
    )
    path = str(tmp_path / "backbone.weights.h5")
    backbone.save_weights(path)
    recorder = RecordEpochs()
    result = train.train(
        TrainConfig(weights=path, epochs=2, head_epochs=1, lr=1e-3, output=str(tmp_path / "ft"), **TINY),
        callbacks=[recorder],
    )
    assert recorder.epochs == [0, 1]
    assert recorder.trainable[0] == 2  # the new head's kernel and bias only
    assert recorder.trainable[1] == 2 + len(backbone.trainable_weights)
    assert result.history[1]["learning_rate"] == pytest.approx(1e-4)  # lr / 10 when unfrozen
    assert result.epochs_run == 2  # both fits counted
    assert_timings_add_up(result.timings)
    assert result.timings["compilation"] > 0  # each fit compiles its first steps
    model = keras.saving.load_model(result.model_path)
    assert model.input_shape == (None, None, None, 3)


@pytest.mark.parametrize("policy", ["bfloat16", "float16"])
def test_mixed_precision(policy, tmp_path):
    result = train.train(
        TrainConfig(mixed_precision=policy, epochs=1, output=str(tmp_path), **TINY)
    )
    assert keras.config.dtype_policy().name == "float32"  # restored
    model = keras.saving.load_model(result.model_path)
    assert model.get_layer("rescale").dtype_policy.name == f"mixed_{policy}"
    assert model.get_layer("predictions").dtype_policy.name == "float32"
    out = model.predict(np.zeros((1, 32, 32, 1), "float32"), verbose=0)
    assert out.dtype == np.float32 and np.isfinite(out).all()


def test_memory_efficient(tmp_path):
    from keras_densenet.layers.efficient import EfficientDenseLayer

    result = train.train(TrainConfig(memory_efficient=True, epochs=1, output=str(tmp_path), **TINY))
    assert len(result.history) == 1
    saved = keras.saving.load_model(result.model_path)
    # The backbone is a nested model: look through every layer.
    assert any(isinstance(layer, EfficientDenseLayer) for layer in internals.flatten_layers(saved))


def test_augmented_batches_flip_mirrors_some_images():
    x = np.arange(16 * 4 * 4, dtype="float32").reshape(16, 4, 4, 1)  # all distinct
    batch, _ = data.augmented_batches(x, np.zeros(16), 16, max_shift=0, seed=0, flip=True)[0]
    originals = {x[i].tobytes(): False for i in range(16)}
    originals.update({x[i, :, ::-1].tobytes(): True for i in range(16)})
    mirrored = [originals[b.tobytes()] for b in batch]  # KeyError: neither
    assert any(mirrored) and not all(mirrored)


def test_classifier_resizes_inside_and_defaults_to_inference():
    """Models written by `train` take any image size (a stock `Resizing`
    layer) and, called without `training` (as exported `serve` endpoints
    are), run BatchNormalization in inference mode; `fit` still trains it."""
    model, _ = build_classifier(TrainConfig(depth=10, growth_rate=4), 3, 1)
    assert model.input_shape == (None, None, None, 1)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 1)).astype("float32")
    inference = keras.ops.convert_to_numpy(model(x, training=False))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(x)), inference)
    small = x[:, ::4, ::4]  # 8x8, resized inside as `data.resize_images` does
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(small)),
                               keras.ops.convert_to_numpy(model(data.resize_images(small, 32))), atol=1e-6)
    stats = [keras.ops.convert_to_numpy(v).copy() for v in model.non_trainable_weights]
    model.compile("sgd", "sparse_categorical_crossentropy")
    model.fit(x, np.array([0, 1]), verbose=0)
    after = [keras.ops.convert_to_numpy(v) for v in model.non_trainable_weights]
    assert any(not np.allclose(a, b) for a, b in zip(stats, after, strict=True))


def test_training_batches_are_full_and_validation_batches_equal():
    """One input shape per step: JAX and TensorFlow compile once per shape."""
    x = np.zeros((70, 8, 8, 1), "float32")
    y = np.arange(70) % 10
    batches = data.augmented_batches(x, y, 32, max_shift=1, seed=0)
    assert len(batches) == 2 and all(len(batches[i][0]) == 32 for i in range(len(batches)))
    seen = {int(i) for i in batches.order[:64]}
    batches.on_epoch_end()  # reshuffled: other images wait this time
    assert {int(i) for i in batches.order[:64]} != seen
    assert len(data.augmented_batches(x, y, 32, 1, 0, drop_remainder=False)) == 3
    assert len(data.augmented_batches(x[:20], y[:20], 32, 1, 0)) == 1  # fewer than a batch: kept
    assert data.even_batch_size(360, 32) == 180 and 360 % 180 == 0
    assert data.even_batch_size(97, 32) == 97  # one batch
    assert data.even_batch_size(1031, 32) == 32  # a prime above the cap: no even split


def test_compile_timer_records_every_step_and_subtracts_a_typical_one():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy")
    timer = CompileTimer()
    x, y = np.zeros((20, 3), "float32"), np.zeros(20, "int32")
    model.fit(x, y, batch_size=8, epochs=2, validation_data=(x[:10], y[:10]), validation_batch_size=4,
              callbacks=[timer], verbose=0)
    assert timer.epochs == 2
    assert len(timer.steps["train"]) == 2 * 3 and len(timer.steps["test"]) == 2 * 3
    assert all(d >= 0 for kind in timer.steps.values() for d in kind)
    # The estimate itself: first step minus the median of the later ones.
    timer.steps = {"train": [5.0, 1.0, 1.5, 0.5], "test": [2.0, 3.0]}
    assert timer.seconds == pytest.approx(4.0)  # test: no cost above a later step
    timer.steps = {"train": [5.0], "test": []}
    assert timer.seconds == 5.0  # nothing to compare with: the first step whole


def test_format_timings_names_the_phases():
    timings = {"imports": 6.14, "setup": 0.01, "data": 0.4, "model": 1.2, "compilation": 9.8,
               "epochs": 24.3, "writing": 0.6}
    line = format_timings({**timings, "total": sum(timings.values())}, epochs_run=8)
    assert line == ("time: 42.5 s = imports 6.1 s + data 0.4 s + model 1.2 s + compilation 9.8 s"
                    " + 8 epochs 24.3 s (3.0 s/epoch) + writing 0.6 s")
    short = format_timings({"data": 0.0, "compilation": 1.0, "epochs": 2.0, "writing": 0.01,
                                  "total": 3.01}, epochs_run=1)
    assert short == "time: 3.0 s = data 0.0 s + compilation 1.0 s + 1 epoch 2.0 s"


#: The CLI's time line: "time: T s = imports I s + ... + N epochs E s ...".
_TIME_PART = re.compile(r"(?:(\d+) epochs? )?(?:([a-z]+) )?([\d.]+) s(?: \([\d.]+ s/epoch\))?")


def test_cli_prints_where_the_time_went(capsys, tmp_path):
    argv = ["train", "--output", str(tmp_path / "run"),
            *cli_args(**dict(TINY_TRAIN, limit=60, batch_size=16), epochs=2)]
    assert cli.main(argv) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("time: "), last
    total, parts = last[len("time: "):].split(" = ")
    phases = {}
    for part in parts.split(" + "):
        match = _TIME_PART.fullmatch(part)
        assert match, part
        epochs, name, seconds = match.groups()
        phases["epochs" if epochs else name] = float(seconds)
        if epochs:
            assert int(epochs) == 2
    assert {"imports", "data", "compilation", "epochs"} <= set(phases) <= {"imports", *TIMED_PHASES}
    # Shown to 0.1 s, and phases under 0.05 s are left out.
    assert sum(phases.values()) == pytest.approx(float(total.removesuffix(" s")), abs=0.05 * 8)
