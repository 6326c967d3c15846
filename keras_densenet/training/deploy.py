"""Inference and serving: what ``keras-densenet predict`` and ``export`` run.

Example:

>>> from keras_densenet.training import deploy
>>> deploy.predict(["cat.jpg"], arch="densenet121", weights="imagenet", top=3)  # doctest: +SKIP
[[('n02123045', 'tabby', 0.52), ...]]
"""

from __future__ import annotations

import json
import os
import zipfile
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np

from keras_densenet.core import checks, extras, registry
from keras_densenet.core.files import atomic_path
from keras_densenet.training.config import CLASS_NAMES_FILE
from keras_densenet.training.data import resize_images

if TYPE_CHECKING:  # keras is imported lazily: the CLI sets the backend first
    import keras

#: ``export`` formats and the `keras.Model.export` format each one uses.
EXPORT_FORMATS = {"savedmodel": "tf_saved_model", "onnx": "onnx"}
#: Classes per image that `predict` returns by default.
DEFAULT_TOP = 5


def check_model_file(path) -> str:
    """`path` as a string, if it is an existing ``.keras`` file (keras-free).

    Raises:
        ValueError: naming the file: missing, or not a ``.keras`` file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"model file not found: {path!r} (expected a .keras file)")
    if not path.endswith(".keras"):
        raise ValueError(f"model file {path!r} must be a .keras file")
    return path


def check_predict(images: Sequence, model_path=None, arch=None, weights=None, top: int = DEFAULT_TOP) -> None:
    """The argument checks of `predict`, without keras (the CLI runs them
    before a backend is chosen).

    Raises:
        ValueError: naming the first bad argument.
    """
    if not images:
        raise ValueError("`images`: give at least one image file")
    checks.integer("top", top)
    for path in images:  # before any slow model build or download
        if not os.path.isfile(os.fspath(path)):
            raise ValueError(f"image file not found: {os.fspath(path)!r}")
    if model_path is None and arch is None:
        raise ValueError("give a model: `model_path` (a .keras file) or `arch` (with `weights`)")
    if model_path is not None and arch is not None:
        raise ValueError("give `model_path` or `arch`, not both")
    if model_path is not None:
        if weights is not None:
            raise ValueError("`weights` goes with `arch`; a `model_path` file has its weights")
        check_model_file(model_path)
    else:
        registry.get_variant(arch)  # lists the variants when unknown


def check_export(model_path, fmt: str) -> None:
    """The argument checks of `export` that need no keras."""
    checks.one_of("fmt", fmt, tuple(EXPORT_FORMATS))
    check_model_file(model_path)


def load_model(path) -> keras.Model:
    """Loads a ``.keras`` model with safe mode on.

    Raises:
        ValueError: the file does not exist or is not a Keras model; the
            message names the file.
    """
    import keras

    path = check_model_file(path)
    if not zipfile.is_zipfile(path):  # keras would say "File not found"
        raise ValueError(f"{path!r} is not a loadable Keras model: a .keras file is a zip archive")
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except Exception as e:  # zipfile, json, h5py... all mean "not a model"
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path!r} is not a loadable Keras model: {reason}") from None


def read_images(paths: Sequence, channels: int) -> list:
    """Reads image files at their own size, as float32 arrays in [0, 255].

    Args:
        paths: image files.
        channels: 1 (grayscale) or 3 (RGB).

    Returns:
        One ``(height, width, channels)`` array per file.

    Raises:
        ValueError: a file is missing or not a decodable image; the message
            names it.
    """
    import keras

    extras.require("train", "reading image files")  # keras.utils.load_img uses Pillow
    arrays = []
    for path in paths:
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise ValueError(f"image file not found: {path!r}")
        try:
            img = keras.utils.load_img(path, color_mode="grayscale" if channels == 1 else "rgb")
        except Exception as e:  # Pillow's UnidentifiedImageError, OSError...
            raise ValueError(f"cannot read image {path!r}: {type(e).__name__}") from None
        arrays.append(keras.utils.img_to_array(img, data_format="channels_last").astype("float32"))
    return arrays


def load_images(paths: Sequence, size: tuple, channels: int) -> np.ndarray:
    """Reads images and resizes them into one float32 batch in [0, 255].

    The resize is `keras.ops.image.resize` (bilinear), the operation of
    Keras' `Resizing` layer and `image_dataset_from_directory`, so a model
    sees images resized exactly as in training.

    Args:
        paths: image files.
        size: ``(height, width)``.
        channels: 1 (grayscale) or 3 (RGB).

    Raises:
        ValueError: a file is missing or not a decodable image.
    """
    return _resize_all(read_images(paths, channels), size)


def _resize_all(arrays: list, size: tuple) -> np.ndarray:
    return np.stack([resize_images(x[None], size)[0] for x in arrays])


def _predict_any_size(model, arrays: list) -> np.ndarray:
    """Runs a model whose input takes any image size: one batch per size."""
    import keras

    probs = [None] * len(arrays)
    by_shape = {}
    for i, x in enumerate(arrays):
        by_shape.setdefault(x.shape, []).append(i)
    for indices in by_shape.values():
        out = model.predict(np.stack([arrays[i] for i in indices]), verbose=0)
        for i, row in zip(indices, keras.ops.convert_to_numpy(out)):
            probs[i] = row
    return np.stack(probs)


def _class_names_for(model_path: str) -> Optional[list]:
    path = os.path.join(os.path.dirname(os.path.abspath(model_path)), CLASS_NAMES_FILE)
    if os.path.isfile(path):
        with open(path) as f:
            return json.load(f)
    return None


def predict(
    images: Sequence,
    model_path=None,
    arch: Optional[str] = None,
    weights=None,
    top: int = DEFAULT_TOP,
) -> list:
    """Top-`top` classes for each image.

    Either `model_path` (a ``.keras`` file written by ``train``; names come
    from the ``class_names.json`` beside it, else the class index) or `arch`
    with `weights` (ImageNet classifier: names from `decode_predictions`,
    inputs preprocessed with `keras_densenet.preprocess_input`).

    Args:
        images: image file paths.
        model_path: a ``.keras`` model taking raw pixels in [0, 255].
        arch: a registered variant name (with `weights`).
        weights: ``"imagenet"`` (or another weight-set name) or a weights
            file for `arch` with its 1000-class top.
        top: how many classes per image.

    Returns:
        One list per image of ``(class_id, class_name, score)`` tuples, best
        first.

    Raises:
        ValueError: bad arguments, files or model; the message names them.
    """
    check_predict(images, model_path, arch, weights, top)
    import keras

    if model_path is not None:
        model = load_model(model_path)
        names = _class_names_for(model_path)
        size = tuple(model.input_shape[1:3])
        channels = model.input_shape[-1]
        arrays = read_images(images, channels)
        if None in size:
            # Models written by `train` resize inside (a `Resizing` layer),
            # exactly as their training data was resized.
            probs = _predict_any_size(model, arrays)
        else:
            probs = keras.ops.convert_to_numpy(model.predict(_resize_all(arrays, size), verbose=0))
        return _top_k(probs, names, top)

    from keras_densenet.models import densenet, imagenet

    variant = registry.get_variant(arch)
    if weights is None:
        raise ValueError("`weights` is needed with `arch` (e.g. 'imagenet' or a file)")
    model = densenet.build(variant.name, weights=weights)
    size = tuple(model.input_shape[1:3])
    x = imagenet.preprocess_input(load_images(images, size, 3))
    probs = keras.ops.convert_to_numpy(model.predict(x, verbose=0))
    if probs.shape[-1] != 1000:  # not an ImageNet classifier: no names
        return _top_k(probs, None, top)
    return [[(c, n, float(s)) for c, n, s in row] for row in imagenet.decode_predictions(probs, top=top)]


def _exportable(model):
    """`model`, or on JAX its part after a leading `Resizing` layer.

    JAX's exporters (jax2tf, jax2onnx) cannot trace Keras' `Resizing` with
    symbolic shapes, not even a symbolic batch size. There the artifact
    starts after the resize and takes images of the training size.
    """
    import keras

    if keras.backend.backend() != "jax" or None not in model.input_shape[1:]:
        return model
    first = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)][:1]
    if not first or not isinstance(first[0], keras.layers.Resizing):
        return model
    return keras.Model(first[0].output, model.output, name=model.name)


def _example_input(model) -> Optional[np.ndarray]:
    """A zero batch the model accepts, or None if its input size is unknown.

    Free spatial sizes take the size of the model's `Resizing` layer (models
    written by `train` resize inside).
    """
    import keras

    shape = model.input_shape
    if not isinstance(shape, tuple):
        return None
    shape = list(shape[1:])
    if None in shape:
        resizing = [layer for layer in model.layers if isinstance(layer, keras.layers.Resizing)]
        if not resizing:
            return None
        axes = [i for i, d in enumerate(shape) if d is None]
        if len(axes) != 2:
            return None
        shape[axes[0]], shape[axes[1]] = resizing[0].height, resizing[0].width
    return np.zeros([1] + shape, "float32")


def _top_k(probs: np.ndarray, names: Optional[list], top: int) -> list:
    out = []
    for row in probs:
        order = np.argsort(row)[::-1][: min(top, len(row))]
        out.append(
            [(str(i), names[i] if names and i < len(names) else str(i), float(row[i])) for i in order]
        )
    return out


def export(model_path, fmt: str, out) -> str:
    """Writes a serving artifact of a ``.keras`` model with `keras.Model.export`.

    ``savedmodel``: a TensorFlow SavedModel directory (``serve`` endpoint;
    needs TensorFlow). ``onnx``: an ONNX file (needs ``onnx`` and, on the
    TensorFlow/JAX backends, ``tf2onnx``; on PyTorch, ``onnxscript``).
    The artifact appears only once complete (written beside `out`, then
    renamed); an existing `out` is replaced. Models that take any image size
    export that way, except on JAX (see `_exportable`): there the artifact
    takes images of the size of the model's `Resizing` layer.

    Args:
        model_path: the ``.keras`` model.
        fmt: ``"savedmodel"`` or ``"onnx"``.
        out: the directory (savedmodel) or file (onnx) to write.

    Returns:
        `out`.

    Raises:
        ValueError: unknown format, bad model file, missing exporter package,
            unwritable destination.
    """
    check_export(model_path, fmt)
    out = os.path.abspath(os.fspath(out))
    parent = os.path.dirname(out)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        raise ValueError(f"cannot write the export to {out!r}: {parent!r} is not a writable directory")
    model = _exportable(load_model(model_path))
    example = _example_input(model)
    if example is not None:
        # A freshly loaded model has never been called; some exporters (ONNX
        # on JAX) refuse such densenet.
        model(example)
    with atomic_path(out) as tmp:
        try:
            model.export(tmp, format=EXPORT_FORMATS[fmt], verbose=False)
        except ImportError as e:
            raise ValueError(
                f"export to {fmt} needs an extra package: {e}. "
                "Install them with: pip install -e '.[export]' (in a clone of keras-densenet)"
            ) from None
    return out
