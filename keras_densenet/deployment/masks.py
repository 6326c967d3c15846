"""Segmentation masks: what ``keras-densenet predict --masks`` runs with a
segmenter trained by ``keras-densenet segment``.

Example:

>>> from keras_densenet.deployment import masks
>>> masks.predict_masks(["scan.png"], "seg/model.keras", "masks/")  # doctest: +SKIP
[('masks/scan.png', {'background': 0.91, '3': 0.09})]
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from keras_densenet.core import extras
from keras_densenet.core.files import atomic_write, prepare_output_dir
from keras_densenet.data.canvases import PALETTE
from keras_densenet.deployment import predict as deploy
from keras_densenet.models import fcdensenet, saved


#: Sides a segmenter takes are multiples of this (5 transitions down).
SIDE_MULTIPLE = 32


def served_size(height: int, width: int) -> tuple:
    """The nearest sides divisible by `SIDE_MULTIPLE` (at least one multiple)."""
    return tuple(max(SIDE_MULTIPLE, int(round(s / SIDE_MULTIPLE)) * SIDE_MULTIPLE) for s in (height, width))


def _nearest(labels: np.ndarray, height: int, width: int) -> np.ndarray:
    """Label map resized to ``(height, width)`` by nearest neighbour."""
    rows = np.minimum((np.arange(height) + 0.5) * labels.shape[0] / height, labels.shape[0] - 1).astype(int)
    cols = np.minimum((np.arange(width) + 0.5) * labels.shape[1] / width, labels.shape[1] - 1).astype(int)
    return labels[rows][:, cols]


def save_mask(labels: np.ndarray, path: str) -> str:
    """Writes a label map as a palette PNG: each pixel's value is its class
    id, shown in `PALETTE`'s colours (written atomically)."""
    pil = extras.import_from("train", "PIL.Image", "writing masks")
    image = pil.fromarray(labels.astype("uint8"), mode="P")
    image.putpalette(PALETTE.flatten().tolist())
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))
    return path


def predict_masks(images: Sequence, model_path, masks_dir) -> list:
    """Writes one mask PNG per image with a segmenter written by
    `train_segmentation`.

    Each image is read as training read canvases (raw pixels, the model's
    channels), resized bilinearly to the nearest sides divisible by 32,
    segmented, and its label map resized back (nearest) to the image's own
    size.

    Args:
        images: image files.
        model_path: the ``.keras`` segmenter.
        masks_dir: where the masks go (created), named as the images.

    Returns:
        ``(mask path, {class name: fraction of pixels})`` per image.

    Raises:
        ValueError: bad files or a model that does not segment.
    """
    model = saved.load_keras_model(model_path)
    if len(model.output_shape) != 4:
        raise ValueError(f"model file {os.fspath(model_path)!r} classifies whole images: predict without --masks")
    names = deploy.read_class_names_beside(model_path)
    masks_dir = prepare_output_dir(masks_dir)
    out = []
    for path, image in zip(images, deploy.read_images(images, model.input_shape[-1])):
        h, w = image.shape[:2]
        served = deploy.resize_to(image, served_size(h, w))
        labels = _nearest(fcdensenet.predict_labels(model, served[None])[0], h, w)
        target = os.path.join(masks_dir, os.path.splitext(os.path.basename(os.fspath(path)))[0] + ".png")
        counts = np.bincount(labels.ravel(), minlength=model.output_shape[-1]) / labels.size
        shares = {(names[c] if names and c < len(names) else str(c)): float(counts[c]) for c in np.flatnonzero(counts)}
        out.append((save_mask(labels, target), shares))
    return out
