"""DenseNet model builders (Keras functional API).

`DenseNet` is the generic builder with every knob of the paper;
`DenseNet121` ... `DenseNet264` and `DenseNetBC` are thin wrappers that read
their architecture from the registry. All return a plain `keras.Model` made of
stock layers, so models save to ``.keras`` and load with safe mode on.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Optional, Sequence

import keras

from keras_densenet.core import checks, internals, registry
from keras_densenet.core.registry import ArchConfig, Variant
from keras_densenet.layers import blocks, efficient, initialization
from keras_densenet.layers.blocks import BN_MOMENTUM
from keras_densenet.weights import loading as weights_lib

POOLINGS = (None, "avg", "max")
DATA_FORMATS = ("channels_last", "channels_first")
#: Names of the transposes around a channels_first model computed in NHWC.
TO_CHANNELS_LAST = "to_channels_last"
TO_CHANNELS_FIRST = "to_channels_first"


def compute_data_format(data_format: str) -> str:
    """The layout the layers compute in, for a model whose inputs are `data_format`.

    TensorFlow's CPU kernels cannot run channels_first (NCHW) convolutions
    everywhere: without oneDNN (the default on CPUs without AVX-512, or with
    ``TF_ENABLE_ONEDNN_OPTS=0``) Conv2D refuses NCHW, and its backward pass
    refuses it on every CPU. So on TensorFlow without a GPU, a channels_first
    model keeps its NCHW inputs and outputs but computes in NHWC, transposing
    once at the input (and once at a 4D output). The same weights fit both
    layouts, and the outputs are identical. Everywhere else: `data_format`.

    Example:

    >>> compute_data_format("channels_last")
    'channels_last'
    """
    if data_format == "channels_first" and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if not tf.config.list_physical_devices("GPU"):
            return "channels_last"
    return data_format


@dataclasses.dataclass(frozen=True)
class BuildOptions:
    """Every builder argument besides the architecture, validated once.

    The public builders keep explicit signatures (keras.applications
    parity); each gathers its arguments into one `BuildOptions`, which
    checks them all on creation and resolves ``data_format=None`` to Keras'
    configured default. The attributes are the builders' arguments of the
    same names (see `DenseNet`).

    Example:

    >>> BuildOptions(pooling="avg", include_top=False).pooling
    'avg'
    >>> BuildOptions(drop_rate=1.0)
    Traceback (most recent call last):
    ...
    ValueError: `drop_rate` (dropout after each dense layer) must be a number in [0, 1). Received: drop_rate=1.0
    """

    include_top: bool = True
    weights: object = None
    input_tensor: object = None
    input_shape: Optional[tuple] = None
    pooling: Optional[str] = None
    classes: int = 1000
    classifier_activation: object = "softmax"
    name: str = "densenet"
    data_format: Optional[str] = None
    drop_rate: float = 0.0
    bn_epsilon: Optional[float] = None
    bn_momentum: float = BN_MOMENTUM
    memory_efficient: bool = False
    fused_bn: bool = False

    def __post_init__(self):
        checks.boolean("include_top", self.include_top)
        checks.boolean("memory_efficient", self.memory_efficient)
        checks.boolean("fused_bn", self.fused_bn)
        checks.number("drop_rate", self.drop_rate, low=0, high=1, high_open=True,
                      about=" (dropout after each dense layer)")
        checks.one_of("pooling", self.pooling, POOLINGS)
        if self.include_top:
            checks.integer("classes", self.classes)
        if self.data_format is None:
            object.__setattr__(self, "data_format", keras.config.image_data_format())
        checks.one_of("data_format", self.data_format, DATA_FORMATS)
        if self.bn_epsilon is not None:
            checks.positive("bn_epsilon", self.bn_epsilon)
        checks.number("bn_momentum", self.bn_momentum, low=0, high=1, high_open=True,
                      about=" (Keras convention: weight of the old moving statistics)")

    @classmethod
    def of(cls, arguments: dict) -> "BuildOptions":
        """The options among a builder's arguments (its ``locals()``)."""
        return cls(**{key: arguments[key] for key in OPTION_NAMES})

    def replace(self, **changes) -> "BuildOptions":
        """A copy with `changes`, validated again."""
        return dataclasses.replace(self, **changes)


#: The names of `BuildOptions`: every builder's keyword options.
OPTION_NAMES = tuple(field.name for field in dataclasses.fields(BuildOptions))


def input_shape_of(input_tensor) -> Optional[tuple]:
    shape = getattr(input_tensor, "shape", None)
    if shape is None or len(shape) != 4:
        raise ValueError(
            "`input_tensor` must be a 4D image tensor (batch, height, width, "
            f"channels) or (batch, channels, height, width). Received shape: {shape}"
        )
    return tuple(shape[1:])


def _rebuild_as_saved(arch: ArchConfig, variant: Optional[Variant], opts: BuildOptions,
                      saved_memory_efficient: bool) -> keras.Model:
    """Loads a weights file into the graph kind it was saved from, then
    copies the (identical) weight list into the requested kind."""
    input_shape = opts.input_shape
    if opts.input_tensor is not None and input_shape is None:
        input_shape = input_shape_of(opts.input_tensor)
    donor = _build(arch, variant, opts.replace(
        input_tensor=None, input_shape=input_shape, memory_efficient=saved_memory_efficient))
    # The epsilon the weights were trained with (1e-5 for torch sources).
    model = _build(arch, variant, opts.replace(
        weights=None, input_shape=input_shape, bn_epsilon=donor.get_layer("bn").epsilon))
    model.set_weights(donor.get_weights())
    return model


def image_input(opts: BuildOptions, input_shape: tuple):
    """The model's image input: a new `Input`, or the given `input_tensor`."""
    input_tensor = opts.input_tensor
    if input_tensor is None:
        return keras.layers.Input(shape=input_shape, name="input_layer")
    if keras.backend.is_keras_tensor(input_tensor):
        return input_tensor
    return keras.layers.Input(tensor=input_tensor, shape=input_shape)


def _graph(x, arch: ArchConfig, opts: BuildOptions, bn_epsilon: float):
    """Stem, dense blocks with transitions between them, and head, on `x`."""
    layout = compute_data_format(opts.data_format)
    if layout != opts.data_format:  # NCHW in, NHWC inside: see compute_data_format
        x = keras.layers.Permute((2, 3, 1), name=TO_CHANNELS_LAST)(x)
    layer_opts = blocks.LayerOptions(layout, bn_epsilon, opts.bn_momentum, opts.fused_bn)
    # The standard dense block, or its memory-efficient twin (same weights).
    dense_block = efficient.dense_block if opts.memory_efficient else blocks.dense_block
    x = blocks.stem(x, arch.num_init_features, arch.stem, layer_opts)
    for stage, num_layers in enumerate(arch.blocks):
        x = dense_block(x, num_layers, arch.growth_rate, blocks.stage_name(stage), layer_opts,
                        bottleneck=arch.bottleneck, bn_size=arch.bn_size, drop_rate=opts.drop_rate)
        if stage < len(arch.blocks) - 1:
            x = blocks.transition_block(x, arch.compression, blocks.transition_name(stage), layer_opts)
    x = blocks.head(x, layer_opts, opts.include_top, opts.pooling, opts.classes, opts.classifier_activation)
    if layout != opts.data_format and len(x.shape) == 4:
        x = keras.layers.Permute((3, 1, 2), name=TO_CHANNELS_FIRST)(x)
    return x


def _build(arch: ArchConfig, variant: Optional[Variant], opts: BuildOptions) -> keras.Model:
    """The one builder behind every public one: checks, graph, weights."""
    # Weight files address layers by class and position, so a file fits only
    # the graph kind it came from (pretrained sets and other files: the
    # standard one): load it into that kind, then copy the identical list.
    saved_me = efficient.saved_memory_efficient(opts.weights)
    if opts.weights is not None and saved_me is None:
        saved_me = False
    if saved_me is not None and saved_me != opts.memory_efficient:
        return _rebuild_as_saved(arch, variant, opts, saved_me)
    if variant is None:
        variant = registry.find_variant(arch)
    spec = weights_lib.resolve(opts.weights, variant, opts.include_top, opts.classes)
    if spec is not None:
        internals.validate_activation(opts.classifier_activation, opts.weights)
    bn_epsilon = opts.bn_epsilon
    if bn_epsilon is None:
        bn_epsilon = weights_lib.bn_epsilon_for(opts.weights, spec)
    input_shape = opts.input_shape
    if opts.input_tensor is not None and input_shape is None:
        input_shape = input_shape_of(opts.input_tensor)
    # keras' own checks: static shape with the top, 3 channels for pretrained
    # weights, minimum size; its messages name `input_shape`.
    input_shape = internals.obtain_input_shape(
        input_shape=input_shape,
        default_size=spec.input_size if spec is not None else arch.default_size,
        min_size=arch.min_input_size,
        data_format=opts.data_format,
        require_flatten=opts.include_top,
        weights="imagenet" if spec is not None else None,
    )
    # Every weight drawn in one NumPy pass (JAX compiles each initializer per shape).
    with initialization.fast_variables():
        img_input = image_input(opts, input_shape)
        outputs = _graph(img_input, arch, opts, bn_epsilon)
        if opts.input_tensor is not None:
            inputs = keras.utils.get_source_inputs(opts.input_tensor)
        else:
            inputs = img_input
        model = keras.Model(inputs, outputs, name=opts.name)
    weights_lib.load(model, opts.weights, spec, opts.include_top, variant)
    return model


def DenseNet(
    blocks: Sequence[int],
    growth_rate: int = 32,
    *,
    bottleneck: bool = True,
    bn_size: int = 4,
    compression: float = 0.5,
    num_init_features: Optional[int] = None,
    drop_rate: float = 0.0,
    stem: str = "imagenet",
    bn_epsilon: Optional[float] = None,
    bn_momentum: float = BN_MOMENTUM,
    include_top: bool = True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling: Optional[str] = None,
    classes: int = 1000,
    classifier_activation="softmax",
    data_format: Optional[str] = None,
    name: str = "densenet",
    memory_efficient: bool = False,
    fused_bn: bool = False,
) -> keras.Model:
    """Builds any DenseNet of Huang et al. (CVPR 2017).

    Args:
        blocks: dense layers per dense block, e.g. ``(6, 12, 24, 16)``.
        growth_rate: ``k``, feature maps added by each dense layer.
        bottleneck: 1x1 bottleneck conv before each 3x3 conv (DenseNet-B).
        bn_size: bottleneck width as a multiple of ``k``.
        compression: ``theta`` in (0, 1]: transitions keep
            ``floor(theta * channels)`` channels (DenseNet-C when < 1).
        num_init_features: stem channels; ``None`` means ``2 * growth_rate``.
        drop_rate: dropout rate after each dense layer, in [0, 1).
        stem: ``"imagenet"`` (7x7/2 conv + 3x3/2 max-pool) or ``"cifar"``
            (one 3x3 conv).
        bn_epsilon: BatchNormalization epsilon; ``None`` picks the one the
            requested weights were trained with (keras' 1.001e-5 otherwise).
        bn_momentum: BatchNormalization momentum (Keras convention). Use 0.9
            when training from scratch on a small dataset.
        include_top: whether to add global average pooling and the classifier.
        weights: ``None``, a weight-set name of the matching registered
            variant (e.g. ``"imagenet"`` when the arguments spell DenseNet-121),
            or a weights file path.
        input_tensor: optional Keras tensor to use as the image input.
        input_shape: optional input shape, e.g. ``(224, 224, 3)``; may have
            ``None`` spatial sizes when ``include_top=False``.
        pooling: ``None``, ``"avg"`` or ``"max"`` global pooling when
            ``include_top=False``.
        classes: classifier size when ``include_top=True``.
        classifier_activation: activation of the classifier (``None`` gives
            logits).
        data_format: ``"channels_last"``, ``"channels_first"`` or ``None``
            (Keras' configured default).
        name: model name.
        memory_efficient: recompute each dense layer's concat-BN-ReLU-conv
            chain in the backward pass (Pleiss et al., 2017): training
            activation memory grows linearly instead of quadratically with
            depth, for some extra compute. Same math and weight list as the
            standard graph; see the README.
        fused_bn: BatchNormalization through PyTorch's fused kernel on the
            torch backend (`keras_densenet.layers.fused`); same weights, names and
            results, no effect on other backends.

    Returns:
        A `keras.Model`.

    Raises:
        ValueError: for any invalid argument; the message names it.

    Example:

    >>> from keras_densenet import DenseNet
    >>> # The d2l-book DenseNet: 4 blocks of 4 layers, k=32, no bottleneck.
    >>> model = DenseNet((4, 4, 4, 4), 32, bottleneck=False, compression=0.5,
    ...                  input_shape=(96, 96, 1), classes=10)
    >>> model.output_shape
    (None, 10)
    """
    arch = ArchConfig(
        blocks=blocks,
        growth_rate=growth_rate,
        bottleneck=bottleneck,
        bn_size=bn_size,
        compression=compression,
        num_init_features=num_init_features,
        stem=stem,
        default_size=224 if stem == "imagenet" else 32,
    )
    return _build(arch, None, BuildOptions.of(locals()))


#: The arguments every named builder shares, appended to each docstring.
_NAMED_ARGS = """
    Args:
        include_top: whether to include the classifier (global average
            pooling and a `Dense` layer of `classes`).
        weights: ``None`` (random initialisation), a weight-set name of the
            variant (see above), or the path to a weights file.
        input_tensor: optional Keras tensor to use as the image input.
        input_shape: optional input shape when ``include_top=False``;
            spatial sizes may be ``None``.
        pooling: ``None``, ``"avg"`` or ``"max"`` global pooling when
            ``include_top=False``.
        classes: classifier size (1000 with pretrained weights and the top).
        classifier_activation: activation of the classifier; ``None`` gives
            logits. Pretrained weights with the top need ``"softmax"`` or
            ``None``.
        name: model name.
        data_format: keyword-only. ``"channels_last"``, ``"channels_first"``
            or ``None`` (Keras' configured default).
        drop_rate: keyword-only. Dropout after each dense layer, in [0, 1).
        bn_epsilon: keyword-only. ``None`` picks the epsilon the weights were
            trained with.
        bn_momentum: keyword-only. BatchNormalization momentum (Keras
            convention).
        memory_efficient: keyword-only. Recompute activations in the backward
            pass (Pleiss et al., 2017): linear instead of quadratic training
            activation memory, same math and weights (see `DenseNet`).
        fused_bn: keyword-only. PyTorch's fused BatchNormalization kernel on
            the torch backend; same weights and results (see `DenseNet`).

    Returns:
        A `keras.Model`.

    Raises:
        ValueError: for any invalid argument; the message names it.
    """


def appending_doc(text: str):
    """A decorator that appends `text` (the argument documentation the named
    builders share) to a builder's docstring."""

    def decorate(function):
        function.__doc__ = function.__doc__.rstrip() + "\n" + text
        return function

    return decorate


_named = appending_doc(_NAMED_ARGS)


def _build_variant(variant_name: str, arguments: dict) -> keras.Model:
    """Builds the registered `variant_name` from a named builder's arguments."""
    variant = registry.get_variant(variant_name)
    return _build(variant.arch, variant, BuildOptions.of(arguments))


@_named
def DenseNet121(
    include_top: bool = True,
    weights="imagenet",
    input_tensor=None,
    input_shape=None,
    pooling: Optional[str] = None,
    classes: int = 1000,
    classifier_activation="softmax",
    name: str = "densenet121",
    *,
    data_format: Optional[str] = None,
    drop_rate: float = 0.0,
    bn_epsilon: Optional[float] = None,
    bn_momentum: float = BN_MOMENTUM,
    memory_efficient: bool = False,
    fused_bn: bool = False,
) -> keras.Model:
    """Instantiates the DenseNet-121 architecture.

    Reference: Huang et al., "Densely Connected Convolutional Networks"
    (CVPR 2017). Same signature, defaults and layer names as
    `keras.applications.DenseNet121`, so its weights load unchanged.

    Architecture: dense blocks (6, 12, 24, 16), growth rate 32, 64 initial
    features, compression 0.5; 1024 features before the classifier.
    Weights: ``"imagenet"`` (keras.applications' file, the default) or
    ``"torchvision"`` (converted from torchvision's checkpoint).

    Example:

    >>> import keras_densenet
    >>> backbone = keras_densenet.DenseNet121(include_top=False, weights=None,
    ...                                       input_shape=(64, 64, 3), pooling="avg")
    >>> backbone.output_shape
    (None, 1024)
    """
    return _build_variant("densenet121", locals())


@_named
def DenseNet161(
    include_top: bool = True,
    weights="imagenet",
    input_tensor=None,
    input_shape=None,
    pooling: Optional[str] = None,
    classes: int = 1000,
    classifier_activation="softmax",
    name: str = "densenet161",
    *,
    data_format: Optional[str] = None,
    drop_rate: float = 0.0,
    bn_epsilon: Optional[float] = None,
    bn_momentum: float = BN_MOMENTUM,
    memory_efficient: bool = False,
    fused_bn: bool = False,
) -> keras.Model:
    """Instantiates the DenseNet-161 architecture (torchvision's; not in
    keras.applications).

    Architecture: dense blocks (6, 12, 36, 24), growth rate 48, 96 initial
    features, compression 0.5; 2208 features before the classifier.
    Weights: ``"imagenet"`` and ``"torchvision"`` are both torchvision's
    checkpoint, converted (BatchNormalization epsilon 1e-5).

    Example:

    >>> import keras_densenet
    >>> backbone = keras_densenet.DenseNet161(include_top=False, weights=None,
    ...                                       input_shape=(64, 64, 3), pooling="avg")
    >>> backbone.output_shape
    (None, 2208)
    """
    return _build_variant("densenet161", locals())


@_named
def DenseNet169(
    include_top: bool = True,
    weights="imagenet",
    input_tensor=None,
    input_shape=None,
    pooling: Optional[str] = None,
    classes: int = 1000,
    classifier_activation="softmax",
    name: str = "densenet169",
    *,
    data_format: Optional[str] = None,
    drop_rate: float = 0.0,
    bn_epsilon: Optional[float] = None,
    bn_momentum: float = BN_MOMENTUM,
    memory_efficient: bool = False,
    fused_bn: bool = False,
) -> keras.Model:
    """Instantiates the DenseNet-169 architecture.

    Same signature, defaults and layer names as
    `keras.applications.DenseNet169`, so its weights load unchanged.

    Architecture: dense blocks (6, 12, 32, 32), growth rate 32, 64 initial
    features, compression 0.5; 1664 features before the classifier.
    Weights: ``"imagenet"`` (keras.applications' file, the default) or
    ``"torchvision"``.

    Example:

    >>> import keras_densenet
    >>> backbone = keras_densenet.DenseNet169(include_top=False, weights=None,
    ...                                       input_shape=(64, 64, 3), pooling="avg")
    >>> backbone.output_shape
    (None, 1664)
    """
    return _build_variant("densenet169", locals())


@_named
def DenseNet201(
    include_top: bool = True,
    weights="imagenet",
    input_tensor=None,
    input_shape=None,
    pooling: Optional[str] = None,
    classes: int = 1000,
    classifier_activation="softmax",
    name: str = "densenet201",
    *,
    data_format: Optional[str] = None,
    drop_rate: float = 0.0,
    bn_epsilon: Optional[float] = None,
    bn_momentum: float = BN_MOMENTUM,
    memory_efficient: bool = False,
    fused_bn: bool = False,
) -> keras.Model:
    """Instantiates the DenseNet-201 architecture.

    Same signature, defaults and layer names as
    `keras.applications.DenseNet201`, so its weights load unchanged.

    Architecture: dense blocks (6, 12, 48, 32), growth rate 32, 64 initial
    features, compression 0.5; 1920 features before the classifier.
    Weights: ``"imagenet"`` (keras.applications' file, the default) or
    ``"torchvision"``.

    Example:

    >>> import keras_densenet
    >>> backbone = keras_densenet.DenseNet201(include_top=False, weights=None,
    ...                                       input_shape=(64, 64, 3), pooling="avg")
    >>> backbone.output_shape
    (None, 1920)
    """
    return _build_variant("densenet201", locals())


@_named
def DenseNet264(
    include_top: bool = True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling: Optional[str] = None,
    classes: int = 1000,
    classifier_activation="softmax",
    name: str = "densenet264",
    *,
    data_format: Optional[str] = None,
    drop_rate: float = 0.0,
    bn_epsilon: Optional[float] = None,
    bn_momentum: float = BN_MOMENTUM,
    memory_efficient: bool = False,
    fused_bn: bool = False,
) -> keras.Model:
    """Instantiates the DenseNet-264 architecture (the paper's Table 1).

    Architecture: dense blocks (6, 12, 64, 48), growth rate 32, 64 initial
    features, compression 0.5; 2688 features before the classifier.
    Weights: none are published, so the default is ``None``; a weights
    file path works.

    Example:

    >>> import keras_densenet
    >>> backbone = keras_densenet.DenseNet264(include_top=False,
    ...                                       input_shape=(64, 64, 3), pooling="avg")
    >>> backbone.output_shape
    (None, 2688)
    """
    return _build_variant("densenet264", locals())


def DenseNetBC(
    depth: int = 100,
    growth_rate: int = 12,
    include_top: bool = True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling: Optional[str] = None,
    classes: int = 10,
    classifier_activation="softmax",
    name: Optional[str] = None,
    *,
    compression: float = 0.5,
    bn_size: int = 4,
    drop_rate: float = 0.0,
    data_format: Optional[str] = None,
    bn_epsilon: Optional[float] = None,
    bn_momentum: float = BN_MOMENTUM,
    memory_efficient: bool = False,
    fused_bn: bool = False,
) -> keras.Model:
    """The paper's CIFAR DenseNet-BC: 3 dense blocks of ``(depth - 4) / 6``
    bottleneck layers, ``2k`` initial features from one 3x3 conv, and
    compression 0.5.

    Paper sizes (10 classes): ``DenseNetBC(100, 12)`` 0.8M parameters,
    ``DenseNetBC(250, 24)`` 15.3M, ``DenseNetBC(190, 40)`` 25.6M.

    Args:
        depth: total depth ``L = 6n + 4``.
        growth_rate: ``k``.
        include_top, weights, input_tensor, input_shape, pooling, classes,
        classifier_activation, name, data_format, drop_rate, bn_epsilon,
        bn_momentum, memory_efficient, fused_bn: as in `DenseNet` (default input 32x32x3, 10 classes).
        compression: ``theta`` of the transitions.
        bn_size: bottleneck width as a multiple of ``k``.

    Returns:
        A `keras.Model`.

    Raises:
        ValueError: if `depth` is not 6n + 4, or for any invalid argument.

    Example:

    >>> from keras_densenet import DenseNetBC
    >>> model = DenseNetBC(depth=40, growth_rate=12)
    >>> model.output_shape
    (None, 10)
    """
    arch = ArchConfig.bc(depth, growth_rate, compression=compression, bn_size=bn_size)
    name = name or f"densenet_bc_{depth}_k{growth_rate}"
    return _build(arch, None, BuildOptions.of(locals()))


def build(variant_name: str, **kwargs) -> keras.Model:
    """Builds a registered variant by name, e.g. ``build("densenet121")``.

    `kwargs` are those of `DenseNet` (architecture knobs excluded); named
    variants default to ``weights=None`` here, unlike their builders.

    Example:

    >>> from keras_densenet import build
    >>> build("densenet_bc_100_k12").output_shape  # CIFAR variants: 10 classes
    (None, 10)
    """
    variant = registry.get_variant(variant_name)
    kwargs.setdefault("weights", None)
    kwargs.setdefault("name", variant.name)
    kwargs.setdefault("classes", variant.classes)
    unknown = set(kwargs) - set(OPTION_NAMES)
    if unknown:
        raise ValueError(
            f"Unknown argument(s) {sorted(unknown)} for build(); allowed: {', '.join(OPTION_NAMES)}."
        )
    return _build(variant.arch, variant, BuildOptions(**kwargs))


_BLOCK_OUTPUT = re.compile(r"^conv(\d+)_block(\d+)_concat$")


def multiscale_features(model: keras.Model) -> keras.Model:
    """A model returning every dense block's output, for detection/segmentation.

    Level ``i`` is the output of dense block ``i`` (before its transition):
    strides 4, 8, 16, 32 for the ImageNet variants (1, 2, 4 for CIFAR ones).
    The last level is taken after the final BN-ReLU (the ``relu`` layer),
    since that is what the classifier sees.

    Args:
        model: a DenseNet built by this package (any `include_top`).

    Returns:
        A `keras.Model` with the same inputs and one output per dense block,
        sharing `model`'s layers and weights.

    Raises:
        ValueError: if `model` has no DenseNet block outputs.

    Example:

    >>> import keras_densenet
    >>> backbone = keras_densenet.DenseNet121(include_top=False, weights=None)
    >>> features = keras_densenet.multiscale_features(backbone)
    >>> [tuple(s) for s in features.output_shape]  # doctest: +NORMALIZE_WHITESPACE
    [(None, None, None, 256), (None, None, None, 512),
     (None, None, None, 1024), (None, None, None, 1024)]
    """
    last_block = {}
    for layer in model.layers:
        match = _BLOCK_OUTPUT.match(layer.name)
        if match:
            stage, index = int(match.group(1)), int(match.group(2))
            if index >= last_block.get(stage, (0, None))[0]:
                last_block[stage] = (index, layer)
    if not last_block:
        raise ValueError(
            f"`model` {model.name!r} has no dense block outputs (layers named "
            "'conv<stage>_block<i>_concat'); pass a model built by keras_densenet."
        )
    stages = sorted(last_block)
    outputs = [last_block[s][1].output for s in stages[:-1]]
    outputs.append(model.get_layer("relu").output)
    if any(layer.name == TO_CHANNELS_LAST for layer in model.layers):
        # A channels_first model computed in NHWC: give NCHW features back.
        outputs = [
            keras.layers.Permute((3, 1, 2), name=f"{TO_CHANNELS_FIRST}_{i}")(o)
            for i, o in enumerate(outputs)
        ]
    # `model.inputs` is a list; a single-input model wants its single input
    # back, or Keras warns on every call that the input structure differs.
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return keras.Model(inputs, outputs, name=f"{model.name}_features")
