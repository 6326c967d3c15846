"""Data-parallel training on the engines Keras already supports.

No machinery of our own: `data_parallel` picks the engine of the active
Keras backend and wraps it in a `DataParallelPlan` (a scope to build and
fit the model in, the device count, and how BatchNormalization behaves):

==========  ================================================  ====================
backend     engine                                            BN batch statistics
==========  ================================================  ====================
jax         ``keras.distribution.DataParallel`` (every local   the global batch
            device; multi-host after
            ``keras.distribution.initialize``)
tensorflow  ``tf.distribute.MirroredStrategy`` (every local    per replica, or the
            GPU, else every logical CPU)                       global batch with
                                                               ``sync_bn=True``
torch       none: Keras has no distribution engine for the     one device
            PyTorch backend; training runs in one process on
            one device
==========  ================================================  ====================

Several processes (JAX): once this process has joined the job that Keras'
``KERAS_DISTRIBUTION_*`` variables describe (`multiprocess.initialize_job`;
`data_parallel` joins it first if needed), `data_parallel` spans every
process's devices and each process feeds its own share of every batch
(`batches`). TensorFlow's multi-worker strategy fails under Keras 3, so
`data_parallel` refuses a ``TF_CONFIG`` with several workers
(`multiprocess.refuse_tf_multi_worker`).

BatchNormalization semantics, measured by this package's tests:

- JAX: the batch is one logical array sharded over the devices, and the
  jitted train step computes its mean and variance over the whole array
  (XLA inserts the cross-device reductions). One step on 8 devices equals one
  step on 1 device within float32 round-off.
- TensorFlow: each replica normalizes with the statistics of its own slice
  of the batch (Keras' ``BatchNormalization(synchronized=False)``), and the
  moving statistics are updated from the first replica's slice. With
  ``sync_bn=True`` every BN layer all-reduces its statistics across the
  replicas (``synchronized=True``), and a step equals the single-device step.
  The flag is toggled in place, so layer names and weights are unchanged, and
  saved models record ``synchronized=False`` so that they load on every
  backend (Keras refuses ``synchronized=True`` outside TensorFlow).

Scaling rule: ``batch_size`` is per device; the global batch is
``batch_size * num_devices``, and the learning rate grows with the global
batch by `LR_SCALING` ``"sqrt"`` (default; Adam-family optimizers, Malladi
et al., 2022), ``"linear"`` (SGD, Goyal et al., 2017) or ``"none"``.

Example:

>>> from keras_densenet.models import densenet
>>> from keras_densenet.training import distribute
>>> plan = distribute.data_parallel()
>>> with plan.scope():  # doctest: +SKIP
...     model = plan.prepare(densenet.DenseNetBC(22, 12, classes=10, input_shape=(32, 32, 3)))
...     model.compile("adamw", "sparse_categorical_crossentropy")
...     model.fit(x, y, batch_size=32 * plan.num_devices)
>>> distribute.scale_batch_and_lr(32, 2e-3, 4, "sqrt")
(128, 0.004)
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math

import keras

from keras_densenet.core import checks, cluster, internals

# Learning-rate scaling rules, for a global batch `num_devices` times larger
# (kept with the other training options, keras-free, for the CLI's checks).
from keras_densenet.training.config import LR_SCALING
from keras_densenet.training.multiprocess import (
    initialize_job,
    jax_job_started,
    refuse_tf_multi_worker,
)

#: Engine names, as `DataParallelPlan.engine` reports them.
JAX_ENGINE = "keras.distribution.DataParallel"
TF_ENGINE = "tf.distribute.MirroredStrategy"
SINGLE_DEVICE = "none (single process, one device)"
#: BatchNormalization statistics, as `DataParallelPlan.bn_statistics` reports them.
BN_GLOBAL = "global batch"
BN_PER_REPLICA = "per replica"
BN_SYNCHRONIZED = "global batch (synchronized BatchNormalization)"
BN_ONE_DEVICE = "one device"


def scale_batch_and_lr(batch_size: int, lr: float, num_devices: int, rule: str = "sqrt") -> tuple:
    """The global batch and learning rate for `num_devices` data-parallel replicas.

    Args:
        batch_size: batch per device.
        lr: learning rate tuned for `batch_size` on one device.
        num_devices: number of replicas.
        rule: one of `LR_SCALING`: ``"sqrt"`` multiplies `lr` by
            ``sqrt(num_devices)``, ``"linear"`` by `num_devices`,
            ``"none"`` keeps it.

    Returns:
        ``(global_batch_size, lr)``.

    Raises:
        ValueError: an unknown `rule`.

    Example:

    >>> scale_batch_and_lr(32, 0.1, 8, "linear")
    (256, 0.8)
    """
    checks.one_of("lr_scaling", rule, LR_SCALING)
    factor = {"sqrt": math.sqrt(num_devices), "linear": num_devices, "none": 1}[rule]
    return batch_size * num_devices, float(lr * factor)


def batch_norm_layers(model: keras.layers.Layer) -> list:
    """Every `keras.layers.BatchNormalization` in `model`, nested ones included
    (sub-models and the weight holders of memory-efficient dense layers)."""
    return [
        layer
        for layer in internals.flatten_layers(model)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]


def set_synchronized_batch_norm(model: keras.layers.Layer, enabled: bool = True) -> int:
    """Switches every BatchNormalization of `model` to synchronized statistics.

    In place: layer names, weights and the weight order do not change, so
    weight files load either way. Only TensorFlow implements synchronized
    BN; it takes effect when the train step is traced inside a
    `tf.distribute` strategy.

    Args:
        model: a model or layer.
        enabled: ``True`` synchronizes, ``False`` restores per-replica
            statistics (Keras' default, and what saved files should record).

    Returns:
        The number of BatchNormalization layers switched.

    Raises:
        ValueError: `enabled` on a backend other than TensorFlow.

    Example:

    >>> import keras_densenet
    >>> from keras_densenet.training.distribute import set_synchronized_batch_norm
    >>> model = keras_densenet.DenseNetBC(10, 4, classes=2, input_shape=(32, 32, 3))
    >>> set_synchronized_batch_norm(model)  # doctest: +SKIP
    9
    """
    if enabled and keras.backend.backend() != "tensorflow":
        raise ValueError(
            "synchronized BatchNormalization (`sync_bn`) needs the TensorFlow backend; "
            f"Keras' {keras.backend.backend()} backend does not implement it"
        )
    layers = batch_norm_layers(model)
    for layer in layers:
        layer.synchronized = bool(enabled)
    return len(layers)


class SynchronizedBatchNormCallback(keras.callbacks.Callback):
    """Synchronized BN while training, per-replica BN in saved files.

    Keras refuses to build ``BatchNormalization(synchronized=True)`` on JAX
    and PyTorch, so a model saved with the flag on would load only on
    TensorFlow. This callback turns the flag on at the start of every epoch
    and off at its end; put it *before* the checkpoint callback so that the
    checkpoint saves the portable configuration.
    """

    def on_train_begin(self, logs=None):
        set_synchronized_batch_norm(self.model, True)

    def on_epoch_begin(self, epoch, logs=None):
        set_synchronized_batch_norm(self.model, True)

    def on_epoch_end(self, epoch, logs=None):
        set_synchronized_batch_norm(self.model, False)

    def on_train_end(self, logs=None):
        set_synchronized_batch_norm(self.model, False)


@dataclasses.dataclass(frozen=True)
class DataParallelPlan:
    """The data-parallel engine of one backend, as `data_parallel` chose it.

    Attributes:
        backend: the Keras backend.
        engine: the engine's name (`JAX_ENGINE`, `TF_ENGINE`,
            `SINGLE_DEVICE`).
        devices: the devices that hold a replica, as the engine names them.
        bn_statistics: what BatchNormalization normalizes with in training.
        sync_bn: synchronized BatchNormalization was asked for (TensorFlow).
        handle: the engine object (`keras.distribution.DataParallel`,
            `tf.distribute.Strategy`) or ``None``.
        num_processes: processes of the job (JAX after
            `multiprocess.initialize_job`; 1 otherwise).
        process_id: this process; process 0 writes the outputs.
    """

    backend: str
    engine: str
    devices: tuple
    bn_statistics: str
    sync_bn: bool = False
    handle: object = None
    num_processes: int = 1
    process_id: int = 0

    @property
    def num_devices(self) -> int:
        """Devices of the whole job (every process's)."""
        return len(self.devices)

    @property
    def local_devices(self) -> int:
        """Devices of this process: its share of every global batch is
        ``batch_size x local_devices``."""
        return self.num_devices // self.num_processes

    @property
    def is_writer(self) -> bool:
        """This process writes the outputs (process 0)."""
        return self.process_id == 0

    @property
    def batch_multiple(self) -> int:
        """Every batch's size (this process's share of it, in a
        multi-process job) must be a multiple of this: JAX shards a batch in
        equal slices and refuses a remainder; TensorFlow splits any size."""
        return self.local_devices if self.backend == "jax" else 1

    def scope(self):
        """Context manager to build, compile and fit the model in."""
        if self.handle is None:
            return contextlib.nullcontext()
        return self.handle.scope()

    def prepare(self, model: keras.Model) -> keras.Model:
        """Applies `sync_bn` to `model` (built in `scope`); returns it."""
        if self.sync_bn and self.backend == "tensorflow":
            set_synchronized_batch_norm(model, True)
        return model

    def callbacks(self) -> list:
        """Callbacks `model.fit` needs; put them before any checkpoint."""
        if self.sync_bn and self.backend == "tensorflow":
            return [SynchronizedBatchNormCallback()]
        return []

    def describe(self, batch_size: int, lr: float, rule: str = "sqrt") -> str:
        """One line for the user: devices, engine, global batch, learning rate.

        Example:

        >>> plan = DataParallelPlan("jax", JAX_ENGINE, ("cpu:0", "cpu:1"), BN_GLOBAL)
        >>> print(plan.describe(32, 0.002, "linear").replace(": ", ":\\n  "))
        data parallel on 2 device(s) (jax, keras.distribution.DataParallel):
          global batch 64 = 32 per device x 2, lr 0.002 -> 0.004 (linear scaling), BatchNormalization statistics:
          global batch
        """
        global_batch, scaled = scale_batch_and_lr(batch_size, lr, self.num_devices, rule)
        if self.num_processes > 1:
            return (
                f"data parallel on {self.num_devices} device(s) in {self.num_processes} processes, "
                f"{self.local_devices} in this one (process {self.process_id}) "
                f"({self.backend}, {self.engine}): global batch {global_batch} = {batch_size} per device "
                f"x {self.num_devices}, {batch_size * self.local_devices} per process, "
                f"lr {lr:.3g} -> {scaled:.3g} ({rule} scaling), "
                f"BatchNormalization statistics: {self.bn_statistics}"
            )
        if self.engine == SINGLE_DEVICE:
            return (
                f"data parallel: no engine on the {self.backend} backend (Keras has no "
                f"distribution support for it): training in one process on 1 device "
                f"({self.devices[0]}), batch {global_batch}, lr {scaled:.3g}"
            )
        return (
            f"data parallel on {self.num_devices} device(s) ({self.backend}, {self.engine}): "
            f"global batch {global_batch} = {batch_size} per device x {self.num_devices}, "
            f"lr {lr:.3g} -> {scaled:.3g} ({rule} scaling), "
            f"BatchNormalization statistics: {self.bn_statistics}"
        )


def _tf_local_devices() -> list:
    import tensorflow as tf

    # Accelerators if any; otherwise every logical CPU (one unless the
    # process split its CPU with tf.config.set_logical_device_configuration).
    return [d.name for d in tf.config.list_logical_devices("GPU")] or [
        d.name for d in tf.config.list_logical_devices("CPU")
    ]


@functools.lru_cache(maxsize=None)
def _mirrored_strategy(devices: tuple):
    import tensorflow as tf

    # One strategy per device set and process: collective ops of two
    # MirroredStrategy objects share instance keys, and a synchronized BN
    # all-reduce of the second then collides with the first's gradient
    # all-reduce ("Shape mismatch in the collective instance").
    return tf.distribute.MirroredStrategy(list(devices))


def from_engine(engine, sync_bn: bool = False) -> DataParallelPlan:
    """A plan around an engine you made yourself, e.g. a
    `tf.distribute.MultiWorkerMirroredStrategy`, a `tf.distribute.TPUStrategy`
    or a `keras.distribution.DataParallel` over chosen devices.

    Args:
        engine: a `keras.distribution.DataParallel` or `ModelParallel` (JAX backend) or a
            `tf.distribute.Strategy` (TensorFlow backend).
        sync_bn: synchronized BatchNormalization (TensorFlow strategies).

    Returns:
        A `DataParallelPlan`.

    Raises:
        ValueError: the engine does not belong to the active backend.

    Example:

    >>> import tensorflow as tf  # doctest: +SKIP
    >>> plan = from_engine(tf.distribute.MultiWorkerMirroredStrategy())  # doctest: +SKIP
    """
    backend = keras.backend.backend()
    # (keras.distribution exports the concrete distributions, not their base)
    keras_engines = (keras.distribution.DataParallel, keras.distribution.ModelParallel)
    if backend == "jax" and isinstance(engine, keras_engines):
        import jax

        devices = tuple(str(d) for d in engine.device_mesh.devices.flatten())
        name = f"keras.distribution.{type(engine).__name__}"
        return DataParallelPlan(
            backend, name, devices, BN_GLOBAL, sync_bn, engine, jax.process_count(), jax.process_index()
        )
    if backend == "tensorflow":
        import tensorflow as tf

        if isinstance(engine, tf.distribute.Strategy):
            devices = tuple(engine.extended.worker_devices)
            if engine.num_replicas_in_sync != len(devices):  # several workers
                devices = tuple(f"replica:{i}" for i in range(engine.num_replicas_in_sync))
            bn = BN_SYNCHRONIZED if sync_bn else BN_PER_REPLICA
            name = f"tf.distribute.{type(engine).__name__}"
            return DataParallelPlan(backend, name, devices, bn, sync_bn, engine)
    raise ValueError(
        f"`engine` must be a keras.distribution.DataParallel or ModelParallel on the JAX backend or a "
        f"tf.distribute.Strategy on the TensorFlow backend; received {type(engine).__name__} "
        f"on the {backend} backend"
    )


def data_parallel(sync_bn: bool = False) -> DataParallelPlan:
    """The data-parallel engine of the active backend over every local device.

    JAX: `keras.distribution.DataParallel` over ``keras.distribution.
    list_devices()`` (the accelerators, else the CPU devices). With Keras'
    ``KERAS_DISTRIBUTION_*`` variables set, it first joins the job
    (`multiprocess.initialize_job`, unless done already), and spans every
    process's devices, each process feeding its own share. TensorFlow:
    `tf.distribute.MirroredStrategy` over the local GPUs, else the logical
    CPUs. PyTorch: no engine; a one-device plan whose `describe` says so.

    Args:
        sync_bn: synchronized BatchNormalization. TensorFlow: all-reduce the
            batch statistics across replicas. JAX: nothing to do, the
            statistics are already those of the global batch. PyTorch: one
            device, nothing to synchronize.

    Returns:
        A `DataParallelPlan`.

    Example:

    >>> plan = data_parallel()
    >>> plan.num_devices >= 1
    True
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        job = cluster.job_from_environment()
        if job is not None and not jax_job_started():
            initialize_job(job)  # before anything below uses a device
        devices = keras.distribution.list_devices()
        if jax.process_count() == 1:
            return from_engine(keras.distribution.DataParallel(devices=devices), sync_bn)
        # Several processes: each feeds its own share of every batch
        # (`cluster.shard_indices`), so Keras must not shard the data again.
        return from_engine(keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False), sync_bn)
    if backend == "tensorflow":
        refuse_tf_multi_worker()
        return from_engine(_mirrored_strategy(tuple(_tf_local_devices())), sync_bn)
    device = "cpu"
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            device = f"cuda:0 (of {torch.cuda.device_count()} visible)"
    return DataParallelPlan(backend, SINGLE_DEVICE, (device,), BN_ONE_DEVICE, sync_bn, None)
