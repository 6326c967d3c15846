"""Segmentation masks: what ``keras-densenet predict --masks`` runs with a
segmenter trained by ``keras-densenet segment``.

Example:

>>> from keras_densenet.deployment import masks
>>> masks.predict_masks(["scan.png"], "seg/model.keras", "masks/")  # doctest: +SKIP
[('masks/scan.png', {'background': 0.91, '3': 0.09})]
"""

from __future__ import annotations

import collections
import os

import numpy as np

from keras_densenet.core import extras
from keras_densenet.core.files import atomic_write, prepare_output_dir
from keras_densenet.data import images as image_lib
from keras_densenet.data import listing
from keras_densenet.data.canvases import PALETTE
from keras_densenet.deployment import predict as deploy
from keras_densenet.models import saved, segmentation

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


def mask_names(paths) -> list:
    """The mask file of each image, relative to the masks directory: the
    image's path below the images' common folder, with ``.png`` for its
    ending. Images of one folder keep their names; same-named images of
    different folders get their folders; images that differ only in their
    ending (``scan.png``, ``scan.jpg``) keep it (``scan.jpg.png``). Names
    are compared ignoring case, as case-insensitive file systems do.

    Example:

    >>> mask_names(["in/a/scan.png", "in/b/scan.png", "in/b/x.jpg", "in/b/x.png"])
    ['a/scan.png', 'b/scan.png', 'b/x.jpg.png', 'b/x.png.png']
    """
    full = [os.path.abspath(p) for p in paths]
    try:
        common = os.path.commonpath([os.path.dirname(p) for p in full]) if full else ""
    except ValueError:  # Windows: paths on different drives share no folder
        common = ""
    below = [os.path.relpath(p, common) if common else os.path.basename(p) for p in full]
    stems = [os.path.splitext(b)[0] for b in below]
    taken = collections.Counter(s.casefold() for s in stems)
    names, seen = [], set()
    for stem, name in zip(stems, below, strict=True):
        base = stem if taken[stem.casefold()] == 1 else name
        mask, n = base + ".png", 2
        while mask.casefold() in seen:  # "x.jpg.png" beside "x.jpg" and "x.png": numbered
            mask, n = f"{base}-{n}.png", n + 1
        seen.add(mask.casefold())
        names.append(mask)
    return names


def predict_masks(images, model_path, masks_dir, on_error: str = "raise", workers=None) -> list:
    """Writes one mask PNG per image with a segmenter written by
    `train_segmentation`.

    Each image is read as training read canvases (raw pixels, the model's
    channels) through the streaming pipeline (`keras_densenet.data.images`,
    one image at a time at its own size, the next ones decoded meanwhile),
    resized bilinearly to the nearest sides divisible by 32, segmented, and
    its label map resized back (nearest) to the image's own size.

    Args:
        images: image files, directories or glob patterns
            (`keras_densenet.data.listing.list_images`).
        model_path: the ``.keras`` segmenter.
        masks_dir: where the masks go (created), named as the images
            (`mask_names`: below it, the images' folders under their
            common folder).
        on_error: ``"raise"`` (default) a ValueError naming an unreadable
            file, or ``"skip"`` it (one line on stderr).
        workers: decoding threads.

    Returns:
        A `deploy.Predictions` list of ``(mask path, {class name: fraction
        of pixels})`` per image written; its ``paths`` are the images, its
        ``skipped`` the files skipped.

    Raises:
        ValueError: bad files or a model that does not segment.
    """
    paths = listing.list_images(images)
    targets = dict(zip(paths, mask_names(paths), strict=True))
    image_lib.check_on_error(on_error)
    model = saved.load_keras_model(model_path)
    if len(model.output_shape) != 4:
        raise ValueError(f"model file {os.fspath(model_path)!r} classifies whole images: predict without --masks")
    names = deploy.read_class_names_beside(model_path)
    masks_dir = prepare_output_dir(masks_dir)
    files = image_lib.ImageFiles(paths, None, 1, model.input_shape[-1], on_error=on_error)
    out = deploy.Predictions()
    for batch in image_lib.prefetch(files, workers):
        for path, image in zip(batch.paths, batch.x, strict=True):
            h, w = image.shape[:2]
            served = image_lib.resize(image, served_size(h, w))
            labels = _nearest(segmentation.predict_labels(model, served[None])[0], h, w)
            target = os.path.join(masks_dir, targets[path])
            os.makedirs(os.path.dirname(target), exist_ok=True)
            counts = np.bincount(labels.ravel(), minlength=model.output_shape[-1]) / labels.size
            shares = {(names[c] if names and c < len(names) else str(c)): float(counts[c])
                      for c in np.flatnonzero(counts)}
            out.append((save_mask(labels, target), shares))
            out.paths.append(path)
    out.count, out.skipped = len(out), list(files.skipped)
    return out
