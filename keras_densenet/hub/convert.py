"""Conversions between files: a preset to a ``.keras`` model, a ``.keras``
model to a keras-hub preset or a timm directory. What ``keras-densenet
convert`` runs for presets.

Example:

>>> from keras_densenet.hub.convert import keras_to_preset, preset_to_keras
>>> model = preset_to_keras("densenet_121_preset/", "densenet121.keras")  # doctest: +SKIP
>>> keras_to_preset("densenet121.keras", "densenet121_timm", to="timm")  # doctest: +SKIP
'densenet121_timm'
"""

from __future__ import annotations

import json
import os
from typing import Optional

import keras

from keras_densenet.core import registry
from keras_densenet.core.files import atomic_path, file_error, reason
from keras_densenet.layers import initialization
from keras_densenet.models import densenet
from keras_densenet.models.saved import load_keras_model
from keras_densenet.weights import hub_names as names
from keras_densenet.weights.presets import assign_table, dense_layers, read_preset

#: `to` values of `keras_to_preset`.
TARGETS = ("keras-hub", "timm")
#: File endings `preset_to_keras` writes.
OUTPUT_SUFFIXES = (".keras", ".weights.h5")


def has_classifier(preset) -> bool:
    """Whether a local preset directory holds a classifier (keras-hub's
    ``task.weights.h5``, or a timm config with classes); ``False`` for remote
    handles, whose files are not looked at before the download."""
    preset = os.fspath(preset)
    if not os.path.isdir(preset):
        return False
    if os.path.isfile(os.path.join(preset, names.TASK_WEIGHTS_FILE)):
        return True
    try:
        with open(os.path.join(preset, names.CONFIG_FILE), encoding="utf-8") as f:
            return bool(json.load(f).get("num_classes"))
    except (OSError, ValueError, AttributeError):
        return False


def model_from_preset(preset, *, include_top: Optional[bool] = None, input_shape=None,
                      classifier_activation="softmax", name: Optional[str] = None) -> keras.Model:
    """Builds this package's DenseNet of a preset, weights loaded.

    Args:
        preset: a keras-hub preset or timm directory, or a ``kaggle://`` /
            ``hf://`` handle (through keras-hub).
        include_top: with the preset's classifier; ``None``: when the
            preset has one (local directories).
        input_shape: the model's input shape; default: the preset's image
            size with the classifier (224 without one), ``(None, None, C)``
            without it.
        classifier_activation: the classifier's activation (``None``: logits).
        name: the model's name; default: the registered variant's
            (``densenet121``...), else ``densenet``.

    Returns:
        A `keras.Model` with the preset's BatchNormalization epsilon, which
        takes the images the preset's image converter makes (e.g.
        `keras_densenet.preprocess_input`'s for ImageNet presets).

    Raises:
        ValueError: as `keras_densenet.weights.presets.read_preset`.
    """
    if include_top is None:
        include_top = has_classifier(preset)
    weights = read_preset(preset, include_top)
    channels = weights.table["conv1_conv"][0].shape[2]
    if input_shape is None:
        size = (weights.image_converter or {}).get("image_size") or (224, 224)
        input_shape = (int(size[0]), int(size[1]), channels) if include_top else (None, None, channels)
    variant = registry.find_variant(weights.arch)
    model = densenet.DenseNet(
        **weights.arch.builder_kwargs(), weights=None, include_top=include_top,
        classes=weights.classes or 1000, input_shape=input_shape, bn_epsilon=weights.bn_epsilon,
        classifier_activation=classifier_activation, name=name or (variant.name if variant else "densenet"),
    )
    assign_table(model, dense_layers(model), weights.table, weights.bn_epsilon, weights.source)
    return model


def preset_to_keras(preset, dst, **kwargs) -> keras.Model:
    """Converts a preset into a ``.keras`` model (or its ``.weights.h5``),
    written atomically. `kwargs` are `model_from_preset`'s.

    Raises:
        ValueError: `dst` has another ending, or the preset cannot be read.
    """
    dst = os.fspath(dst)
    if not dst.endswith(OUTPUT_SUFFIXES):
        raise ValueError(f"`dst` must end with {' or '.join(OUTPUT_SUFFIXES)}. Received: dst={dst!r}")
    model = model_from_preset(preset, **kwargs)
    with atomic_path(dst) as tmp:
        if dst.endswith(".keras"):
            model.save(tmp)
        else:
            model.save_weights(tmp)
    return model


def load_model(src) -> keras.Model:
    """`keras_densenet.models.saved.load_keras_model`, faster: the graph is
    built with its variables filled from NumPy in one pass (on JAX, Keras
    otherwise compiles every initializer: 90 s for DenseNet-161 on a 2-core
    CPU, 35 s so), then the file's weights are read again, since that fill
    replaces, on leaving the block, what loading assigned inside it.

    Raises:
        ValueError: `src` is not a loadable ``.keras`` model; names it.
    """
    with initialization.fast_variables():
        model = load_keras_model(src)
    try:
        model.load_weights(src)
    except Exception as e:  # loaded once already: a file changed under us
        raise file_error(os.fspath(src), f"could not read its weights: {reason(e)}") from None
    return model


def keras_to_preset(src, out_dir, *, to: str = "keras-hub", preprocessing: Optional[str] = "auto") -> str:
    """Converts a ``.keras`` model of this package into a keras-hub preset
    (`keras_densenet.hub.save.save_preset`) or a timm directory
    (`keras_densenet.hub.timm.save_timm`).

    Raises:
        ValueError: `to` is not one of `TARGETS`, `src` is not a loadable
            ``.keras`` model, or the model cannot be written (see the writers).
    """
    if to not in TARGETS:
        raise ValueError(f"`to` must be one of {', '.join(TARGETS)}. Received: to={to!r}")
    model = load_model(src)
    if to == "timm":
        from keras_densenet.hub.timm import save_timm

        return save_timm(model, out_dir, preprocessing=preprocessing)
    from keras_densenet.hub.save import save_preset

    return save_preset(model, out_dir, preprocessing=preprocessing)
