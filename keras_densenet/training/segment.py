"""Training an FC-DenseNet to segment the digits canvases: what
``keras-densenet segment`` runs, and the masks ``predict`` writes.

One `model.fit` with AdamW and a cosine decay on the embedded canvases
(`canvases.digit_canvases`), reporting pixel accuracy and mean IoU (Keras'
`MeanIoU` over the 11 classes) per epoch. The output directory gets the
best model (by validation mean IoU), ``log.csv``, ``learning_curve.png``,
``class_names.json`` and ``masks.png`` (validation canvases, predicted masks
beside the truth). An interrupted run resumes from its last completed epoch
(`BackupAndRestore`), like ``train``.

Example:

>>> from keras_densenet.training import segment
>>> result = segment.train_segmentation(segment.SegmentConfig(epochs=1, train_canvases=64,
...                                     val_canvases=16, output="/tmp/seg"))  # doctest: +SKIP
>>> 0 <= result.best_mean_iou <= 1  # doctest: +SKIP
True
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional, Sequence

import keras
import numpy as np

from keras_densenet.core import extras, registry
from keras_densenet.core.files import atomic_write, prepare_output_dir
from keras_densenet.data import canvases, progress
from keras_densenet.layers.losses import PixelCrossentropy
from keras_densenet.models import fcdensenet, saved, segmentation
from keras_densenet.training.backups import LocalBackupAndRestore, remove_backup, resume_state
from keras_densenet.training.config import (  # noqa: F401  (SegmentConfig: re-exported)
    CLASS_NAMES_FILE,
    LOG_FILE,
    MODEL_FILE,
    PLOT_FILE,
    WEIGHT_DECAY,
    SegmentConfig,
    validate_segment,
)
from keras_densenet.training.outputs import AtomicModelCheckpoint, plot_learning_curve, read_log, write_class_names
from keras_densenet.training.schedule import cosine_schedule
from keras_densenet.training.timing import CompileTimer, Stopwatch

#: The predicted masks beside the truth, for validation canvases.
MASKS_FILE = "masks.png"
#: Canvases drawn in `MASKS_FILE`.
MASK_ROWS = 6
#: The default network's depth: 5 transitions down, like the paper's (so any
#: side divisible by 32), and its stem (half the paper's 48 filters).
DIGITS_LEVELS = 5
DIGITS_STEM = 24


@dataclasses.dataclass
class SegmentResult:
    """What `train_segmentation` wrote and measured."""

    output: str
    model_path: str
    masks_path: str
    history: list
    best_mean_iou: float
    best_pixel_accuracy: float
    timings: dict
    epochs_run: int


def build_segmenter(config: SegmentConfig, classes: int) -> keras.Model:
    """The FC-DenseNet of `config`, on raw pixels in [0, 255] of any side
    divisible by 32 (a `Rescaling` layer first, as the classifiers)."""
    inputs = keras.Input((None, None, 1), name="image")
    x = keras.layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    kwargs = dict(classes=classes, input_tensor=x, dropout=config.dropout)
    if config.arch is None:
        n = config.layers_per_block
        net = fcdensenet.FCDenseNet((n,) * DIGITS_LEVELS, n, growth_rate=config.growth_rate,
                                    stem_filters=DIGITS_STEM, name="fc_densenet_digits", **kwargs)
    else:
        builder = getattr(fcdensenet, registry.get_fc_variant(config.arch).builder)
        net = builder(**kwargs)
    return keras.Model(inputs, net.output, name=net.name)


def compile_segmenter(model: keras.Model, lr: float) -> None:
    """AdamW, per-pixel sparse cross-entropy and pixel accuracy (mean IoU is
    `ValidationMetrics`' job)."""
    model.compile(
        optimizer=keras.optimizers.AdamW(lr, weight_decay=WEIGHT_DECAY),
        loss=PixelCrossentropy(),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="pixel_accuracy")],
    )


def confusion(truth: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """``(classes, classes)`` pixel counts, rows the true class."""
    return np.bincount(classes * truth.ravel() + predicted.ravel(), minlength=classes * classes).reshape(
        classes, classes)


def mean_iou(matrix: np.ndarray) -> float:
    """Mean over classes of intersection / union, the classes present in the
    truth or the prediction only (Keras' `MeanIoU` convention).

    Example:

    >>> mean_iou(np.array([[3, 1], [0, 4]]))  # IoU 3/4 and 4/5
    0.775
    """
    intersection = np.diag(matrix).astype("float64")
    union = matrix.sum(0) + matrix.sum(1) - intersection
    present = union > 0
    return float(np.mean(intersection[present] / union[present]))


class ValidationMetrics(keras.callbacks.Callback):
    """Per epoch, one `predict` over the validation canvases gives
    ``val_loss``, ``val_pixel_accuracy`` and ``val_mean_iou`` (NumPy), added
    to the epoch's logs before the logger and checkpoint read them.

    Keras' `MeanIoU` metric would do the same inside every training step:
    its confusion matrix, a scatter over every pixel, cost about as much as
    the step itself on a CPU.
    """

    def __init__(self, x_val: np.ndarray, y_val: np.ndarray, classes: int, batch_size: int, keep: int = MASK_ROWS):
        super().__init__()
        self.x_val, self.y_val, self.classes, self.batch_size = x_val, y_val, classes, batch_size
        self.keep = keep
        self.best_iou = -1.0
        #: Predicted labels of the first `keep` canvases at the best epoch
        #: (what `masks.png` shows, without another pass).
        self.best_predicted = None

    def on_epoch_end(self, epoch, logs=None):
        probs = keras.ops.convert_to_numpy(self.model.predict(self.x_val, batch_size=self.batch_size, verbose=0))
        predicted = np.argmax(probs, axis=-1)
        picked = np.take_along_axis(probs, self.y_val[..., None], axis=-1)
        logs = logs if logs is not None else {}
        logs["val_loss"] = float(-np.mean(np.log(np.clip(picked, 1e-7, 1.0))))
        logs["val_pixel_accuracy"] = float(np.mean(predicted == self.y_val))
        logs["val_mean_iou"] = mean_iou(confusion(self.y_val, predicted, self.classes))
        if logs["val_mean_iou"] > self.best_iou:
            self.best_iou, self.best_predicted = logs["val_mean_iou"], predicted[: self.keep]


def _callbacks(config: SegmentConfig, paths: dict, resume, timer, validation) -> list:
    checkpoint = AtomicModelCheckpoint(
        paths[MODEL_FILE], monitor="val_mean_iou", mode="max", save_best_only=True,
        initial_value_threshold=max((r.get("val_mean_iou", -1.0) for r in resume.previous), default=None),
    )
    return [
        timer,
        validation,  # before the logger and the checkpoint, which read its logs
        keras.callbacks.LearningRateScheduler(cosine_schedule(config.lr, 0, config.epochs)),
        keras.callbacks.CSVLogger(paths[LOG_FILE], append=resume.resuming),
        checkpoint,
        # Last, saved atomically: a backup of epoch N means its row and model are written.
        LocalBackupAndRestore(resume.backup_dir, delete_checkpoint=False),
    ]


def _say(config: SegmentConfig, message: str) -> None:
    if config.verbose not in (0, False):
        print(message, flush=True)


def train_segmentation(config: Optional[SegmentConfig] = None, callbacks: Sequence = ()) -> SegmentResult:
    """Trains an FC-DenseNet on the digits canvases; see the module text.

    Args:
        config: the options (``None``: `SegmentConfig`'s defaults).
        callbacks: extra Keras callbacks for `model.fit`.

    Raises:
        ValueError: an invalid option; the message names it.
    """
    config = SegmentConfig() if config is None else config
    validate_segment(config)
    watch = Stopwatch()
    output = prepare_output_dir(config.output)
    paths = {n: os.path.join(output, n) for n in (MODEL_FILE, LOG_FILE, PLOT_FILE, CLASS_NAMES_FILE, MASKS_FILE)}
    ds = canvases.digit_canvases(config.train_canvases, config.val_canvases, config.image_size,
                                 config.max_digits, config.seed)
    classes = len(ds.class_names)
    canvases.check_label_maps(ds.x_train, ds.y_train, classes, "y_train")
    watch.lap("data")
    write_class_names(paths[CLASS_NAMES_FILE], ds.class_names)
    resume = resume_state(output, paths[LOG_FILE])
    keras.utils.set_random_seed(config.seed)
    model = build_segmenter(config, classes)
    _say(config, f"model: {model.name}, {model.count_params():,} parameters, {keras.backend.backend()} backend; "
                 f"{len(ds.x_train)} training and {len(ds.x_val)} validation canvases of {config.image_size}x"
                 f"{config.image_size}")
    if resume.previous:
        _say(config, f"resuming from epoch {len(resume.previous) + 1} of {config.epochs}")
    watch.lap("model")
    compile_segmenter(model, config.lr)
    _say(config, "training: compiling the training step first (up to a minute on a CPU)...")
    timer = CompileTimer()
    validation = ValidationMetrics(ds.x_val, ds.y_val, classes, config.batch_size)
    # After a resume, only an epoch better than the saved model replaces its masks.
    validation.best_iou = max((r.get("val_mean_iou", -1.0) for r in resume.previous), default=-1.0)
    # Not on a terminal (a log, CI): one plain line per epoch, no bar.
    verbose, lines = progress.fit_output(config.verbose, epochs=config.epochs)
    model.fit(ds.x_train, ds.y_train, batch_size=config.batch_size, epochs=config.epochs, shuffle=True,
              verbose=verbose, callbacks=[*_callbacks(config, paths, resume, timer, validation), *callbacks, *lines])
    watch.move(min(timer.seconds, watch.lap("epochs")), "epochs", "compilation")
    remove_backup(resume.backup_dir)
    history = read_log(paths[LOG_FILE])
    plot_learning_curve(history, paths[PLOT_FILE], metrics=("loss", "pixel_accuracy", "mean_iou"))
    if validation.best_predicted is None:  # the saved model's epoch ran before a resume
        best_model = saved.load_keras_model(paths[MODEL_FILE])
        validation.best_predicted = segmentation.predict_labels(best_model, ds.x_val[:MASK_ROWS])
    draw_masks(ds.x_val[:MASK_ROWS], ds.y_val[:MASK_ROWS], validation.best_predicted, paths[MASKS_FILE])
    watch.lap("writing")
    best_row = max(history, key=lambda r: r.get("val_mean_iou", 0.0))
    return SegmentResult(output, paths[MODEL_FILE], paths[MASKS_FILE], history, best_row.get("val_mean_iou", 0.0),
                         best_row.get("val_pixel_accuracy", 0.0), watch.timings(), timer.epochs)


def draw_masks(images: np.ndarray, truth: np.ndarray, predicted: np.ndarray, path: str) -> str:
    """A PNG with one row per canvas: the image, the true mask, the
    predicted mask (written atomically)."""
    pil = extras.import_from("train", "PIL.Image", "drawing the masks")
    rows = []
    for image, t, p in zip(images, truth, predicted, strict=True):
        gray = np.repeat(np.clip(image, 0, 255).astype("uint8"), 3, axis=-1)
        gap = np.full((gray.shape[0], 4, 3), 255, "uint8")
        rows.append(np.concatenate([gray, gap, canvases.colorize(t), gap, canvases.colorize(p)], axis=1))
    sheet = np.concatenate([np.concatenate([r, np.full((4, r.shape[1], 3), 255, "uint8")]) for r in rows])
    picture = pil.fromarray(sheet).resize((sheet.shape[1] * 3, sheet.shape[0] * 3), pil.NEAREST)
    atomic_write(path, lambda tmp: picture.save(tmp, format="PNG"))
    return path
