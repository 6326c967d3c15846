"""The one registry of DenseNet variants and their pretrained weights.

Every named model in this package is a row here: an architecture config (the
knobs of the DenseNet paper) plus the weights published for it. Builders, the
weight loader, the CLI and the test suite all read this table, so adding a
variant is adding a row (and the tests pick it up automatically).

Example:

>>> from keras_densenet.core import registry
>>> registry.get_variant("densenet121").arch.blocks
(6, 12, 24, 16)
>>> sorted(registry.get_variant("densenet121").weights)
['imagenet', 'torchvision']
>>> registry.get_variant("densenet121").num_params  # model.count_params()
8062504
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from keras_densenet.core import checks

#: BatchNormalization epsilon of keras.applications' DenseNet graphs and files.
KERAS_BN_EPSILON = 1.001e-5
#: BatchNormalization epsilon of PyTorch (torchvision, timm) checkpoints.
TORCH_BN_EPSILON = 1e-5

STEMS = ("imagenet", "cifar")


def check_bc_depth(depth) -> int:
    """Layers per dense block of a CIFAR DenseNet-BC of total depth `depth`.

    Depth counts conv and dense layers: 3 blocks of n bottleneck layers (2
    convs each), the stem conv, 2 transitions and the classifier: 6n + 4.

    Example:

    >>> check_bc_depth(100)
    16
    """
    if not checks.is_integer(depth) or depth < 10 or (depth - 4) % 6:
        raise ValueError(
            "`depth` of a DenseNet-BC must be 6n + 4 with n >= 1 layers per "
            "dense block (e.g. 40, 100, 190, 250). "
            f"Received: depth={depth!r}"
        )
    return (depth - 4) // 6


def _check_arch(cfg: "ArchConfig") -> None:
    """Raises a ValueError naming the first invalid architecture argument."""
    blocks = cfg.blocks
    if (
        isinstance(blocks, (str, bytes))
        or not hasattr(blocks, "__len__")
        or len(blocks) == 0
        or not all(checks.is_integer(b) and b > 0 for b in blocks)
    ):
        shown = tuple(blocks) if hasattr(blocks, "__len__") and not isinstance(blocks, (str, bytes)) else blocks
        raise ValueError(
            "`blocks` must be a non-empty sequence of positive integers (layers "
            "per dense block, each at least 1), e.g. (6, 12, 24, 16). "
            f"Received: blocks={shown!r}"
        )
    checks.integer("growth_rate", cfg.growth_rate, about=" (k)", hint="e.g. 12 or 32")
    checks.integer("bn_size", cfg.bn_size, about=" (bottleneck width as a multiple of k)", hint="e.g. 4")
    checks.number(
        "compression", cfg.compression, low=0, high=1, low_open=True,
        about=" (theta)", hint="1 means no compression, 0.5 is DenseNet-C",
    )
    if cfg.num_init_features is not None:
        checks.integer("num_init_features", cfg.num_init_features, hint="or None (2 * growth_rate)")
    checks.one_of("stem", cfg.stem, STEMS)
    checks.boolean("bottleneck", cfg.bottleneck)


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

    @classmethod
    def bc(cls, depth: int, growth_rate: int = 12, *, compression: float = 0.5, bn_size: int = 4) -> "ArchConfig":
        """The paper's CIFAR DenseNet-BC of total depth ``L = 6n + 4``.

        Example:

        >>> ArchConfig.bc(100, 12).blocks
        (16, 16, 16)
        """
        n = check_bc_depth(depth)
        return cls(
            blocks=(n, n, n),
            growth_rate=growth_rate,
            bn_size=bn_size,
            compression=compression,
            stem="cifar",
            default_size=32,
        )

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

    # --- arithmetic: what the builders, docs, tables and tests compute ----

    @property
    def min_input_size(self) -> int:
        """Smallest input side: the total stride, so the last block is >= 1x1.

        Example:

        >>> ArchConfig(blocks=(6, 12, 24, 16)).min_input_size
        32
        """
        stem_stride = 4 if self.stem == "imagenet" else 1
        return stem_stride * 2 ** (len(self.blocks) - 1)

    def transition_channels(self, channels: int) -> int:
        """Channels a transition keeps of `channels`: ``floor(theta * m)``."""
        return int(channels * self.compression)

    def block_channels(self) -> list:
        """``(input, output)`` channels of each dense block: a block of L
        layers turns ``c`` channels into ``c + L * k``.

        Example:

        >>> ArchConfig(blocks=(6, 12, 24, 16)).block_channels()
        [(64, 256), (128, 512), (256, 1024), (512, 1024)]
        """
        channels, out = self.num_init_features, []
        for stage, layers in enumerate(self.blocks):
            out.append((channels, channels + layers * self.growth_rate))
            channels = out[-1][1]
            if stage < len(self.blocks) - 1:
                channels = self.transition_channels(channels)
        return out

    @property
    def num_features(self) -> int:
        """Channels after the last dense block (what the classifier sees)."""
        return self.block_channels()[-1][1]

    def param_count(self, classes: Optional[int] = 1000, in_channels: int = 3) -> int:
        """Parameters of the Keras model, BatchNormalization moving statistics
        included (``model.count_params()``), computed without building it.

        Args:
            classes: classifier size; ``None`` for a model without top.
            in_channels: input image channels.

        Example:

        >>> ArchConfig(blocks=(6, 12, 24, 16)).param_count()
        8062504
        """
        def bn(c):  # gamma, beta, moving mean, moving variance
            return 4 * c

        c0, k = self.num_init_features, self.growth_rate
        total = (7 * 7 * in_channels * c0 + bn(c0)) if self.stem == "imagenet" else 3 * 3 * in_channels * c0
        channels = self.block_channels()
        for stage, (c_in, c_out) in enumerate(channels):
            for c in range(c_in, c_out, k):  # the input width of each dense layer
                if self.bottleneck:
                    width = self.bn_size * k
                    total += bn(c) + c * width + bn(width) + 9 * width * k
                else:
                    total += bn(c) + 9 * c * k
            if stage < len(channels) - 1:  # the transition's BN and 1x1 conv
                total += bn(c_out) + c_out * self.transition_channels(c_out)
        total += bn(self.num_features)
        if classes is not None:
            total += self.num_features * classes + classes
        return total


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
        description: one line for tables and help texts.
        num_params: parameters of the model with its classifier of
            `classes` (``model.count_params()``: BatchNormalization moving
            statistics included), checked against the built model by the
            tests, as torchvision checks its weights' metadata.
        classes: the classifier size `build` defaults to.
        builder: the name of this variant's builder function in
            `keras_densenet` (``None``: reach it through `build`).
        keras_application: whether `keras.applications` has a builder of
            the same name (and layer names and weights) to be checked against.
    """

    name: str
    arch: ArchConfig
    weights: dict = dataclasses.field(default_factory=dict)
    default_weights: Optional[str] = None
    description: str = ""
    num_params: Optional[int] = None
    classes: int = 1000
    builder: Optional[str] = None
    keras_application: bool = False


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
            num_params=8_062_504,
            builder="DenseNet121",
            keras_application=True,
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
            num_params=28_900_936,
            builder="DenseNet161",
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
            num_params=14_307_880,
            builder="DenseNet169",
            keras_application=True,
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
            num_params=20_242_984,
            builder="DenseNet201",
            keras_application=True,
        ),
        Variant(
            "densenet264",
            _imagenet((6, 12, 64, 48)),
            description="DenseNet-264 (k=32), paper Table 1, no published weights",
            num_params=33_736_232,
            builder="DenseNet264",
        ),
        Variant(
            "densenet_bc_100_k12",
            ArchConfig.bc(100, 12),
            description="CIFAR DenseNet-BC, L=100, k=12 (0.8M params)",
            num_params=793_150,
            classes=10,
        ),
        Variant(
            "densenet_bc_250_k24",
            ArchConfig.bc(250, 24),
            description="CIFAR DenseNet-BC, L=250, k=24 (15.3M params)",
            num_params=15_582_382,
            classes=10,
        ),
        Variant(
            "densenet_bc_190_k40",
            ArchConfig.bc(190, 40),
            description="CIFAR DenseNet-BC, L=190, k=40 (25.6M params)",
            num_params=25_881_390,
            classes=10,
        ),
    ]
}


#: keras.applications' builder names, by the variant they build.
KERAS_APPLICATIONS = {v.name: v.builder for v in VARIANTS.values() if v.keras_application}


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


# --- FC-DenseNet: the segmentation nets of Jégou et al. (CVPRW 2017) -------


def _check_layer_counts(name: str, value, example: str) -> None:
    """Raises unless `value` is a non-empty sequence of positive integers."""
    if (
        isinstance(value, (str, bytes))
        or not hasattr(value, "__len__")
        or len(value) == 0
        or not all(checks.is_integer(b) and b > 0 for b in value)
    ):
        shown = tuple(value) if hasattr(value, "__len__") and not isinstance(value, (str, bytes)) else value
        raise ValueError(
            f"`{name}` must be a non-empty sequence of positive integers (layers "
            f"per dense block, each at least 1), e.g. {example}. Received: {name}={shown!r}"
        )


def _check_fc_arch(cfg: "FCArchConfig") -> None:
    """Raises a ValueError naming the first invalid FC-DenseNet argument."""
    _check_layer_counts("down_blocks", cfg.down_blocks, "(4, 5, 7, 10, 12)")
    checks.integer("bottleneck_layers", cfg.bottleneck_layers,
                   about=" (layers of the dense block between the paths)", hint="e.g. 15")
    if cfg.up_blocks is not None:
        _check_layer_counts("up_blocks", cfg.up_blocks, "(12, 10, 7, 5, 4)")
        if len(cfg.up_blocks) != len(cfg.down_blocks):
            raise ValueError(
                f"`up_blocks` must have one entry per down block ({len(cfg.down_blocks)}: "
                "each transition up meets one skip connection), or be None (the mirror of "
                f"`down_blocks`). Received: up_blocks={tuple(cfg.up_blocks)!r}"
            )
    checks.integer("growth_rate", cfg.growth_rate, about=" (k)", hint="e.g. 12 or 16")
    checks.integer("stem_filters", cfg.stem_filters, about=" (channels of the first 3x3 conv)", hint="e.g. 48")
    checks.number("dropout", cfg.dropout, low=0, high=1, high_open=True,
                  about=" (after each conv of the dense blocks and transitions down)")


@dataclasses.dataclass(frozen=True)
class FCArchConfig:
    """Architecture of one FC-DenseNet ("The One Hundred Layers Tiramisu").

    A down path of dense blocks, each followed by a transition down; a
    bottleneck dense block; an up path of transitions up, each concatenated
    with the skip connection of its resolution and followed by a dense block.

    Attributes:
        down_blocks: dense layers in each block of the down path.
        bottleneck_layers: dense layers of the block between the two paths.
        up_blocks: dense layers in each block of the up path, from the
            coarsest; ``None`` means the mirror of `down_blocks`.
        growth_rate: ``k``, the feature maps each dense layer adds.
        stem_filters: channels of the first 3x3 convolution.
        dropout: dropout rate after every 3x3 conv of the dense blocks and
            every 1x1 conv of the transitions down.

    Example:

    >>> arch = FCArchConfig(down_blocks=(4, 5, 7, 10, 12), bottleneck_layers=15, growth_rate=16)
    >>> arch.up_blocks
    (12, 10, 7, 5, 4)
    >>> arch.min_input_size
    32
    """

    down_blocks: tuple[int, ...]
    bottleneck_layers: int
    up_blocks: Optional[tuple[int, ...]] = None
    growth_rate: int = 16
    stem_filters: int = 48
    dropout: float = 0.2

    def __post_init__(self):
        _check_fc_arch(self)
        down = tuple(int(b) for b in self.down_blocks)
        up = tuple(reversed(down)) if self.up_blocks is None else tuple(int(b) for b in self.up_blocks)
        object.__setattr__(self, "down_blocks", down)
        object.__setattr__(self, "up_blocks", up)

    # --- arithmetic: what the builders, docs and tests compute ------------

    @property
    def min_input_size(self) -> int:
        """The total stride: input sides must be multiples of it (each
        transition down halves them, each transition up doubles them back).

        Example:

        >>> FCArchConfig(down_blocks=(4,) * 5, bottleneck_layers=4, growth_rate=12).min_input_size
        32
        """
        return 2 ** len(self.down_blocks)

    def skip_channels(self) -> list:
        """Channels of each skip connection (a down block's output), from the finest.

        Example:

        >>> FCArchConfig(down_blocks=(4, 5, 7, 10, 12), bottleneck_layers=15).skip_channels()
        [112, 192, 304, 464, 656]
        """
        channels, out = self.stem_filters, []
        for layers in self.down_blocks:
            channels += layers * self.growth_rate  # transitions down keep the width
            out.append(channels)
        return out

    def up_channels(self) -> list:
        """``(upsampled, block input)`` channels of each up block, from the
        coarsest: a transition up carries only the new maps of the block below.

        Example:

        >>> FCArchConfig(down_blocks=(4, 5, 7, 10, 12), bottleneck_layers=15).up_channels()[0]
        (240, 896)
        """
        new, out = self.bottleneck_layers * self.growth_rate, []
        for skip, layers in zip(reversed(self.skip_channels()), self.up_blocks, strict=True):
            out.append((new, new + skip))
            new = layers * self.growth_rate
        return out

    @property
    def num_features(self) -> int:
        """Channels the classifier sees: the whole output of the last up block
        (skip, upsampled and new maps)."""
        return self.up_channels()[-1][1] + self.up_blocks[-1] * self.growth_rate

    def param_count(self, classes: int = 11, in_channels: int = 3) -> int:
        """Parameters of the Keras model, BatchNormalization moving statistics
        included (``model.count_params()``), computed without building it.

        Convolutions are bias-free (BatchNormalization follows them) except
        the 1x1 classifier.

        Example:

        >>> FCArchConfig(down_blocks=(4, 5, 7, 10, 12), bottleneck_layers=15).param_count()
        9421147
        """
        def bn(c):  # gamma, beta, moving mean, moving variance
            return 4 * c

        def block(c_in, layers):  # BN, then a 3x3 conv adding k maps, per layer
            k = self.growth_rate
            return sum(bn(c) + 9 * c * k for c in range(c_in, c_in + layers * k, k))

        total, channels = 9 * in_channels * self.stem_filters, self.stem_filters
        for layers, skip in zip(self.down_blocks, self.skip_channels(), strict=True):
            total += block(channels, layers) + bn(skip) + skip * skip  # and the 1x1 transition
            channels = skip
        total += block(channels, self.bottleneck_layers)
        for (new, c_in), layers in zip(self.up_channels(), self.up_blocks, strict=True):
            total += 9 * new * new + block(c_in, layers)  # 3x3 transposed conv, then the block
        return total + self.num_features * classes + classes


#: CamVid's 11 classes, the paper's main benchmark.
CAMVID_CLASSES = 11


@dataclasses.dataclass(frozen=True)
class FCVariant:
    """A named FC-DenseNet (paper, Table 2).

    Attributes:
        name: registry key, e.g. ``"fc_densenet103"``.
        arch: the architecture.
        description: one line for tables and help texts.
        num_params: ``model.count_params()`` with `classes` classes
            (BatchNormalization moving statistics included), checked against
            the built model by the tests.
        builder: the name of this variant's builder in `keras_densenet`.
        classes: the classifier size the builder defaults to (CamVid's 11).
    """

    name: str
    arch: FCArchConfig
    description: str = ""
    num_params: Optional[int] = None
    builder: Optional[str] = None
    classes: int = CAMVID_CLASSES


FC_VARIANTS: dict[str, FCVariant] = {
    v.name: v
    for v in [
        FCVariant(
            "fc_densenet56",
            FCArchConfig(down_blocks=(4,) * 5, bottleneck_layers=4, growth_rate=12),
            "FC-DenseNet56: 4 layers per dense block, k=12",
            num_params=1_396_187,
            builder="FCDenseNet56",
        ),
        FCVariant(
            "fc_densenet67",
            FCArchConfig(down_blocks=(5,) * 5, bottleneck_layers=5, growth_rate=16),
            "FC-DenseNet67: 5 layers per dense block, k=16",
            num_params=3_500_155,
            builder="FCDenseNet67",
        ),
        FCVariant(
            "fc_densenet103",
            FCArchConfig(down_blocks=(4, 5, 7, 10, 12), bottleneck_layers=15, growth_rate=16),
            "FC-DenseNet103: blocks 4-5-7-10-12 | 15 | 12-10-7-5-4, k=16",
            num_params=9_421_147,
            builder="FCDenseNet103",
        ),
    ]
}


def get_fc_variant(name: str) -> FCVariant:
    """Returns the registered FC-DenseNet called `name` (case-insensitive).

    Raises:
        ValueError: if no FC-DenseNet has that name; the message lists them.

    Example:

    >>> get_fc_variant("FC-DenseNet67").arch.growth_rate
    16
    """
    key = str(name).lower().replace("-", "_")
    if key not in FC_VARIANTS:
        raise ValueError(
            f"Unknown FC-DenseNet variant {name!r}. Registered variants: "
            f"{', '.join(FC_VARIANTS)}."
        )
    return FC_VARIANTS[key]
