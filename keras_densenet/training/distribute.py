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

Several processes (JAX): `initialize_job` joins this process to the job
that Keras' ``KERAS_DISTRIBUTION_*`` variables describe (`cluster`); then
`data_parallel` spans every process's devices, each process feeds its own
share of every batch, and `lost_process_message` names a process that went
away (docs/several-hosts.md). TensorFlow's multi-worker strategy fails
under Keras 3 (`TF_MULTI_WORKER_REPORT`), so `data_parallel` refuses a
``TF_CONFIG`` with several workers.

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

>>> from keras_densenet.training import distribute

>>> from keras_densenet.models import densenet
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
import json
import math
import os
import re
import sys
import threading

import keras
import numpy as np

from keras_densenet.core import checks, internals
from keras_densenet.core import cluster

# Learning-rate scaling rules, for a global batch `num_devices` times larger
# (kept with the other training options, keras-free, for the CLI's checks).
from keras_densenet.training.config import LR_SCALING

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
            `initialize_job`; 1 otherwise).
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
        >>> print(plan.describe(32, 0.002, "linear"))
        data parallel on 2 device(s) (jax, keras.distribution.DataParallel): global batch 64 = 32 per device x 2, lr 0.002 -> 0.004 (linear scaling), BatchNormalization statistics: global batch
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
    (`initialize_job`, unless done already), and spans every process's
    devices, each process feeding its own share. TensorFlow:
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
        if job is not None and not _jax_job_started():
            initialize_job(job)  # before anything below uses a device
        devices = keras.distribution.list_devices()
        if jax.process_count() == 1:
            return from_engine(keras.distribution.DataParallel(devices=devices), sync_bn)
        # Several processes: each feeds its own share of every batch
        # (`cluster.shard_indices`), so Keras must not shard the data again.
        return from_engine(keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False), sync_bn)
    if backend == "tensorflow":
        _refuse_tf_multi_worker()
        return from_engine(_mirrored_strategy(tuple(_tf_local_devices())), sync_bn)
    device = "cpu"
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            device = f"cuda:0 (of {torch.cuda.device_count()} visible)"
    return DataParallelPlan(backend, SINGLE_DEVICE, (device,), BN_ONE_DEVICE, sync_bn, None)


def trim_to_multiple(multiple: int, *arrays) -> tuple:
    """The arrays cut to the largest length that is a multiple of `multiple`.

    With a global batch that is a multiple of the device count, every batch
    (the last, partial one included) then splits evenly over the devices.

    Example:

    >>> import numpy as np
    >>> x, y = trim_to_multiple(4, np.zeros((10, 2)), np.arange(10))
    >>> len(x), len(y)
    (8, 8)
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


# --- several processes -----------------------------------------------------

#: The upstream report of Keras 3 failing under MultiWorkerMirroredStrategy.
TF_MULTI_WORKER_REPORT = "https://github.com/keras-team/keras/issues/20585"
#: Where TensorFlow reads a multi-worker job from.
TF_CONFIG = "TF_CONFIG"


def _tf_config_workers(environ=None) -> int:
    """Workers in ``TF_CONFIG``'s cluster (1 when unset or unreadable)."""
    text = (os.environ if environ is None else environ).get(TF_CONFIG, "")
    try:
        cluster_spec = json.loads(text).get("cluster", {}) if text else {}
    except (ValueError, AttributeError):
        raise ValueError(f"{TF_CONFIG} is not a JSON object: {text[:80]!r}") from None
    return sum(len(cluster_spec.get(kind, [])) for kind in ("chief", "worker")) or 1


def _refuse_tf_multi_worker() -> None:
    """`TF_CONFIG` names several workers: Keras 3's `fit` fails under
    `tf.distribute.MultiWorkerMirroredStrategy` (tests/test_multiprocess.py
    keeps the failure as an expected one), so say so before connecting."""
    workers = _tf_config_workers()
    if workers > 1:
        raise ValueError(
            f"{TF_CONFIG} describes {workers} workers, but Keras 3's model.fit fails under "
            "tf.distribute.MultiWorkerMirroredStrategy (\"Attempt to convert a value (PerReplica...) "
            f"with an unsupported type\", {TF_MULTI_WORKER_REPORT}); train several processes on the "
            "jax backend with Keras' KERAS_DISTRIBUTION_* variables instead"
        )


#: Whether `initialize_job` joined a job in this process.
_JOINED = [False]


def _give_up(job: cluster.MultiProcessJob, timeout_s: float) -> None:
    # Runs in the watchdog thread while `initialize` blocks in JAX's client:
    # nothing can be unwound from here, and JAX cannot connect twice.
    print(
        f"keras-densenet: error: {job.describe()} could not form the job within {timeout_s:g} s: "
        f"check that {job.coordinator} is reachable from every process, that process 0 runs, and that "
        f"every process has the same {cluster.NUM_PROCESSES}={job.num_processes}",
        file=sys.stderr, flush=True,
    )
    os._exit(2)


def initialize_job(job: cluster.MultiProcessJob, connect_timeout_s: float = cluster.DEFAULT_CONNECT_TIMEOUT_S,
                   cpu_devices=None) -> None:
    """Joins this process to a multi-process JAX job, before any device is used.

    Calls `keras.distribution.initialize` with `job`. On CPUs, JAX's
    collectives across processes need an implementation: gloo, unless
    ``JAX_CPU_COLLECTIVES_IMPLEMENTATION`` says otherwise. Afterwards
    `data_parallel` spans every process's devices.

    Args:
        job: this process's job (`cluster.job_from_environment`).
        connect_timeout_s: if the job has not formed by then (a process
            missing, a wrong process count, an unreachable coordinator),
            one line goes to stderr and the process exits with status 2:
            JAX can neither cancel nor retry the connection.
        cpu_devices: split this process's CPU into that many JAX devices
            (``jax_num_cpu_devices``), to try the job without accelerators.

    Raises:
        ValueError: not on the JAX backend.

    Example::

        job = cluster.job_from_environment()
        if job is not None:
            initialize_job(job)
        plan = data_parallel()
    """
    if keras.backend.backend() != "jax":
        raise ValueError(
            f"several processes ({cluster.NUM_PROCESSES}={job.num_processes}) train on the jax backend only; "
            f"Keras' {keras.backend.backend()} backend has no multi-process engine"
            + (f" that works ({TF_MULTI_WORKER_REPORT})" if keras.backend.backend() == "tensorflow" else "")
        )
    import jax

    set_cpu_devices(cpu_devices)
    if "JAX_CPU_COLLECTIVES_IMPLEMENTATION" not in os.environ:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    watchdog = threading.Timer(connect_timeout_s, _give_up, args=(job, connect_timeout_s))
    watchdog.daemon = True
    watchdog.start()
    try:
        with _stdout_to_stderr():
            keras.distribution.initialize(",".join(job.addresses), job.num_processes, job.process_id)
        _JOINED[0] = True
    finally:
        watchdog.cancel()


@contextlib.contextmanager
def _stdout_to_stderr():
    """Sends file descriptor 1 to 2 inside: gloo prints its connection lines
    on stdout, and a job's first line on stdout should be its own."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _jax_job_started() -> bool:
    import jax

    # jax.distributed.is_initialized is recent; before it, what we started
    is_initialized = getattr(jax.distributed, "is_initialized", None)
    return bool(is_initialized()) if is_initialized is not None else _JOINED[0]


def set_cpu_devices(count) -> None:
    """JAX: this process's CPU as `count` devices (before any device is
    used; ``None`` leaves JAX's default, one)."""
    if count is None:
        return
    import jax

    checks.integer("cpu_devices", count)
    jax.config.update("jax_num_cpu_devices", int(count))


@contextlib.contextmanager
def local_section():
    """No distribution inside: for what one process does alone, such as
    writing a file. Keras' saving builds reference objects whose variables
    a distribution would place with a collective that every process must
    join (process 0 saving alone would wait forever)."""
    current = keras.distribution.distribution()
    keras.distribution.set_distribution(None)
    try:
        yield
    finally:
        keras.distribution.set_distribution(current)


def gather_from_processes(value: int, plan: DataParallelPlan) -> list:
    """Every process's `value`, in process order (a collective: every process
    must call it); ``[value]`` in a one-process job."""
    if plan.num_processes == 1:
        return [int(value)]
    from jax.experimental import multihost_utils

    return [int(v) for v in np.asarray(multihost_utils.process_allgather(np.int32(value)))]


#: Error texts of a collective whose peer process went away (gloo's TCP
#: pair, or the coordination service's heartbeat).
_LOST_PEER = ("Connection closed by peer", "Connection reset by peer", "heartbeat", "Gloo", "unhealthy")


#: The parts of such an error worth one line.
_CAUSES = (r"Gloo [\w-]+ failed", r"Connection (closed|reset) by peer( \S+)?", r"Task \d+ heartbeat timeout")


def lost_process_message(error: BaseException, plan: DataParallelPlan):
    """One line naming the lost process, when `error` is a collective that
    failed because another process of the job went away; else ``None``."""
    if plan is None or plan.num_processes == 1:
        return None
    text = str(error)
    if not any(marker in text for marker in _LOST_PEER):
        return None
    others = [p for p in range(plan.num_processes) if p != plan.process_id]
    who = f"process {others[0]}" if len(others) == 1 else f"one of processes {', '.join(map(str, others))}"
    # e.g. "Gloo all-reduce failed: [.../pair.cc:547] Connection closed by peer [127.0.0.1]:22722"
    found = [m.group(0) for m in (re.search(cause, text) for cause in _CAUSES) if m] or [text.strip()[:160]]
    return (
        f"lost {who} of the {plan.num_processes}-process job ({'; '.join(found)}): process "
        f"{plan.process_id} stops. Run the same command in every process to resume from the last completed epoch"
    )
