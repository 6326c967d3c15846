"""Inference at volume: what ``keras-densenet predict`` runs, on ``.keras``
models, in-memory Keras models and the serving artifacts ``export`` writes
(`keras_densenet.deployment.export`).

Images stream through `keras_densenet.data.images`: listed (files,
directories, glob patterns), decoded by worker threads while the model runs
(large JPEGs at a reduced scale), resized and batched, so memory stays
bounded by the batch, whatever the number of images or their resolution.
Each batch's rows go to a row file (`RowWriter`: CSV or JSON Lines, by the
file's ending, flushed and synced per batch, so an interrupted run leaves
complete rows only), to a callback, or into the returned list. Unreadable
files are skipped (one line on stderr each, with the reason) or raise.

Example:

>>> from keras_densenet.deployment import predict as deploy
>>> deploy.predict(["cat.jpg"], arch="densenet121", weights="imagenet", top=3)  # doctest: +SKIP
[[('n02123045', 'tabby', 0.52), ...]]
>>> run = deploy.predict("photos/", model_path="run/model.keras", output="rows.csv")  # doctest: +SKIP
>>> run.count, len(run.skipped)  # doctest: +SKIP
(11998, 2)
"""

from __future__ import annotations

import csv
import functools
import io
import json
import os
from typing import Callable, Optional, Sequence

import numpy as np

from keras_densenet.core import checks, registry
from keras_densenet.data import images as image_lib
from keras_densenet.data import listing
from keras_densenet.data.datasets import CLASS_NAMES_FILE
from keras_densenet.data.progress import Progress
from keras_densenet.deployment import runtimes
from keras_densenet.models import saved

#: Classes per image that `predict` returns by default.
DEFAULT_TOP = 5
#: Images per batch by default.
DEFAULT_BATCH_SIZE = 32
#: Row-file ending -> format.
OUTPUT_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
#: The command line's exit status when some inputs were skipped (0: all
#: predicted; 2: bad arguments, or no input readable).
EXIT_SKIPPED = 3


def check_output(output) -> str:
    """`output` as a string if it names a row file that can be written.

    Raises:
        ValueError: another ending than `OUTPUT_FORMATS`, or a directory
            that does not exist or is not writable.
    """
    output = os.fspath(output)
    if os.path.splitext(output)[1].lower() not in OUTPUT_FORMATS:
        raise ValueError(f"`output` {output!r}: the row file must end in {', '.join(OUTPUT_FORMATS)}")
    directory = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(directory) or not os.access(directory, os.W_OK):
        raise ValueError(f"`output` {output!r}: {directory!r} is not a writable directory")
    return output


def check_predict(images, model_path=None, arch=None, weights=None, top: int = DEFAULT_TOP,
                  class_names=None, trust_pickle: bool = False, batch_size: int = DEFAULT_BATCH_SIZE,
                  output=None, model=None) -> list:
    """The argument checks of `predict`, without keras (the CLI runs them
    before a backend is chosen).

    Returns:
        The image files `images` lists (`listing.list_images`).

    Raises:
        ValueError: naming the first bad argument.
    """
    paths = listing.list_images(images)  # before any slow model build or download
    checks.integer("top", top)
    checks.integer("batch_size", batch_size)
    if output is not None:
        check_output(output)
    given = [name for name, value in (("model_path", model_path), ("arch", arch), ("model", model))
             if value is not None]
    if not given:
        raise ValueError("give a model: `model_path` (a .keras file or an exported artifact) or `arch` "
                         "(with `weights`)")
    if len(given) > 1:
        raise ValueError(f"give one model, not {' and '.join(f'`{g}`' for g in given)}")
    if class_names is not None and arch is not None:
        raise ValueError("`class_names` goes with `model_path` or `model`")
    if weights is not None and arch is None:
        raise ValueError("`weights` goes with `arch`; a model has its weights")
    if class_names is not None:
        read_class_names(class_names)
    if model_path is not None:
        runtimes.check_model_file(model_path)
        runtimes.check_trusted(model_path, trust_pickle)
    elif arch is not None:
        registry.get_variant(arch)  # lists the variants when unknown
    return paths


def read_class_names(path) -> list:
    """The class names of a ``class_names.json`` file (a JSON list of strings).

    Raises:
        ValueError: naming the file: missing, not JSON (or nested too
            deeply to parse), or not a list of strings.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"class names file not found: {path!r}")
    try:
        with open(path) as f:
            names = json.load(f)
    except (ValueError, UnicodeDecodeError):
        raise ValueError(f"class names file {path!r} is not JSON") from None
    except RecursionError:  # arrays or objects nested thousands deep
        raise ValueError(f"class names file {path!r} nests too deeply to be a list of strings") from None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"class names file {path!r} must hold a JSON list of strings")
    return names


def read_images(paths: Sequence, channels: int) -> list:
    """Reads image files at their own size, as float32 arrays in [0, 255]
    (`image_lib.decode`).

    Raises:
        ValueError: a file is missing or not a decodable image; the message
            names it.
    """
    return [image_lib.decode(path, channels) for path in paths]


def load_images(paths: Sequence, size: tuple, channels: int, draft: bool = False) -> np.ndarray:
    """Reads images and resizes them into one float32 batch in [0, 255],
    bilinearly as Keras' `Resizing` layer (`image_lib.resize`); `draft`: let
    large JPEGs decode at a reduced scale first, as `predict` does."""
    return np.stack([image_lib.decode(p, channels, size, draft=draft) for p in paths])


def resize_to(image: np.ndarray, size: tuple) -> np.ndarray:
    """One ``(h, w, c)`` image resized bilinearly (as `load_images`)."""
    return image_lib.resize(image, size)


def read_class_names_beside(model_path) -> Optional[list]:
    """The ``class_names.json`` beside a model, or ``None``."""
    return _class_names_for(model_path)


def _class_names_for(model_path, class_names=None) -> Optional[list]:
    """`class_names` (a file) if given, else the ``class_names.json`` beside
    the model, else ``None`` (the class index names each class)."""
    if class_names is not None:
        return read_class_names(class_names)
    if model_path is None:
        return None
    path = os.path.join(os.path.dirname(os.path.abspath(model_path)), CLASS_NAMES_FILE)
    return read_class_names(path) if os.path.isfile(path) else None


def model_size(model) -> Optional[tuple]:
    """``(height, width)`` a Keras model sees: its fixed input size, else the
    size of a leading `Resizing` layer (models written by ``train``), else
    ``None`` (any size)."""
    import keras

    shape = model.input_shape
    if None not in shape[1:3]:
        return tuple(shape[1:3])
    first = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)][:1]
    if first and isinstance(first[0], keras.layers.Resizing):
        config = first[0].get_config()
        return config["height"], config["width"]
    return None


def _run_by_size(run, arrays: list) -> np.ndarray:
    """`run` (batch -> outputs) over images of any sizes: one batch per size."""
    probs = [None] * len(arrays)
    by_shape = {}
    for i, x in enumerate(arrays):
        by_shape.setdefault(x.shape, []).append(i)
    for indices in by_shape.values():
        for i, row in zip(indices, run(np.stack([arrays[i] for i in indices])), strict=True):
            probs[i] = row
    return np.stack(probs)


def padded(run: Callable, batch_size: int) -> Callable:
    """`run` fed full batches only: a shorter one (the last, or one with
    skipped files) is padded with zeros and its outputs cut back, so JAX and
    TensorFlow compile one step, not one per batch length (PyTorch runs
    eagerly: `keras_runner` pads only where the step is compiled)."""

    def run_full(x):
        n = len(x)
        if n < batch_size:
            x = np.concatenate([x, np.zeros((batch_size - n, *x.shape[1:]), x.dtype)])
        return np.asarray(run(x))[:n]

    return run_full


def keras_runner(model, batch_size: int, count: int) -> Callable:
    """`model.predict_on_batch`, on JAX and TensorFlow fed batches of one
    length (`padded`): `batch_size`, or `count` when fewer images."""
    import keras

    if keras.backend.backend() in ("jax", "tensorflow"):
        return padded(model.predict_on_batch, min(batch_size, count))
    return model.predict_on_batch


def _artifact_channels(path, input_shape: tuple) -> int:
    channels = input_shape[-1] if len(input_shape) == 4 else None
    if channels not in (1, 3):
        raise ValueError(f"model file {os.fspath(path)!r}: predict takes channels-last image models "
                         f"(1 or 3 channels); its input is {input_shape}")
    return channels


def _keras_runner(model, what: str) -> tuple:
    """``(model, size, channels)`` of a classifier; images go in at `size`
    (its `Resizing` layer is then the identity), or at their own size."""
    if len(model.output_shape) == 4:
        raise ValueError(f"{what} segments images (a class per pixel): give --masks DIR to write a mask per image")
    return model, model_size(model), model.input_shape[-1]


def _served(model_path, arch, weights, class_names, trust_pickle, model) -> tuple:
    """``(model, size, channels, preprocess, names_of)``: what to run on a
    batch (a Keras model, or an artifact: a function), at what size, and how
    a row of scores becomes top-k rows."""
    if arch is not None:
        from keras_densenet.models import densenet, imagenet

        built = densenet.build(registry.get_variant(arch).name, weights=weights)

        def names_of(probs, top):
            if probs.shape[-1] != 1000:  # not an ImageNet classifier: no names
                return _top_k(probs, None, top)
            return [[(c, n, float(s)) for c, n, s in row] for row in imagenet.decode_predictions(probs, top=top)]

        return built, model_size(built), 3, imagenet.preprocess_input, names_of
    names = _class_names_for(model_path, class_names)

    def names_of(probs, top):
        return _top_k(probs, names, top)

    if model is not None:
        return (*_keras_runner(model, "`model`"), None, names_of)
    if runtimes.model_file_format(model_path) != "keras":
        artifact = runtimes.open_artifact(model_path, trust_pickle=trust_pickle)
        shape = artifact.input_shape
        size = tuple(shape[1:3]) if None not in shape[1:3] else None
        return artifact, size, _artifact_channels(model_path, shape), None, names_of
    loaded = saved.load_keras_model(model_path)
    return (*_keras_runner(loaded, f"model file {os.fspath(model_path)!r}"), None, names_of)


class RowWriter:
    """Writes `predict`'s rows to a CSV or JSON Lines file (by its ending),
    one row per image: its path, then the top classes' ids, names and
    scores. Each `write` adds whole lines, then flushes and syncs, so a run
    stopped at any point leaves complete rows.

    CSV: ``path,class_id_1,class_name_1,score_1,class_id_2,...``. JSON Lines:
    ``{"path": ..., "top": [{"class_id": ..., "class_name": ..., "score": ...}, ...]}``.

    Example:

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "rows.csv")
    >>> with RowWriter(path) as w:
    ...     w.write(["a.jpg"], [[("3", "cat", 0.9), ("5", "dog", 0.1)]])
    >>> print(open(path).read().strip())
    path,class_id_1,class_name_1,score_1,class_id_2,class_name_2,score_2
    a.jpg,3,cat,0.900000,5,dog,0.100000
    """

    def __init__(self, path):
        self.path = check_output(path)
        self.format = OUTPUT_FORMATS[os.path.splitext(self.path)[1].lower()]
        self.file = open(self.path, "w", newline="", encoding="utf-8")
        self.header = self.format != "csv"
        self.rows = 0

    def _csv(self, paths, rows) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        if not self.header:
            k = max((len(r) for r in rows), default=0)
            writer.writerow(["path"] + [f"{c}_{i}" for i in range(1, k + 1)
                                        for c in ("class_id", "class_name", "score")])
            self.header = True
        for path, row in zip(paths, rows, strict=True):
            writer.writerow([path] + [v for c, n, s in row for v in (c, n, f"{s:.6f}")])
        return buffer.getvalue()

    def _jsonl(self, paths, rows) -> str:
        return "".join(
            json.dumps({"path": path, "top": [{"class_id": c, "class_name": n, "score": round(float(s), 6)}
                                              for c, n, s in row]}) + "\n"
            for path, row in zip(paths, rows, strict=True)
        )

    def write(self, paths: Sequence, rows: Sequence) -> None:
        """Appends one row per path (whole lines), then flushes to disk."""
        self.file.write(self._csv(paths, rows) if self.format == "csv" else self._jsonl(paths, rows))
        self.file.flush()
        os.fsync(self.file.fileno())
        self.rows += len(rows)

    def close(self) -> None:
        self.file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Predictions(list):
    """`predict`'s result: one top-k list of ``(class_id, class_name,
    score)`` per image predicted, unless rows went to `output` or `on_rows`
    (then empty).

    Attributes:
        paths: the image of each row in the list.
        count: images predicted.
        skipped: ``(path, reason)`` per input skipped.
        output: the row file, or ``None``.
    """

    def __init__(self, output=None):
        super().__init__()
        self.paths, self.count, self.skipped, self.output = [], 0, [], output


def predict(
    images,
    model_path=None,
    arch: Optional[str] = None,
    weights=None,
    top: int = DEFAULT_TOP,
    class_names=None,
    trust_pickle: bool = False,
    *,
    model=None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    output=None,
    on_rows: Optional[Callable] = None,
    on_error: str = "skip",
    progress: bool = False,
    workers: Optional[int] = None,
    max_queue_size: Optional[int] = None,
    on_skip: Optional[Callable] = None,
) -> Predictions:
    """Top-`top` classes for each image, streamed in batches.

    One model: `model_path` (a ``.keras`` file written by ``train``, or an
    artifact ``export`` wrote from one: ``.tflite``, OpenVINO ``.xml``,
    ``.onnx``, ``.pt2`` or a SavedModel directory, run in its own runtime),
    `model` (a Keras classifier taking raw pixels in [0, 255]), or `arch`
    with `weights` (a weight-set name such as ``"imagenet"``, a file, or
    ``None``: random initial weights; an ImageNet classifier: inputs through
    `keras_densenet.preprocess_input`, names from `decode_predictions`).
    Images go in at the model's size (its fixed input, or its `Resizing`
    layer's), resized as in training; models and artifacts that take any size
    and do not resize inside get each image at its own size (one run per
    size in a batch; no reduced JPEG decoding).

    Args:
        images: image files, directories or glob patterns
            (`listing.list_images`).
        model_path, model, arch, weights: the model (one of them).
        top: how many classes per image.
        class_names: a ``class_names.json`` file; default: the one beside
            `model_path`, else the class index names each class.
        trust_pickle: allow a ``.pt2`` `model_path` (see
            `runtimes.open_artifact`).
        batch_size: images per batch.
        output: a row file (`RowWriter`: ``.csv``, ``.jsonl``), written as
            the batches come; created or replaced.
        on_rows: called with ``(paths, rows)`` per batch instead of keeping
            rows in the result (e.g. to print them).
        on_error: ``"skip"`` unreadable files (one line on stderr each,
            `on_skip`) or ``"raise"`` a ValueError naming the file.
        progress: report progress (`data.progress.Progress`: a bar on a
            terminal, else a line every 5 s on stderr).
        workers, max_queue_size: decoding threads and batches read ahead
            (`image_lib.prefetch`).
        on_skip: called with ``(path, reason)`` per skipped file.

    Returns:
        `Predictions`: the rows (unless `output` or `on_rows` took them), the
        count, the skipped files.

    Raises:
        ValueError: bad arguments, files or model, or no readable image;
            the message names them.

    Example:

    >>> predict(["7.png"], model_path="run/model.tflite", top=1)  # doctest: +SKIP
    [[('7', '7', 0.998)]]
    """
    paths = check_predict(images, model_path, arch, weights, top, class_names, trust_pickle, batch_size,
                          output, model)
    image_lib.check_on_error(on_error)
    net, size, channels, preprocess, names_of = _served(model_path, arch, weights, class_names, trust_pickle,
                                                        model)
    if size is None:  # one run per image size: padding would not save a compilation
        run = functools.partial(_run_by_size, getattr(net, "predict_on_batch", net))
    else:
        run = keras_runner(net, batch_size, len(paths)) if hasattr(net, "predict_on_batch") else net
    files = image_lib.ImageFiles(paths, size, batch_size, channels, on_error=on_error, preprocess=preprocess,
                                 on_skip=on_skip)
    result = Predictions(output)
    reporter = Progress(len(paths), label="predict") if progress else None
    writer = RowWriter(output) if output is not None else None
    try:
        for index, batch in enumerate(image_lib.prefetch(files, workers, max_queue_size)):
            if batch.paths:
                rows = names_of(np.asarray(run(batch.x)), top)
                if writer is not None:
                    writer.write(batch.paths, rows)
                elif on_rows is not None:
                    on_rows(batch.paths, rows)
                else:
                    result.extend(rows)
                    result.paths.extend(batch.paths)
                result.count += len(rows)
            if reporter is not None:
                reporter.update(min((index + 1) * batch_size, len(paths)), len(files.skipped))
    finally:
        if writer is not None:
            writer.close()
        if reporter is not None:
            reporter.close()
    result.skipped = list(files.skipped)
    if result.count == 0:
        raise ValueError(f"none of the {len(paths)} image files could be read (see the lines above)")
    return result


def _top_k(probs: np.ndarray, names: Optional[list], top: int) -> list:
    out = []
    for row in probs:
        order = np.argsort(row)[::-1][: min(top, len(row))]
        out.append(
            [(str(i), names[i] if names and i < len(names) else str(i), float(row[i])) for i in order]
        )
    return out
