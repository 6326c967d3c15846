"""Feature extraction at volume: pooled DenseNet features of many image
files, written as one ``.npy`` array with the files' paths beside it.

Images stream through `keras_densenet.data.images` (decoded while the model
runs, large JPEGs at a reduced scale, bounded memory). Each batch's rows are
written into the ``.npy`` file as they come, at their row, so memory does not
grow with the number of images; the array is sized from the listing and,
when files were skipped, copied once into an array without their rows.
Both files are written under temporary names and renamed at the end
(`keras_densenet.core.files.atomic_path`): a killed run leaves nothing at
the final names.

Example:

>>> from keras_densenet.deployment.features import extract_features
>>> result = extract_features("photos/", "features.npy", arch="densenet121")  # doctest: +SKIP
>>> result.shape, result.paths_file  # doctest: +SKIP
((12000, 1024), 'features.paths.txt')
>>> import numpy as np
>>> x = np.load("features.npy", mmap_mode="r")  # doctest: +SKIP
>>> paths = open("features.paths.txt", encoding="utf-8").read().splitlines()  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Optional

import numpy as np

from keras_densenet.core import checks, registry
from keras_densenet.core.files import atomic_path
from keras_densenet.data import images as image_lib
from keras_densenet.data import listing
from keras_densenet.data.progress import Progress
from keras_densenet.deployment import predict as deploy

#: How features are pooled over the feature map.
POOLS = ("avg", "max")
#: Rows copied at a time when skipped files' rows are left out.
COPY_ROWS = 4096


@dataclasses.dataclass
class FeatureResult:
    """What `extract_features` wrote.

    Attributes:
        output: the ``.npy`` file, ``(count, features)`` float32.
        paths_file: the image of each row, one path per line (UTF-8).
        count: rows written.
        skipped: ``(path, reason)`` per input skipped.
        shape: the array's shape.
    """

    output: str
    paths_file: str
    count: int
    skipped: list
    shape: tuple


def paths_file_for(output) -> str:
    """The paths file beside an ``.npy`` output: ``features.npy`` ->
    ``features.paths.txt``.

    Example:

    >>> paths_file_for("runs/features.npy")
    'runs/features.paths.txt'
    """
    return os.path.splitext(os.fspath(output))[0] + ".paths.txt"


def check_features(inputs, output, model=None, arch=None, weights=None, pool: str = "avg",
                   batch_size: int = 32) -> list:
    """The argument checks of `extract_features`, without keras; the image
    files `inputs` lists.

    Raises:
        ValueError: naming the first bad argument.
    """
    paths = listing.list_images(inputs)
    for path in paths:  # one path per line in the paths file
        if "\n" in path or "\r" in path:
            raise ValueError(f"`inputs`: a file name with a line break cannot be listed one per line: {path!r}")
    output = os.fspath(output)
    if not output.endswith(".npy"):
        raise ValueError(f"`output` {output!r}: the features file must end in .npy")
    directory = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(directory) or not os.access(directory, os.W_OK):
        raise ValueError(f"`output` {output!r}: {directory!r} is not a writable directory")
    checks.one_of("pool", pool, POOLS)
    checks.integer("batch_size", batch_size)
    if (model is None) == (arch is None):
        raise ValueError("give one model: `model` (a keras.Model or a .keras file) or `arch` (with `weights`)")
    if arch is not None:
        registry.get_variant(arch)
    elif weights is not None:
        raise ValueError("`weights` goes with `arch`; a model has its weights")
    if isinstance(model, (str, os.PathLike)) and not os.fspath(model).endswith(".keras"):
        raise ValueError(f"`model` {os.fspath(model)!r}: give a .keras file or a keras.Model")
    return paths


def feature_model(model, layer: Optional[str] = None, pool: str = "avg"):
    """A model from images to pooled features of `model`.

    Args:
        model: a Keras model.
        layer: the name of the layer whose output is pooled; default: what
            the last layer reads when it is a classifier (``Dense``: the
            pooled backbone of a model written by ``train``), else the
            model's output.
        pool: ``"avg"`` or ``"max"``, over the feature map (a 4D output);
            2D outputs are taken as they are.

    Returns:
        A `keras.Model` with the same input, giving ``(batch, features)``.
    """
    import keras

    if layer is not None:
        try:
            out = model.get_layer(layer).output
        except ValueError:
            raise ValueError(f"`layer` {layer!r} is not a layer of {model.name!r}") from None
    elif isinstance(model.layers[-1], keras.layers.Dense):
        out = model.layers[-1].input
    else:
        out = model.output
    if len(out.shape) == 4:
        pooling = keras.layers.GlobalAveragePooling2D if pool == "avg" else keras.layers.GlobalMaxPooling2D
        out = pooling(name=f"features_{pool}")(out)
    elif len(out.shape) != 2:
        raise ValueError(f"`layer`: features must be a feature map or a vector; {layer or model.name!r} "
                         f"gives shape {tuple(out.shape)}")
    # One input as a tensor, not a list of one: the structure batches come in.
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return keras.Model(inputs, out, name=f"{model.name}_features")


def _features_model(model, arch, weights, layer, pool) -> tuple:
    """``(model, preprocess)``: an ImageNet-style `arch` takes
    `preprocess_input`; `model` (a model or a ``.keras`` file written by
    ``train``) takes raw pixels."""
    if arch is not None:
        from keras_densenet.models import densenet, imagenet

        name = registry.get_variant(arch).name
        if layer is None:  # the backbone's own pooling: no classifier built
            return densenet.build(name, weights=weights, include_top=False, pooling=pool), imagenet.preprocess_input
        return feature_model(densenet.build(name, weights=weights), layer, pool), imagenet.preprocess_input
    if isinstance(model, (str, os.PathLike)):
        from keras_densenet.models import saved

        model = saved.load_keras_model(model)
    return feature_model(model, layer, pool), None


def _write_rows(handle, offset: int, row_bytes: int, start: int, rows: np.ndarray) -> None:
    # Plain writes at the row's place, not through a growing memory map:
    # the pages of a map count in the resident memory of the process.
    handle.seek(offset + start * row_bytes)
    handle.write(np.ascontiguousarray(rows, "float32").tobytes())


def _copy_rows(source: str, target: str, count: int, width: int) -> None:
    """The first `count` rows of the ``.npy`` `source` into a new `target`,
    `COPY_ROWS` at a time."""
    src = np.load(source, mmap_mode="r")
    dst = np.lib.format.open_memmap(target, mode="w+", dtype="float32", shape=(count, width))
    for start in range(0, count, COPY_ROWS):
        dst[start : start + COPY_ROWS] = src[start : min(start + COPY_ROWS, count)]
    dst.flush()
    del dst, src


def extract_features(
    inputs,
    output,
    model=None,
    arch: Optional[str] = None,
    weights="imagenet",
    pool: str = "avg",
    layer: Optional[str] = None,
    batch_size: int = 32,
    *,
    image_size=None,
    preprocess: Optional[Callable] = None,
    on_error: str = "skip",
    progress: bool = False,
    workers: Optional[int] = None,
    max_queue_size: Optional[int] = None,
    on_skip: Optional[Callable] = None,
) -> FeatureResult:
    """Writes pooled features of image files to a ``.npy`` file, and their
    paths, one per line, to `paths_file_for` it.

    Args:
        inputs: image files, directories or glob patterns
            (`listing.list_images`).
        output: the ``.npy`` file (replaced at the end).
        model: a `keras.Model` or a ``.keras`` file (raw pixels in
            [0, 255], as ``train`` writes them), or
        arch: a registered variant, built with `weights` (``"imagenet"``,
            another weight set, a file, or None for random weights); its
            inputs go through `keras_densenet.preprocess_input`.
        weights: with `arch`.
        pool: ``"avg"`` or ``"max"`` over the feature map.
        layer: pool this layer's output (see `feature_model`); default: the
            backbone's last feature map (DenseNet-121: 1024 features).
        batch_size: images per batch.
        image_size: the input size; default: the model's fixed input or
            `Resizing` layer, else (`arch`) its variant's default size (224
            for DenseNet-121).
        preprocess: applied to each batch instead of the default above.
        on_error: ``"skip"`` unreadable files (no row; one line on stderr
            each) or ``"raise"``.
        progress: report progress (a bar on a terminal, else a line every
            5 s on stderr).
        workers, max_queue_size: decoding threads and batches read ahead.
        on_skip: called with ``(path, reason)`` per skipped file.

    Returns:
        A `FeatureResult`.

    Raises:
        ValueError: bad arguments, no readable image, a model without a
            known input size (give `image_size`).
    """
    if arch is None:
        weights = None
    paths = check_features(inputs, output, model, arch, weights, pool, batch_size)
    image_lib.check_on_error(on_error)
    output = os.fspath(output)
    net, default_preprocess = _features_model(model, arch, weights, layer, pool)
    size = image_lib.image_size_pair(image_size) or deploy.model_size(net)
    if size is None and arch is not None:  # a backbone takes any size: its variant's own
        side = registry.get_variant(arch).arch.default_size
        size = (side, side)
    if size is None:
        raise ValueError("`image_size`: the model takes any size and does not resize inside; give its size")
    width = int(net.output_shape[-1])
    files = image_lib.ImageFiles(paths, size, batch_size, net.input_shape[-1], on_error=on_error,
                                 preprocess=preprocess or default_preprocess, on_skip=on_skip)
    run = deploy.keras_runner(net, batch_size, len(paths))
    reporter = Progress(len(paths), label="features") if progress else None
    count = 0
    paths_file = paths_file_for(output)
    try:
        with atomic_path(output) as tmp, atomic_path(paths_file) as tmp_paths:
            full = tmp + ".all.npy"  # sized from the listing
            header = np.lib.format.open_memmap(full, mode="w+", dtype="float32", shape=(len(paths), width))
            offset = header.offset
            del header
            with open(full, "r+b") as handle, open(tmp_paths, "w", encoding="utf-8", newline="\n") as names:
                for index, batch in enumerate(image_lib.prefetch(files, workers, max_queue_size)):
                    if batch.paths:
                        _write_rows(handle, offset, width * 4, count, run(batch.x))
                        names.write("".join(p + "\n" for p in batch.paths))
                        count += len(batch.paths)
                    if reporter is not None:
                        reporter.update(min((index + 1) * batch_size, len(paths)), len(files.skipped))
            if count == 0:
                raise ValueError(f"none of the {len(paths)} image files could be read (see the lines above)")
            if count < len(paths):  # skipped files: an array without their rows
                _copy_rows(full, tmp, count, width)
                os.remove(full)
            else:
                os.replace(full, tmp)
    finally:
        if reporter is not None:
            reporter.close()
    return FeatureResult(output, paths_file, count, list(files.skipped), (count, width))
