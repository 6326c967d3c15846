"""The DenseNet builders (Keras functional API), keras.applications style.

`DenseNet` is the generic builder with every knob of the paper;
`DenseNet121` ... `DenseNet264` and `DenseNetBC` are short builders that read
their architecture from the registry, and `build` builds any registered
variant by name. All return a plain `keras.Model` made of stock layers, so
models save to ``.keras`` and load with safe mode on. The shared machinery
lives beside them: `keras_densenet.models.options` (`BuildOptions`),
`keras_densenet.models.inputs` (the image input) and
`keras_densenet.models.builder` (the graph and weights); `multiscale_features`
(`keras_densenet.models.features`) is importable from here too.

Example:

>>> from keras_densenet.models import densenet
>>> densenet.DenseNet121(include_top=False, weights=None, input_shape=(64, 64, 3), pooling="avg").output_shape
(None, 1024)
"""

from __future__ import annotations

from typing import Optional, Sequence

import keras

from keras_densenet.core import registry
from keras_densenet.core.arch import ArchConfig
from keras_densenet.layers.blocks import BN_MOMENTUM
from keras_densenet.models.builder import build_model
from keras_densenet.models.features import multiscale_features
from keras_densenet.models.options import OPTION_NAMES, BuildOptions, appending_doc

__all__ = [
    "DenseNet", "DenseNet121", "DenseNet161", "DenseNet169", "DenseNet201", "DenseNet264", "DenseNetBC",
    "build", "multiscale_features",
]


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
    return build_model(arch, None, BuildOptions.of(locals()))


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


_named = appending_doc(_NAMED_ARGS)


def _build_variant(variant_name: str, arguments: dict) -> keras.Model:
    """Builds the registered `variant_name` from a named builder's arguments."""
    variant = registry.get_variant(variant_name)
    return build_model(variant.arch, variant, BuildOptions.of(arguments))


@_named
def DenseNet121(include_top: bool = True, weights="imagenet", input_tensor=None, input_shape=None,
                pooling: Optional[str] = None, classes: int = 1000, classifier_activation="softmax",
                name: str = "densenet121", *, data_format: Optional[str] = None, drop_rate: float = 0.0,
                bn_epsilon: Optional[float] = None, bn_momentum: float = BN_MOMENTUM,
                memory_efficient: bool = False, fused_bn: bool = False) -> keras.Model:
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
def DenseNet161(include_top: bool = True, weights="imagenet", input_tensor=None, input_shape=None,
                pooling: Optional[str] = None, classes: int = 1000, classifier_activation="softmax",
                name: str = "densenet161", *, data_format: Optional[str] = None, drop_rate: float = 0.0,
                bn_epsilon: Optional[float] = None, bn_momentum: float = BN_MOMENTUM,
                memory_efficient: bool = False, fused_bn: bool = False) -> keras.Model:
    """Instantiates the DenseNet-161 architecture (torchvision's; not in
    keras.applications).

    Architecture: dense blocks (6, 12, 36, 24), growth rate 48, 96 initial
    features, compression 0.5; 2208 features before the classifier.
    Weights: ``"torchvision"``, torchvision's checkpoint (the only one
    published), converted (BatchNormalization epsilon 1e-5); ``"imagenet"``,
    the default, names the same file.

    Example:

    >>> import keras_densenet
    >>> backbone = keras_densenet.DenseNet161(include_top=False, weights=None,
    ...                                       input_shape=(64, 64, 3), pooling="avg")
    >>> backbone.output_shape
    (None, 2208)
    """
    return _build_variant("densenet161", locals())


@_named
def DenseNet169(include_top: bool = True, weights="imagenet", input_tensor=None, input_shape=None,
                pooling: Optional[str] = None, classes: int = 1000, classifier_activation="softmax",
                name: str = "densenet169", *, data_format: Optional[str] = None, drop_rate: float = 0.0,
                bn_epsilon: Optional[float] = None, bn_momentum: float = BN_MOMENTUM,
                memory_efficient: bool = False, fused_bn: bool = False) -> keras.Model:
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
def DenseNet201(include_top: bool = True, weights="imagenet", input_tensor=None, input_shape=None,
                pooling: Optional[str] = None, classes: int = 1000, classifier_activation="softmax",
                name: str = "densenet201", *, data_format: Optional[str] = None, drop_rate: float = 0.0,
                bn_epsilon: Optional[float] = None, bn_momentum: float = BN_MOMENTUM,
                memory_efficient: bool = False, fused_bn: bool = False) -> keras.Model:
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
def DenseNet264(include_top: bool = True, weights=None, input_tensor=None, input_shape=None,
                pooling: Optional[str] = None, classes: int = 1000, classifier_activation="softmax",
                name: str = "densenet264", *, data_format: Optional[str] = None, drop_rate: float = 0.0,
                bn_epsilon: Optional[float] = None, bn_momentum: float = BN_MOMENTUM,
                memory_efficient: bool = False, fused_bn: bool = False) -> keras.Model:
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
    return build_model(arch, None, BuildOptions.of(locals()))


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
    return build_model(variant.arch, variant, BuildOptions(**kwargs))

