"""The streaming image pipeline (keras_densenet.data.images, listing,
folders, progress) and predict at volume: listing order, pixels equal to
Keras' resize, reduced JPEG decoding, bad files, bounded read-ahead, row
files that survive an interruption, PyDatasets in fit/predict, folders
without TensorFlow. Tiny images and models; the volume figures are in
`keras_densenet.benchmarks.volume`."""

import csv
import doctest
import json
import os
import subprocess
import sys
import threading
import time

import keras
import numpy as np
import pytest
from PIL import Image

from keras_densenet.core import extras
from keras_densenet.data import datasets, folders, images, listing, progress
from keras_densenet.deployment import predict as deploy
from tests.helpers import SCRIPTS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: NumPy and Pillow only (listing, decoding, batching, progress): the same
#: on every backend, so one suite runs them.
backend_free = pytest.mark.one_backend("jax", "torch", "tensorflow", reason="NumPy and Pillow only")


def _png(path, size=(12, 16), value=None, seed=0):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (*size, 3), dtype="uint8") if value is None else np.full((*size, 3), value, "uint8")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(pixels).save(path)
    return str(path)


@pytest.fixture
def bad_files(tmp_path):
    """Good, readable-but-unusual and unreadable files, by name."""
    d = tmp_path / "mixed"
    good = [_png(d / f"good{i}.png", seed=i) for i in range(3)]
    jpeg = io_jpeg = d / "photo.jpg"
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (40, 30, 3), dtype="uint8")).save(io_jpeg, quality=90)
    data = jpeg.read_bytes()
    (d / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (d / "empty.png").write_bytes(b"")
    (d / "text.png").write_text("not a png")
    Image.new("CMYK", (10, 8), (0, 255, 0, 0)).save(d / "cmyk.jpg")  # magenta ink only
    Image.fromarray(np.full((6, 5), 65535, "uint16")).save(d / "white16.png")
    return d, good


@backend_free
def test_docstring_examples_run():
    for module in (listing, images, progress):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.attempted > 0 and result.failed == 0, module.__name__


@backend_free
def test_listing_order_recursion_globs_and_duplicates(tmp_path):
    for name in ("b/2.jpg", "b/1.PNG", "a.png", "b/sub/0.jpg", "b/notes.txt", "c/x.webp"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    rel = lambda paths: [os.path.relpath(p, tmp_path) for p in paths]  # noqa: E731
    # A directory: its files sorted, then each sub-directory's; the image endings only.
    assert rel(listing.list_images(tmp_path / "b")) == ["b/1.PNG", "b/2.jpg", "b/sub/0.jpg"]
    # Inputs keep their order; a file reached twice is listed once; a named file is taken whatever its ending.
    listed = listing.list_images([str(tmp_path / "b" / "notes.txt"), str(tmp_path / "b/*.jpg"), str(tmp_path / "b"),
                                  str(tmp_path / "**" / "*.webp")])
    assert rel(listed) == ["b/notes.txt", "b/2.jpg", "b/1.PNG", "b/sub/0.jpg", "c/x.webp"]
    with pytest.raises(ValueError, match="image file not found: .*missing.jpg"):
        listing.list_images([str(tmp_path / "a.png"), str(tmp_path / "missing.jpg")])
    with pytest.raises(ValueError, match="no image file matches"):
        listing.list_images(str(tmp_path / "*.gif"))
    names, files = listing.class_folders(tmp_path)
    assert names == ["b", "c"] and rel(files["b"]) == ["b/1.PNG", "b/2.jpg", "b/sub/0.jpg"]


@pytest.mark.parametrize("source, target", [((37, 53), (16, 16)), ((8, 8), (12, 20)), ((5, 300), (7, 3))])
def test_resize_is_keras_resize(source, target):
    x = np.random.default_rng(0).uniform(0, 255, (*source, 3)).astype("float32")
    # Keras computes sample positions in float32, this resize in float64: they
    # differ by at most ~0.01 of 255 where neighbours differ most.
    np.testing.assert_allclose(images.resize(x, target), datasets.resize_images(x[None], target)[0], atol=0.02)
    np.testing.assert_array_equal(images.resize(x, source), x)


def test_decode_gives_the_pixels_of_keras_load_img(tmp_path):
    path = _png(tmp_path / "a.png", size=(30, 41))
    old = keras.utils.img_to_array(keras.utils.load_img(path), data_format="channels_last")
    np.testing.assert_array_equal(images.decode(path), old)
    np.testing.assert_allclose(images.decode(path, size=(16, 16)), datasets.resize_images(old[None], 16)[0], atol=0.02)
    gray = keras.utils.img_to_array(keras.utils.load_img(path, color_mode="grayscale"), data_format="channels_last")
    np.testing.assert_array_equal(images.decode(path, channels=1), gray)


@backend_free
def test_large_jpeg_decodes_at_a_reduced_scale(tmp_path, monkeypatch):
    path = tmp_path / "big.jpg"
    y, x = np.mgrid[0:1200, 0:1600]
    Image.fromarray(np.stack([x * 255 // 1600, y * 255 // 1200, (x + y) * 255 // 2800], -1).astype("uint8")).save(path)
    decoded = []
    pixels = images._pixels
    monkeypatch.setattr(images, "_pixels", lambda img, c: decoded.append(img.size) or pixels(img, c))
    small = images.decode(path, size=(64, 64))
    full = images.decode(path, size=(64, 64), draft=False)
    assert decoded == [(200, 150), (1600, 1200)]  # 1/8 of each side, still at least 64
    assert small.shape == full.shape == (64, 64, 3)
    assert np.abs(small - full).mean() < 2  # a smooth image: nearly the same pixels


@backend_free
def test_bad_files_skipped_or_named_and_unusual_ones_converted(bad_files, capsys):
    d, good = bad_files
    files = images.ImageFiles(listing.list_images(d), (4, 4), batch_size=3, on_error="skip")
    batches = [files.batch(i) for i in range(len(files))]
    kept = [p for b in batches for p in b.paths]
    assert sorted(os.path.basename(p) for p in kept) == ["cmyk.jpg", "good0.png", "good1.png", "good2.png",
                                                          "photo.jpg", "white16.png"]
    assert sum(len(b.x) for b in batches) == len(kept)
    assert [p for i in range(len(files)) for p in files.batch_paths(i)] == kept
    reasons = {os.path.basename(p): r for p, r in files.skipped}
    assert reasons == {"empty.png": "empty file (0 bytes)", "text.png": "not an image Pillow can read",
                       "truncated.jpg": "truncated image data"}
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and all(line.startswith("skipped ") and str(d) in line for line in err)
    cmyk = images.decode(d / "cmyk.jpg")
    np.testing.assert_allclose(cmyk.mean(axis=(0, 1)), [255, 0, 255], atol=3)  # magenta
    np.testing.assert_array_equal(images.decode(d / "white16.png", channels=1), np.full((6, 5, 1), 255.0))
    np.testing.assert_array_equal(images.decode(d / "white16.png"), np.full((6, 5, 3), 255.0))
    with pytest.raises(ValueError, match="cannot read image .*truncated.jpg.*: truncated image data"):
        images.ImageFiles([d / "truncated.jpg"], 4, on_error="raise").batch(0)


@backend_free
def test_prefetch_reads_at_most_the_queue_ahead(tmp_path):
    paths = [_png(tmp_path / f"{i:02d}.png", size=(4, 4), seed=i) for i in range(40)]
    lock, state = threading.Lock(), {"decoded": 0}

    def counting_decode(path, **kwargs):
        time.sleep(0.002)
        with lock:
            state["decoded"] += 1
        return images.decode(path, **kwargs)

    files = images.ImageFiles(paths, 4, batch_size=4, decoder=counting_decode)
    for index, batch in enumerate(images.prefetch(files, workers=3, max_queue_size=2)):
        time.sleep(0.03)  # the "model": the readers run ahead meanwhile, up to the queue
        with lock:
            assert state["decoded"] <= (index + 1 + 2) * 4
        assert batch.paths == paths[index * 4 : (index + 1) * 4]
    assert state["decoded"] == 40


@backend_free
def test_prefetch_stops_its_readers_when_the_caller_stops(tmp_path):
    paths = [_png(tmp_path / f"{i}.png", size=(4, 4)) for i in range(20)]
    files = images.ImageFiles(paths, 4, batch_size=2)
    reader = images.prefetch(files, workers=2, max_queue_size=2)
    next(reader)
    reader.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("keras_densenet_images")]


def _tiny_classifier(side=8, classes=3):
    inputs = keras.Input((side, side, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(classes, activation="softmax")(x))


def test_pydatasets_feed_fit_and_predict(image_folder):
    train, val, names, skipped = folders.folder_batches(image_folder, 8, batch_size=4, validation_split=0.25,
                                                        workers=2)
    assert names == ["bright", "dark"] and skipped == 0
    assert len(train) == 2 and len(val) == 1  # 9 training images: whole batches only
    model = _tiny_classifier(classes=2)
    model.compile("adam", "sparse_categorical_crossentropy")
    history = model.fit(train, validation_data=val, epochs=2, verbose=0)
    assert len(history.history["val_loss"]) == 2
    ds = images.image_batches(str(image_folder), 8, batch_size=5, workers=2)
    out = model.predict(ds, verbose=0)
    assert out.shape == (12, 2) and len(ds.read_paths()) == 12


@backend_free
def test_folder_split_keeps_labels_with_their_files(image_folder):
    split = folders.split_folder(image_folder, validation_split=0.25, seed=3)
    assert len(split.train[0]) == 9 and len(split.val[0]) == 3
    # Labels follow their files through the shuffle.
    assert all(os.path.basename(os.path.dirname(p)) == split.class_names[y] for p, y in zip(*split.train, strict=True))


@pytest.mark.backends("tensorflow", reason="the comparison with tf.data's image_dataset_from_directory")
def test_folder_split_is_image_dataset_from_directorys(image_folder):
    split = folders.split_folder(image_folder, validation_split=0.25, seed=3)
    ds = keras.utils.image_dataset_from_directory(image_folder, validation_split=0.25, subset="validation",
                                                  seed=3, image_size=(8, 8), verbose=False)
    assert sorted(map(os.path.abspath, ds.file_paths)) == sorted(map(os.path.abspath, split.val[0]))


@backend_free
def test_labelled_arrays_read_folders_through_the_pipeline(image_folder):
    x_train, x_val, y_val, names = datasets.labelled_arrays(image_folder, 8, 3, 0.25, seed=1, train_limit=4)
    split = folders.split_folder(image_folder, 0.25, seed=1)
    assert names == split.class_names and x_train.shape == (9, 8, 8, 3)  # whole batches of 32: all 9
    np.testing.assert_array_equal(y_val, split.val[1])
    np.testing.assert_array_equal(x_val, np.stack([images.decode(p, 3, 8) for p in split.val[0]]))


@backend_free
def test_folder_unreadable_files_raise_or_are_named_and_counted(image_folder, capsys):
    (image_folder / "dark" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot read image .*broken.png"):
        folders.folder_batches(image_folder, 8, 4)
    with pytest.warns(folders.DataWarning, match="skipped 1 corrupt"):
        train, val, _, skipped = folders.folder_batches(image_folder, 8, 4, validation_split=0.25, on_error="skip")
    assert skipped == 1 and len(train.paths) + len(val.paths) == 12
    assert capsys.readouterr().err.splitlines() == [
        f"skipped {image_folder / 'dark' / 'broken.png'}: not an image Pillow can read"]


@backend_free
def test_folder_shares_are_disjoint_and_even(image_folder):
    shares = [folders.folder_batches(image_folder, 8, 2, validation_split=0.5, shard=(2, p, 2))[:2]
              for p in range(2)]
    for split in (0, 1):
        a, b = (set(share[split].paths) for share in shares)
        assert a and not a & b and len(a) == len(b)
        assert all(len(share[split][i][0]) % 2 == 0 for share in shares for i in range(len(share[split])))


@pytest.mark.one_backend("jax", "torch", reason="child processes on JAX and PyTorch with TensorFlow hidden")
@pytest.mark.timeout(600)
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_folders_need_no_tensorflow(tmp_path, backend):
    """A training folder read and fitted on, and ``train --data``, ``predict``
    and ``features`` run, with TensorFlow hidden (as not installed)."""
    if not extras.installed(backend):
        pytest.skip(f"{backend} is not installed")
    for label, value in (("a", 20), ("b", 230)):
        for i in range(4):
            _png(tmp_path / "folder" / label / f"{i}.png", size=(10, 10), value=value + i)
    env = dict(os.environ, KERAS_BACKEND=backend, KD_HIDE_MODULES="tensorflow",
               PYTHONPATH=os.pathsep.join([os.path.join(ROOT, "tests", "hide_modules"), ROOT]))
    done = subprocess.run([sys.executable, str(SCRIPTS / "folders_without_tensorflow.py"), str(tmp_path / "folder"),
                           str(tmp_path)], env=env, capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "fitted ['a', 'b']" in done.stdout and "commands ok" in done.stdout


@pytest.mark.parametrize("ending", [".csv", ".jsonl"])
def test_predict_rows_to_a_file(bad_files, tmp_path, capsys, ending):
    d, _ = bad_files
    model = _tiny_classifier()
    out = tmp_path / f"rows{ending}"
    result = deploy.predict([str(d)], model=model, top=2, batch_size=4, output=out, workers=2)
    assert result.count == 6 and len(result.skipped) == 3 and len(result) == 0
    assert capsys.readouterr().err.count("skipped ") == 3
    text = out.read_text()
    if ending == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        assert list(rows[0]) == ["path", "class_id_1", "class_name_1", "score_1", "class_id_2", "class_name_2",
                                 "score_2"]
        paths, scores = [r["path"] for r in rows], [float(r["score_1"]) for r in rows]
    else:
        rows = [json.loads(line) for line in text.splitlines()]
        paths, scores = [r["path"] for r in rows], [r["top"][0]["score"] for r in rows]
    expected = deploy.predict([str(d)], model=model, top=2, batch_size=4, on_skip=lambda *_: None)
    assert paths == expected.paths and len(paths) == 6
    np.testing.assert_allclose(scores, [r[0][2] for r in expected], atol=1e-6)


def test_predict_feeds_any_size_models_each_image_at_its_own_size(tmp_path):
    paths = [_png(tmp_path / f"{i}.png", size=(6 + i, 9), seed=i) for i in range(3)]
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(
        keras.layers.GlobalMaxPooling2D()(keras.layers.Conv2D(2, 3)(inputs))))
    result = deploy.predict(paths, model=model, top=1, batch_size=2)
    for path, row in zip(result.paths, result, strict=True):
        expected = keras.ops.convert_to_numpy(model(images.decode(path)[None]))[0]
        assert row[0][2] == pytest.approx(float(expected.max()), abs=1e-6)


@backend_free
def test_an_interrupted_predict_leaves_complete_rows(tmp_path, monkeypatch):
    paths = [_png(tmp_path / "in" / f"{i:02d}.png", size=(8, 8), seed=i) for i in range(10)]
    model = _tiny_classifier()
    run, calls = model.predict_on_batch, []

    def interrupted(x):
        calls.append(len(x))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return run(x)

    monkeypatch.setattr(model, "predict_on_batch", interrupted)
    out = tmp_path / "rows.csv"
    with pytest.raises(KeyboardInterrupt):
        deploy.predict(paths, model=model, batch_size=3, output=out, workers=2)
    lines = out.read_text().splitlines()
    assert lines[0].startswith("path,") and [line.split(",")[0] for line in lines[1:]] == paths[:6]
    assert all(len(line.split(",")) == 1 + 3 * 3 for line in lines[1:])


@backend_free
def test_progress_lines_for_logs_and_the_verbose_chooser():
    clock = iter([0.0, 1.0, 2.0, 7.5, 8.0]).__next__
    lines = []

    class Stream:
        def write(self, text):
            lines.append(text)

        def flush(self):
            pass

    p = progress.Progress(100, label="predict", bar=False, stream=Stream(), every=5, clock=clock)
    p.update(10)  # t=1: the first line
    p.update(20)  # t=2: too soon
    p.update(75, skipped=1)  # t=7.5
    p.close()  # t=8
    text = [t for t in lines if t.strip()]
    assert len(text) == 3
    assert text[0].startswith("predict: 10/100 images (10%), 10.0 images/s, ETA 9 s")
    assert "75/100" in text[1] and "1 skipped" in text[1]
    assert text[2].startswith("predict: 75 images in 8 s")
    assert progress.keras_verbose(Stream()) == 2
