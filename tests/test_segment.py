"""FC-DenseNet segmentation on the digits canvases: the generated data, the
trainer (fit, mean IoU, resume, outputs), masks from `predict --masks`, bad
input. Tiny runs (32x32 canvases, a few dozen of them): no accuracy is
asserted here; the job's figures come from running `keras-densenet segment`."""

import contextlib
import io
import json
import os

import keras
import numpy as np
import pytest
from PIL import Image

from keras_densenet import cli
from keras_densenet.data import canvases
from keras_densenet.deployment import masks
from keras_densenet.training import segment
from keras_densenet.training.config import SegmentConfig
from tests.helpers import cli_args
from tests.test_train import RecordEpochs, StopAfter

TINY_JOB = dict(layers_per_block=1, growth_rate=4, image_size=32, train_canvases=16, val_canvases=8, batch_size=8,
                verbose=2)


def test_canvases_label_inked_pixels_with_their_digit():
    ds = canvases.digit_canvases(train=20, val=10, size=48, seed=3)
    assert ds.x_train.shape == (20, 48, 48, 1) and ds.y_val.shape == (10, 48, 48)
    assert ds.class_names == ["background"] + [str(d) for d in range(10)]
    for x, y in ((ds.x_train, ds.y_train), (ds.x_val, ds.y_val)):
        assert y.min() >= 0 and y.max() <= 10 and 0 <= x.min() and x.max() <= 255
        # A labelled pixel is inked at least to the threshold; every canvas has a digit.
        assert np.all(x[..., 0][y > 0] >= canvases.INK_THRESHOLD * 255 - 1e-3)
        assert np.all((y > 0).reshape(len(y), -1).any(axis=1))
    again = canvases.digit_canvases(train=20, val=10, size=48, seed=3)
    np.testing.assert_array_equal(again.y_train, ds.y_train)  # seeded


def test_train_and_validation_canvases_use_disjoint_digits():
    from sklearn.datasets import load_digits

    labels = load_digits().target
    train_idx, val_idx = canvases.source_split(labels, seed=0)
    assert set(train_idx).isdisjoint(val_idx) and len(train_idx) + len(val_idx) == len(labels)
    assert set(labels[val_idx]) == set(range(10))


@pytest.mark.parametrize(
    "labels, match",
    [
        (np.zeros((2, 8, 9), "int32"), r"`y`: label maps must have shape \(2, 8, 8\)"),
        (np.full((2, 8, 8), 11), r"`y`: class ids must be in \[0, 11\); found 11"),
        (np.full((2, 8, 8), -1), r"found -1"),
        (np.zeros((2, 8, 8), "float32"), "integer class ids"),
    ],
)
def test_bad_label_maps_are_named(labels, match):
    with pytest.raises(ValueError, match=match):
        canvases.check_label_maps(np.zeros((2, 8, 8, 1)), labels, 11, "y")


def test_mean_iou_is_keras_meaniou():
    rng = np.random.default_rng(0)
    truth, predicted = rng.integers(0, 11, (4, 16, 16)), rng.integers(0, 11, (4, 16, 16))
    metric = keras.metrics.MeanIoU(11)
    metric.update_state(truth, predicted)
    assert segment.mean_iou(segment.confusion(truth, predicted, 11)) == pytest.approx(float(metric.result()), abs=1e-6)


@pytest.fixture(scope="module")
def resumed_job(tmp_path_factory):
    """One 2-epoch job of `TINY_JOB`, trained twice over, not three times:
    `train_segmentation` interrupted after its first epoch, then resumed by
    ``keras-densenet segment`` with the job's flags (the CLI's own config).
    Returns the output directory, what the CLI printed and returned, the
    resumed run's `SegmentResult` and the epochs it ran."""
    output = tmp_path_factory.mktemp("segment") / "seg"
    config = SegmentConfig(epochs=2, output=str(output), **TINY_JOB)
    with pytest.raises(RuntimeError, match="simulated"):
        segment.train_segmentation(config, callbacks=[StopAfter(0)])
    recorder, results = RecordEpochs(), []
    train_segmentation = segment.train_segmentation

    def recorded(config, callbacks=()):
        results.append(train_segmentation(config, callbacks=[*callbacks, recorder]))
        return results[-1]

    flags = cli_args(**{k: v for k, v in TINY_JOB.items() if k != "verbose"})
    said = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(said):
        patch.setattr(segment, "train_segmentation", recorded)
        code = cli.main(["segment", "--epochs", "2", "--output", str(output), *flags])
    return dict(output=output, code=code, said=said.getvalue(), result=results[0] if results else None,
                epochs=recorder.epochs)


#: The tests of `resumed_job` (each pytest-xdist worker that runs one trains
#: the job): 270-300 s on a 2-core machine loaded 5x over, against the
#: default limit of 300 s (pyproject.toml).
JOB_TIMEOUT_S = 900


@pytest.mark.timeout(JOB_TIMEOUT_S)
def test_segment_trains_writes_outputs_and_resumes(resumed_job):
    result = resumed_job["result"]
    assert resumed_job["code"] == 0 and result is not None
    assert resumed_job["epochs"] == [1] and "resuming from epoch 2 of 2" in resumed_job["said"]
    # stdout is not a terminal: one plain line per epoch, no progress bar.
    said = resumed_job["said"]
    assert "\x1b" not in said and [line.split(":")[0] for line in said.splitlines() if "loss" in line] == ["epoch 2/2"]
    assert [row["epoch"] for row in result.history] == [0, 1]
    for row in result.history:
        assert 0 <= row["val_mean_iou"] <= 1 and 0 <= row["val_pixel_accuracy"] <= 1 and row["val_loss"] > 0
    assert result.best_mean_iou == max(row["val_mean_iou"] for row in result.history)
    with open(result.masks_path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(os.path.join(result.output, "class_names.json")) as f:
        assert json.load(f)[0] == "background"
    model = keras.saving.load_model(result.model_path, safe_mode=True)
    assert model.output_shape == (None, None, None, 11)
    assert not os.path.exists(resumed_job["output"] / "backup")


@pytest.mark.timeout(JOB_TIMEOUT_S)
def test_segment_cli_then_predict_masks_writes_a_palette_png_per_image_at_its_size(resumed_job, tmp_path, capsys):
    assert resumed_job["code"] == 0
    said = resumed_job["said"]
    assert "best validation mean IoU: " in said and "time: " in said and "masks.png" in said
    model_path = str(resumed_job["output"] / "model.keras")
    images, sizes = [], [(40, 52), (32, 32), (36, 36)]
    # The third has the first's name in another folder: its own mask there.
    for i, (name, (h, w)) in enumerate(zip(["canvas0.png", "canvas1.png", "sub/canvas0.png"], sizes, strict=True)):
        path = tmp_path / name
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (h, w), dtype="uint8")).save(path)
        images.append(str(path))
    (tmp_path / "broken.png").write_bytes(b"")
    code = cli.main(["predict", *images, str(tmp_path / "broken.png"), "--model", model_path, "--masks",
                     str(tmp_path / "masks")])
    out, err = capsys.readouterr()
    assert code == 3, err  # some files skipped, each named in one line
    assert err.splitlines() == [f"skipped {tmp_path / 'broken.png'}: empty file (0 bytes)"]
    for path, (h, w) in zip(images, sizes, strict=True):
        mask_path = tmp_path / "masks" / os.path.relpath(path, tmp_path)
        mask = Image.open(mask_path)
        assert mask.mode == "P" and mask.size == (w, h)
        assert np.asarray(mask).max() <= 10
        assert f"{path} -> {mask_path}: " in out
    # A segmenter without --masks, a classifier with it: one line each, exit 2.
    code = cli.main(["predict", images[0], "--model", model_path])
    assert code == 2 and "give --masks DIR" in capsys.readouterr().err


@pytest.mark.parametrize("paths, names", [
    (["in/a.png", "in/b.jpg"], ["a.png", "b.png"]),
    (["in/x/scan.png", "in/y/scan.png", "in/y/z/q.tif"], ["x/scan.png", "y/scan.png", "y/z/q.png"]),
    (["in/scan.png", "in/scan.jpg"], ["scan.png.png", "scan.jpg.png"]),
    (["in/x.jpg.png", "in/x.jpg", "in/x.png"], ["x.jpg.png", "x.jpg-2.png", "x.png.png"]),
    (["in/Scan.png", "in/scan.JPG"], ["Scan.png.png", "scan.JPG.png"]),  # one file on case-insensitive disks
])
def test_every_image_gets_its_own_mask_file_below_the_masks_directory(paths, names):
    assert masks.mask_names(paths) == names
    assert not [n for n in names if n.startswith(("/", "..")) or os.path.isabs(n)]


@pytest.mark.parametrize(
    "argv, message",
    [(["--image-size", "50"], "`--image-size` must be a multiple of 32"), (["--dropout", "1.5"], "--dropout")],
)
def test_bad_segment_options_are_one_line_exit_2(argv, message, tmp_path, capsys):
    code = cli.main(["segment", "--output", str(tmp_path / "o"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / "o")  # refused before any work


def test_unknown_segment_arch_lists_the_variants(capsys):
    with pytest.raises(SystemExit) as caught:
        cli.main(["segment", "--arch", "fc_densenet99"])
    assert caught.value.code == 2 and "fc_densenet56" in capsys.readouterr().err


def test_pixel_crossentropy_is_the_mean_sparse_crossentropy_over_pixels():
    from keras_densenet.layers.losses import PixelCrossentropy

    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(5), size=(2, 3, 4)).astype("float32")
    labels = rng.integers(0, 5, (2, 3, 4))
    expected = -np.mean(np.log(np.take_along_axis(probs, labels[..., None], axis=-1)))
    assert float(PixelCrossentropy()(labels, probs)) == pytest.approx(expected, rel=1e-5)
