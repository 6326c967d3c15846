"""FC-DenseNet segmentation nets and a dense decoder for DenseNet backbones.

`FCDenseNet` builds the fully convolutional DenseNets of Jégou et al., "The
One Hundred Layers Tiramisu: Fully Convolutional DenseNets for Semantic
Segmentation" (CVPRW 2017); `FCDenseNet56`, `FCDenseNet67` and
`FCDenseNet103` are the paper's three nets (Table 2), read from
`keras_densenet.core.registry.FC_VARIANTS`. (`keras_densenet.models.segmentation`
turns any DenseNet of this package into a segmenter.)

The architecture, in the paper's words:

* a 3x3 convolution (48 filters) first;
* a down path of dense blocks: each layer is BN-ReLU-3x3 conv-dropout and
  adds ``k`` (the growth rate) feature maps, concatenated onto everything
  before it in the block (feature reuse). A block's output (its input plus
  its new maps) is the skip connection of its resolution, then a transition
  down (BN-ReLU-1x1 conv keeping the width-dropout-2x2 max pool) halves it;
* a bottleneck dense block, whose new feature maps only go up;
* an up path: a transition up (3x3 transposed conv, stride 2) upsamples only
  the new maps of the block below, is concatenated with the skip connection
  and feeds a dense block. Only its new maps go up, except after the last
  block, whose whole output goes to the classifier. Passing whole block
  outputs up instead would multiply the parameters by about 27 (9.4M become
  257M for FC-DenseNet103);
* a 1x1 convolution classifier with a softmax per pixel.

Every layer is a stock Keras layer with a deterministic name
(``stem_conv``, ``down1_block1_conv``, ``down1_pool``, ``up1_tconv``,
``predictions``), so ``.keras`` files load in safe mode on every backend.
``memory_efficient=True`` uses this package's registered
`keras_densenet.layers.efficient.EfficientDenseLayer` in the dense blocks.

Example:

>>> import keras_densenet
>>> model = keras_densenet.FCDenseNet((2, 2), 2, growth_rate=8, classes=5,
...                                   input_shape=(64, 64, 3))
>>> model.output_shape
(None, 64, 64, 5)
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import keras
from keras import layers

from keras_densenet.core import checks, registry
from keras_densenet.core.fc_arch import FCArchConfig
from keras_densenet.layers import blocks, efficient, initialization
from keras_densenet.models import inputs as model_inputs
from keras_densenet.models.options import BuildOptions, appending_doc

#: Kernel of the dense layers' convolutions and of the transposed convolutions.
KERNEL_SIZE = 3
#: Each transition down halves the sides; each transition up doubles them.
SCALE = 2


# --- input --------------------------------------------------------------------


def _check_input_shape(input_shape, divisor: int, data_format: str) -> tuple:
    """The validated image shape without the batch axis; ``None`` sides allowed.

    Raises:
        ValueError: naming `input_shape` if it is not 3D or a fixed side is
            not a multiple of `divisor`.
    """
    channels_first = data_format == "channels_first"
    if input_shape is None:
        return (3, None, None) if channels_first else (None, None, 3)
    shape = tuple(input_shape) if isinstance(input_shape, (list, tuple)) else input_shape
    if not (
        isinstance(shape, tuple)
        and len(shape) == 3
        and all(d is None or (checks.is_integer(d) and d > 0) for d in shape)
        and shape[0 if channels_first else 2] is not None
    ):
        layout = "(channels, height, width)" if channels_first else "(height, width, channels)"
        raise ValueError(
            f"`input_shape` must be {layout} with positive sides or None and a fixed "
            f"channel count, for data_format={data_format!r}. Received: input_shape={input_shape!r}"
        )
    sides = shape[1:] if channels_first else shape[:2]
    if any(side is not None and side % divisor for side in sides):
        raise ValueError(
            f"`input_shape` must have height and width divisible by {divisor} (each of the "
            f"{divisor.bit_length() - 1} transitions down halves them, each transition up "
            f"doubles them back), or None. Received: input_shape={shape!r}"
        )
    return shape


# --- the network's parts ------------------------------------------------------


def _dropout(x, rate: float, name: str):
    return layers.Dropout(rate, name=name)(x) if rate > 0 else x


def _join(maps: list, name: str, opts: blocks.LayerOptions):
    """The concatenation of `maps` (one map stays as it is)."""
    if len(maps) == 1:
        return maps[0]
    return layers.Concatenate(axis=opts.channel_axis, name=name)(maps)


def _dense_layer(x, growth_rate: int, dropout: float, name: str, opts: blocks.LayerOptions):
    """BN-ReLU-3x3 conv-dropout: the `growth_rate` new maps of one layer."""
    y = blocks.bn_relu(x, name, opts)
    y = blocks.conv(y, growth_rate, KERNEL_SIZE, f"{name}_conv", opts, padding="same")
    return _dropout(y, dropout, f"{name}_drop")


def _dense_block(x, num_layers: int, name: str, arch: FCArchConfig, opts: blocks.LayerOptions,
                 memory_efficient: bool):
    """A dense block. Returns ``(output, new maps)``: the input concatenated
    with every layer's new maps (named ``{name}_block{num_layers}_concat``),
    and the list of those new maps."""
    if memory_efficient:
        # Each layer takes the list of earlier maps and recomputes its concat,
        # BN, ReLU and conv in the backward pass; same weights as below.
        features = [x]
        for i in range(num_layers):
            features.append(efficient.EfficientDenseLayer(
                arch.growth_rate, bottleneck=False, drop_rate=arch.dropout, epsilon=opts.bn_epsilon,
                momentum=opts.bn_momentum, data_format=opts.data_format, name=f"{name}_block{i + 1}",
            )(features))
        output = layers.Concatenate(axis=opts.channel_axis, name=f"{name}_block{num_layers}_concat")(features)
        return output, features[1:]
    new = []
    for i in range(num_layers):
        y = _dense_layer(x, arch.growth_rate, arch.dropout, f"{name}_block{i + 1}", opts)
        new.append(y)
        x = layers.Concatenate(axis=opts.channel_axis, name=f"{name}_block{i + 1}_concat")([x, y])
    return x, new


def _transition_down(x, name: str, dropout: float, opts: blocks.LayerOptions):
    """BN-ReLU-1x1 conv (same width)-dropout-2x2 max pool."""
    y = blocks.bn_relu(x, f"{name}_td", opts)
    y = blocks.conv(y, x.shape[opts.channel_axis], 1, f"{name}_td_conv", opts)
    y = _dropout(y, dropout, f"{name}_td_drop")
    return layers.MaxPooling2D(SCALE, strides=SCALE, data_format=opts.data_format, name=f"{name}_pool")(y)


def _transition_up(new, skip, name: str, opts: blocks.LayerOptions):
    """3x3 transposed conv (stride 2) of the new maps, as many filters as
    maps, concatenated with the skip connection."""
    up = layers.Conv2DTranspose(
        new.shape[opts.channel_axis], KERNEL_SIZE, strides=SCALE, padding="same", use_bias=False,
        data_format=opts.data_format, kernel_initializer=blocks.CONV_INITIALIZER, name=f"{name}_tconv",
    )(new)
    return layers.Concatenate(axis=opts.channel_axis, name=f"{name}_skip_concat")([up, skip])


def classifier(x, classes: int, activation, opts: blocks.LayerOptions, prefix: str = ""):
    """1x1 conv to `classes` maps (``{prefix}logits``), then the activation
    per pixel (``{prefix}predictions``); float32 keeps the softmax stable
    under mixed precision."""
    x = layers.Conv2D(classes, 1, data_format=opts.data_format, dtype="float32", name=f"{prefix}logits")(x)
    if activation == "softmax":  # over the channel axis, whatever the layout
        return layers.Softmax(axis=opts.channel_axis, dtype="float32", name=f"{prefix}predictions")(x)
    return layers.Activation(activation, dtype="float32", name=f"{prefix}predictions")(x)


def _graph(x, arch: FCArchConfig, opts: BuildOptions, layer_opts: blocks.LayerOptions):
    """Stem, down path, bottleneck, up path and classifier, on `x`."""
    me = opts.memory_efficient
    x = blocks.conv(x, arch.stem_filters, KERNEL_SIZE, "stem_conv", layer_opts, padding="same")
    skips = []
    for i, num_layers in enumerate(arch.down_blocks, 1):
        x, _ = _dense_block(x, num_layers, f"down{i}", arch, layer_opts, me)
        skips.append(x)
        x = _transition_down(x, f"down{i}", arch.dropout, layer_opts)
    _, new = _dense_block(x, arch.bottleneck_layers, "bottleneck", arch, layer_opts, me)
    new = _join(new, "bottleneck_new", layer_opts)
    for i, (num_layers, skip) in enumerate(zip(arch.up_blocks, reversed(skips), strict=True), 1):
        x = _transition_up(new, skip, f"up{i}", layer_opts)
        x, new = _dense_block(x, num_layers, f"up{i}", arch, layer_opts, me)
        if i < len(arch.up_blocks):  # the last block's whole output is classified
            new = _join(new, f"up{i}_new", layer_opts)
    return classifier(x, opts.classes, opts.classifier_activation, layer_opts)


def _build(arch: FCArchConfig, opts: BuildOptions) -> keras.Model:
    """The one builder behind `FCDenseNet` and the named ones."""
    input_shape = opts.input_shape
    if opts.input_tensor is not None and input_shape is None:
        input_shape = model_inputs.input_shape_of(opts.input_tensor)
    input_shape = _check_input_shape(input_shape, arch.min_input_size, opts.data_format)
    layout = model_inputs.compute_data_format(opts.data_format)
    layer_opts = blocks.LayerOptions(layout)
    # Every weight drawn in one NumPy pass (JAX compiles each initializer per shape).
    with initialization.fast_variables():
        img_input = model_inputs.image_input(opts, input_shape)
        x = img_input
        if layout != opts.data_format:  # NCHW in, NHWC inside: see compute_data_format
            x = layers.Permute((2, 3, 1), name=model_inputs.TO_CHANNELS_LAST)(x)
        outputs = _graph(x, arch, opts, layer_opts)
        if layout != opts.data_format:
            outputs = layers.Permute((3, 1, 2), name=model_inputs.TO_CHANNELS_FIRST)(outputs)
        inputs = img_input if opts.input_tensor is None else keras.utils.get_source_inputs(opts.input_tensor)
        return keras.Model(inputs, outputs, name=opts.name)


def _options(arguments: dict) -> BuildOptions:
    """The validated non-architecture options among a builder's arguments."""
    names = ("classes", "input_shape", "input_tensor", "data_format", "memory_efficient",
             "classifier_activation", "name")
    return BuildOptions(**{key: arguments[key] for key in names})


# --- builders -----------------------------------------------------------------


def FCDenseNet(
    down_blocks: Sequence[int],
    bottleneck_layers: int,
    up_blocks: Optional[Sequence[int]] = None,
    growth_rate: int = 16,
    classes: int = registry.CAMVID_CLASSES,
    input_shape=None,
    input_tensor=None,
    data_format: Optional[str] = None,
    dropout: float = 0.2,
    memory_efficient: bool = False,
    classifier_activation="softmax",
    name: str = "fc_densenet",
    *,
    stem_filters: int = 48,
) -> keras.Model:
    """Builds any FC-DenseNet of Jégou et al. (CVPRW 2017).

    Args:
        down_blocks: dense layers per block of the down path, e.g.
            ``(4, 5, 7, 10, 12)``; each block is followed by a transition down.
        bottleneck_layers: dense layers of the block between the paths.
        up_blocks: dense layers per block of the up path, from the coarsest;
            ``None`` mirrors `down_blocks`.
        growth_rate: ``k``, feature maps added by each dense layer.
        classes: number of classes per pixel (CamVid's 11 by default).
        input_shape: optional ``(height, width, channels)`` (or channels
            first); sides may be ``None``, fixed sides must be multiples of
            ``2 ** len(down_blocks)``. Default: ``(None, None, 3)``.
        input_tensor: optional Keras tensor to use as the image input.
        data_format: ``"channels_last"``, ``"channels_first"`` or ``None``
            (Keras' configured default); the output follows it.
        dropout: dropout rate after each conv of the dense blocks and the
            transitions down, in [0, 1) (0.2 in the paper).
        memory_efficient: recompute each dense layer's concat-BN-ReLU-conv in
            the backward pass (Pleiss et al., 2017): linear instead of
            quadratic training activation memory in the block depth, same
            math and weight list. Uses this package's registered layer.
        classifier_activation: activation per pixel; ``"softmax"`` is taken
            over the channel axis of either layout, ``None`` gives logits.
        name: model name.
        stem_filters: keyword-only. Filters of the first 3x3 conv (48).

    Returns:
        A `keras.Model` from images to per-pixel class scores, shaped
        ``(batch, height, width, classes)`` (channels_last).

    Raises:
        ValueError: for any invalid argument; the message names it.

    Example:

    >>> from keras_densenet import FCDenseNet
    >>> model = FCDenseNet((2, 3), 2, growth_rate=4, classes=3,
    ...                    input_shape=(None, None, 1))
    >>> model.output_shape
    (None, None, None, 3)
    """
    arch = FCArchConfig(down_blocks=down_blocks, bottleneck_layers=bottleneck_layers, up_blocks=up_blocks,
                        growth_rate=growth_rate, stem_filters=stem_filters, dropout=dropout)
    return _build(arch, _options(locals()))


#: The arguments every named builder shares, appended to each docstring.
_NAMED_ARGS = """
    Args:
        classes: number of classes per pixel (CamVid's 11 by default).
        input_shape: optional ``(height, width, channels)`` (or channels
            first); sides may be ``None``, fixed sides must be multiples of
            32. Default: ``(None, None, 3)``.
        input_tensor: optional Keras tensor to use as the image input.
        data_format: ``"channels_last"``, ``"channels_first"`` or ``None``
            (Keras' configured default).
        dropout: dropout rate in the dense blocks and transitions down.
        memory_efficient: recompute the dense layers in the backward pass
            (see `FCDenseNet`).
        classifier_activation: activation per pixel (``None``: logits).
        name: model name.

    Returns:
        A `keras.Model`.

    Raises:
        ValueError: for any invalid argument; the message names it.
    """


_named = appending_doc(_NAMED_ARGS)


def _build_variant(variant_name: str, arguments: dict) -> keras.Model:
    """Builds the registered FC-DenseNet `variant_name` from a builder's arguments."""
    arch = registry.get_fc_variant(variant_name).arch
    arch = dataclasses.replace(arch, dropout=arguments["dropout"])  # validated again
    return _build(arch, _options(arguments))


@_named
def FCDenseNet56(
    classes: int = registry.CAMVID_CLASSES,
    input_shape=None,
    input_tensor=None,
    data_format: Optional[str] = None,
    dropout: float = 0.2,
    memory_efficient: bool = False,
    classifier_activation="softmax",
    name: str = "fc_densenet56",
) -> keras.Model:
    """Instantiates FC-DenseNet56 (Jégou et al., 2017, Table 2).

    Five down blocks and five up blocks of 4 layers, a 4-layer bottleneck,
    growth rate 12: 1.40M parameters on 11 classes (the paper rounds to 1.5M).

    Example:

    >>> import keras_densenet
    >>> keras_densenet.FCDenseNet56(input_shape=(64, 64, 3)).output_shape
    (None, 64, 64, 11)
    """
    return _build_variant("fc_densenet56", locals())


@_named
def FCDenseNet67(
    classes: int = registry.CAMVID_CLASSES,
    input_shape=None,
    input_tensor=None,
    data_format: Optional[str] = None,
    dropout: float = 0.2,
    memory_efficient: bool = False,
    classifier_activation="softmax",
    name: str = "fc_densenet67",
) -> keras.Model:
    """Instantiates FC-DenseNet67 (Jégou et al., 2017, Table 2).

    Five down blocks and five up blocks of 5 layers, a 5-layer bottleneck,
    growth rate 16: 3.50M parameters on 11 classes.

    Example:

    >>> import keras_densenet
    >>> keras_densenet.FCDenseNet67(classes=2).output_shape
    (None, None, None, 2)
    """
    return _build_variant("fc_densenet67", locals())


@_named
def FCDenseNet103(
    classes: int = registry.CAMVID_CLASSES,
    input_shape=None,
    input_tensor=None,
    data_format: Optional[str] = None,
    dropout: float = 0.2,
    memory_efficient: bool = False,
    classifier_activation="softmax",
    name: str = "fc_densenet103",
) -> keras.Model:
    """Instantiates FC-DenseNet103, the "One Hundred Layers Tiramisu"
    (Jégou et al., 2017, Table 2).

    Down blocks of 4, 5, 7, 10 and 12 layers, a 15-layer bottleneck, up
    blocks of 12, 10, 7, 5 and 4, growth rate 16: 9.42M parameters on 11
    classes.

    Example:

    >>> import keras_densenet
    >>> model = keras_densenet.FCDenseNet103(memory_efficient=True)
    >>> model.get_layer("up1_tconv").filters  # the bottleneck's 15 * 16 new maps
    240
    """
    return _build_variant("fc_densenet103", locals())
