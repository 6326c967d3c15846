"""Training data: the embedded handwritten digits, and image folders.

The default dataset is scikit-learn's bundled handwritten digits
(`sklearn.datasets.load_digits`): 1797 real 8x8 scans of the digits 0-9,
shipped inside scikit-learn, so training works offline. They are upsampled
to ``image_size`` (at least 8, their own size) and split into stratified train/validation sets.

Image folders (one sub-folder per class): `keras_densenet.data.folders`
reads them on every backend without TensorFlow (`folders.folder_batches`),
and `labelled_arrays` reads them through it; `image_folder_datasets`
(re-exported from `keras_densenet.data.tfdata`) gives the older tf.data
pipelines of the same splits.

Example:

>>> from keras_densenet.data import datasets as data
>>> ds = data.load_digits_dataset(image_size=32, validation_split=0.2, seed=0)
>>> ds.x_train.shape, ds.x_val.shape, ds.class_names[:3]
((1437, 32, 32, 1), (360, 32, 32, 1), ['0', '1', '2'])
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from keras_densenet.core import checks, extras

# Re-exported: where the trainers and the tests look for them.
from keras_densenet.data.folders import (  # noqa: F401
    MIN_IMAGE_SIZE,
    DataWarning,
    check_image_size,
    check_split,
)
from keras_densenet.data.tfdata import (  # noqa: F401
    IMAGE_SUFFIXES,
    FolderScan,
    image_folder_datasets,
    process_share,
    scan_image_folder,
)

#: The class names of a trained model, one per output, as JSON beside it.
CLASS_NAMES_FILE = "class_names.json"


@dataclasses.dataclass
class ArrayDataset:
    """An in-memory train/validation split.

    Attributes:
        x_train, y_train: training images (float32, pixel values in [0, 255],
            channels last) and integer labels.
        x_val, y_val: the held-out validation split.
        class_names: one name per label.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    class_names: list


def load_digits_dataset(
    image_size: int = 32,
    channels: int = 1,
    validation_split: float = 0.2,
    seed: int = 0,
    limit: Optional[int] = None,
) -> ArrayDataset:
    """scikit-learn's handwritten digits, upsampled, with a stratified split.

    Args:
        image_size: output side in pixels (>= 8); bilinear upsampling
            (`resize_images`).
        channels: 1 (grayscale) or 3 (the gray value repeated, for ImageNet
            backbones).
        validation_split: fraction held out for validation (stratified).
        seed: seed of the split (and of the `limit` subset).
        limit: use only this many images (stratified), for quick tests.

    Returns:
        An `ArrayDataset` with pixel values in [0, 255] (like decoded image
        files), so models see the same input range for every data source.

    Raises:
        ValueError: for an invalid argument; the message names it.

    Example:

    >>> ds = load_digits_dataset(limit=100, seed=1)
    >>> len(ds.x_train) + len(ds.x_val)
    100
    """
    extras.require("train", "the bundled digits dataset")
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    image_size = check_image_size(image_size)
    check_split(validation_split)
    if channels not in (1, 3):
        raise ValueError(f"`channels` must be 1 or 3. Received: channels={channels!r}")
    digits = load_digits()
    x = digits.images.astype("float32") * (255.0 / 16.0)  # 0..16 ink levels
    y = digits.target.astype("int32")
    if limit is not None:
        checks.integer("limit", limit, minimum=20, maximum=len(x))
        if limit < len(x):
            x, _, y, _ = train_test_split(x, y, train_size=limit, stratify=y, random_state=seed)
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=validation_split, stratify=y, random_state=seed
    )
    return ArrayDataset(
        _upsample(x_train, image_size, channels),
        y_train,
        _upsample(x_val, image_size, channels),
        y_val,
        [str(d) for d in digits.target_names],
    )


#: How images are resized everywhere: the `keras.layers.Resizing` default,
#: also `image_dataset_from_directory`'s. Training data, the `Resizing` layer
#: inside saved models and ``predict`` all resize this one way.
RESIZE_INTERPOLATION = "bilinear"


def even_batch_size(n: int, batch_size: int, most: int = 256) -> int:
    """A batch size for evaluating `n` samples in equal batches: the
    largest divisor of `n` up to ``max(batch_size, most)``, or `batch_size`
    if that divisor is below half of it (n prime, say). Equal batches mean
    one compiled evaluation step instead of two.

    Example:

    >>> even_batch_size(360, 32)
    180
    """
    limit = max(batch_size, most)
    best = max(d for d in range(1, min(n, limit) + 1) if n % d == 0)
    return best if best >= batch_size // 2 else batch_size


def resize_images(images: np.ndarray, size) -> np.ndarray:
    """Resizes a channels-last batch as a `keras.layers.Resizing` layer does.

    Args:
        images: ``(n, height, width, channels)``.
        size: ``(height, width)`` or one int for a square.

    Returns:
        A float32 NumPy batch of the new size.

    Example:

    >>> resize_images(np.zeros((2, 8, 8, 1)), 32).shape
    (2, 32, 32, 1)
    """
    import keras

    if isinstance(size, (int, np.integer)):
        size = (int(size), int(size))
    out = keras.ops.image.resize(
        np.asarray(images, "float32"), tuple(size), interpolation=RESIZE_INTERPOLATION,
        data_format="channels_last",
    )
    return keras.ops.convert_to_numpy(out).astype("float32")


def _upsample(images: np.ndarray, size: int, channels: int) -> np.ndarray:
    # The same resize as the model's own `Resizing` layer: `predict` can feed
    # raw 8x8 scans and the model sees exactly what it was trained on.
    out = resize_images(images[..., None], size)
    return np.repeat(out, channels, axis=-1)


def augmented_batches(
    x, y, batch_size: int, max_shift: int, seed: int, flip: bool = False, drop_remainder: bool = True
):
    """A `keras.utils.PyDataset` of shuffled batches, each randomly shifted.

    Shifting by up to `max_shift` pixels (zero fill) is the light
    augmentation the digits need; it is plain NumPy, so it runs unchanged on
    every backend without TensorFlow.

    Args:
        x: images, ``(n, h, w, c)``.
        y: labels.
        batch_size: batch size.
        max_shift: largest shift in pixels along each axis (0 disables).
        seed: seed of the shuffling and the shifts.
        flip: also flip half of the images horizontally (CIFAR-style; wrong
            for digits, whose mirror images are other shapes).
        drop_remainder: every batch full: the ``len(x) % batch_size``
            images left over after shuffling wait for a later epoch (each
            epoch reshuffles). A last, smaller batch would have another
            shape, and JAX and TensorFlow compile the training step once
            per input shape (measured: 2 train-step compilations instead
            of 1 on the digits).

    Returns:
        A `keras.utils.PyDataset` for `model.fit`.
    """
    import keras

    class _Shifted(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.rng = np.random.default_rng(seed)
            self.order = self.rng.permutation(len(x))

        def __len__(self):
            if drop_remainder and len(x) >= batch_size:
                return len(x) // batch_size
            return int(np.ceil(len(x) / batch_size))

        def __getitem__(self, index):
            idx = self.order[index * batch_size : (index + 1) * batch_size]
            batch = x[idx]
            if max_shift:
                pad = ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0))
                padded = np.pad(batch, pad)
                h, w = batch.shape[1:3]
                out = np.empty_like(batch)
                for i, (dy, dx) in enumerate(
                    self.rng.integers(0, 2 * max_shift + 1, size=(len(idx), 2))
                ):
                    out[i] = padded[i, dy : dy + h, dx : dx + w]
                batch = out
            if flip:
                mirrored = self.rng.random(len(idx)) < 0.5
                batch = np.where(mirrored[:, None, None, None], batch[:, :, ::-1], batch)
            return batch, y[idx]

        def on_epoch_end(self):
            self.order = self.rng.permutation(len(x))

    return _Shifted()


def labelled_arrays(data, image_size: int, channels: int, validation_split: float, seed: int,
                    train_limit: Optional[int] = None) -> tuple:
    """One split as arrays, as `train` splits it: the bundled digits when
    `data` is None, else the image folder `data`.

    Args:
        data: None, or an image folder (one sub-folder per class).
        image_size: square side the images are resized to.
        channels: 1 or 3.
        validation_split: held-out fraction.
        seed: the split's seed (the same split as ``train --seed``).
        train_limit: at most about this many training images (whole
            batches of 32, in the split's seeded order) from a folder; None
            for all. Folders are read through `folders.labelled_arrays`
            (unaugmented, unreadable files left out).

    Returns:
        ``(x_train, x_val, y_val, class_names)``: float32 pixel values in
        [0, 255], channels last.
    """
    if data is None:
        ds = load_digits_dataset(image_size, channels, validation_split, seed)
        return ds.x_train, ds.x_val, ds.y_val, ds.class_names
    from keras_densenet.data import folders

    # The streaming pipeline (no TensorFlow), unaugmented, the split of `train`.
    image_size = check_image_size(image_size)
    check_split(validation_split)
    return folders.labelled_arrays(data, image_size, channels, validation_split, seed, train_limit)
