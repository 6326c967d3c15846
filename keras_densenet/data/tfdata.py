"""Image folders through tf.data: `image_folder_datasets` gives
`keras.utils.image_dataset_from_directory` pipelines (and each process's
share of them), for training loops of one's own that take tf.data. The
package's trainers read image folders through the streaming pipeline
(`keras_densenet.data.folders`), which needs no TensorFlow; this module
needs TensorFlow for tf.data, whatever the backend.

Every file is decoded once first (`scan_image_folder`), as the streaming
pipeline decodes it: unreadable files are skipped with a warning and
counted.
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import shutil
import tempfile
import warnings
from typing import Optional

from keras_densenet.core import cluster, extras
from keras_densenet.data import listing
from keras_densenet.data.folders import DataWarning, check_files, check_image_size, check_split

#: File endings `keras.utils.image_dataset_from_directory` reads.
IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".png")


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
    extras.require("train", "reading image folders")
    class_names, listed = listing.class_folders(data, IMAGE_SUFFIXES)
    # Decoded as the streaming pipeline decodes: refuses decompression bombs
    # and truncation (Pillow's verify() misses it).
    corrupt = [path for path, _ in check_files([p for n in class_names for p in listed[n]])]
    bad = set(corrupt)
    files = {name: [p for p in listed[name] if p not in bad] for name in class_names}
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
    check_split(validation_split)
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
