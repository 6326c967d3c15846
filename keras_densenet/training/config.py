"""Training options: `TrainConfig` and its checks, without importing keras.

The ``keras-densenet`` CLI validates its arguments with `validate` before
keras (and a backend) is imported, so a bad option is answered at once.

Example:

>>> from keras_densenet.training.config import TrainConfig, validate
>>> validate(TrainConfig(epochs=0))
Traceback (most recent call last):
...
ValueError: `epochs` must be an integer >= 1. Received: epochs=0
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from keras_densenet.core import checks, registry
from keras_densenet.data import datasets as data_lib
from keras_densenet.data.datasets import CLASS_NAMES_FILE  # noqa: F401  (a file `train` writes)

#: Default BatchNormalization momentum for training from scratch. Keras'
#: 0.99 makes the moving statistics average over ~100 steps; an epoch of the
#: digits is 45 steps, so after a few epochs they still describe the
#: random-init network and validation accuracy collapses (17% measured with
#: 0.99 vs 99% training accuracy). 0.9 averages over ~10 steps.
BN_MOMENTUM = 0.9
MIXED_PRECISION = ("bfloat16", "float16")
#: Keras dtype policies: full float32 and the mixed-precision ones.
DTYPE_POLICIES = ("float32",) + tuple(f"mixed_{p}" for p in MIXED_PRECISION)
#: ImageNet mean/std in [0, 1] (imagenet_utils' "torch" mode), applied in the
#: model when fine-tuning pretrained weights.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: The files `train` writes into its output directory.
MODEL_FILE = "model.keras"
LOG_FILE = "log.csv"
PLOT_FILE = "learning_curve.png"
BACKUP_DIR = "backup"
#: The schedule of the digits quick start (DenseNet-BC-22, k=12, on the
#: digits). The digits are 8x8 scans: at 12x12 a training step costs 14% of
#: one at 32x32, and 10 epochs at a peak learning rate of 5e-3 reached
#: 99.17-100% best validation accuracy on seeds 0-4 (docs/performance.md,
#: "The digits quick start").
DEFAULT_IMAGE_SIZE = 12
DEFAULT_EPOCHS = 10
DEFAULT_LR = 5e-3
#: AdamW's decoupled weight decay, for every phase of `train` and for
#: `segment` alike.
WEIGHT_DECAY = 1e-4
#: How `distribute` scales the learning rate with the number of devices
#: (see `keras_densenet.training.distribute.scale_batch_and_lr`).
LR_SCALING = ("sqrt", "linear", "none")


@dataclasses.dataclass
class TrainConfig:
    """Everything `train` needs; the CLI options map one-to-one.

    Attributes:
        data: image folder (one sub-folder per class); ``None`` trains on
            the embedded digits.
        arch: registered variant name; ``None`` means a CIFAR DenseNet-BC of
            `depth` and `growth_rate`.
        depth: DenseNet-BC depth ``6n + 4`` when `arch` is ``None``.
        growth_rate: DenseNet-BC ``k`` when `arch` is ``None``.
        weights: pretrained weights to fine-tune from: a weight-set name of
            `arch` (e.g. ``"imagenet"``) or a weights file of the backbone
            (``include_top=False``). ``None`` trains from scratch.
        epochs: total epochs (fine-tuning: head phase included).
        head_epochs: fine-tuning only: epochs with the backbone frozen;
            ``None`` means a third of `epochs` (at least 1).
        batch_size: batch size.
        image_size: input side in pixels: at least 8 (`data.MIN_IMAGE_SIZE`)
            and the model's total stride (32 for the ImageNet variants).
        lr: peak learning rate (cosine decay to 0 over the phase); the
            unfrozen fine-tuning phase uses ``lr / 10``.
        bn_momentum: BatchNormalization momentum (see `BN_MOMENTUM`).
        memory_efficient: build with ``memory_efficient=True`` (recomputes
            concatenations in the backward pass).
        mixed_precision: ``None``, ``"bfloat16"`` or ``"float16"``.
        output: output directory (created if needed).
        seed: seed of weights init, split, shuffling and augmentation.
        validation_split: fraction of the data held out for validation.
        limit: digits only: train on this many images (quick tests).
        verbose: `model.fit` verbosity (``"auto"`` shows progress bars).
        distribute: data-parallel training on every local device with the
            active backend's engine (`keras_densenet.training.distribute`);
            `batch_size` is then per device and `lr` is scaled by
            `lr_scaling`.
        sync_bn: with `distribute` on TensorFlow: synchronized
            BatchNormalization (statistics of the global batch).
        lr_scaling: with `distribute`: ``"sqrt"``, ``"linear"`` or
            ``"none"`` (see `distribute.scale_batch_and_lr`).
    """

    data: Optional[str] = None
    arch: Optional[str] = None
    depth: int = 22
    growth_rate: int = 12
    weights: Optional[str] = None
    epochs: int = DEFAULT_EPOCHS
    head_epochs: Optional[int] = None
    batch_size: int = 32
    image_size: int = DEFAULT_IMAGE_SIZE
    lr: float = DEFAULT_LR
    bn_momentum: float = BN_MOMENTUM
    memory_efficient: bool = False
    mixed_precision: Optional[str] = None
    output: str = "densenet_run"
    seed: int = 0
    validation_split: float = 0.2
    limit: Optional[int] = None
    verbose: object = "auto"
    distribute: bool = False
    sync_bn: bool = False
    lr_scaling: str = "sqrt"


def validate(config: TrainConfig) -> None:
    """Raises a ValueError naming the first invalid option of `config`."""
    checks.integer("epochs", config.epochs)
    checks.integer("batch_size", config.batch_size)
    if config.head_epochs is not None:
        checks.integer("head_epochs", config.head_epochs)
        if config.head_epochs >= config.epochs:
            raise ValueError(
                f"`head_epochs` must be smaller than `epochs` ({config.epochs}). "
                f"Received: head_epochs={config.head_epochs}"
            )
    data_lib.check_image_size(config.image_size)
    checks.positive("lr", config.lr)
    checks.number("bn_momentum", config.bn_momentum, low=0, high=1, high_open=True)
    checks.one_of("mixed_precision", config.mixed_precision, (None,) + MIXED_PRECISION)
    if config.arch is not None:
        arch = registry.get_variant(config.arch).arch  # lists the variants when unknown
    else:
        registry.check_bc_depth(config.depth)
        checks.integer("growth_rate", config.growth_rate)
        arch = registry.ArchConfig.bc(config.depth, config.growth_rate)
    if config.image_size < arch.min_input_size:
        raise ValueError(
            f"`image_size` must be at least {arch.min_input_size} for "
            f"{config.arch or 'DenseNet-BC'} (its total stride). Received: image_size={config.image_size}"
        )
    if config.data is not None and config.limit is not None:
        raise ValueError("`limit` applies to the embedded digits only, not to `data`")
    checks.one_of("lr_scaling", config.lr_scaling, LR_SCALING)
    checks.boolean("memory_efficient", config.memory_efficient)
    checks.boolean("distribute", config.distribute)
    checks.boolean("sync_bn", config.sync_bn)
    if config.sync_bn and not config.distribute:
        raise ValueError("`sync_bn` applies with `distribute` only")


@dataclasses.dataclass(frozen=True)
class SegmentConfig:
    """Options of `train_segmentation` (``keras-densenet segment`` flags).

    Attributes:
        arch: a registered FC-DenseNet (``fc_densenet56``, ``fc_densenet67``,
            ``fc_densenet103``) or ``None``: a small FC-DenseNet of
            `layers_per_block` and `growth_rate` (5 blocks down, the
            bottleneck block, 5 up, as in the paper).
        layers_per_block, growth_rate: that small network's (``arch=None``).
        image_size: canvas side (a multiple of 32).
        train_canvases, val_canvases: canvases generated for each split.
        max_digits: digits per canvas, 1 to this many.
        epochs, batch_size, lr: the fit; `lr` is the cosine's peak.
        dropout: of every dense layer and transition down (0 for the short
            digits job; the paper used 0.2).
        seed: the data, the placement and the weights.
        output: the output directory.
        verbose: `fit`'s verbosity.
    """

    arch: Optional[str] = None
    layers_per_block: int = 2
    growth_rate: int = 12
    image_size: int = 32
    train_canvases: int = 2000
    val_canvases: int = 300
    max_digits: int = 4
    epochs: int = 10
    batch_size: int = 16
    lr: float = 3e-3
    dropout: float = 0.0
    seed: int = 0
    output: str = "segment_run"
    verbose: object = "auto"


def validate_segment(config: SegmentConfig) -> None:
    """Raises a ValueError naming the first bad option."""
    if config.arch is not None:
        registry.get_fc_variant(config.arch)
    checks.integer("layers_per_block", config.layers_per_block)
    checks.integer("growth_rate", config.growth_rate)
    checks.integer("image_size", config.image_size, minimum=32)
    if config.image_size % 32:
        raise ValueError(f"`image_size` must be a multiple of 32 (5 transitions down halve it 5 times). "
                         f"Received: image_size={config.image_size}")
    checks.integer("train_canvases", config.train_canvases, minimum=config.batch_size)
    checks.integer("val_canvases", config.val_canvases)
    checks.integer("epochs", config.epochs)
    checks.integer("batch_size", config.batch_size)
    checks.positive("lr", config.lr)
    checks.number("dropout", config.dropout, low=0, high=1, high_open=True)
