"""DenseNet building blocks: stem, dense layer, dense block, transition, head.

Each function takes a Keras tensor and returns one, adding stock Keras layers
with deterministic names. The names are keras.applications' own
(``conv1_conv``, ``conv2_block1_1_conv``, ``pool2_conv``, ``bn``,
``predictions``), so its ImageNet files load unchanged, and they map
one-to-one onto torchvision's state-dict keys through the table
`keras_densenet.weights.checkpoints.LAYER_NAMES`.

The memory-efficient dense block (`keras_densenet.layers.efficient`) builds on these
blocks; `keras_densenet.models.builder` chooses between the two.

Example:

>>> import keras
>>> from keras_densenet.layers import blocks
>>> opts = blocks.LayerOptions()
>>> x = keras.Input((32, 32, 64))
>>> y = blocks.dense_block(x, 4, growth_rate=32, name="conv2", opts=opts)
>>> tuple(y.shape)  # 64 + 4 * 32 channels: every layer adds k feature maps
(None, 32, 32, 192)
"""

from __future__ import annotations

import dataclasses

from keras import layers

from keras_densenet.core.registry import KERAS_BN_EPSILON
from keras_densenet.layers import fused

#: Default BatchNormalization epsilon: keras.applications' value, so that its
#: ImageNet files reproduce their published accuracy.
BN_EPSILON = KERAS_BN_EPSILON
#: Default BatchNormalization momentum (Keras' default). Training from scratch
#: on small datasets wants a lower value (0.9): see the README.
BN_MOMENTUM = 0.99
#: The convolutions' initializer (He et al.), as torchvision's DenseNet.
CONV_INITIALIZER = "he_normal"


@dataclasses.dataclass(frozen=True)
class LayerOptions:
    """Settings shared by every layer of one model."""

    data_format: str = "channels_last"
    bn_epsilon: float = BN_EPSILON
    bn_momentum: float = BN_MOMENTUM
    #: `fused.BatchNormalization` (PyTorch's fused kernel on torch) instead
    #: of keras' layer: same weights and results.
    fused_bn: bool = False

    def batch_norm(self, name: str):
        """A BatchNormalization layer with these options, named `name`."""
        cls = fused.BatchNormalization if self.fused_bn else layers.BatchNormalization
        return cls(axis=self.channel_axis, epsilon=self.bn_epsilon, momentum=self.bn_momentum, name=name)

    @property
    def channel_axis(self) -> int:
        return -1 if self.data_format == "channels_last" else 1


def stage_name(stage: int) -> str:
    """Name prefix of dense block `stage` (0-based): ``conv2``, ``conv3``..."""
    return f"conv{stage + 2}"


def transition_name(stage: int) -> str:
    """Name prefix of the transition after dense block `stage`: ``pool2``..."""
    return f"pool{stage + 2}"


def bn_relu(x, name: str, opts: LayerOptions):
    """BatchNormalization then ReLU, named ``{name}_bn`` and ``{name}_relu``."""
    x = opts.batch_norm(f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def conv(x, filters: int, kernel_size: int, name: str, opts: LayerOptions, **kwargs):
    """A bias-free Conv2D (BatchNormalization follows or precedes it)."""
    return layers.Conv2D(
        filters,
        kernel_size,
        use_bias=False,
        data_format=opts.data_format,
        kernel_initializer=CONV_INITIALIZER,
        name=name,
        **kwargs,
    )(x)


def stem(x, num_init_features: int, kind: str, opts: LayerOptions):
    """The layers before the first dense block.

    ``"imagenet"``: 7x7/2 conv, BN, ReLU, 3x3/2 max-pool (stride 4 in all).
    Padding is explicit and symmetric (3, then 1) as in PyTorch, so converted
    torchvision/timm weights give the same numbers; ``padding="same"`` would
    pad asymmetrically on even inputs. Zero-padding before the max-pool equals
    PyTorch's -inf padding because its input is post-ReLU (>= 0).

    ``"cifar"``: a single 3x3 conv (stride 1), as in the paper's CIFAR nets.
    """
    if kind == "cifar":
        return conv(x, num_init_features, 3, "conv1_conv", opts, padding="same")
    x = layers.ZeroPadding2D(3, data_format=opts.data_format, name="conv1_pad")(x)
    x = conv(x, num_init_features, 7, "conv1_conv", opts, strides=2)
    x = bn_relu(x, "conv1", opts)
    x = layers.ZeroPadding2D(1, data_format=opts.data_format, name="pool1_pad")(x)
    return layers.MaxPooling2D(
        3, strides=2, data_format=opts.data_format, name="pool1"
    )(x)


def dense_layer(
    x,
    growth_rate: int,
    name: str,
    opts: LayerOptions,
    bottleneck: bool = True,
    bn_size: int = 4,
    drop_rate: float = 0.0,
):
    """One dense layer: ``H_l`` of the paper, concatenated onto its input.

    DenseNet-B (``bottleneck=True``): BN-ReLU-Conv(1x1, bn_size*k)-BN-ReLU-
    Conv(3x3, k). Plain DenseNet: BN-ReLU-Conv(3x3, k). The k new feature maps
    (after optional dropout, as torchvision) are appended to the input.
    """
    y = bn_relu(x, f"{name}_0", opts)
    if bottleneck:
        y = conv(y, bn_size * growth_rate, 1, f"{name}_1_conv", opts)
        y = bn_relu(y, f"{name}_1", opts)
    y = conv(y, growth_rate, 3, f"{name}_2_conv", opts, padding="same")
    if drop_rate > 0:
        y = layers.Dropout(drop_rate, name=f"{name}_drop")(y)
    return layers.Concatenate(axis=opts.channel_axis, name=f"{name}_concat")([x, y])


def dense_block(
    x,
    num_layers: int,
    growth_rate: int,
    name: str,
    opts: LayerOptions,
    **layer_kwargs,
):
    """`num_layers` dense layers; each sees every earlier feature map.

    The output has ``in_channels + num_layers * growth_rate`` channels.
    `layer_kwargs` go to `dense_layer` (bottleneck, bn_size, drop_rate).
    `keras_densenet.layers.efficient.dense_block` is the memory-efficient
    counterpart: same math and weights, activations recomputed in the
    backward pass.
    """
    for i in range(num_layers):
        x = dense_layer(x, growth_rate, f"{name}_block{i + 1}", opts, **layer_kwargs)
    return x


def transition_block(x, compression: float, name: str, opts: LayerOptions):
    """BN-ReLU-Conv(1x1)-AvgPool(2x2/2) between dense blocks.

    Keeps ``floor(compression * channels)`` channels (DenseNet-C when < 1).
    """
    channels = int(x.shape[opts.channel_axis] * compression)
    x = bn_relu(x, name, opts)
    x = conv(x, channels, 1, f"{name}_conv", opts)
    return layers.AveragePooling2D(
        2, strides=2, data_format=opts.data_format, name=f"{name}_pool"
    )(x)


def head(
    x,
    opts: LayerOptions,
    include_top: bool,
    pooling,
    classes: int,
    classifier_activation,
):
    """Final BN-ReLU, then the classifier or the requested global pooling."""
    x = opts.batch_norm("bn")(x)
    x = layers.Activation("relu", name="relu")(x)
    if include_top:
        x = layers.GlobalAveragePooling2D(data_format=opts.data_format, name="avg_pool")(x)
        # float32 output keeps softmax stable under mixed-precision policies.
        return layers.Dense(
            classes, activation=classifier_activation, dtype="float32", name="predictions"
        )(x)
    if pooling == "avg":
        return layers.GlobalAveragePooling2D(data_format=opts.data_format, name="avg_pool")(x)
    if pooling == "max":
        return layers.GlobalMaxPooling2D(data_format=opts.data_format, name="max_pool")(x)
    return x
