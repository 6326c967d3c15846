"""A light dense decoder that turns any DenseNet of this package into a
segmenter (`segmentation_head`), and the per-pixel class ids of a
segmenter's output (`predict_labels`).

Example:

>>> import keras_densenet
>>> backbone = keras_densenet.DenseNet121(include_top=False, weights=None,
...                                       input_shape=(64, 64, 3))
>>> keras_densenet.segmentation_head(backbone, classes=3).output_shape
(None, 64, 64, 3)
"""

from __future__ import annotations

from typing import Optional

import keras
import numpy as np
from keras import layers

from keras_densenet.core import checks
from keras_densenet.layers import blocks, initialization
from keras_densenet.models import inputs as model_inputs
from keras_densenet.models.fcdensenet import SCALE, classifier
from keras_densenet.models.features import multiscale_features

#: Channels of `segmentation_head`'s decoder.
HEAD_FILTERS = 64
#: Stride of a DenseNet's first dense block: 4 after the ImageNet stem
#: (7x7/2 conv, 3x3/2 max-pool, whose last layer is ``pool1``), 1 after the
#: CIFAR one.
IMAGENET_STEM_STRIDE = 4
IMAGENET_STEM_LAST_LAYER = "pool1"


def _public_data_format(backbone: keras.Model) -> str:
    """The layout of `backbone`'s inputs and outputs (channels_first models
    on TensorFlow's CPU compute in NHWC between two transposes)."""
    if any(layer.name == model_inputs.TO_CHANNELS_LAST for layer in backbone.layers):
        return "channels_first"
    return backbone.get_layer("conv1_conv").data_format


def _conv_bn_relu(x, filters: int, name: str, opts: blocks.LayerOptions):
    """1x1 conv-BN-ReLU: projects a level to the decoder width."""
    x = blocks.conv(x, filters, 1, f"{name}_conv", opts)
    return blocks.bn_relu(x, name, opts)


def _decode(levels: list, filters: int, stem_stride: int, opts: blocks.LayerOptions):
    """Coarsest level first: project, upsample 2x, concatenate the next
    finer level, project again; then upsample to the input size."""
    upsample = dict(data_format=opts.data_format, interpolation="bilinear")
    x = _conv_bn_relu(levels[-1], filters, f"seg_level{len(levels)}", opts)
    for level in range(len(levels) - 1, 0, -1):  # 1-based number of the finer level
        x = layers.UpSampling2D(SCALE, name=f"seg_up{level}", **upsample)(x)
        x = layers.Concatenate(axis=opts.channel_axis, name=f"seg_concat{level}")([x, levels[level - 1]])
        x = _conv_bn_relu(x, filters, f"seg_level{level}", opts)
    if stem_stride > 1:
        x = layers.UpSampling2D(stem_stride, name="seg_upsample", **upsample)(x)
    return x


def segmentation_head(
    backbone: keras.Model,
    classes: int,
    *,
    filters: int = HEAD_FILTERS,
    classifier_activation="softmax",
    name: Optional[str] = None,
) -> keras.Model:
    """A light dense decoder that turns a DenseNet into a segmenter.

    Reads every dense block's output with `multiscale_features` (strides 4,
    8, 16, 32 for the ImageNet variants). Starting from the coarsest, each
    level is projected to `filters` channels (1x1 conv-BN-ReLU), upsampled 2x
    (bilinear) and concatenated with the next finer level, which the next
    1x1 conv-BN-ReLU fuses; the finest result is upsampled to the input size
    and classified per pixel (1x1 conv, softmax). The backbone's layers and
    weights are shared, so a pretrained DenseNet121 brings its ImageNet
    features; freeze it with ``backbone.trainable = False`` to train the
    decoder alone first.

    Args:
        backbone: a DenseNet built by this package (any `include_top`, any
            data format, standard or memory-efficient). Input sides must be
            multiples of its total stride (32 for the ImageNet variants).
        classes: number of classes per pixel.
        filters: keyword-only. Channels of the decoder.
        classifier_activation: keyword-only. Activation per pixel;
            ``"softmax"`` is over the channel axis, ``None`` gives logits.
        name: keyword-only. Model name; default ``"{backbone.name}_segmenter"``.

    Returns:
        A `keras.Model` with the backbone's input and per-pixel class scores
        at the input resolution: ``(batch, height, width, classes)``
        (channels_last).

    Raises:
        ValueError: if `backbone` is not a DenseNet of this package, or
            `classes` or `filters` is not a positive integer.

    Example:

    >>> import keras_densenet
    >>> backbone = keras_densenet.DenseNet121(include_top=False, weights=None,
    ...                                       input_shape=(128, 128, 3))
    >>> model = keras_densenet.segmentation_head(backbone, classes=21)
    >>> model.output_shape
    (None, 128, 128, 21)
    """
    checks.integer("classes", classes)
    checks.integer("filters", filters, hint=f"e.g. {HEAD_FILTERS}")
    features = multiscale_features(backbone)  # raises for other models
    data_format = _public_data_format(backbone)
    layout = model_inputs.compute_data_format(data_format)
    opts = blocks.LayerOptions(layout)
    levels = list(features.outputs)
    if layout != data_format:  # back to the NHWC the layers compute in
        levels = [layers.Permute((2, 3, 1), name=f"seg_to_channels_last{i + 1}")(x) for i, x in enumerate(levels)]
    has_imagenet_stem = any(layer.name == IMAGENET_STEM_LAST_LAYER for layer in backbone.layers)
    with initialization.fast_variables():
        x = _decode(levels, filters, IMAGENET_STEM_STRIDE if has_imagenet_stem else 1, opts)
        x = classifier(x, classes, classifier_activation, opts)
        if layout != data_format:
            x = layers.Permute((3, 1, 2), name=model_inputs.TO_CHANNELS_FIRST)(x)
        return keras.Model(features.input, x, name=name or f"{backbone.name}_segmenter")


def predict_labels(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """Per-pixel class ids of `images` (raw pixels, sides divisible by 32)."""
    probs = keras.ops.convert_to_numpy(model.predict(images, verbose=0, batch_size=16))
    return np.argmax(probs, axis=-1).astype("int32")
