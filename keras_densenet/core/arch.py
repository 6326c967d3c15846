"""`ArchConfig`: the architecture of one DenseNet, checked, and its arithmetic.

The knobs of Huang et al., "Densely Connected Convolutional Networks" (CVPR
2017), and what follows from them without building a model: channels per
block, the smallest input, the parameter count. The builders, the registry,
the docs and the tests all compute these facts here.

Example:

>>> arch = ArchConfig(blocks=(6, 12, 24, 16))  # DenseNet-121
>>> arch.num_init_features, arch.num_features
(64, 1024)
>>> arch.param_count()  # model.count_params(), without building the model
8062504
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from keras_densenet.core import checks

STEMS = ("imagenet", "cifar")


def bn_params(channels: int) -> int:
    """Weights of a BatchNormalization over `channels` channels, as Keras counts
    them: gamma, beta, moving mean and moving variance.

    Example:

    >>> bn_params(64)
    256
    """
    return 4 * channels


def check_layer_counts(name: str, value, example: str) -> None:
    """Raises unless `value` is a non-empty sequence of positive integers.

    The one check of every "layers per dense block" argument: a DenseNet's
    `blocks`, an FC-DenseNet's `down_blocks` and `up_blocks`.

    Raises:
        ValueError: naming `name`, with `example` as a valid value.

    Example:

    >>> check_layer_counts("blocks", (6, 12, 24, 16), "(6, 12, 24, 16)")
    >>> check_layer_counts("blocks", (6, 0), "(6, 12, 24, 16)")
    Traceback (most recent call last):
    ...
    ValueError: `blocks` must be a non-empty sequence of positive integers ... Received: blocks=(6, 0)
    """
    is_sequence = hasattr(value, "__len__") and not isinstance(value, (str, bytes))
    if not is_sequence or len(value) == 0 or not all(checks.is_integer(b) and b > 0 for b in value):
        shown = tuple(value) if is_sequence else value
        raise ValueError(
            f"`{name}` must be a non-empty sequence of positive integers (layers "
            f"per dense block, each at least 1), e.g. {example}. Received: {name}={shown!r}"
        )


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
    check_layer_counts("blocks", cfg.blocks, "(6, 12, 24, 16)")
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

    Example:

    >>> ArchConfig(blocks=(4, 4), growth_rate=12).num_init_features  # 2k
    24
    >>> ArchConfig(blocks=())
    Traceback (most recent call last):
    ...
    ValueError: `blocks` must be a non-empty sequence of positive integers ... Received: blocks=()
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
        """Equality of the networks, ignoring `default_size` (a preference).

        Example:

        >>> ArchConfig((6, 12, 24, 16)).same_architecture(ArchConfig((6, 12, 24, 16), default_size=32))
        True
        """
        return dataclasses.replace(self, default_size=0) == dataclasses.replace(other, default_size=0)

    def builder_kwargs(self) -> dict:
        """The keyword arguments of `keras_densenet.DenseNet` for this config.

        Example:

        >>> sorted(ArchConfig((2, 2)).builder_kwargs())[:3]
        ['blocks', 'bn_size', 'bottleneck']
        """
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
        """Channels a transition keeps of `channels`: ``floor(theta * m)``.

        Example:

        >>> ArchConfig(blocks=(6, 12, 24, 16)).transition_channels(256)
        128
        """
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
        """Channels after the last dense block (what the classifier sees).

        Example:

        >>> ArchConfig.bc(100, 12).num_features
        342
        """
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
        >>> ArchConfig(blocks=(6, 12, 24, 16)).param_count(classes=None)
        7037504
        """
        c0, k = self.num_init_features, self.growth_rate
        total = (7 * 7 * in_channels * c0 + bn_params(c0)) if self.stem == "imagenet" else 3 * 3 * in_channels * c0
        channels = self.block_channels()
        for stage, (c_in, c_out) in enumerate(channels):
            for c in range(c_in, c_out, k):  # the input width of each dense layer
                if self.bottleneck:
                    width = self.bn_size * k
                    total += bn_params(c) + c * width + bn_params(width) + 9 * width * k
                else:
                    total += bn_params(c) + 9 * c * k
            if stage < len(channels) - 1:  # the transition's BN and 1x1 conv
                total += bn_params(c_out) + c_out * self.transition_channels(c_out)
        total += bn_params(self.num_features)
        if classes is not None:
            total += self.num_features * classes + classes
        return total
