"""Training and validation batches from an image folder (one sub-folder per
class) on every backend, without TensorFlow: the `keras.utils.PyDataset`s of
`keras_densenet.data.images`, split as `keras.utils.image_dataset_from_directory`
splits.

- **Classes**: the sorted sub-folder names; each sub-folder is searched
  recursively for image files (`listing.class_folders`). Classes without a
  readable image are left out; fewer than two is an error.
- **Checked before training**: every file is decoded once (in parallel, at
  the reduced JPEG scale of training, `images.decode`), so an unreadable file
  stops the run before the first epoch (``on_error="raise"``, a `ValueError`
  naming it) or is left out (``on_error="skip"``): one line on stderr per
  file with the reason (`images.say_skipped`), then a `DataWarning` that
  counts them.
- **Split**: the files of all classes in listing order, shuffled with
  ``numpy.random.RandomState(seed)``; the last ``int(validation_split * n)``
  validate, the rest train: the same files in each split as
  ``image_dataset_from_directory(..., seed=seed, validation_split=...)``
  given the readable files.
- **Batches**: training batches are reshuffled every epoch (seeded), flipped
  left-right at random and shifted by up to a tenth of each side (whole
  pixels, zero fill), and all full (the remainder waits for a later epoch:
  one compiled training step); validation batches are in split order.
- **Several processes**: ``shard=(num_processes, process_id, multiple)``
  gives this process its disjoint share of each split
  (`keras_densenet.core.cluster.shard_indices`); every batch is a multiple
  of `multiple` (the local devices).

Example:

>>> train, val, names, skipped = folder_batches("photos/", 128, 32)  # doctest: +SKIP
>>> model.fit(train, validation_data=val, epochs=9)  # doctest: +SKIP
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import os
import warnings
from typing import Callable, Optional

import numpy as np

from keras_densenet.core import checks, cluster
from keras_densenet.data import images, listing

#: Smallest input side the trainer accepts: the digits' own 8x8 scans. A
#: model may need more (its total stride, e.g. 32 for DenseNet-121; see
#: `config.validate`).
MIN_IMAGE_SIZE = 8


class DataWarning(UserWarning):
    """Something in the data was skipped (e.g. corrupt image files)."""


def check_image_size(image_size) -> int:
    """Returns `image_size` as an int, or raises a ValueError naming it."""
    return checks.integer("image_size", image_size, minimum=MIN_IMAGE_SIZE)


def check_split(validation_split) -> float:
    """Returns `validation_split` (strictly between 0 and 1), or raises a
    ValueError naming it."""
    return checks.number("validation_split", validation_split, low=0, high=1, low_open=True, high_open=True)


@dataclasses.dataclass
class FolderSplit:
    """What `split_folder` found.

    Attributes:
        class_names: the classes with readable images, sorted.
        train, val: ``(paths, labels)`` of each split.
        unreadable: ``(path, reason)`` of each file left out.
    """

    class_names: list
    train: tuple
    val: tuple
    unreadable: list


def check_files(paths, image_size=None, channels: int = 3, on_error: str = "skip",
                workers: Optional[int] = None) -> list:
    """Decodes every file once, in parallel; the unreadable ones.

    Args:
        paths: image files.
        image_size: the size they will be read at (lets large JPEGs decode
            at a reduced scale, as they will be read).
        channels: 1 or 3.
        on_error: ``"raise"``: stop at the first unreadable file.
        workers: threads (default `images.DEFAULT_WORKERS`).

    Returns:
        ``(path, reason)`` per unreadable file, in the order of `paths`.

    Raises:
        images.UnreadableImageError: with ``on_error="raise"``.
    """
    images.check_on_error(on_error)
    workers = images.DEFAULT_WORKERS if workers is None else checks.integer("workers", workers, minimum=1)

    def check(path):
        try:
            images.decode(path, channels, image_size)
        except images.UnreadableImageError as e:
            if on_error == "raise":
                raise
            return path, e.reason
        return None

    unreadable, pending = [], collections.deque()
    # A window of futures, not one per file: a million files would mean a
    # million Future objects held at once.
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        try:
            for path in paths:
                if len(pending) >= 4 * workers:
                    bad = pending.popleft().result()
                    unreadable += [bad] if bad else []
                pending.append(pool.submit(check, path))
            while pending:
                bad = pending.popleft().result()
                unreadable += [bad] if bad else []
        finally:  # on the first error: don't decode the rest
            for f in pending:
                f.cancel()
    return unreadable


def split_folder(data, validation_split: float = 0.2, seed: int = 0, image_size=None, channels: int = 3,
                 on_error: str = "raise", workers: Optional[int] = None,
                 on_skip: Optional[Callable] = None) -> FolderSplit:
    """Lists, checks and splits an image folder (see the module docstring);
    `on_skip` is called with ``(path, reason)`` per unreadable file skipped,
    before any error about what is left.

    Raises:
        ValueError: `data` is missing, has no readable image, only one class
            with images, too few images for two splits, or (with
            ``on_error="raise"``) an unreadable file, named.
    """
    check_split(validation_split)
    data = os.fspath(data)
    names, files = listing.class_folders(data)
    every = [p for n in names for p in files[n]]
    unreadable = check_files(every, image_size, channels, on_error, workers)
    for path, reason in unreadable if on_skip is not None else ():
        on_skip(path, reason)
    bad = {p for p, _ in unreadable}
    found = [n for n in names if any(p not in bad for p in files[n])]
    if not found:
        raise ValueError(
            f"`data` directory {data!r} has no readable images: it needs one sub-folder per class with "
            f"{', '.join(listing.IMAGE_SUFFIXES)} files"
            + (f" ({len(unreadable)} corrupt files skipped)" if unreadable else "")
        )
    if len(found) < 2:
        raise ValueError(f"`data` directory {data!r} has images for only one class ({found[0]!r}); "
                         "a classifier needs at least two class sub-folders")
    paths = [p for n in found for p in files[n] if p not in bad]
    labels = np.asarray([i for i, n in enumerate(found) for p in files[n] if p not in bad], "int32")
    # image_dataset_from_directory's split: one seeded shuffle of paths and
    # labels alike, the last `int(split * n)` for validation.
    np.random.RandomState(seed).shuffle(paths)
    np.random.RandomState(seed).shuffle(labels)
    n_val = int(validation_split * len(paths))
    if n_val < 1 or len(paths) - n_val < 1:
        raise ValueError(f"`data` directory {data!r} has {len(paths)} readable images: "
                         "too few for a training and a validation split")
    return FolderSplit(found, (paths[:-n_val], labels[:-n_val]), (paths[-n_val:], labels[-n_val:]), unreadable)


def _share(split: tuple, shard: Optional[tuple], seed: int) -> tuple:
    if shard is None:
        return split
    num_processes, process_id, multiple = shard
    idx = cluster.shard_indices(len(split[0]), num_processes, process_id, seed, multiple)
    return [split[0][i] for i in idx], split[1][idx]


def folder_batches(data, image_size, batch_size: int, validation_split: float = 0.2, seed: int = 0,
                   channels: int = 3, shard: Optional[tuple] = None, on_error: str = "raise",
                   workers: Optional[int] = None, max_queue_size: Optional[int] = None,
                   multiple: int = 1, on_skip: Optional[Callable] = None) -> tuple:
    """Training and validation PyDatasets of an image folder, for
    ``model.fit`` on any backend (see the module docstring).

    Args:
        data: one sub-folder of images per class.
        image_size: every image resized to ``image_size x image_size`` (or
            a ``(height, width)`` pair).
        batch_size: images per batch (this process's, in a multi-process job).
        validation_split: fraction held out.
        seed: seed of the split, the shuffling and the augmentation.
        channels: 1 (grayscale) or 3 (RGB).
        shard: ``(num_processes, process_id, multiple)`` in a multi-process
            job: each split holds only this process's share.
        on_error: ``"raise"`` (default) or ``"skip"`` unreadable files.
        workers, max_queue_size: decoding threads, batches read ahead.
        multiple: every batch a multiple of this (one process's devices;
            `shard`'s own `multiple` when given).
        on_skip: with ``on_error="skip"``: called with ``(path, reason)``
            per unreadable file (default: one line on stderr,
            `images.say_skipped`).

    Returns:
        ``(train, val, class_names, num_skipped)``: two
        `images.image_batches` PyDatasets of ``(x, y)`` batches (float32
        pixels in [0, 255], int labels), the class names, the unreadable
        files left out.

    Raises:
        ValueError: see `split_folder`; a share smaller than its devices.
    """
    size = images.image_size_pair(image_size)
    split = split_folder(data, validation_split, seed, size, channels, on_error, workers,
                         on_skip or images.say_skipped)
    if split.unreadable:
        warnings.warn(f"skipped {len(split.unreadable)} corrupt image file(s) in {os.fspath(data)!r} "
                      "(named above)", DataWarning, stacklevel=2)
    if shard is not None:
        multiple = shard[2]
    common = dict(channels=channels, on_error=on_error, workers=workers, max_queue_size=max_queue_size,
                  seed=seed, multiple=multiple)
    train_paths, train_labels = _share(split.train, shard, seed)
    val_paths, val_labels = _share(split.val, shard, seed + 1)
    train = images.image_batches(train_paths, size, batch_size, labels=train_labels, shuffle=True, augment=True,
                                 drop_remainder=True, **common)
    val = images.image_batches(val_paths, size, batch_size, labels=val_labels, **common)
    return train, val, split.class_names, len(split.unreadable)


def labelled_arrays(data, image_size: int, channels: int, validation_split: float, seed: int,
                    train_limit: Optional[int] = None, workers: Optional[int] = None) -> tuple:
    """One image folder's split as arrays, read through the pipeline
    (unaugmented): ``(x_train, x_val, y_val, class_names)``; `train_limit`
    keeps about that many training images (whole batches of 32, in the
    seeded split order)."""
    split = split_folder(data, validation_split, seed, image_size, channels, "skip", workers)
    paths = split.train[0]
    if train_limit is not None:
        paths = paths[: -(-train_limit // 32) * 32]

    def read(paths, labels):
        files = images.ImageFiles(paths, image_size, 32, channels, labels=labels, on_error="skip")
        batches = list(images.prefetch(files, workers))
        return np.concatenate([b.x for b in batches]), np.concatenate([b.y for b in batches])

    x_train, _ = read(paths, split.train[1][: len(paths)])
    x_val, y_val = read(*split.val)
    return x_train, x_val, y_val, split.class_names
