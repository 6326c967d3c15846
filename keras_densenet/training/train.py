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
import csv
import dataclasses
import json
import math
import os
import shutil
import tempfile
from typing import Optional, Sequence

import keras

from keras_densenet.core import extras
from keras_densenet.core.files import atomic_path, atomic_write
from keras_densenet.models import densenet
from keras_densenet.training import data as data_lib
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

    def files(self) -> list:
        return [self.model_path, self.log_path, self.plot_path, self.class_names_path]


def prepare_output_dir(output) -> str:
    """Creates directory `output` and checks that files can be written there.

    Raises:
        ValueError: the directory cannot be created or is not writable.
    """
    output = os.fspath(output)
    try:
        os.makedirs(output, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=output):
            pass
    except OSError as e:
        raise ValueError(
            f"`output` directory {output!r} is not writable: {e.strerror or e}"
        ) from None
    return output


class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """`ModelCheckpoint` that saves to a temporary file, then renames it.

    An interruption while saving leaves the previous best model intact.
    """

    def __init__(self, filepath: str, **kwargs):
        super().__init__(filepath, **kwargs)
        self.final_path = self.filepath

    def on_epoch_end(self, epoch, logs=None):
        # Keras writes `self.filepath` only when the monitored value improved.
        with atomic_path(self.final_path) as tmp:
            self.filepath = tmp
            try:
                super().on_epoch_end(epoch, logs)
            finally:
                self.filepath = self.final_path


def read_log(path: str) -> list:
    """The rows of a CSVLogger file as dicts of floats (``[]`` if absent)."""
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return [
            {k: (int(v) if k == "epoch" else float(v)) for k, v in row.items() if v != ""}
            for row in csv.DictReader(f)
        ]


def plot_learning_curve(history: Sequence[dict], path: str) -> str:
    """Saves loss and accuracy (training vs validation) per epoch as a PNG.

    Args:
        history: rows of ``log.csv`` (keys ``epoch``, ``loss``,
            ``val_loss``, ``accuracy``, ``val_accuracy``).
        path: the PNG to write (atomically).

    Returns:
        `path`.
    """
    matplotlib = extras.import_from("train", "matplotlib", "plotting the training curves")
    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] + 1 for row in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "accuracy")):
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


def _cosine(lr: float, start: int, stop: int):
    def schedule(epoch, _current_lr=None):
        t = (epoch - start) / max(1, stop - start)
        return float(lr * 0.5 * (1 + math.cos(math.pi * t)))

    return schedule


def _load_data(config: TrainConfig, channels: int, multiple: int = 1):
    # `multiple`: data parallelism on JAX splits every batch in equal slices,
    # so batch sizes must be multiples of the device count.
    if config.data is None:
        ds = data_lib.load_digits_dataset(
            config.image_size, channels, config.validation_split, config.seed, config.limit
        )
        x_train, y_train = distribute_lib.trim_to_multiple(multiple, ds.x_train, ds.y_train)
        x_val, y_val = distribute_lib.trim_to_multiple(multiple, ds.x_val, ds.y_val)
        train_data = data_lib.augmented_batches(
            x_train, y_train, config.batch_size, max_shift=config.image_size // 16,
            seed=config.seed,
        )
        return train_data, (x_val, y_val), ds.class_names, 0
    train_ds, val_ds, class_names, num_corrupt = data_lib.image_folder_datasets(
        config.data, config.image_size, config.batch_size, config.validation_split,
        config.seed, channels,
    )
    return (
        distribute_lib.shardable_batches(train_ds, multiple),
        distribute_lib.shardable_batches(val_ds, multiple),
        class_names,
        num_corrupt,
    )


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
        A `TrainResult`.

    Raises:
        ValueError: invalid options or data; the message names them.

    Example:

    >>> result = train(TrainConfig(depth=10, epochs=1, limit=100,
    ...                            output="/tmp/kd_doc"))  # doctest: +SKIP
    >>> 0 <= result.best_val_accuracy <= 1  # doctest: +SKIP
    True
    """
    validate(config)
    # Data parallelism (keras_densenet.training.distribute):
    plan = distribution
    if plan is None and config.distribute:
        plan = distribute_lib.data_parallel(sync_bn=config.sync_bn)
    if plan is not None:
        global_batch, lr = distribute_lib.scale_batch_and_lr(
            config.batch_size, config.lr, plan.num_devices, config.lr_scaling
        )
        config = dataclasses.replace(config, batch_size=global_batch, lr=lr)
    output = prepare_output_dir(config.output)
    pretrained = config.weights is not None
    # Pretrained ImageNet backbones want RGB; digits are gray otherwise.
    channels = 3 if (pretrained or config.data is not None) else 1
    train_data, val_data, class_names, num_corrupt = _load_data(
        config, channels, plan.batch_multiple if plan is not None else 1
    )
    paths = {name: os.path.join(output, name) for name in (MODEL_FILE, LOG_FILE, PLOT_FILE, CLASS_NAMES_FILE)}
    def write_names(tmp):
        with open(tmp, "w") as f:
            json.dump(list(class_names), f, indent=1)

    atomic_write(paths[CLASS_NAMES_FILE], write_names)

    backup_dir = os.path.join(output, BACKUP_DIR)
    resuming = os.path.isdir(backup_dir)
    previous = read_log(paths[LOG_FILE]) if resuming else []
    best_so_far = max((row.get("val_accuracy", -1.0) for row in previous), default=None)

    old_policy = keras.config.dtype_policy()
    keras.utils.set_random_seed(config.seed)
    if config.mixed_precision:
        keras.config.set_dtype_policy(f"mixed_{config.mixed_precision}")
    scope = contextlib.ExitStack()
    try:
        if plan is not None:  # variables are created and fitted in the engine's scope
            scope.enter_context(plan.scope())
        model, backbone = build_classifier(config, len(class_names), channels)
        _say(config, f"model: {model.name}, {model.count_params():,} parameters, "
                     f"{keras.backend.backend()} backend")
        if previous:
            _say(config, f"resuming from epoch {len(previous) + 1} of {config.epochs} "
                         f"({len(previous)} done, backup in {backup_dir})")
        if plan is not None:
            plan.prepare(model)
        checkpoint = AtomicModelCheckpoint(
            paths[MODEL_FILE],
            monitor="val_accuracy",
            mode="max",
            save_best_only=True,
            # After a resume, only a model better than the saved one replaces it.
            initial_value_threshold=best_so_far,
        )
        head_epochs = 0
        if pretrained:
            head_epochs = config.head_epochs or max(1, config.epochs // 3)
        phases = []
        if head_epochs:
            phases.append(("head", 0, head_epochs, config.lr, False))
        phases.append(("all", head_epochs, config.epochs, config.lr / 10 if pretrained else config.lr, True))
        if os.path.isdir(os.path.join(backup_dir, phases[-1][0])):
            phases = phases[-1:]  # the frozen phase finished before the interruption
        for i, (phase, start, stop, lr, backbone_trainable) in enumerate(phases):
            # One backup per phase: the saved optimizer state matches the
            # trainable weights of the phase that wrote it.
            backup = keras.callbacks.BackupAndRestore(
                os.path.join(backup_dir, phase), delete_checkpoint=False
            )
            backbone.trainable = backbone_trainable
            # Compilation happens inside the first step: without a word, tens
            # of seconds of silence and a huge first ETA look like a hang.
            _say(config, f"{'fine-tuning' if backbone_trainable and pretrained else 'training'}: "
                         "compiling the training step first (up to a minute on a CPU)...")
            model.compile(
                optimizer=keras.optimizers.AdamW(lr, weight_decay=1e-4),
                loss="sparse_categorical_crossentropy",
                metrics=["accuracy"],
            )
            model.fit(
                train_data,
                validation_data=val_data,
                batch_size=config.batch_size if config.data is None else None,
                # Arrays (the digits) on one device: equal validation
                # batches, so one compiled evaluation step.
                validation_batch_size=(
                    data_lib.even_batch_size(len(val_data[0]), config.batch_size)
                    if isinstance(val_data, tuple) and plan is None else None
                ),
                # tf.data folders are shuffled by image_dataset_from_directory,
                # the digits batches by augmented_batches.
                shuffle=False,
                initial_epoch=start,
                epochs=stop,
                callbacks=[
                    *(plan.callbacks() if plan is not None else []),  # before the checkpoint
                    backup,
                    keras.callbacks.LearningRateScheduler(_cosine(lr, start, stop)),
                    keras.callbacks.CSVLogger(paths[LOG_FILE], append=resuming or i > 0),
                    checkpoint,
                    *callbacks,
                ],
                verbose=config.verbose,
            )
    finally:
        scope.close()
        keras.config.set_dtype_policy(old_policy)
    # Every epoch is in the log and the best model is saved: the backup has
    # served its purpose.
    shutil.rmtree(backup_dir, ignore_errors=True)
    history = read_log(paths[LOG_FILE])
    plot_learning_curve(history, paths[PLOT_FILE])
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
    )
