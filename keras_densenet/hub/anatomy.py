"""Reading a built model: its DenseNet, and the preprocessing and head around it.

Both directions need it: loading a preset checks the preset's architecture
against the model's, and writing one maps the model onto keras-hub's
classes. `read_model` accepts what this package builds and trains: the
builders' models (standard, memory-efficient, fused BatchNormalization,
channels_first), and `keras-densenet train`'s classifiers, which nest a
DenseNet backbone between stock preprocessing layers (Resizing, Rescaling,
the ImageNet Normalization) and a new softmax head. Any layer it cannot
account for stops it, so a preset never silently computes something else.

Example:

>>> import keras_densenet
>>> from keras_densenet.hub.anatomy import read_model
>>> model = keras_densenet.DenseNet121(weights=None, input_shape=(97, 97, 3), classes=10)
>>> anatomy = read_model(model)
>>> anatomy.arch.blocks, anatomy.classes, anatomy.activation, anatomy.image_size
((6, 12, 24, 16), 10, 'softmax', (97, 97))
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import keras
import numpy as np

from keras_densenet.core import internals
from keras_densenet.core.arch import ArchConfig
from keras_densenet.layers.efficient import EfficientDenseLayer
from keras_densenet.models.inputs import TO_CHANNELS_LAST
from keras_densenet.weights.hub_names import layer_kind
from keras_densenet.weights.presets import arch_of

#: Layers that compute nothing a preset must carry: the graph's plumbing,
#: and dropout (the identity at inference; keras-hub's dense layers have none).
_STRUCTURAL = (
    keras.layers.InputLayer, keras.layers.Activation, keras.layers.ZeroPadding2D, keras.layers.MaxPooling2D,
    keras.layers.AveragePooling2D, keras.layers.Concatenate, keras.layers.Dropout, keras.layers.Permute,
    keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D, keras.Model, EfficientDenseLayer,
)
#: The preprocessing layers a keras-hub image converter can take over.
_AFFINE = (keras.layers.Rescaling, keras.layers.Normalization)


@dataclasses.dataclass
class Anatomy:
    """What a model is, in the terms of a keras-hub preset.

    Attributes:
        arch: the DenseNet's architecture, read from its weight shapes.
        in_channels: image channels.
        layers: this package's layer name -> the Keras layer, for every
            weighted DenseNet layer (the classifier ``predictions`` too).
        classes: classifier size, ``None`` without one.
        activation: the classifier's activation (``"softmax"``, ``None`` for
            logits, or another Keras activation name).
        pooling: ``"avg"`` or ``"max"``: the global pooling before the
            classifier (``None`` without one).
        image_size: ``(height, width)`` the network sees: the size of a
            Resizing layer inside the model, else the model's static input
            size, else ``None``.
        resizing: the Resizing layer's options that keras-hub's image
            converter has (interpolation, crop/pad to aspect ratio,
            antialias), ``None`` without one.
        scale, offset: per-channel ``x * scale + offset`` of the model's own
            Rescaling and Normalization layers, ``None`` without any.
    """

    arch: ArchConfig
    in_channels: int
    layers: dict
    classes: Optional[int] = None
    activation: Optional[str] = None
    pooling: Optional[str] = None
    image_size: Optional[tuple] = None
    resizing: Optional[dict] = None
    scale: Optional[list] = None
    offset: Optional[list] = None


def _refuse(model, problem: str) -> ValueError:
    return ValueError(f"`model` {model.name!r} {problem}")


def _shape(layer) -> tuple:
    return tuple(int(d) for d in layer.weights[0].shape)


def _activation_name(dense) -> Optional[str]:
    name = keras.activations.serialize(dense.activation)
    if isinstance(name, dict):  # a custom activation object
        name = name.get("config", name.get("class_name"))
    return None if name in (None, "linear") else str(name)


def _affine(layer, scale: np.ndarray, offset: np.ndarray, model) -> tuple:
    """Composes `layer` (Rescaling or Normalization) after ``x * scale + offset``."""
    if isinstance(layer, keras.layers.Rescaling):
        s = np.asarray(layer.scale, "float64").reshape(-1)
        o = np.asarray(layer.offset, "float64").reshape(-1)
        return scale * s, offset * s + o
    if layer.invert:
        raise _refuse(model, f"has an inverted Normalization {layer.name!r}, which keras-hub's image converter "
                      "cannot express")
    mean = np.asarray(keras.ops.convert_to_numpy(layer.mean), "float64").reshape(-1)
    variance = np.asarray(keras.ops.convert_to_numpy(layer.variance), "float64").reshape(-1)
    # Keras' Normalization divides by max(sqrt(variance), epsilon).
    std = np.maximum(np.sqrt(variance), keras.backend.epsilon())
    return scale / std, (offset - mean) / std


def read_model(model: keras.Model) -> Anatomy:
    """Reads `model`'s DenseNet, preprocessing and head.

    Args:
        model: a model built by this package's builders, or trained by
            ``keras-densenet train`` (a DenseNet nested between preprocessing
            layers and a new head).

    Returns:
        An `Anatomy`.

    Raises:
        ValueError: naming `model` and the layer: not a DenseNet of this
            package, a layer a preset cannot carry (anything besides the
            DenseNet, Resizing, Rescaling, Normalization, random
            augmentation, dropout, global pooling and the classifier), or
            preprocessing in an order keras-hub's converter cannot apply.
    """
    weighted, pooling, dense = {}, None, None
    resizing, affine_seen, image_size, nchw_input = None, False, None, False
    scale, offset = np.ones(1), np.zeros(1)
    for layer in internals.flatten_layers(model):
        kind = layer_kind(layer.name)
        if kind is not None:
            if layer.name in weighted:
                raise _refuse(model, f"has two layers named {layer.name!r}")
            weighted[layer.name] = layer
            dense = layer if kind == "dense" else dense
        elif isinstance(layer, keras.layers.Resizing):
            if resizing is not None or affine_seen:
                raise _refuse(model, f"resizes after rescaling or twice ({layer.name!r}); keras-hub's image "
                              "converter resizes once, first")
            config = layer.get_config()
            image_size = (int(config["height"]), int(config["width"]))
            resizing = {k: config[k] for k in ("interpolation", "crop_to_aspect_ratio", "pad_to_aspect_ratio",
                                               "antialias") if k in config}
        elif isinstance(layer, _AFFINE):
            affine_seen = True
            scale, offset = _affine(layer, scale, offset, model)
        elif isinstance(layer, (keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D)):
            pooling = pooling or ("max" if isinstance(layer, keras.layers.GlobalMaxPooling2D) else "avg")
        elif isinstance(layer, keras.layers.Permute) and layer.name == TO_CHANNELS_LAST:
            nchw_input = True  # a channels_first model computing in NHWC (models.inputs)
        elif type(layer).__name__.startswith("Random"):
            continue  # data augmentation: the identity at inference
        elif not isinstance(layer, _STRUCTURAL):
            raise _refuse(model, f"has a layer a keras-hub preset cannot carry: {layer.name!r} "
                          f"({type(layer).__name__})")
    arch = arch_of(weighted, model)
    in_channels = _shape(weighted["conv1_conv"])[2]
    if image_size is None:
        shape = model.input_shape
        nchw_input = nchw_input or weighted["conv1_conv"].data_format == "channels_first"
        spatial = shape[2:4] if nchw_input else shape[1:3]
        if isinstance(shape, tuple) and all(isinstance(d, int) for d in spatial):
            image_size = tuple(spatial)
    if affine_seen:
        scale = np.broadcast_to(scale, (in_channels,))
        offset = np.broadcast_to(offset, (in_channels,))
    return Anatomy(
        arch=arch,
        in_channels=in_channels,
        layers=weighted,
        classes=_shape(dense)[-1] if dense is not None else None,
        activation=_activation_name(dense) if dense is not None else None,
        pooling=(pooling or "avg") if dense is not None else None,
        image_size=image_size,
        resizing=resizing,
        scale=[float(v) for v in scale] if affine_seen else None,
        offset=[float(v) for v in offset] if affine_seen else None,
    )
