"""Writing this package's models as keras-hub presets.

`save_preset` builds keras-hub's own ``DenseNetBackbone`` (and, for a model
with a classifier, a ``DenseNetImageClassifier`` with its preprocessor),
copies the weights by name through `keras_densenet.weights.hub_names.LAYER_NAMES`,
and lets keras-hub write the directory with its ``save_to_preset``, so the
files are exactly what keras-hub writes and reads:

- ``config.json``, ``model.weights.h5``, ``metadata.json`` (keras-hub's, plus
  a ``keras_densenet`` entry: this package's version, the model's name and
  parameter count);
- for a classifier: ``task.json``, ``task.weights.h5``, ``preprocessor.json``;
- ``image_converter.json``: the preprocessing, as keras-hub's image converter
  (``x * scale + offset`` per channel, after resizing to ``image_size``).

Preprocessing (``preprocessing="auto"``): a model trained by
``keras-densenet train`` carries its own Resizing, Rescaling and ImageNet
Normalization layers; they become the converter (resize to the training
size, then one per-channel scale and offset) and the preset's network is the
DenseNet alone. A builder's model (ImageNet weights) expects
`keras_densenet.preprocess_input`, PyTorch's ImageNet scaling: the converter
gets ``scale = 1 / (255 * std)`` and ``offset = -mean / std``.

keras-hub's ``DenseNetBackbone`` builds the 64-filter ImageNet stem and 4k
bottlenecks with any blocks, growth rate and compression; other DenseNets
(DenseNet-161's 96-filter stem, the CIFAR stem, no bottleneck) are refused
in one line before anything is written. Dropout inside dense layers is not
carried (keras-hub has none; at inference it is the identity).

Example:

>>> import keras_densenet
>>> from keras_densenet.hub.save import save_preset
>>> model = keras_densenet.DenseNet121(weights="imagenet")  # doctest: +SKIP
>>> save_preset(model, "densenet121_preset")  # doctest: +SKIP
>>> import keras_hub  # doctest: +SKIP
>>> keras_hub.models.ImageClassifier.from_preset("densenet121_preset")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from typing import Optional

import keras
import numpy as np

from keras_densenet.core import checks, extras
from keras_densenet.core.files import atomic_path
from keras_densenet.hub.anatomy import Anatomy, read_model
from keras_densenet.layers import initialization
from keras_densenet.weights import hub_names as names

#: `preprocessing` values: from the model (its own layers, else ``"torch"``),
#: PyTorch's ImageNet scaling (`keras_densenet.preprocess_input`), or none
#: (the network takes the raw pixels).
PREPROCESSINGS = ("auto", "torch", None)
#: ImageNet's per-channel mean and std on [0, 1] pixels, as
#: `keras_densenet.preprocess_input` ("torch" mode) uses them.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def check_expressible(model: keras.Model, anatomy: Anatomy, where: str = "a keras-hub preset") -> None:
    """Raises a one-line `ValueError` naming `model` unless keras-hub's
    ``DenseNetBackbone`` can express its DenseNet."""
    reason = names.why_not_expressible(anatomy.arch)
    if reason:
        raise ValueError(f"`model` {model.name!r} cannot be written as {where}: {reason}")


def scale_and_offset(model: keras.Model, anatomy: Anatomy, preprocessing) -> tuple:
    """The per-channel ``(scale, offset)`` of the preset's image converter
    (``(None, None)``: raw pixels).

    Raises:
        ValueError: `preprocessing` is not one of `PREPROCESSINGS`, or asks
            for other scaling than the model's own preprocessing layers.
    """
    checks.one_of("preprocessing", preprocessing, PREPROCESSINGS)
    if anatomy.scale is not None:
        if preprocessing != "auto":
            raise ValueError(
                f"`preprocessing` must be 'auto' for `model` {model.name!r}: it rescales its inputs itself "
                f"(Rescaling/Normalization layers), which the preset's image converter takes over. "
                f"Received: preprocessing={preprocessing!r}"
            )
        return anatomy.scale, anatomy.offset
    if preprocessing is None:
        return None, None
    channels = anatomy.in_channels
    if channels != 3:
        raise ValueError(f"`preprocessing` {preprocessing!r} (ImageNet's mean and std) needs RGB images; "
                         f"`model` {model.name!r} takes {channels} channel(s): pass preprocessing=None")
    scale = [1.0 / (255.0 * s) for s in IMAGENET_STD]
    offset = [-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)]
    return scale, offset


def hub_values(anatomy: Anatomy, name: str, bn_epsilon: float) -> list:
    """The weights of this package's layer `name` for a layer of keras-hub's
    (or timm's) epsilon `bn_epsilon`: moving variances shifted so that
    ``variance + epsilon`` is unchanged."""
    layer = anatomy.layers[name]
    values = [np.asarray(keras.ops.convert_to_numpy(w), "float32") for w in layer.weights]
    if names.layer_kind(name) == "bn" and layer.epsilon != bn_epsilon:
        shifted = values[3].astype("float64") + layer.epsilon - bn_epsilon
        values[3] = np.maximum(shifted, 0.0).astype("float32")
    return values


def build_backbone(keras_hub, anatomy: Anatomy):
    """keras-hub's ``DenseNetBackbone`` for `anatomy`, holding its weights (by name)."""
    # Variables filled from NumPy in one pass, as this package's builders do
    # (on JAX, Keras compiles every initializer per shape: 20 s for DenseNet-169).
    with initialization.fast_variables():
        backbone = keras_hub.models.DenseNetBackbone(
            **names.hub_config(anatomy.arch), image_shape=(None, None, anatomy.in_channels)
        )
    for hub_name, _ in names.hub_weight_layers(anatomy.arch.blocks):
        values = hub_values(anatomy, names.our_layer(hub_name), names.HUB_BN_EPSILON)
        backbone.get_layer(hub_name).set_weights(values)
    return backbone


def _converter(keras_hub, anatomy: Anatomy, scale, offset):
    if scale is None and anatomy.image_size is None:
        return None
    options = dict(anatomy.resizing or {})
    return keras_hub.layers.DenseNetImageConverter(
        image_size=anatomy.image_size, scale=scale, offset=offset, **options
    )


def _add_metadata(directory: str, model: keras.Model, anatomy: Anatomy) -> None:
    from keras_densenet import __version__

    path = os.path.join(directory, names.METADATA_FILE)
    with open(path, encoding="utf-8") as f:
        metadata = json.load(f)
    metadata["keras_densenet"] = {
        "version": __version__,
        "model": model.name,
        "parameter_count": int(model.count_params()),
        "bn_epsilon": float(anatomy.layers["bn"].epsilon),
    }
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(metadata, indent=4))


def save_preset(model: keras.Model, out_dir, *, preprocessing: Optional[str] = "auto") -> str:
    """Writes `model` as a keras-hub preset directory.

    ``keras_hub.models.Backbone.from_preset(out_dir)`` loads its DenseNet as
    a ``DenseNetBackbone``; for a model with a classifier,
    ``keras_hub.models.ImageClassifier.from_preset(out_dir)`` loads a
    ``DenseNetImageClassifier`` with its head (the model's activation:
    probabilities for softmax, logits for none) and a preprocessor doing the
    model's preprocessing, so it takes raw pixels. keras-hub's stem pads
    asymmetrically on even input sizes: the preset computes the model's
    outputs exactly at odd sizes, and slightly differently at even ones.

    Args:
        model: a DenseNet of this package (a builder's, or one trained by
            ``keras-densenet train``) that keras-hub can express (see the
            module's docstring).
        out_dir: the preset directory to write (replaced whole if it
            exists; written atomically: complete or absent).
        preprocessing: ``"auto"`` (the model's own Resizing/Rescaling/
            Normalization layers, else ``"torch"``), ``"torch"`` (PyTorch's
            ImageNet scaling, `keras_densenet.preprocess_input`), or ``None``
            (raw pixels).

    Returns:
        `out_dir`.

    Raises:
        ValueError: one line: a DenseNet keras-hub cannot express (why), a
            layer a preset cannot carry, a bad `preprocessing`; nothing is
            written then.
        MissingExtraError: keras-hub is not installed (the ``[hub]`` extra).

    Example:

    >>> import keras_densenet
    >>> model = keras_densenet.DenseNet169(weights="imagenet")  # doctest: +SKIP
    >>> save_preset(model, "densenet169_preset")  # doctest: +SKIP
    'densenet169_preset'
    """
    anatomy = read_model(model)
    check_expressible(model, anatomy)
    scale, offset = scale_and_offset(model, anatomy, preprocessing)
    keras_hub = extras.import_from("hub", "keras_hub", "writing keras-hub presets")
    backbone = build_backbone(keras_hub, anatomy)
    converter = _converter(keras_hub, anatomy, scale, offset)
    task = None
    if anatomy.classes is not None:
        preprocessor = keras_hub.models.DenseNetImageClassifierPreprocessor(image_converter=converter)
        task = keras_hub.models.DenseNetImageClassifier(
            backbone=backbone, num_classes=anatomy.classes, preprocessor=preprocessor,
            pooling=anatomy.pooling, activation=anatomy.activation,
        )
        task.get_layer("predictions").set_weights(hub_values(anatomy, "predictions", names.HUB_BN_EPSILON))
    out_dir = os.fspath(out_dir)
    with atomic_path(out_dir) as tmp:
        if task is not None:
            task.save_to_preset(tmp)
        else:
            backbone.save_to_preset(tmp)
            if converter is not None:
                converter.save_to_preset(tmp)
        _add_metadata(tmp, model, anatomy)
    return out_dir
