"""Pretrained weights: resolving the `weights` argument, downloading, loading.

`weights` is ``None`` (random init), a weight-set name from the registry
(``"imagenet"``, ``"torchvision"``...), or a path to a weights file. Files are
fetched with `keras.utils.get_file` and their hash verified before use.
"""

from __future__ import annotations

import os
from typing import Optional

import keras

from keras_densenet.registry import Variant, WeightsSpec

#: File endings `weights=PATH` accepts.
WEIGHT_FILE_SUFFIXES = (".weights.h5", ".h5", ".keras")


def _looks_like_path(weights: str) -> bool:
    return os.sep in weights or "/" in weights or weights.endswith(
        WEIGHT_FILE_SUFFIXES + (".pth", ".safetensors")
    )


def resolve(
    weights,
    variant: Optional[Variant],
    include_top: bool,
    classes: int,
) -> Optional[WeightsSpec]:
    """Validates `weights` and returns the registry spec it names, if any.

    Args:
        weights: the builder's `weights` argument.
        variant: the registered variant being built, or ``None`` for an
            architecture without published weights.
        include_top: whether the model has the classifier.
        classes: the classifier's size.

    Returns:
        The `WeightsSpec` for a weight-set name, ``None`` for ``None`` or a
        path.

    Raises:
        ValueError: unknown name, missing file, or `classes` that does not
            match the pretrained classifier.
    """
    if weights is None:
        return None
    if isinstance(weights, os.PathLike):
        weights = os.fspath(weights)
    if not isinstance(weights, str):
        raise ValueError(
            "`weights` must be None, a weight-set name or a file path. "
            f"Received: weights={weights!r}"
        )
    available = dict(variant.weights) if variant is not None else {}
    if weights in available:
        spec = available[weights]
        if include_top and classes != spec.classes:
            raise ValueError(
                f"`classes` must be {spec.classes} to load weights={weights!r} "
                f"with include_top=True (the pretrained classifier has "
                f"{spec.classes} classes). Received: classes={classes}. Use "
                "include_top=False and add your own classifier instead."
            )
        return spec
    if os.path.isfile(weights):
        return None
    if _looks_like_path(weights):
        raise ValueError(
            f"`weights` file not found: {weights!r}. Pass an existing "
            f"{', '.join(WEIGHT_FILE_SUFFIXES)} file, a weight-set name or None."
        )
    names = sorted(available)
    where = f"for {variant.name}" if variant is not None else "for this architecture"
    raise ValueError(
        f"Unknown `weights` {weights!r} {where}. Allowed: None, "
        + (", ".join(repr(n) for n in names) + ", " if names else "")
        + "or the path to a weights file."
    )


def fetch(spec: WeightsSpec, include_top: bool, variant_name: str) -> str:
    """Downloads (or finds in the Keras cache) the file for `spec`.

    Raises:
        ValueError: the download failed (e.g. offline); the message names the
            URL and suggests a local path or ``weights=None``.
    """
    url, file_hash = spec.url, spec.file_hash
    if not include_top and spec.notop_url:
        url, file_hash = spec.notop_url, spec.notop_file_hash
    fname = url.rsplit("/", 1)[-1]
    try:
        return keras.utils.get_file(
            fname,
            url,
            cache_subdir="models",
            file_hash=file_hash,
            hash_algorithm=spec.hash_algorithm,
        )
    except Exception as e:  # get_file raises several types for network errors
        raise ValueError(
            f"Could not download the {variant_name} weights from {url} ({e}). "
            "Download the file yourself and pass its path as `weights=PATH`, "
            "or use weights=None."
        ) from e


def load(model: keras.Model, weights, spec: Optional[WeightsSpec], include_top: bool, variant: Optional[Variant]) -> None:
    """Loads `weights` into `model` in place; raises instead of loading part.

    Raises:
        ValueError: the file does not fit the model or cannot be read; the
            message names the file.
    """
    if weights is None:
        return
    if spec is not None:
        if spec.source != "keras":
            raise ValueError(
                f"weights={weights!r} ({spec.source} checkpoint) needs the "
                "converter, which is not available in this build."
            )
        path = fetch(spec, include_top, variant.name if variant else model.name)
    else:
        path = os.fspath(weights)
    try:
        model.load_weights(path)
    except Exception as e:
        raise ValueError(f"Could not load weights from {path!r} into {model.name}: {e}") from e
