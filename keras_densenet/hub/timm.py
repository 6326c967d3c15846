"""Writing this package's models as timm checkpoint directories.

A timm model directory (as on the Hugging Face Hub) is a ``config.json``
(``architecture``, ``num_classes``, ``num_features``, ``pretrained_cfg``
with the input size, mean and std) and a ``model.safetensors`` with
torchvision's key names, which timm's DenseNets share. The keys come from
the one Keras-PyTorch table, `keras_densenet.weights.checkpoints.LAYER_NAMES`;
conv kernels go back to PyTorch's ``(out, in, h, w)``. timm's
BatchNormalization epsilon is 1e-5: moving variances are shifted so that
``variance + epsilon`` is unchanged.

Such a directory loads in timm (``timm.create_model("densenet121",
pretrained=True, pretrained_cfg_overlay={"file": ".../model.safetensors"})``),
through keras-hub's timm loader (``keras_hub.models.Backbone.from_preset``;
keras-hub converts timm's DenseNet-121, -169 and -201), and back here
(`keras_densenet.weights.presets.load_preset`, or ``weights="dir/model.safetensors"``).
timm pads the stem symmetrically like this package: its outputs equal the
model's at every size; keras-hub's equal them at odd sizes.

Example:

>>> import keras_densenet
>>> from keras_densenet.hub.timm import save_timm
>>> save_timm(keras_densenet.DenseNet121(weights="imagenet"), "densenet121_timm")  # doctest: +SKIP
'densenet121_timm'
"""

from __future__ import annotations

import json
import os
from typing import Optional

import keras
import numpy as np

from keras_densenet.core import registry
from keras_densenet.core.files import atomic_path
from keras_densenet.core.pretrained import TORCH_BN_EPSILON
from keras_densenet.hub.anatomy import read_model
from keras_densenet.hub.save import hub_values, scale_and_offset
from keras_densenet.weights import hub_names as names
from keras_densenet.weights.checkpoints import PARAMETERS, describe, torch_module

#: The registered variants timm has under the same name (timm's other
#: DenseNets, such as densenet264d, have other stems).
TIMM_ARCHITECTURES = ("densenet121", "densenet161", "densenet169", "densenet201")
#: Files of a timm model directory.
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def timm_architecture(model: keras.Model, arch) -> str:
    """timm's architecture name for `arch`.

    Raises:
        ValueError: naming `model`: timm has no DenseNet with `arch`.
    """
    for name in TIMM_ARCHITECTURES:
        if names.same_network(registry.get_variant(name).arch, arch):
            return name
    raise ValueError(
        f"`model` {model.name!r} cannot be written as a timm checkpoint: timm names only "
        f"{', '.join(TIMM_ARCHITECTURES)}, and the model is a DenseNet with {describe(arch)}"
    )


def state_dict(anatomy) -> dict:
    """The model's weights as a timm/torchvision state dict of NumPy arrays
    (BatchNormalization ``num_batches_tracked`` included, as zeros, so that
    timm loads it strictly)."""
    state = {}
    for name in anatomy.layers:
        module = torch_module(name)
        values = hub_values(anatomy, name, TORCH_BN_EPSILON)
        for (param, perm), value in zip(PARAMETERS[names.layer_kind(name)], values, strict=True):
            if perm is not None:
                value = np.transpose(value, np.argsort(perm))
            state[f"{module}.{param}"] = np.ascontiguousarray(value, "float32")
        if names.layer_kind(name) == "bn":
            state[f"{module}.num_batches_tracked"] = np.zeros((), "int64")
    return state


def timm_config(architecture: str, anatomy, scale, offset) -> dict:
    """timm's ``config.json``: mean and std from the preset's ``x * scale + offset``
    (timm computes ``(x / 255 - mean) / std``)."""
    channels = anatomy.in_channels
    scale = scale if scale is not None else [1.0] * channels
    offset = offset if offset is not None else [0.0] * channels
    std = [1.0 / (255.0 * s) for s in scale]
    mean = [-o * s for o, s in zip(offset, std, strict=True)]
    height, width = anatomy.image_size or (224, 224)
    resizing = anatomy.resizing or {}
    return {
        "architecture": architecture,
        "num_classes": anatomy.classes or 0,
        "num_features": anatomy.arch.num_features,
        "global_pool": anatomy.pooling or "avg",
        "pretrained_cfg": {
            "tag": "keras_densenet",
            "input_size": [channels, height, width],
            "interpolation": resizing.get("interpolation", "bilinear"),
            "crop_pct": 1.0,
            "crop_mode": "center",
            "mean": mean,
            "std": std,
            "num_classes": anatomy.classes or 0,
            "first_conv": "features.conv0",
            "classifier": "classifier",
        },
    }


def save_timm(model: keras.Model, out_dir, *, preprocessing: Optional[str] = "auto") -> str:
    """Writes `model` as a timm model directory (``config.json`` and
    ``model.safetensors``).

    Args:
        model: DenseNet-121, -161, -169 or -201 of this package, with or
            without its classifier (timm's ``num_classes`` is 0 without).
        out_dir: the directory to write (replaced whole if it exists;
            written atomically: complete or absent).
        preprocessing: as in `keras_densenet.hub.save.save_preset`; it
            becomes ``pretrained_cfg``'s ``mean`` and ``std``.

    Returns:
        `out_dir`.

    Raises:
        ValueError: one line: an architecture timm does not name, a layer
            the checkpoint cannot carry, a bad `preprocessing`; nothing is
            written then.

    Example:

    >>> import keras_densenet
    >>> save_timm(keras_densenet.DenseNet201(weights="imagenet"), "densenet201_timm")  # doctest: +SKIP
    'densenet201_timm'
    """
    from safetensors.numpy import save_file

    anatomy = read_model(model)
    architecture = timm_architecture(model, anatomy.arch)
    scale, offset = scale_and_offset(model, anatomy, preprocessing)
    if scale is not None and min(scale) <= 0:
        raise ValueError(f"`model` {model.name!r} scales its inputs by {scale}: timm's mean/std need a positive scale")
    config = timm_config(architecture, anatomy, scale, offset)
    state = state_dict(anatomy)
    out_dir = os.fspath(out_dir)
    with atomic_path(out_dir) as tmp:
        os.makedirs(tmp)
        with open(os.path.join(tmp, CONFIG_FILE), "w", encoding="utf-8") as f:
            f.write(json.dumps(config, indent=4))
        save_file(state, os.path.join(tmp, WEIGHTS_FILE), metadata={"format": "pt"})
    return out_dir
