"""The embedded segmentation dataset: canvases of scikit-learn's bundled
digits, with a per-pixel class, generated offline and seeded.

Each canvas holds 1 to `max_digits` digits at random scales and positions,
one per quarter of the canvas at most (so digits never overlap and every
inked pixel has one true class); a pixel's label is the class of the digit
inked there (``1 + d`` for digit ``d``) and background (0) elsewhere: 11
classes. The training and validation canvases draw on
disjoint halves of the source digits, so validation measures unseen
handwriting.

Example:

>>> from keras_densenet.data import canvases
>>> ds = canvases.digit_canvases(train=8, val=4, size=32, seed=0)
>>> ds.x_train.shape, ds.y_train.shape, ds.class_names[:3]
((8, 32, 32, 1), (8, 32, 32), ['background', '0', '1'])
"""

from __future__ import annotations

import dataclasses

import numpy as np

from keras_densenet.core import checks, extras

#: Class 0 of every label map.
BACKGROUND = "background"
#: A digit's pixel counts as inked from this fraction of full ink (8x8
#: scans have 17 gray levels; the faint rim is left to the background).
INK_THRESHOLD = 0.25
#: Side of a placed digit, in pixels, as a fraction of the canvas side (at
#: most half: a digit stays inside its quarter).
MIN_SCALE, MAX_SCALE = 0.3, 0.5
#: Digits per canvas at most: one per quarter.
MAX_DIGITS = 4
#: Fraction of the source digits held out for the validation canvases.
VALIDATION_SOURCE = 0.3


@dataclasses.dataclass
class CanvasDataset:
    """Canvases and their label maps.

    Attributes:
        x_train, x_val: float32 images ``(n, size, size, 1)``, pixel values
            in [0, 255].
        y_train, y_val: int32 label maps ``(n, size, size)``, 0 background,
            ``1 + d`` for digit ``d``.
        class_names: ``["background", "0", ..., "9"]``.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    class_names: list


def _bilinear_matrix(out: int, inp: int) -> np.ndarray:
    """``(out, inp)`` weights of 1-D bilinear upsampling, half-pixel centres
    (as Keras' `Resizing`), so a 2-D resize is two matrix products."""
    centres = np.clip((np.arange(out) + 0.5) * inp / out - 0.5, 0, inp - 1)
    low = np.floor(centres).astype(int)
    high = np.minimum(low + 1, inp - 1)
    frac = centres - low
    m = np.zeros((out, inp))
    m[np.arange(out), low] += 1 - frac
    m[np.arange(out), high] += frac
    return m


def _scaled_digits(images: np.ndarray, sides: range) -> dict:
    """Every source digit resized (bilinear, in [0, 1]) to each side: NumPy
    only, all digits at once."""
    x = images / 16.0
    out = {}
    for s in sides:
        m = _bilinear_matrix(s, x.shape[1])
        out[s] = np.einsum("ij,njk,lk->nil", m, x, m).astype("float32")
    return out


def _draw(scaled: dict, labels: np.ndarray, n: int, size: int, max_digits: int, rng) -> tuple:
    """`n` canvases from the digits in `scaled` (same order as `labels`)."""
    x = np.zeros((n, size, size), "float32")
    y = np.zeros((n, size, size), "int32")
    sides = sorted(scaled)
    half = size // 2
    for i in range(n):
        for cell in rng.permutation(MAX_DIGITS)[: rng.integers(1, max_digits + 1)]:
            side = sides[rng.integers(len(sides))]
            d = rng.integers(len(labels))
            top, left = (cell // 2) * half + rng.integers(0, half - side + 1), (cell % 2) * half + rng.integers(
                0, half - side + 1)
            digit = scaled[side][d]
            window = (slice(top, top + side), slice(left, left + side))
            x[i][window] = np.maximum(x[i][window], digit)
            y[i][window] = np.where(digit >= INK_THRESHOLD, labels[d] + 1, y[i][window])
    return (x * 255.0)[..., None], y


def source_split(labels: np.ndarray, seed: int) -> tuple:
    """Indices of the source digits of the training and of the validation
    canvases: disjoint, stratified, `VALIDATION_SOURCE` held out."""
    from sklearn.model_selection import train_test_split

    return train_test_split(np.arange(len(labels)), test_size=VALIDATION_SOURCE, stratify=labels,
                            random_state=seed)


def digit_canvases(train: int = 2000, val: int = 400, size: int = 64, max_digits: int = 4,
                   seed: int = 0) -> CanvasDataset:
    """Generates the digits segmentation dataset.

    Args:
        train, val: numbers of training and validation canvases.
        size: canvas side in pixels (at least 16).
        max_digits: digits per canvas, from 1 to this many (at most
            `MAX_DIGITS`, one per quarter).
        seed: the split of the source digits and every placement.

    Returns:
        A `CanvasDataset`.

    Raises:
        ValueError: for an invalid argument; the message names it.
    """
    extras.require("train", "the digits canvases")
    from sklearn.datasets import load_digits

    checks.integer("train", train)
    checks.integer("val", val)
    checks.integer("size", size, minimum=16)
    checks.integer("max_digits", max_digits, minimum=1, maximum=MAX_DIGITS)
    checks.integer("seed", seed, minimum=0)
    digits = load_digits()
    train_idx, val_idx = source_split(digits.target, seed)
    src_train, src_val = digits.images[train_idx], digits.images[val_idx]
    lab_train, lab_val = digits.target[train_idx], digits.target[val_idx]
    sides = range(max(8, int(MIN_SCALE * size)), max(8, size // 2) + 1)
    rng = np.random.default_rng(seed)
    x_train, y_train = _draw(_scaled_digits(src_train, sides), lab_train, train, size, max_digits, rng)
    x_val, y_val = _draw(_scaled_digits(src_val, sides), lab_val, val, size, max_digits, rng)
    names = [BACKGROUND] + [str(d) for d in digits.target_names]
    return CanvasDataset(x_train, y_train, x_val, y_val, names)


def check_label_maps(images: np.ndarray, labels: np.ndarray, classes: int, name: str = "labels") -> None:
    """Checks a segmentation dataset: one label map per image, of the image's
    height and width, with class ids in ``[0, classes)``.

    Raises:
        ValueError: naming `name` and what is wrong.

    Example:

    >>> check_label_maps(np.zeros((2, 8, 8, 1)), np.zeros((2, 8, 8), "int32"), 11)
    >>> check_label_maps(np.zeros((2, 8, 8, 1)), np.full((2, 8, 8), 11), 11)
    Traceback (most recent call last):
    ...
    ValueError: `labels`: class ids must be in [0, 11); found 11
    """
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim != 4:
        raise ValueError(f"images of `{name}` must be (n, height, width, channels); got shape {images.shape}")
    if labels.shape != images.shape[:3]:
        raise ValueError(f"`{name}`: label maps must have shape {images.shape[:3]} (one per image, its height "
                         f"and width); got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"`{name}`: label maps must hold integer class ids; got {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        bad = labels.min() if labels.min() < 0 else labels.max()
        raise ValueError(f"`{name}`: class ids must be in [0, {classes}); found {bad}")


#: Background black, then ten well-separated colours (matplotlib's tab10).
PALETTE = np.array(
    [[0, 0, 0], [31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
     [140, 86, 75], [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207]], "uint8"
)


def colorize(labels: np.ndarray) -> np.ndarray:
    """``(h, w)`` class ids -> ``(h, w, 3)`` uint8 colours of `PALETTE`."""
    return PALETTE[np.clip(labels, 0, len(PALETTE) - 1) % len(PALETTE)]
