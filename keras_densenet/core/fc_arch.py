"""`FCArchConfig`: the architecture of one FC-DenseNet, checked, and its arithmetic.

The segmentation nets of Jégou et al., "The One Hundred Layers Tiramisu:
Fully Convolutional DenseNets for Semantic Segmentation" (CVPRW 2017): what
their builder needs and what follows from it without building a model
(channels of the skip connections and up blocks, the parameter count).

Example:

>>> arch = FCArchConfig(down_blocks=(4, 5, 7, 10, 12), bottleneck_layers=15)  # FC-DenseNet103
>>> arch.up_blocks
(12, 10, 7, 5, 4)
>>> arch.param_count()  # model.count_params() with CamVid's 11 classes
9421147
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from keras_densenet.core import checks
from keras_densenet.core.arch import bn_params, check_layer_counts

#: CamVid's 11 classes, the paper's main benchmark (the builders' default).
CAMVID_CLASSES = 11


def _check_fc_arch(cfg: "FCArchConfig") -> None:
    """Raises a ValueError naming the first invalid FC-DenseNet argument."""
    check_layer_counts("down_blocks", cfg.down_blocks, "(4, 5, 7, 10, 12)")
    checks.integer("bottleneck_layers", cfg.bottleneck_layers,
                   about=" (layers of the dense block between the paths)", hint="e.g. 15")
    if cfg.up_blocks is not None:
        check_layer_counts("up_blocks", cfg.up_blocks, "(12, 10, 7, 5, 4)")
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
    >>> FCArchConfig(down_blocks=(4, 4), bottleneck_layers=4, up_blocks=(4,))
    Traceback (most recent call last):
    ...
    ValueError: `up_blocks` must have one entry per down block (2: ...). Received: up_blocks=(4,)
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
        (skip, upsampled and new maps).

        Example:

        >>> FCArchConfig(down_blocks=(4, 5, 7, 10, 12), bottleneck_layers=15).num_features
        256
        """
        return self.up_channels()[-1][1] + self.up_blocks[-1] * self.growth_rate

    def param_count(self, classes: int = CAMVID_CLASSES, in_channels: int = 3) -> int:
        """Parameters of the Keras model, BatchNormalization moving statistics
        included (``model.count_params()``), computed without building it.

        Convolutions are bias-free (BatchNormalization follows them) except
        the 1x1 classifier.

        Example:

        >>> FCArchConfig(down_blocks=(4, 5, 7, 10, 12), bottleneck_layers=15).param_count()
        9421147
        """
        def block(c_in, layers):  # BN, then a 3x3 conv adding k maps, per layer
            k = self.growth_rate
            return sum(bn_params(c) + 9 * c * k for c in range(c_in, c_in + layers * k, k))

        total, channels = 9 * in_channels * self.stem_filters, self.stem_filters
        for layers, skip in zip(self.down_blocks, self.skip_channels(), strict=True):
            total += block(channels, layers) + bn_params(skip) + skip * skip  # and the 1x1 transition
            channels = skip
        total += block(channels, self.bottleneck_layers)
        for (new, c_in), layers in zip(self.up_channels(), self.up_blocks, strict=True):
            total += 9 * new * new + block(c_in, layers)  # 3x3 transposed conv, then the block
        return total + self.num_features * classes + classes
