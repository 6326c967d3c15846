"""The one registry of DenseNet variants and their pretrained weights.

Every named model in this package is a row here: an architecture config (the
knobs of the DenseNet paper) plus the weights published for it. Builders, the
weight loader, the CLI and the test suite all read this table, so adding a
variant is adding a row (and the tests pick it up automatically).

Example:

>>> from keras_densenet import registry
>>> registry.get_variant("densenet121").arch.blocks
(6, 12, 24, 16)
>>> sorted(registry.get_variant("densenet121").weights)
['imagenet', 'torchvision']
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Optional

#: BatchNormalization epsilon of keras.applications' DenseNet graphs and files.
KERAS_BN_EPSILON = 1.001e-5
#: BatchNormalization epsilon of PyTorch (torchvision, timm) checkpoints.
TORCH_BN_EPSILON = 1e-5

STEMS = ("imagenet", "cifar")


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_bc_depth(depth) -> int:
    """Layers per dense block of a CIFAR DenseNet-BC of total depth `depth`.

    Depth counts conv and dense layers: 3 blocks of n bottleneck layers (2
    convs each), the stem conv, 2 transitions and the classifier: 6n + 4.
    """
    if (
        not isinstance(depth, numbers.Integral)
        or isinstance(depth, bool)
        or depth < 10
        or (depth - 4) % 6
    ):
        raise ValueError(
            "`depth` of a DenseNet-BC must be 6n + 4 with n >= 1 layers per "
            "dense block (e.g. 40, 100, 190, 250). "
            f"Received: depth={depth!r}"
        )
    return (depth - 4) // 6


def _check_arch(cfg: "ArchConfig") -> None:
    """Raises a ValueError naming the first invalid architecture argument."""
    blocks = cfg.blocks
    if isinstance(blocks, (str, bytes)) or not hasattr(blocks, "__len__"):
        raise ValueError(
            "`blocks` must be a non-empty sequence of positive integers (layers "
            f"per dense block), e.g. (6, 12, 24, 16). Received: blocks={blocks!r}"
        )
    if len(blocks) == 0 or not all(_is_int(b) and b > 0 for b in blocks):
        raise ValueError(
            "`blocks` must be a non-empty sequence of positive integers (layers "
            "per dense block, each at least 1), e.g. (6, 12, 24, 16). "
            f"Received: blocks={tuple(blocks)!r}"
        )
    if not _is_int(cfg.growth_rate) or cfg.growth_rate <= 0:
        raise ValueError(
            "`growth_rate` (k) must be a positive integer, e.g. 12 or 32. "
            f"Received: growth_rate={cfg.growth_rate!r}"
        )
    if not _is_int(cfg.bn_size) or cfg.bn_size <= 0:
        raise ValueError(
            "`bn_size` (bottleneck width as a multiple of k) must be a positive "
            f"integer, e.g. 4. Received: bn_size={cfg.bn_size!r}"
        )
    if (
        not isinstance(cfg.compression, numbers.Real)
        or isinstance(cfg.compression, bool)
        or not 0 < cfg.compression <= 1
    ):
        raise ValueError(
            "`compression` (theta) must be a number in (0, 1]; 1 means no "
            f"compression, 0.5 is DenseNet-C. Received: compression={cfg.compression!r}"
        )
    if cfg.num_init_features is not None and (
        not _is_int(cfg.num_init_features) or cfg.num_init_features <= 0
    ):
        raise ValueError(
            "`num_init_features` must be a positive integer or None (2 * "
            f"growth_rate). Received: num_init_features={cfg.num_init_features!r}"
        )
    if cfg.stem not in STEMS:
        raise ValueError(
            f"`stem` must be one of {STEMS}. Received: stem={cfg.stem!r}"
        )
    if not isinstance(cfg.bottleneck, bool):
        raise ValueError(
            f"`bottleneck` must be True or False. Received: bottleneck={cfg.bottleneck!r}"
        )


@dataclasses.dataclass(frozen=True)
class ArchConfig:
    """Architecture of one DenseNet: every knob of Huang et al. (2017).

    Attributes:
        blocks: number of dense layers in each dense block.
        growth_rate: ``k``, the feature maps each dense layer adds.
        bottleneck: whether each dense layer has the 1x1 bottleneck conv
            (DenseNet-B) before its 3x3 conv.
        bn_size: bottleneck width as a multiple of ``k`` (4 in the paper).
        compression: ``theta`` in (0, 1]; transitions keep
            ``floor(theta * channels)`` channels (DenseNet-C when < 1).
        num_init_features: channels of the stem; ``None`` means ``2 * k``.
        stem: ``"imagenet"`` (7x7/2 conv, BN, ReLU, 3x3/2 max-pool) or
            ``"cifar"`` (a single 3x3 conv).
        default_size: the input size the variant was designed for.
    """

    blocks: tuple[int, ...]
    growth_rate: int = 32
    bottleneck: bool = True
    bn_size: int = 4
    compression: float = 0.5
    num_init_features: Optional[int] = None
    stem: str = "imagenet"
    default_size: int = 224

    def __post_init__(self):
        _check_arch(self)
        # Resolve the paper's default (2k stem channels) so that equal
        # architectures compare equal however they were spelled.
        object.__setattr__(self, "blocks", tuple(int(b) for b in self.blocks))
        if self.num_init_features is None:
            object.__setattr__(self, "num_init_features", 2 * self.growth_rate)

    def same_architecture(self, other: "ArchConfig") -> bool:
        """Equality of the networks, ignoring `default_size` (a preference)."""
        return dataclasses.replace(self, default_size=0) == dataclasses.replace(
            other, default_size=0
        )

    def builder_kwargs(self) -> dict:
        """The keyword arguments of `keras_densenet.DenseNet` for this config."""
        kwargs = dataclasses.asdict(self)
        kwargs.pop("default_size")
        return kwargs


@dataclasses.dataclass(frozen=True)
class WeightsSpec:
    """Where a set of pretrained weights comes from and how to use it.

    Attributes:
        source: who published the file: ``"keras"`` (keras.applications
            `.h5`), ``"torchvision"`` (`.pth` state dict) or ``"timm"``
            (`.safetensors` state dict). Torch formats are converted on load.
        url: download address of the file with the classifier.
        file_hash: its hash (``hash_algorithm``); for torchvision this is the
            sha256 prefix carried in the file name.
        notop_url: a separate file without the classifier, if published.
        notop_file_hash: its hash.
        hash_algorithm: ``"md5"`` or ``"sha256"``.
        bn_epsilon: the BatchNormalization epsilon the weights were trained
            with; the model is built with it so outputs match the source.
        preprocessing: `keras.applications.imagenet_utils` mode of the
            expected input (``"torch"``: scale to [0, 1], then ImageNet
            mean/std).
        input_size: the evaluation resolution of the published accuracy.
        classes: number of classes of the classifier.
        top1: published ImageNet top-1 accuracy (%).
        top5: published ImageNet top-5 accuracy (%).
    """

    source: str
    url: str
    file_hash: str
    notop_url: Optional[str] = None
    notop_file_hash: Optional[str] = None
    hash_algorithm: str = "sha256"
    bn_epsilon: float = TORCH_BN_EPSILON
    preprocessing: str = "torch"
    input_size: int = 224
    classes: int = 1000
    top1: Optional[float] = None
    top5: Optional[float] = None


@dataclasses.dataclass(frozen=True)
class Variant:
    """A named DenseNet: architecture plus its published weights.

    Attributes:
        name: registry key, e.g. ``"densenet121"``.
        arch: the architecture.
        weights: weight sets by name (``"imagenet"``, ``"torchvision"``...).
        default_weights: what the named builder loads when ``weights`` is
            not given (``None`` for variants without published weights).
        description: one line for tables and ``--help``.
    """

    name: str
    arch: ArchConfig
    weights: dict = dataclasses.field(default_factory=dict)
    default_weights: Optional[str] = None
    description: str = ""


_KERAS_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/densenet/"
_TORCHVISION_BASE = "https://download.pytorch.org/models/"


def _keras_weights(depth: int, top_hash: str, notop_hash: str, top1: float, top5: float):
    stem = f"{_KERAS_BASE}densenet{depth}_weights_tf_dim_ordering_tf_kernels"
    return WeightsSpec(
        source="keras",
        url=f"{stem}.h5",
        file_hash=top_hash,
        notop_url=f"{stem}_notop.h5",
        notop_file_hash=notop_hash,
        hash_algorithm="md5",
        bn_epsilon=KERAS_BN_EPSILON,
        top1=top1,
        top5=top5,
    )


def _torchvision_weights(file_name: str, top1: float, top5: float):
    # torchvision names its files `<arch>-<first 8 hex digits of sha256>.pth`.
    return WeightsSpec(
        source="torchvision",
        url=f"{_TORCHVISION_BASE}{file_name}",
        file_hash=file_name.rsplit("-", 1)[1].split(".")[0],
        hash_algorithm="sha256",
        bn_epsilon=TORCH_BN_EPSILON,
        top1=top1,
        top5=top5,
    )


def _imagenet(blocks, growth_rate=32, num_init_features=None):
    return ArchConfig(
        blocks=blocks, growth_rate=growth_rate, num_init_features=num_init_features
    )


def _cifar_bc(depth: int, growth_rate: int) -> ArchConfig:
    n = (depth - 4) // 6
    return ArchConfig(
        blocks=(n, n, n),
        growth_rate=growth_rate,
        stem="cifar",
        default_size=32,
    )


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in [
        Variant(
            "densenet121",
            _imagenet((6, 12, 24, 16)),
            {
                "imagenet": _keras_weights(
                    121,
                    "9d60b8095a5708f2dcce2bca79d332c7",
                    "30ee3e1110167f948a6b9946edeeb738",
                    75.0,
                    92.3,
                ),
                "torchvision": _torchvision_weights(
                    "densenet121-a639ec97.pth", 74.434, 91.972
                ),
            },
            "imagenet",
            "DenseNet-121 (k=32), ImageNet",
        ),
        Variant(
            "densenet161",
            _imagenet((6, 12, 36, 24), growth_rate=48, num_init_features=96),
            {
                "imagenet": _torchvision_weights(
                    "densenet161-8d451a50.pth", 77.138, 93.560
                ),
                "torchvision": _torchvision_weights(
                    "densenet161-8d451a50.pth", 77.138, 93.560
                ),
            },
            "imagenet",
            "DenseNet-161 (k=48), ImageNet, torchvision weights",
        ),
        Variant(
            "densenet169",
            _imagenet((6, 12, 32, 32)),
            {
                "imagenet": _keras_weights(
                    169,
                    "d699b8f76981ab1b30698df4c175e90b",
                    "b8c4d4c20dd625c148057b9ff1c1176b",
                    76.2,
                    93.2,
                ),
                "torchvision": _torchvision_weights(
                    "densenet169-b2777c0a.pth", 75.600, 92.806
                ),
            },
            "imagenet",
            "DenseNet-169 (k=32), ImageNet",
        ),
        Variant(
            "densenet201",
            _imagenet((6, 12, 48, 32)),
            {
                "imagenet": _keras_weights(
                    201,
                    "1ceb130c1ea1b78c3bf6114dbdfd8807",
                    "c13680b51ded0fb44dff2d8f86ac8bb1",
                    77.3,
                    93.6,
                ),
                "torchvision": _torchvision_weights(
                    "densenet201-c1103571.pth", 76.896, 93.370
                ),
            },
            "imagenet",
            "DenseNet-201 (k=32), ImageNet",
        ),
        Variant(
            "densenet264",
            _imagenet((6, 12, 64, 48)),
            description="DenseNet-264 (k=32), paper Table 1, no published weights",
        ),
        Variant(
            "densenet_bc_100_k12",
            _cifar_bc(100, 12),
            description="CIFAR DenseNet-BC, L=100, k=12 (0.8M params)",
        ),
        Variant(
            "densenet_bc_250_k24",
            _cifar_bc(250, 24),
            description="CIFAR DenseNet-BC, L=250, k=24 (15.3M params)",
        ),
        Variant(
            "densenet_bc_190_k40",
            _cifar_bc(190, 40),
            description="CIFAR DenseNet-BC, L=190, k=40 (25.6M params)",
        ),
    ]
}


def get_variant(name: str) -> Variant:
    """Returns the registered variant called `name` (case-insensitive).

    Raises:
        ValueError: if no variant has that name; the message lists them.
    """
    key = str(name).lower().replace("-", "_")
    if key not in VARIANTS:
        raise ValueError(
            f"Unknown DenseNet variant {name!r}. Registered variants: "
            f"{', '.join(VARIANTS)}."
        )
    return VARIANTS[key]


def find_variant(arch: ArchConfig) -> Optional[Variant]:
    """Returns the registered variant whose architecture equals `arch`.

    `default_size` is ignored, so a generic `DenseNet(...)` call that happens
    to spell out DenseNet-121 can use DenseNet-121's weights.
    """
    for variant in VARIANTS.values():
        if variant.arch.same_architecture(arch):
            return variant
    return None
