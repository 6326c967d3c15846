"""The one builder behind every public DenseNet builder: checks, graph, weights.

`build_model` turns an architecture (`keras_densenet.core.arch.ArchConfig`),
its registered variant if any, and the validated `BuildOptions` into a
`keras.Model` of stock layers with keras.applications' layer names, then
loads the requested weights. `keras_densenet.models.densenet` holds the
public builders that call it.

Example:

>>> from keras_densenet.core.arch import ArchConfig
>>> from keras_densenet.models.builder import build_model
>>> from keras_densenet.models.options import BuildOptions
>>> model = build_model(ArchConfig((2, 2), 8, stem="cifar"), None,
...                     BuildOptions(input_shape=(16, 16, 3), classes=3))
>>> model.output_shape
(None, 3)
"""

from __future__ import annotations

from typing import Optional

import keras

from keras_densenet.core import internals, registry
from keras_densenet.core.arch import ArchConfig
from keras_densenet.core.registry import Variant
from keras_densenet.layers import blocks, efficient, initialization
from keras_densenet.models import inputs
from keras_densenet.models.options import BuildOptions
from keras_densenet.weights import loading as weights_lib


def _graph(x, arch: ArchConfig, opts: BuildOptions, bn_epsilon: float):
    """Stem, dense blocks with transitions between them, and head, on `x`."""
    layout = inputs.compute_data_format(opts.data_format)
    if layout != opts.data_format:  # NCHW in, NHWC inside: see compute_data_format
        x = keras.layers.Permute((2, 3, 1), name=inputs.TO_CHANNELS_LAST)(x)
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
        x = keras.layers.Permute((3, 1, 2), name=inputs.TO_CHANNELS_FIRST)(x)
    return x


def _rebuild_as_saved(arch: ArchConfig, variant: Optional[Variant], opts: BuildOptions,
                      saved_memory_efficient: bool) -> keras.Model:
    """Loads a weights file into the graph kind it was saved from, then
    copies the (identical) weight list into the requested kind."""
    input_shape = opts.input_shape
    if opts.input_tensor is not None and input_shape is None:
        input_shape = inputs.input_shape_of(opts.input_tensor)
    donor = build_model(arch, variant, opts.replace(
        input_tensor=None, input_shape=input_shape, memory_efficient=saved_memory_efficient))
    # The epsilon the weights were trained with (1e-5 for torch sources).
    model = build_model(arch, variant, opts.replace(
        weights=None, input_shape=input_shape, bn_epsilon=donor.get_layer("bn").epsilon))
    model.set_weights(donor.get_weights())
    return model


def build_model(arch: ArchConfig, variant: Optional[Variant], opts: BuildOptions) -> keras.Model:
    """Builds the DenseNet `arch` with `opts` and loads its weights.

    Args:
        arch: the architecture.
        variant: the registered variant `arch` is, if known; ``None`` looks
            it up by architecture (so a generic call spelling DenseNet-121
            can load DenseNet-121's weights).
        opts: the validated builder options.

    Returns:
        A `keras.Model`.

    Raises:
        ValueError: for weights or an input shape that do not fit; the
            message names the argument.
    """
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
        input_shape = inputs.input_shape_of(opts.input_tensor)
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
        img_input = inputs.image_input(opts, input_shape)
        outputs = _graph(img_input, arch, opts, bn_epsilon)
        if opts.input_tensor is not None:
            model_inputs = keras.utils.get_source_inputs(opts.input_tensor)
        else:
            model_inputs = img_input
        model = keras.Model(model_inputs, outputs, name=opts.name)
    weights_lib.load(model, opts.weights, spec, opts.include_top, variant)
    return model
