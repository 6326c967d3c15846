"""Training and fine-tuning: what ``keras-densenet train`` runs.

`train` builds a DenseNet (a small CIFAR DenseNet-BC by default, or any
registered variant: `classifier`), feeds it the embedded digits or an image
folder (`batches`), and writes everything into one output directory
(`outputs`):

- ``model.keras``: the best model so far (highest validation accuracy),
- ``log.csv``: one row per epoch (`keras.callbacks.CSVLogger`),
- ``learning_curve.png``: loss and accuracy, training vs validation,
- ``class_names.json``: the label names, in output order.

Interrupted runs resume: `keras.callbacks.BackupAndRestore` keeps the last
completed epoch in ``backup/``; running the same command again continues
from there (`backups`; the backup holds the optimizer state too, and the
learning-rate `schedule` is per epoch, so it continues where it was).

`TrainResult.timings` says where the time went (data, model building,
compilation of the first steps, epochs, writing); `timing.format_timings`
makes it the line ``keras-densenet train`` ends with.

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

import contextlib
import dataclasses
import os
from typing import Optional, Sequence

import keras

from keras_densenet.core.files import prepare_output_dir
from keras_densenet.data import datasets as data_lib
from keras_densenet.data import progress
from keras_densenet.data.images import check_on_error
from keras_densenet.training import distribute
from keras_densenet.training.backups import ResumeState, agree_on_backups, phase_backup, remove_backup, resume_state
from keras_densenet.training.batches import load_training_data

# `build_classifier` and `compile_classifier` are what `train` fits, as the
# benchmarks and tests import them from here; `TrainConfig` lives in a
# keras-free module, so that the CLI can reject bad options before keras
# (and a backend) is imported.
from keras_densenet.training.classifier import build_classifier, compile_classifier
from keras_densenet.training.config import CLASS_NAMES_FILE, LOG_FILE, MODEL_FILE, PLOT_FILE, TrainConfig, validate
from keras_densenet.training.outputs import (
    AtomicModelCheckpoint,
    EpochRows,
    plot_learning_curve,
    read_log,
    write_class_names,
)
from keras_densenet.training.schedule import FitPhase, cosine_schedule, fit_phases
from keras_densenet.training.timing import CompileTimer, Stopwatch


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
            `timing.TIMED_PHASES`, plus ``"total"`` (their sum): ``setup``
            (checks, output directory, resume state), ``data`` (loading and
            preparing the data), ``model`` (building it), ``compilation``
            and ``epochs`` (the `fit` calls, split as `timing.CompileTimer`
            describes), ``writing`` (class names, plot, backup removal).
            `timing.format_timings` writes them as one line.
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
        """The files process 0 wrote: model, log, plot, class names."""
        return [self.model_path, self.log_path, self.plot_path, self.class_names_path]


def _say(config: TrainConfig, message: str) -> None:
    """A progress line, unless `config.verbose` silences `fit` too."""
    if config.verbose not in (0, False):
        print(message, flush=True)


def _distribution_plan(config: TrainConfig, distribution) -> tuple:
    """The data-parallel plan to train with (``None``: one device), and
    `config` with this process's batch, the plan's scaled learning rate and,
    outside process 0, no progress output."""
    plan = distribution
    if plan is None and config.distribute:
        plan = distribute.data_parallel(sync_bn=config.sync_bn)
    if plan is None:
        return config, None
    global_batch, lr = distribute.scale_batch_and_lr(
        config.batch_size, config.lr, plan.num_devices, config.lr_scaling
    )
    # In a job of several processes each feeds its share of a global batch.
    config = dataclasses.replace(config, batch_size=global_batch // plan.num_processes, lr=lr)
    if not plan.is_writer:  # process 0 reports for the job
        config = dataclasses.replace(config, verbose=0)
    return config, plan


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


def _phase_callbacks(plan, phase: FitPhase, backup_dir: str, log_path: str, append_log: bool,
                     checkpoint, extra: Sequence) -> list:
    """The callbacks of one phase's `fit`: engine, schedule, then (process
    0 only: `checkpoint` is ``None`` elsewhere) log and checkpoint, then the
    backup, then the caller's."""
    writes = [] if checkpoint is None else [keras.callbacks.CSVLogger(log_path, append=append_log), checkpoint]
    return [
        *(plan.callbacks() if plan is not None else []),  # before the checkpoint
        keras.callbacks.LearningRateScheduler(cosine_schedule(phase.lr, phase.start, phase.stop)),
        *writes,
        # Last: a backup of epoch N means its log row and model are written
        # (a kill in between only repeats the epoch; resume_state drops its row).
        phase_backup(backup_dir, phase, plan.num_processes if plan is not None else 1),
        *extra,
    ]


def _fit_phase(model, backbone, config: TrainConfig, plan, phase: FitPhase, data: tuple, callbacks: list) -> None:
    """Compiles `model` for `phase` and fits its epochs."""
    train_data, val_data = data
    backbone.trainable = phase.backbone_trainable
    # Compilation happens inside the first step: without a word, tens
    # of seconds of silence and a huge first ETA look like a hang.
    fine_tuning = phase.backbone_trainable and config.weights is not None
    _say(config, f"{'fine-tuning' if fine_tuning else 'training'}: "
                 "compiling the training step first (up to a minute on a CPU)...")
    compile_classifier(model, phase.lr)
    # Not on a terminal (a log, CI): one plain line per epoch, no bar.
    verbose, lines = progress.fit_output(config.verbose, epochs=config.epochs)
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
        # image folders are reshuffled by their PyDataset every epoch,
        # the digits batches by augmented_batches.
        shuffle=False,
        initial_epoch=phase.start,
        epochs=phase.stop,
        callbacks=[*callbacks, *lines],
        verbose=verbose,
    )


def _fit(model, backbone, config: TrainConfig, plan, data: tuple, paths: dict,
         resume: ResumeState, callbacks: Sequence, watch: Stopwatch) -> int:
    """Runs every `FitPhase`, charging its compilation (`CompileTimer`) and
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
    for i, phase in enumerate(fit_phases(config, resume.backup_dir)):
        timer = CompileTimer()
        phase_callbacks = _phase_callbacks(
            plan, phase, resume.backup_dir, paths[LOG_FILE], resume.resuming or i > 0, checkpoint, callbacks
        )
        _fit_phase(model, backbone, config, plan, phase, data, [timer, *phase_callbacks])
        fit_seconds = watch.lap("epochs")
        watch.move(min(timer.seconds, fit_seconds), "epochs", "compilation")
        epochs_run += timer.epochs
    return epochs_run


def _write_final_files(paths: dict, backup_dir: str) -> list:
    """Drops the backup, plots the log; returns the log's rows."""
    # Every epoch is in the log and the best model is saved: the backup has
    # served its purpose.
    remove_backup(backup_dir)
    history = read_log(paths[LOG_FILE])
    plot_learning_curve(history, paths[PLOT_FILE])
    return history


def train(
    config: TrainConfig,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    distribution: Optional[distribute.DataParallelPlan] = None,
    on_error: str = "raise",
) -> TrainResult:
    """Trains (or fine-tunes) a DenseNet and writes the output directory.

    From scratch: one `model.fit` with AdamW and a cosine learning-rate
    decay. With `config.weights`: first `head_epochs` with the backbone
    frozen (only the new classifier learns), then the rest with everything
    trainable at a tenth of the learning rate (`schedule.fit_phases`).

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
        on_error: with `config.data`: ``"raise"`` (default) stops before the
            first epoch at an unreadable image file, naming it; ``"skip"``
            leaves such files out, each named in one line on stderr.

    Returns:
        A `TrainResult`; its `timings` say where the time went.

    Raises:
        ValueError: invalid options or data; the message names them.

    Example:

    >>> result = train(TrainConfig(depth=10, epochs=1, limit=100,
    ...                            output="/tmp/kd_doc"))  # doctest: +SKIP
    >>> 0 <= result.best_val_accuracy <= 1  # doctest: +SKIP
    True
    >>> from keras_densenet.training.timing import format_timings
    >>> print(format_timings(result.timings, result.epochs_run))  # doctest: +SKIP
    time: 5.3 s = data 0.4 s + model 0.3 s + compilation 3.1 s + 1 epoch 1.3 s + writing 0.2 s
    """
    watch = Stopwatch()
    validate(config)
    check_on_error(on_error)
    config, plan = _distribution_plan(config, distribution)
    multi = plan is not None and plan.num_processes > 1
    writer = plan is None or plan.is_writer
    output = prepare_output_dir(config.output)
    paths = {name: os.path.join(output, name) for name in (MODEL_FILE, LOG_FILE, PLOT_FILE, CLASS_NAMES_FILE)}
    watch.lap("setup")
    # Pretrained ImageNet backbones want RGB; digits are gray otherwise.
    channels = 3 if (config.weights is not None or config.data is not None) else 1
    train_data, val_data, class_names, num_corrupt = load_training_data(config, channels, plan, on_error)
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
        remove_backup(resume.backup_dir)
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
