"""Training data: the embedded handwritten digits, and image folders.

The default dataset is scikit-learn's bundled handwritten digits
(`sklearn.datasets.load_digits`): 1797 real 8x8 scans of the digits 0-9,
shipped inside scikit-learn, so training works offline. They are upsampled
to ``image_size`` (at least 8, their own size) and split into stratified train/validation sets.

Image folders (one sub-folder per class) go through
`keras.utils.image_dataset_from_directory` after every file has been opened
with Pillow once: unreadable files are skipped with a warning and counted.

Example:

>>> from keras_densenet.data import datasets as data
>>> ds = data.load_digits_dataset(image_size=32, validation_split=0.2, seed=0)
>>> ds.x_train.shape, ds.x_val.shape, ds.class_names[:3]
((1437, 32, 32, 1), (360, 32, 32, 1), ['0', '1', '2'])
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import shutil
import tempfile
import warnings
from typing import Optional

import numpy as np

from keras_densenet.core import checks, extras
from keras_densenet.core import cluster

#: Smallest input side the trainer accepts: the digits' own 8x8 scans. A
#: model may need more (its total stride, e.g. 32 for DenseNet-121; see
#: `config.validate`).
MIN_IMAGE_SIZE = 8
#: File endings `keras.utils.image_dataset_from_directory` reads.
IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
#: The class names of a trained model, one per output, as JSON beside it.
CLASS_NAMES_FILE = "class_names.json"


class DataWarning(UserWarning):
    """Something in the data was skipped (e.g. corrupt image files)."""


def check_image_size(image_size) -> int:
    """Returns `image_size` as an int, or raises a ValueError naming it."""
    return checks.integer("image_size", image_size, minimum=MIN_IMAGE_SIZE)


def _check_split(validation_split) -> float:
    return checks.number("validation_split", validation_split, low=0, high=1, low_open=True, high_open=True)


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
    _check_split(validation_split)
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


# --- image folders ---------------------------------------------------------


@dataclasses.dataclass
class FolderScan:
    """What `scan_image_folder` found.

    Attributes:
        class_names: sorted sub-folder names.
        files: valid image paths per class name.
        corrupt: paths that Pillow could not decode.
    """

    class_names: list
    files: dict
    corrupt: list


def scan_image_folder(data) -> FolderScan:
    """Checks an image folder and opens every image once with Pillow.

    Args:
        data: a directory with one sub-folder of images per class.

    Returns:
        A `FolderScan`; corrupt files are listed, not raised.

    Raises:
        ValueError: the directory does not exist, has fewer than two class
            sub-folders, or no readable image.

    Example:

    >>> scan_image_folder("/nonexistent")
    Traceback (most recent call last):
    ...
    ValueError: `data` directory not found: '/nonexistent'
    """
    Image = extras.import_from("train", "PIL.Image", "reading image folders")

    data = os.fspath(data)
    if not os.path.isdir(data):
        raise ValueError(f"`data` directory not found: {data!r}")
    class_names = sorted(
        d for d in os.listdir(data) if os.path.isdir(os.path.join(data, d))
    )
    files, corrupt = {}, []
    for name in class_names:
        valid = []
        for root, _, fnames in sorted(os.walk(os.path.join(data, name))):
            for fname in sorted(fnames):
                if not fname.lower().endswith(IMAGE_SUFFIXES):
                    continue
                path = os.path.join(root, fname)
                try:
                    with Image.open(path) as im:
                        im.load()  # decode fully: verify() misses truncation
                    valid.append(path)
                except Exception:  # Pillow raises many types for bad files
                    corrupt.append(path)
        files[name] = valid
    found = [n for n in class_names if files[n]]
    if not found:
        raise ValueError(
            f"`data` directory {data!r} has no readable images: it needs one "
            f"sub-folder per class with {', '.join(IMAGE_SUFFIXES)} files"
            + (f" ({len(corrupt)} corrupt files skipped)" if corrupt else "")
        )
    if len(found) < 2:
        raise ValueError(
            f"`data` directory {data!r} has images for only one class "
            f"({found[0]!r}); a classifier needs at least two class sub-folders"
        )
    return FolderScan(found, {n: files[n] for n in found}, corrupt)


def _staged_copy(scan: FolderScan) -> str:
    """A temporary tree of links to the valid files only, removed at exit."""
    staging = tempfile.mkdtemp(prefix="keras_densenet_data_")
    atexit.register(shutil.rmtree, staging, True)
    for name, paths in scan.files.items():
        os.makedirs(os.path.join(staging, name))
        for i, path in enumerate(paths):
            target = os.path.join(staging, name, f"{i:06d}_{os.path.basename(path)}")
            try:
                os.symlink(os.path.abspath(path), target)
            except OSError:  # no symlinks (some Windows setups): copy
                shutil.copyfile(path, target)
    return staging


def _scan_for_split(data, validation_split: float) -> FolderScan:
    """`scan_image_folder`, warning about corrupt files and checking that
    the readable images fill a training and a validation split."""
    scan = scan_image_folder(data)
    if scan.corrupt:
        warnings.warn(
            f"skipped {len(scan.corrupt)} corrupt image file(s) in {os.fspath(data)!r}, "
            f"e.g. {scan.corrupt[0]!r}",
            DataWarning,
            stacklevel=3,  # the caller of `image_folder_datasets`
        )
    total = sum(len(v) for v in scan.files.values())
    if round(total * validation_split) < 1 or total - round(total * validation_split) < 1:
        raise ValueError(
            f"`data` directory {os.fspath(data)!r} has {total} readable images: "
            "too few for a training and a validation split"
        )
    return scan


def _import_tensorflow():
    """TensorFlow, for tf.data; a ValueError saying why when it is missing."""
    try:
        import tensorflow as tf
    except ImportError as e:
        raise ValueError(
            "`data` needs TensorFlow for its tf.data input pipeline "
            "(pip install tensorflow-cpu); the default digits dataset does not"
        ) from e
    return tf


def _split_datasets(source: str, scan: FolderScan, image_size: int, batch_size: int,
                    validation_split: float, seed: int, channels: int) -> tuple:
    """``(train_ds, val_ds)``: `keras.utils.image_dataset_from_directory`'s
    two subsets of `source`, with `scan`'s class names."""
    import keras

    common = dict(
        labels="inferred",
        label_mode="int",
        class_names=scan.class_names,
        color_mode="grayscale" if channels == 1 else "rgb",
        batch_size=batch_size,
        image_size=(image_size, image_size),
        seed=seed,
        validation_split=validation_split,
        verbose=False,
    )
    train_ds = keras.utils.image_dataset_from_directory(source, subset="training", **common)
    val_ds = keras.utils.image_dataset_from_directory(source, subset="validation", **common)
    return train_ds, val_ds


def _augment(train_ds, seed: int, tf):
    """`train_ds` with random flips and shifts (Keras preprocessing layers)."""
    import keras

    augment = [
        keras.layers.RandomFlip("horizontal", seed=seed),
        keras.layers.RandomTranslation(0.1, 0.1, fill_mode="constant", seed=seed),
    ]

    def augment_batch(x, y):
        # Called one by one (not in a Sequential), Keras preprocessing layers
        # switch to TensorFlow ops inside tf.data whatever the backend.
        for layer in augment:
            x = layer(x, training=True)
        return x, y

    return train_ds.map(augment_batch, num_parallel_calls=tf.data.AUTOTUNE)


def image_folder_datasets(
    data,
    image_size: int,
    batch_size: int,
    validation_split: float = 0.2,
    seed: int = 0,
    channels: int = 3,
    shard: Optional[tuple] = None,
):
    """Train/validation `tf.data` pipelines for an image folder.

    Uses `keras.utils.image_dataset_from_directory` (needs TensorFlow, whose
    tf.data pipelines feed `model.fit` on every backend). Corrupt files are
    skipped with a warning; training pixels are in [0, 255].

    Args:
        data: one sub-folder per class.
        image_size: images are resized to ``image_size x image_size``.
        batch_size: batch size.
        validation_split: fraction held out for validation.
        seed: seed of the split and the shuffling.
        channels: 1 (grayscale) or 3 (RGB).
        shard: ``(num_processes, process_id, multiple)`` in a multi-process
            job: each split yields only this process's share (see
            `process_share`), in batches of `batch_size`.

    Returns:
        ``(train_ds, val_ds, class_names, num_corrupt)``.

    Raises:
        ValueError: see `scan_image_folder`; also when TensorFlow is missing.
    """
    image_size = check_image_size(image_size)
    _check_split(validation_split)
    scan = _scan_for_split(data, validation_split)
    tf = _import_tensorflow()
    # image_dataset_from_directory lists every file, and a corrupt one would
    # fail when the pipeline decodes it: read a tree without them.
    source = _staged_copy(scan) if scan.corrupt else os.fspath(data)
    train_ds, val_ds = _split_datasets(source, scan, image_size, batch_size, validation_split, seed, channels)
    if shard is not None:
        train_ds = process_share(train_ds, len(train_ds.file_paths), batch_size, *shard)
        val_ds = process_share(val_ds, len(val_ds.file_paths), batch_size, *shard)
    return (
        _augment(train_ds, seed, tf).prefetch(tf.data.AUTOTUNE),
        val_ds.prefetch(tf.data.AUTOTUNE),
        scan.class_names,
        len(scan.corrupt),
    )


def process_share(dataset, count: int, batch_size: int, num_processes: int, process_id: int, multiple: int = 1):
    """This process's share of a batched `tf.data` split of `count` images.

    ``shard(num_processes, process_id)`` deals the images out round-robin,
    in the order of the epoch (`image_dataset_from_directory` shuffles the
    same way in every process, given the seed), so the shares are disjoint
    and together hold the epoch's images. Each share is cut to the same
    size, a multiple of `multiple` (`cluster.share_size`): every process
    then runs the same steps, and each batch splits over its devices.

    Args:
        dataset: a batched split.
        count: its images.
        batch_size: this process's batch.
        num_processes, process_id: the job and this process.
        multiple: this process's device count.

    Returns:
        The share, batched by `batch_size`.

    Raises:
        ValueError: fewer images than devices.
    """
    size = cluster.share_size(count, num_processes, multiple)
    if size == 0:
        raise ValueError(
            f"a split of {count} images cannot give each of {num_processes * multiple} devices one image: "
            "use more data or fewer devices"
        )
    return dataset.unbatch().shard(num_processes, process_id).take(size).batch(batch_size)


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
            batches of 32) from a folder; None for all.

    Returns:
        ``(x_train, x_val, y_val, class_names)``: float32 pixel values in
        [0, 255], channels last.
    """
    if data is None:
        ds = load_digits_dataset(image_size, channels, validation_split, seed)
        return ds.x_train, ds.x_val, ds.y_val, ds.class_names
    train_ds, val_ds, names, _ = image_folder_datasets(data, image_size, 32, validation_split, seed, channels)
    if train_limit is not None:
        train_ds = train_ds.take(-(-train_limit // 32))
    x_train = np.concatenate([x for x, _ in train_ds])
    pairs = [(x, y) for x, y in val_ds]
    return x_train, np.concatenate([x for x, _ in pairs]), np.concatenate([y for _, y in pairs]), names
