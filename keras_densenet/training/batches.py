"""The batches `train` feeds: the digits or an image folder, this process's share, even splits.

`load_training_data` loads what `train` fits on, as this process sees it:
with a `distribute.DataParallelPlan`, every batch splits evenly over the
devices that share it (JAX shards a batch in equal slices and refuses a
remainder: `trim_to_multiple` for arrays; image folders are read in batches
that are multiples already, `data.folders.folder_batches`;
`shardable_batches` does it for `tf.data` pipelines), and in a
multi-process job each process gets its own share of each split
(`core.cluster.shard_indices`).

Image folders are read by the streaming pipeline of `keras_densenet.data`
(`keras.utils.PyDataset` batches decoded by worker threads) on every
backend, so ``train --data`` needs no TensorFlow.

Example:

>>> import numpy as np
>>> from keras_densenet.training.batches import trim_to_multiple
>>> x, y = trim_to_multiple(4, np.zeros((10, 2)), np.arange(10))
>>> len(x), len(y)
(8, 8)
"""

from __future__ import annotations

from keras_densenet.core import cluster
from keras_densenet.data import datasets as data_lib
from keras_densenet.data import folders
from keras_densenet.training.config import TrainConfig


def trim_to_multiple(multiple: int, *arrays) -> tuple:
    """The arrays cut to the largest length that is a multiple of `multiple`.

    With a global batch that is a multiple of the device count, every batch
    (the last, partial one included) then splits evenly over the devices.
    """
    if multiple <= 1:
        return arrays
    keep = len(arrays[0]) // multiple * multiple
    return tuple(a[:keep] for a in arrays)


def shardable_batches(dataset, multiple: int):
    """A batched `tf.data.Dataset` whose batches are multiples of `multiple`:
    each batch is cut to that size, and empty ones are dropped.

    Example:

    >>> import tensorflow as tf  # doctest: +SKIP
    >>> ds = tf.data.Dataset.range(10).batch(4)  # doctest: +SKIP
    >>> [len(b) for b in shardable_batches(ds, 4)]  # doctest: +SKIP
    [4, 4]
    """
    if multiple <= 1:
        return dataset
    import tensorflow as tf

    def trim(*batch):
        keep = tf.shape(tf.nest.flatten(batch)[0])[0] // multiple * multiple
        return tf.nest.map_structure(lambda t: t[:keep], batch if len(batch) > 1 else batch[0])

    def nonempty(*batch):
        return tf.shape(tf.nest.flatten(batch)[0])[0] > 0

    return dataset.map(trim).filter(nonempty)


def _digits_share(x, y, plan, split_seed: int) -> tuple:
    """This process's share of one digits split (all of it in a one-process
    job), cut to a multiple of the devices that share each batch."""
    if plan is None or plan.num_processes == 1:
        return trim_to_multiple(plan.batch_multiple if plan is not None else 1, x, y)
    idx = cluster.shard_indices(len(x), plan.num_processes, plan.process_id, split_seed, plan.local_devices)
    return x[idx], y[idx]


def _digits(config: TrainConfig, channels: int, plan) -> tuple:
    """The embedded digits: augmented training batches, validation arrays."""
    ds = data_lib.load_digits_dataset(
        config.image_size, channels, config.validation_split, config.seed, config.limit
    )
    # Each split is shuffled into shares with its own seed.
    x_train, y_train = _digits_share(ds.x_train, ds.y_train, plan, config.seed)
    x_val, y_val = _digits_share(ds.x_val, ds.y_val, plan, config.seed + 1)
    train_data = data_lib.augmented_batches(
        x_train, y_train, config.batch_size, max_shift=config.image_size // 16,
        # each process shifts its own images differently
        seed=config.seed + (plan.process_id if plan is not None else 0),
    )
    return train_data, (x_val, y_val), ds.class_names, 0


def _image_folder(config: TrainConfig, channels: int, plan, on_error: str) -> tuple:
    """An image folder's training and validation PyDatasets, every file
    checked first, in batches the devices share evenly."""
    multiple = plan.batch_multiple if plan is not None else 1
    shard = None
    if plan is not None and plan.num_processes > 1:
        shard = (plan.num_processes, plan.process_id, multiple)
    return folders.folder_batches(
        config.data, config.image_size, config.batch_size, config.validation_split, config.seed, channels,
        shard=shard, on_error=on_error, multiple=multiple,
    )


def load_training_data(config: TrainConfig, channels: int, plan=None, on_error: str = "raise") -> tuple:
    """What `train` fits on and validates with, for this process.

    Args:
        config: the options (`config.data`: an image folder, else the
            digits). In a multi-process job `config.batch_size` is already
            this process's share of the global batch.
        channels: image channels (1 for gray digits, 3 for RGB).
        plan: the `distribute.DataParallelPlan`, or ``None`` (one device).
        on_error: an unreadable image file in `config.data`: ``"raise"`` a
            ValueError naming it, before any training; ``"skip"`` it (one
            line on stderr per file).

    Returns:
        ``(train_data, val_data, class_names, num_corrupt)``: the digits as
        augmented batches and validation arrays, an image folder as
        `keras.utils.PyDataset` batches (`data.folders.folder_batches`);
        `num_corrupt` counts the image files skipped.
    """
    if config.data is None:
        return _digits(config, channels, plan)
    return _image_folder(config, channels, plan, on_error)
