"""Training and fine-tuning: what ``keras-densenet train`` runs.

`train` builds a DenseNet (a small CIFAR DenseNet-BC by default, or any
registered variant), feeds it the embedded digits or an image folder, and
writes everything into one output directory:

- ``model.keras``: the best model so far (highest validation accuracy),
- ``log.csv``: one row per epoch (`keras.callbacks.CSVLogger`),
- ``learning_curve.png``: loss and accuracy, training vs validation,
- ``class_names.json``: the label names, in output order.

Interrupted runs resume: `keras.callbacks.BackupAndRestore` keeps the last
completed epoch in ``backup/``; running the same command again continues
from there (the backup holds the optimizer state too, and the learning-rate
schedule is per epoch, so it continues where it was).

`TrainResult.timings` says where the time went (data, model building,
compilation of the first steps, epochs, writing); `format_timings` makes it
the line ``keras-densenet train`` ends with.

Models take raw pixels in [0, 255]: the preprocessing (rescaling, plus the
ImageNet mean/std when fine-tuning pretrained weights) is made of stock
layers inside the saved model, so ``predict`` and exported artifacts need
no separate preprocessing.

Example:

>>> from keras_densenet.training.train import TrainConfig, train
>>> result = train(TrainConfig(depth=10, epochs=1, limit=100, output="/tmp/run"))  # doctest: +SKIP
>>> sorted(p.rsplit("/", 1)[-1] for p in result.files())  # doctest: +SKIP
['class_names.json', 'learning_curve.png', 'log.csv', 'model.keras']
"""

from __future__ import annotations

import collections
import contextlib
import csv
import dataclasses
import json
import math
import os
import shutil
import statistics
import time
from typing import Optional, Sequence

import keras

from keras_densenet.core import extras
from keras_densenet.core.files import atomic_path, atomic_write, prepare_output_dir
from keras_densenet.models import densenet
from keras_densenet.core import cluster
from keras_densenet.data import datasets as data_lib
from keras_densenet.training import distribute as distribute_lib

# The options and their checks live in a keras-free module, so the CLI can
# reject bad arguments before importing keras; re-exported here.
from keras_densenet.training.config import (  # noqa: F401
    BACKUP_DIR,
    BN_MOMENTUM,
    CLASS_NAMES_FILE,
    IMAGENET_MEAN,
    IMAGENET_STD,
    LOG_FILE,
    MIXED_PRECISION,
    MODEL_FILE,
    PLOT_FILE,
    TrainConfig,
    validate,
)


#: The phases of `TrainResult.timings`, in the order they run; their seconds
#: add up to ``timings["total"]``.
TIMED_PHASES = ("setup", "data", "model", "compilation", "epochs", "writing")


@dataclasses.dataclass
class TrainResult:
    """What `train` produced.

    Attributes:
        output: the output directory.
        model_path, log_path, plot_path, class_names_path: its files.
        history: one dict per epoch, as logged in ``log.csv``.
        best_val_accuracy: the best validation accuracy (that of
            ``model.keras``).
        class_names: label names in output order.
        num_corrupt: image files skipped because they could not be decoded.
        num_devices: devices the batch was split over (1 without
            `TrainConfig.distribute`).
        timings: wall-clock seconds of this call per phase of
            `TIMED_PHASES`, plus ``"total"`` (their sum): ``setup`` (checks,
            output directory, resume state), ``data`` (loading and
            preparing the data), ``model`` (building it), ``compilation``
            and ``epochs`` (the `fit` calls, split as `CompileTimer`
            describes), ``writing`` (class names, plot, backup removal).
            `format_timings` writes them as one line.
        epochs_run: epochs this call trained (fewer than ``len(history)``
            after a resume).
        num_processes, process_id: the job and this process; only process
            0 writes `files` (the others' history is this call's epochs).
    """

    output: str
    model_path: str
    log_path: str
    plot_path: str
    class_names_path: str
    history: list
    best_val_accuracy: float
    class_names: list
    num_corrupt: int = 0
    num_devices: int = 1
    timings: dict = dataclasses.field(default_factory=dict)
    epochs_run: int = 0
    num_processes: int = 1
    process_id: int = 0

    def files(self) -> list:
        return [self.model_path, self.log_path, self.plot_path, self.class_names_path]


#: Phases `format_timings` always shows; the others only from this many
#: seconds on (below it they would print as 0.0 s).
_ALWAYS_SHOWN = ("imports", "data", "compilation", "epochs")
_SHOWN_FROM_S = 0.05


def format_timings(timings: dict, epochs_run: int) -> str:
    """Where the wall time of a run went, as one line.

    Args:
        timings: seconds per phase (`TrainResult.timings`, optionally with
            ``"imports"`` as the CLI adds it) and their ``"total"``.
        epochs_run: the epochs of the ``"epochs"`` phase.

    Returns:
        ``time: TOTAL s = PHASE s + ...``; phases other than imports, data,
        compilation and epochs only where they took at least 0.05 s.

    Example:

    >>> format_timings({"imports": 6.1, "setup": 0.01, "data": 0.4, "model": 1.2,
    ...                 "compilation": 9.8, "epochs": 24.3, "writing": 0.6,
    ...                 "total": 42.41}, epochs_run=8)
    'time: 42.4 s = imports 6.1 s + data 0.4 s + model 1.2 s + compilation 9.8 s + 8 epochs 24.3 s (3.0 s/epoch) + writing 0.6 s'
    """
    parts = []
    for phase in ("imports", *TIMED_PHASES):
        seconds = timings.get(phase)
        if seconds is None or (phase not in _ALWAYS_SHOWN and seconds < _SHOWN_FROM_S):
            continue
        if phase != "epochs":
            parts.append(f"{phase} {seconds:.1f} s")
            continue
        per_epoch = f" ({seconds / epochs_run:.1f} s/epoch)" if epochs_run > 1 else ""
        parts.append(f"{epochs_run} epoch{'' if epochs_run == 1 else 's'} {seconds:.1f} s{per_epoch}")
    return f"time: {timings['total']:.1f} s = " + " + ".join(parts)


class Stopwatch:
    """Wall time per phase: each `lap` charges the time since the last lap
    to one phase, so the phases add up to the total."""

    def __init__(self):
        self.seconds = dict.fromkeys(TIMED_PHASES, 0.0)
        self._start = self._last = time.perf_counter()

    def lap(self, phase: str) -> float:
        now = time.perf_counter()
        elapsed, self._last = now - self._last, now
        self.seconds[phase] += elapsed
        return elapsed

    def move(self, seconds: float, source: str, target: str) -> None:
        """Charges `seconds` of phase `source` to phase `target` instead."""
        self.seconds[source] -= seconds
        self.seconds[target] += seconds

    def timings(self) -> dict:
        return {**self.seconds, "total": self._last - self._start}


class CompileTimer(keras.callbacks.Callback):
    """Measures what the first steps of a `fit` cost beyond a normal step.

    Keras compiles the training step inside the first training step and the
    evaluation step inside the first validation step (JAX and TensorFlow:
    tracing plus XLA; PyTorch runs eagerly, so there it is the first call's
    warm-up). `seconds` is that compilation: the first training step's time
    minus the median of the later training steps, plus the same for the
    validation steps. A kind with no later step to compare with counts its
    first step whole (one step's work included). Recompilations for another
    batch shape later on (the last, smaller batch of an image folder) count
    as epoch time.

    A step lasts from its `on_train_batch_begin` (`on_test_batch_begin`) to
    the next step's, the validation's start or end, or the epoch's end:
    hooks that Keras runs synchronously, also when it dispatches the
    ``*_batch_end`` hooks asynchronously.

    Attributes:
        steps: seconds per step, by kind (``"train"``, ``"test"``).
        epochs: epochs finished.
    """

    def __init__(self):
        super().__init__()
        self.steps = {"train": [], "test": []}
        self.epochs = 0
        self._running = None  # (kind, start) of the step under way

    def _end_step(self):
        if self._running is not None:
            kind, start = self._running
            self.steps[kind].append(time.perf_counter() - start)
            self._running = None

    def _begin_step(self, kind):
        self._end_step()
        self._running = (kind, time.perf_counter())

    def on_train_batch_begin(self, batch, logs=None):
        self._begin_step("train")

    def on_test_batch_begin(self, batch, logs=None):
        self._begin_step("test")

    def on_test_begin(self, logs=None):
        self._end_step()

    def on_test_end(self, logs=None):
        self._end_step()

    def on_epoch_end(self, epoch, logs=None):
        self._end_step()
        self.epochs += 1

    @property
    def seconds(self) -> float:
        """The compilation estimate described above (>= 0)."""
        total = 0.0
        for durations in self.steps.values():
            if len(durations) == 1:
                total += durations[0]
            elif durations:
                total += max(0.0, durations[0] - statistics.median(durations[1:]))
        return total


class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """`ModelCheckpoint` that saves to a temporary file, then renames it.

    An interruption while saving leaves the previous best model intact.
    """

    def __init__(self, filepath: str, **kwargs):
        super().__init__(filepath, **kwargs)
        self.final_path = self.filepath

    def on_epoch_end(self, epoch, logs=None):
        # Keras writes `self.filepath` only when the monitored value improved;
        # in a multi-process job only process 0 has this callback.
        with atomic_path(self.final_path) as tmp, distribute_lib.local_section():
            self.filepath = tmp
            try:
                super().on_epoch_end(epoch, logs)
            finally:
                self.filepath = self.final_path


class LocalBackupAndRestore(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` whose saves run in `distribute.local_section`.

    Each process of a job keeps its own backup (on its own disk, in a
    multi-host job); restoring stays under the distribution, which every
    process joins at the start of `fit`.
    """

    def on_epoch_end(self, epoch, logs=None):
        with distribute_lib.local_section():
            super().on_epoch_end(epoch, logs)


class EpochRows(keras.callbacks.Callback):
    """The epochs' logs as ``log.csv`` rows, for processes that keep no log."""

    def __init__(self):
        super().__init__()
        self.rows = []

    def on_epoch_end(self, epoch, logs=None):
        self.rows.append({"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items()}})


def read_log(path: str) -> list:
    """The rows of a CSVLogger file as dicts of floats (``[]`` if absent)."""
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return [
            {k: (int(v) if k == "epoch" else float(v)) for k, v in row.items() if v != ""}
            for row in csv.DictReader(f)
        ]


def plot_learning_curve(history: Sequence[dict], path: str, metrics: Sequence[str] = ("loss", "accuracy")) -> str:
    """Saves `metrics` (training vs validation) per epoch as a PNG.

    Args:
        history: rows of ``log.csv`` (keys ``epoch``, and each metric with
            and without the ``val_`` prefix).
        path: the PNG to write (atomically).
        metrics: one panel each.

    Returns:
        `path`.
    """
    matplotlib = extras.import_from("train", "matplotlib", "plotting the training curves")
    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] + 1 for row in history]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4))
    for ax, metric in zip(axes, metrics):
        for prefix, label in (("", "training"), ("val_", "validation")):
            values = [row.get(prefix + metric, math.nan) for row in history]
            ax.plot(epochs, values, marker="o", label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle("keras-densenet training")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
    return path


#: AdamW's decoupled weight decay for every training phase.
WEIGHT_DECAY = 1e-4


def compile_classifier(model: keras.Model, lr: float) -> None:
    """Compiles `model` as `train` does: AdamW, sparse cross-entropy, accuracy.

    Example::

        compile_classifier(model, lr=5e-3)
        model.train_on_batch(x, y)
    """
    model.compile(
        optimizer=keras.optimizers.AdamW(lr, weight_decay=WEIGHT_DECAY),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )


def build_classifier(config: TrainConfig, num_classes: int, channels: int) -> tuple:
    """The model `train` fits: resizing and rescaling, DenseNet backbone, new head.

    Returns:
        ``(model, backbone)``; the backbone is a nested model so that
        fine-tuning can freeze it.
    """
    size = config.image_size
    shape = (size, size, channels)
    kwargs = dict(
        include_top=False,
        weights=config.weights,
        input_shape=shape,
        pooling="avg",
        bn_momentum=config.bn_momentum,
        memory_efficient=config.memory_efficient,
    )
    if config.arch is None:
        backbone = densenet.DenseNetBC(config.depth, config.growth_rate, **kwargs)
    else:
        backbone = densenet.build(config.arch, **kwargs)

    # Any image size goes in: the model resizes to `image_size` itself, with
    # the resize its training data went through (`data.resize_images`;
    # the identity on training batches, which already have that size).
    inputs = keras.Input((None, None, channels), name="image")
    resize = keras.layers.Resizing(size, size, interpolation=data_lib.RESIZE_INTERPOLATION, name="resize")
    # Keras' image preprocessing layers default to `training=True` and pass
    # that on to every later layer when the model is called without
    # `training` (`model(x)`, exported `serve` endpoints): BatchNormalization
    # would then use batch statistics. Recording False here keeps inference
    # the default; `fit` and `predict` still pass their own value to every layer.
    x = resize(inputs, training=False)
    x = keras.layers.Rescaling(1.0 / 255, name="rescale")(x)
    pretrained = config.weights is not None
    if pretrained and channels == 3:
        x = keras.layers.Normalization(
            mean=IMAGENET_MEAN, variance=[s * s for s in IMAGENET_STD], name="imagenet_norm"
        )(x)
    # Pretrained backbones keep BatchNormalization in inference mode, also
    # once unfrozen: updating ImageNet statistics from a few small batches
    # would wreck them (Keras' transfer-learning guide).
    x = backbone(x, training=False) if pretrained else backbone(x)
    outputs = keras.layers.Dense(
        num_classes, activation="softmax", dtype="float32", name="predictions"
    )(x)
    return keras.Model(inputs, outputs, name=f"{backbone.name}_classifier"), backbone


def _say(config: TrainConfig, message: str) -> None:
    """A progress line, unless `config.verbose` silences `fit` too."""
    if config.verbose not in (0, False):
        print(message, flush=True)


def cosine_schedule(lr: float, start: int, stop: int):
    """The learning rate of each epoch: `lr` decayed to 0 over ``[start, stop)`` on a cosine."""

    def schedule(epoch, _current_lr=None):
        t = (epoch - start) / max(1, stop - start)
        return float(lr * 0.5 * (1 + math.cos(math.pi * t)))

    return schedule


def _digits_share(x, y, plan, split_seed: int) -> tuple:
    """This process's share of one digits split (all of it in a one-process
    job), cut to a multiple of the devices that share each batch."""
    if plan is None or plan.num_processes == 1:
        return distribute_lib.trim_to_multiple(plan.batch_multiple if plan is not None else 1, x, y)
    idx = cluster.shard_indices(len(x), plan.num_processes, plan.process_id, split_seed, plan.local_devices)
    return x[idx], y[idx]


def _load_data(config: TrainConfig, channels: int, plan=None):
    """``(train_data, val_data, class_names, num_corrupt)`` for this process.

    With a plan, every batch splits evenly over the devices (JAX shards a
    batch in equal slices); in a multi-process job each process gets its
    own share of each split, and `config.batch_size` is already this
    process's batch."""
    multiple = plan.batch_multiple if plan is not None else 1
    if config.data is None:
        ds = data_lib.load_digits_dataset(
            config.image_size, channels, config.validation_split, config.seed, config.limit
        )
        x_train, y_train = _digits_share(ds.x_train, ds.y_train, plan, config.seed)
        x_val, y_val = _digits_share(ds.x_val, ds.y_val, plan, config.seed + 1)
        train_data = data_lib.augmented_batches(
            x_train, y_train, config.batch_size, max_shift=config.image_size // 16,
            # each process shifts its own images differently
            seed=config.seed + (plan.process_id if plan is not None else 0),
        )
        return train_data, (x_val, y_val), ds.class_names, 0
    shard = None
    if plan is not None and plan.num_processes > 1:
        shard = (plan.num_processes, plan.process_id, multiple)
    train_ds, val_ds, class_names, num_corrupt = data_lib.image_folder_datasets(
        config.data, config.image_size, config.batch_size, config.validation_split,
        config.seed, channels, shard=shard,
    )
    return (
        distribute_lib.shardable_batches(train_ds, multiple),
        distribute_lib.shardable_batches(val_ds, multiple),
        class_names,
        num_corrupt,
    )


def _distribution_plan(config: TrainConfig, distribution) -> tuple:
    """The data-parallel plan to train with (``None``: one device), and
    `config` with the plan's global batch size and scaled learning rate."""
    # Data parallelism (keras_densenet.training.distribute):
    plan = distribution
    if plan is None and config.distribute:
        plan = distribute_lib.data_parallel(sync_bn=config.sync_bn)
    if plan is not None:
        global_batch, lr = distribute_lib.scale_batch_and_lr(
            config.batch_size, config.lr, plan.num_devices, config.lr_scaling
        )
        config = dataclasses.replace(config, batch_size=global_batch, lr=lr)
    return config, plan


def write_class_names(path: str, class_names: Sequence[str]) -> None:
    """Writes the label names, in output order, as JSON (atomically)."""
    def write_names(tmp):
        with open(tmp, "w") as f:
            json.dump(list(class_names), f, indent=1)

    atomic_write(path, write_names)


@dataclasses.dataclass
class ResumeState:
    """What an interrupted earlier run left in the output directory.

    Attributes:
        backup_dir: where `BackupAndRestore` keeps the last completed epoch.
        resuming: that backup exists: this run continues it.
        previous: the rows of ``log.csv`` written so far (``[]`` if fresh).
        best_so_far: the best validation accuracy so far (that of the saved
            model), or ``None``.
    """

    backup_dir: str
    resuming: bool
    previous: list
    best_so_far: Optional[float]


def resume_state(output: str, log_path: str, process_id=None) -> ResumeState:
    """Reads what an interrupted run in `output` left to continue from.

    `process_id`: in a multi-process job every process keeps its own backup
    in ``backup/process-N``."""
    backup_dir = os.path.join(output, BACKUP_DIR)
    if process_id is not None:
        backup_dir = os.path.join(backup_dir, f"process-{process_id}")
    resuming = os.path.isdir(backup_dir)
    previous = read_log(log_path) if resuming else []
    best_so_far = max((row.get("val_accuracy", -1.0) for row in previous), default=None)
    return ResumeState(backup_dir, resuming, previous, best_so_far)


@contextlib.contextmanager
def _training_scope(config: TrainConfig, plan):
    """Seeds, the mixed-precision policy and the engine's scope, for
    building and fitting the model; the global dtype policy is restored."""
    old_policy = keras.config.dtype_policy()
    keras.utils.set_random_seed(config.seed)
    if config.mixed_precision:
        keras.config.set_dtype_policy(f"mixed_{config.mixed_precision}")
    try:
        with contextlib.ExitStack() as scope:
            if plan is not None:  # variables are created and fitted in the engine's scope
                scope.enter_context(plan.scope())
            yield
    finally:
        keras.config.set_dtype_policy(old_policy)


def _build_model(config: TrainConfig, plan, num_classes: int, channels: int, resume: ResumeState) -> tuple:
    """Builds the classifier (`build_classifier`) and says what it is and
    where a resumed run continues; returns ``(model, backbone)``."""
    model, backbone = build_classifier(config, num_classes, channels)
    _say(config, f"model: {model.name}, {model.count_params():,} parameters, "
                 f"{keras.backend.backend()} backend")
    if resume.previous:
        _say(config, f"resuming from epoch {len(resume.previous) + 1} of {config.epochs} "
                     f"({len(resume.previous)} done, backup in {resume.backup_dir})")
    if plan is not None:
        plan.prepare(model)
    return model, backbone


#: One `model.fit` call of `train`: its name (also its backup's folder), its
#: epochs ``[start, stop)``, learning rate and whether the backbone learns.
_FitPhase = collections.namedtuple("_FitPhase", "name start stop lr backbone_trainable")


def _fit_phases(config: TrainConfig, backup_dir: str) -> list:
    """The `_FitPhase` list: from scratch one; fine-tuning the frozen-backbone
    phase first, unless it finished before an interruption."""
    pretrained = config.weights is not None
    head_epochs = 0
    if pretrained:
        head_epochs = config.head_epochs or max(1, config.epochs // 3)
    phases = []
    if head_epochs:
        phases.append(_FitPhase("head", 0, head_epochs, config.lr, False))
    phases.append(_FitPhase("all", head_epochs, config.epochs, config.lr / 10 if pretrained else config.lr, True))
    if os.path.isdir(os.path.join(backup_dir, phases[-1].name)):
        phases = phases[-1:]  # the frozen phase finished before the interruption
    return phases


def _phase_callbacks(plan, phase: _FitPhase, backup_dir: str, log_path: str, append_log: bool,
                     checkpoint, extra: Sequence) -> list:
    """The callbacks of one phase's `fit`: engine, backup, schedule, then
    (process 0 only: `checkpoint` is ``None`` elsewhere) log and checkpoint,
    then the caller's."""
    # One backup per phase: the saved optimizer state matches the
    # trainable weights of the phase that wrote it.
    backup = LocalBackupAndRestore(
        os.path.join(backup_dir, phase.name), delete_checkpoint=False,
        # the epoch before too: a job's processes may have to fall back to it
        double_checkpoint=plan is not None and plan.num_processes > 1,
    )
    writes = [] if checkpoint is None else [keras.callbacks.CSVLogger(log_path, append=append_log), checkpoint]
    return [
        *(plan.callbacks() if plan is not None else []),  # before the checkpoint
        backup,
        keras.callbacks.LearningRateScheduler(cosine_schedule(phase.lr, phase.start, phase.stop)),
        *writes,
        *extra,
    ]


def _fit_phase(model, backbone, config: TrainConfig, plan, phase: _FitPhase, data: tuple, callbacks: list) -> None:
    """Compiles `model` for `phase` and fits its epochs."""
    train_data, val_data = data
    backbone.trainable = phase.backbone_trainable
    # Compilation happens inside the first step: without a word, tens
    # of seconds of silence and a huge first ETA look like a hang.
    fine_tuning = phase.backbone_trainable and config.weights is not None
    _say(config, f"{'fine-tuning' if fine_tuning else 'training'}: "
                 "compiling the training step first (up to a minute on a CPU)...")
    compile_classifier(model, phase.lr)
    model.fit(
        train_data,
        validation_data=val_data,
        batch_size=config.batch_size if config.data is None else None,
        # Arrays (the digits) on one device: equal validation
        # batches, so one compiled evaluation step.
        validation_batch_size=(
            data_lib.even_batch_size(len(val_data[0]), config.batch_size)
            if isinstance(val_data, tuple) and plan is None else None
        ),  # with a plan: `batch_size`, a multiple of the local devices
        # tf.data folders are shuffled by image_dataset_from_directory,
        # the digits batches by augmented_batches.
        shuffle=False,
        initial_epoch=phase.start,
        epochs=phase.stop,
        callbacks=callbacks,
        verbose=config.verbose,
    )


def _fit(model, backbone, config: TrainConfig, plan, data: tuple, paths: dict,
         resume: ResumeState, callbacks: Sequence, watch: Stopwatch) -> int:
    """Runs every `_FitPhase`, charging its compilation (`CompileTimer`) and
    the rest of its `fit` to `watch`; returns the epochs trained."""
    checkpoint = None
    if plan is None or plan.is_writer:
        checkpoint = AtomicModelCheckpoint(
            paths[MODEL_FILE],
            monitor="val_accuracy",
            mode="max",
            save_best_only=True,
            # After a resume, only a model better than the saved one replaces it.
            initial_value_threshold=resume.best_so_far,
        )
    epochs_run = 0
    for i, phase in enumerate(_fit_phases(config, resume.backup_dir)):
        timer = CompileTimer()
        phase_callbacks = _phase_callbacks(
            plan, phase, resume.backup_dir, paths[LOG_FILE], resume.resuming or i > 0, checkpoint, callbacks
        )
        _fit_phase(model, backbone, config, plan, phase, data, [timer, *phase_callbacks])
        fit_seconds = watch.lap("epochs")
        watch.move(min(timer.seconds, fit_seconds), "epochs", "compilation")
        epochs_run += timer.epochs
    return epochs_run


#: BackupAndRestore's files, and the copies of the epoch before
#: (``double_checkpoint=True``) that `agree_on_backups` can fall back to.
_BACKUP_FILES = ("latest.weights.h5", "training_metadata.json")
_PREVIOUS = ".bkp"


def _backup_epoch(phase_dir: str, suffix: str = "") -> int:
    """The epoch a phase's backup resumes from (0: no backup)."""
    path = os.path.join(phase_dir, "training_metadata.json" + suffix)
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return int(json.load(f)["epoch"])


def _truncate_log(log_path: str, epochs: int) -> None:
    """Keeps the first `epochs` rows of ``log.csv`` (atomically)."""
    with open(log_path, newline="") as f:
        rows = list(csv.reader(f))

    def write(tmp):
        with open(tmp, "w", newline="") as f:
            csv.writer(f).writerows(rows[: epochs + 1])  # the header, then one row per epoch

    atomic_write(log_path, write)


def agree_on_backups(plan, config: TrainConfig, output: str, resume: ResumeState, log_path: str) -> ResumeState:
    """Makes every process of a job resume from the same epoch.

    A process lost between two epochs' backups leaves the others one epoch
    ahead; those fall back to their backup of the epoch before (kept by
    ``double_checkpoint``), and process 0 drops that epoch's row from
    ``log.csv``. A collective: every process calls it before `fit`.

    Returns:
        The `ResumeState` to continue from (`resume` if nothing changed).

    Raises:
        ValueError: the backups differ by more than one epoch, or in phase.
    """
    remaining = _fit_phases(config, resume.backup_dir)
    phase_dir = os.path.join(resume.backup_dir, remaining[0].name)
    here = _backup_epoch(phase_dir)  # epochs completed, counted from the run's start
    phases = distribute_lib.gather_from_processes(len(remaining), plan)
    epochs = distribute_lib.gather_from_processes(here, plan)
    if len(set(phases)) == 1 and len(set(epochs)) == 1:
        return resume
    if len(set(phases)) > 1 or max(epochs) - min(epochs) > 1:
        found = ", ".join(f"process {p}: {e} epochs" for p, e in enumerate(epochs))
        raise ValueError(
            f"the processes' backups do not agree ({found}, phases {phases}); remove "
            f"{BACKUP_DIR}/ in every process's output directory to start over"
        )
    target = min(epochs)
    if here > target:  # one epoch ahead: back to the epoch before
        if _backup_epoch(phase_dir, _PREVIOUS) != target:
            raise ValueError(f"backup {phase_dir!r} has no copy of epoch {target} to fall back to")
        for name in _BACKUP_FILES:
            os.replace(os.path.join(phase_dir, name + _PREVIOUS), os.path.join(phase_dir, name))
    if plan.is_writer and os.path.exists(log_path):
        _truncate_log(log_path, target)
    return resume_state(output, log_path, plan.process_id)


def _remove_backup(backup_dir: str) -> None:
    """Removes this process's backup, and ``backup/`` once no process has one left."""
    shutil.rmtree(backup_dir, ignore_errors=True)
    parent = os.path.dirname(backup_dir)
    if os.path.basename(parent) == BACKUP_DIR:  # backup/process-N
        with contextlib.suppress(OSError):  # another process's backup is still there
            os.rmdir(parent)


def _write_final_files(paths: dict, backup_dir: str) -> list:
    """Drops the backup, plots the log; returns the log's rows."""
    # Every epoch is in the log and the best model is saved: the backup has
    # served its purpose.
    _remove_backup(backup_dir)
    history = read_log(paths[LOG_FILE])
    plot_learning_curve(history, paths[PLOT_FILE])
    return history


def train(
    config: TrainConfig,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    distribution: Optional[distribute_lib.DataParallelPlan] = None,
) -> TrainResult:
    """Trains (or fine-tunes) a DenseNet and writes the output directory.

    From scratch: one `model.fit` with AdamW and a cosine learning-rate
    decay. With `config.weights`: first `head_epochs` with the backbone
    frozen (only the new classifier learns), then the rest with everything
    trainable at a tenth of the learning rate.

    With `config.distribute` (or a `distribution`), the model is built and
    fitted in the data-parallel engine's scope, the batch is
    ``config.batch_size`` per device and the learning rate is scaled by
    ``config.lr_scaling``.

    Args:
        config: the options.
        callbacks: extra Keras callbacks for every `model.fit` call.
        distribution: a `distribute.DataParallelPlan` to train with (e.g.
            from `distribute.from_engine`); ``None`` makes one with
            `distribute.data_parallel` when `config.distribute` is set.

    Returns:
        A `TrainResult`; its `timings` say where the time went.

    Raises:
        ValueError: invalid options or data; the message names them.

    Example:

    >>> result = train(TrainConfig(depth=10, epochs=1, limit=100,
    ...                            output="/tmp/kd_doc"))  # doctest: +SKIP
    >>> 0 <= result.best_val_accuracy <= 1  # doctest: +SKIP
    True
    >>> print(format_timings(result.timings, result.epochs_run))  # doctest: +SKIP
    time: 5.3 s = data 0.4 s + model 0.3 s + compilation 3.1 s + 1 epoch 1.3 s + writing 0.2 s
    """
    watch = Stopwatch()
    validate(config)
    config, plan = _distribution_plan(config, distribution)
    multi = plan is not None and plan.num_processes > 1
    writer = plan is None or plan.is_writer
    if multi:  # from here on, this process's share of each global batch
        config = dataclasses.replace(config, batch_size=config.batch_size // plan.num_processes)
        if not writer:  # process 0 reports for the job
            config = dataclasses.replace(config, verbose=0)
    output = prepare_output_dir(config.output)
    paths = {name: os.path.join(output, name) for name in (MODEL_FILE, LOG_FILE, PLOT_FILE, CLASS_NAMES_FILE)}
    watch.lap("setup")
    # Pretrained ImageNet backbones want RGB; digits are gray otherwise.
    channels = 3 if (config.weights is not None or config.data is not None) else 1
    train_data, val_data, class_names, num_corrupt = _load_data(config, channels, plan)
    watch.lap("data")
    if writer:
        write_class_names(paths[CLASS_NAMES_FILE], class_names)
    watch.lap("writing")
    resume = resume_state(output, paths[LOG_FILE], plan.process_id if multi else None)
    if multi:
        resume = agree_on_backups(plan, config, output, resume, paths[LOG_FILE])
    rows = EpochRows()
    watch.lap("setup")
    with _training_scope(config, plan):
        model, backbone = _build_model(config, plan, len(class_names), channels, resume)
        watch.lap("model")
        epochs_run = _fit(model, backbone, config, plan, (train_data, val_data), paths, resume,
                          [*callbacks, rows], watch)
    if writer:
        history = _write_final_files(paths, resume.backup_dir)
    else:
        _remove_backup(resume.backup_dir)
        history = rows.rows
    watch.lap("writing")
    return TrainResult(
        output=output,
        model_path=paths[MODEL_FILE],
        log_path=paths[LOG_FILE],
        plot_path=paths[PLOT_FILE],
        class_names_path=paths[CLASS_NAMES_FILE],
        history=history,
        best_val_accuracy=max(row.get("val_accuracy", 0.0) for row in history),
        class_names=list(class_names),
        num_corrupt=num_corrupt,
        num_devices=plan.num_devices if plan is not None else 1,
        timings=watch.timings(),
        epochs_run=epochs_run,
        num_processes=plan.num_processes if plan is not None else 1,
        process_id=plan.process_id if plan is not None else 0,
    )
