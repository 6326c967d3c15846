"""Inference: what ``keras-densenet predict`` runs, on ``.keras`` models and
on the serving artifacts ``export`` writes (`keras_densenet.deployment.export`,
also reachable here as `deploy.export`).

Example:

>>> from keras_densenet.deployment import predict as deploy
>>> deploy.predict(["cat.jpg"], arch="densenet121", weights="imagenet", top=3)  # doctest: +SKIP
[[('n02123045', 'tabby', 0.52), ...]]
"""

from __future__ import annotations

import json
import os
from typing import Optional, Sequence

import numpy as np

from keras_densenet.core import checks, extras, registry
from keras_densenet.deployment import runtimes
from keras_densenet.data.datasets import CLASS_NAMES_FILE, resize_images
from keras_densenet.models import saved

#: Classes per image that `predict` returns by default.
DEFAULT_TOP = 5


def check_predict(images: Sequence, model_path=None, arch=None, weights=None, top: int = DEFAULT_TOP,
                  class_names=None, trust_pickle: bool = False) -> None:
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
        raise ValueError("give a model: `model_path` (a .keras file or an exported artifact) or `arch` "
                         "(with `weights`)")
    if model_path is not None and arch is not None:
        raise ValueError("give `model_path` or `arch`, not both")
    if class_names is not None and model_path is None:
        raise ValueError("`class_names` goes with `model_path`")
    if model_path is not None:
        if weights is not None:
            raise ValueError("`weights` goes with `arch`; a `model_path` file has its weights")
        runtimes.check_model_file(model_path)
        runtimes.check_trusted(model_path, trust_pickle)
        if class_names is not None:
            read_class_names(class_names)
    else:
        registry.get_variant(arch)  # lists the variants when unknown


def read_class_names(path) -> list:
    """The class names of a ``class_names.json`` file (a JSON list of strings).

    Raises:
        ValueError: naming the file: missing, not JSON, or not a list of
            strings.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"class names file not found: {path!r}")
    try:
        with open(path) as f:
            names = json.load(f)
    except (ValueError, UnicodeDecodeError):
        raise ValueError(f"class names file {path!r} is not JSON") from None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"class names file {path!r} must hold a JSON list of strings")
    return names


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


def resize_to(image: np.ndarray, size: tuple) -> np.ndarray:
    """One ``(h, w, c)`` image resized bilinearly (as `load_images`)."""
    return resize_images(image[None], size)[0]


def read_class_names_beside(model_path) -> Optional[list]:
    """The ``class_names.json`` beside a model, or ``None``."""
    return _class_names_for(model_path)


def _resize_all(arrays: list, size: tuple) -> np.ndarray:
    return np.stack([resize_images(x[None], size)[0] for x in arrays])


def _run_by_size(run, arrays: list) -> np.ndarray:
    """`run` (batch -> outputs) over images of any sizes: one batch per size."""
    probs = [None] * len(arrays)
    by_shape = {}
    for i, x in enumerate(arrays):
        by_shape.setdefault(x.shape, []).append(i)
    for indices in by_shape.values():
        for i, row in zip(indices, run(np.stack([arrays[i] for i in indices]))):
            probs[i] = row
    return np.stack(probs)


def _serve(run, input_shape: tuple, arrays: list) -> np.ndarray:
    """Runs images through a model (``run``) of `input_shape`: at their own
    sizes where it takes any (models written by `train` resize inside, with
    a `Resizing` layer, exactly as their training data was resized), else
    resized to its size."""
    size = tuple(input_shape[1:3])
    if None in size:
        return _run_by_size(run, arrays)
    return run(_resize_all(arrays, size))


def _artifact_channels(path, input_shape: tuple) -> int:
    channels = input_shape[-1] if len(input_shape) == 4 else None
    if channels not in (1, 3):
        raise ValueError(f"model file {os.fspath(path)!r}: predict takes channels-last image models "
                         f"(1 or 3 channels); its input is {input_shape}")
    return channels


def _class_names_for(model_path: str, class_names=None) -> Optional[list]:
    """`class_names` (a file) if given, else the ``class_names.json`` beside
    the model, else ``None`` (the class index names each class)."""
    if class_names is not None:
        return read_class_names(class_names)
    path = os.path.join(os.path.dirname(os.path.abspath(model_path)), CLASS_NAMES_FILE)
    return read_class_names(path) if os.path.isfile(path) else None


def predict(
    images: Sequence,
    model_path=None,
    arch: Optional[str] = None,
    weights=None,
    top: int = DEFAULT_TOP,
    class_names=None,
    trust_pickle: bool = False,
) -> list:
    """Top-`top` classes for each image.

    Either `model_path` (a ``.keras`` file written by ``train``, or an
    artifact ``export`` wrote from one: ``.tflite``, OpenVINO ``.xml``,
    ``.onnx``, ``.pt2`` or a SavedModel directory, run in its own runtime)
    or `arch` with `weights` (ImageNet classifier: names from
    `decode_predictions`, inputs preprocessed with
    `keras_densenet.preprocess_input`).

    Args:
        images: image file paths.
        model_path: a model taking raw pixels in [0, 255].
        arch: a registered variant name (with `weights`).
        weights: ``"imagenet"`` (or another weight-set name) or a weights
            file for `arch` with its 1000-class top.
        top: how many classes per image.
        class_names: with `model_path`: a ``class_names.json`` file; default:
            the one beside the model, else the class index names each class.
        trust_pickle: allow a ``.pt2`` `model_path`, which torch unpickles
            (see `runtimes.open_artifact`).

    Returns:
        One list per image of ``(class_id, class_name, score)`` tuples, best
        first.

    Raises:
        ValueError: bad arguments, files or model; the message names them.

    Example:

    >>> predict(["7.png"], model_path="run/model.tflite", top=1)  # doctest: +SKIP
    [[('7', '7', 0.998)]]
    """
    check_predict(images, model_path, arch, weights, top, class_names, trust_pickle)
    import keras

    if model_path is not None:
        names = _class_names_for(model_path, class_names)
        if runtimes.model_file_format(model_path) != "keras":
            artifact = runtimes.open_artifact(model_path, trust_pickle=trust_pickle)
            arrays = read_images(images, _artifact_channels(model_path, artifact.input_shape))
            return _top_k(_serve(artifact, artifact.input_shape, arrays), names, top)
        model = saved.load_keras_model(model_path)
        if len(model.output_shape) == 4:
            raise ValueError(f"model file {os.fspath(model_path)!r} segments images (a class per pixel): "
                             "give --masks DIR to write a mask per image")
        arrays = read_images(images, model.input_shape[-1])
        probs = _serve(lambda x: keras.ops.convert_to_numpy(model.predict(x, verbose=0)), model.input_shape, arrays)
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


def _top_k(probs: np.ndarray, names: Optional[list], top: int) -> list:
    out = []
    for row in probs:
        order = np.argsort(row)[::-1][: min(top, len(row))]
        out.append(
            [(str(i), names[i] if names and i < len(names) else str(i), float(row[i])) for i in order]
        )
    return out
