"""Loading keras-hub DenseNet presets (and timm checkpoint directories) into
this package's models, by layer name: what ``weights=PRESET`` runs.

A local keras-hub preset directory is read with h5py alone, so it needs no
keras-hub: ``config.json`` gives the architecture (keras-hub's
``DenseNetBackbone`` arguments), ``model.weights.h5`` the backbone and
``task.weights.h5`` the classifier of a ``DenseNetImageClassifier`` preset.
Weights are matched by keras-hub's layer names through the explicit table
`keras_densenet.weights.hub_names.LAYER_NAMES`, never by position. ``kaggle://`` and
``hf://`` handles are downloaded by keras-hub's own ``from_preset`` (the
``[hub]`` extra). A local timm directory (``config.json`` with
``architecture``, ``model.safetensors`` with torchvision's keys) loads too.

keras-hub's BatchNormalization epsilon is 1.001e-5 and timm's 1e-5: a model
with another epsilon gets moving variances shifted by the difference, so that
``variance + epsilon`` (all that BatchNormalization uses) is the preset's.

keras-hub's stem pads with ``padding="same"``, which is asymmetric for even
input sizes (2 before, 3 after at 224), where this package pads 3 and 3 like
torchvision: the same weights give the same features at odd input sizes and
slightly different ones at even sizes (docs/weights.md, "keras-hub presets").
Writing presets is `keras_densenet.hub.save`'s job.

Example:

>>> import keras_densenet
>>> from keras_densenet.weights.presets import load_preset
>>> model = keras_densenet.DenseNet121(include_top=False, weights=None)  # doctest: +SKIP
>>> load_preset(model, "densenet_121_preset/", include_top=False)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Optional

import h5py
import keras
import numpy as np

from keras_densenet.core import extras, internals
from keras_densenet.core.arch import ArchConfig
from keras_densenet.core.files import FileError, file_error, reason
from keras_densenet.core.pretrained import TORCH_BN_EPSILON
from keras_densenet.weights import hub_names as names
from keras_densenet.weights.checkpoints import describe, detect_arch, read_state_dict, state_to_table

#: Handles that only keras-hub can fetch.
REMOTE_SCHEMES = names.REMOTE_SCHEMES
#: timm's weights file in a preset directory.
TIMM_WEIGHTS_FILE = "model.safetensors"


@dataclasses.dataclass
class PresetWeights:
    """The weights of a preset, in this package's layout and names.

    Attributes:
        arch: the preset's architecture.
        table: this package's layer name -> arrays in ``layer.get_weights()``
            order (``predictions`` only when the classifier was read).
        bn_epsilon: the BatchNormalization epsilon the weights assume.
        source: the preset, as named in errors.
        classes: classifier size, ``None`` when no classifier was read.
        pooling: the classifier's global pooling (``"avg"``/``"max"``).
        image_converter: the preset's image converter config (``image_size``,
            ``scale``, ``offset``...), ``None`` if it has none.
    """

    arch: ArchConfig
    table: dict
    bn_epsilon: float
    source: str
    classes: Optional[int] = None
    pooling: Optional[str] = None
    image_converter: Optional[dict] = None


def is_preset(weights) -> bool:
    """Whether the `weights` argument names a preset: a directory holding a
    ``config.json``, a ``kaggle://`` / ``hf://`` handle, or the name of one of
    keras-hub's own DenseNet presets (``"densenet_121_imagenet"``; only
    when keras-hub is installed).

    Example:

    >>> is_preset("kaggle://keras/densenet/keras/densenet_121_imagenet"), is_preset("model.weights.h5")
    (True, False)
    """
    if not isinstance(weights, (str, os.PathLike)):
        return False
    weights = os.fspath(weights)
    if weights.startswith(REMOTE_SCHEMES):
        return True
    if os.path.isdir(weights):
        return os.path.isfile(os.path.join(weights, names.CONFIG_FILE))
    return _builtin(weights)


def bn_epsilon(preset) -> float:
    """The BatchNormalization epsilon the weights of `preset` assume: timm's
    (1e-5) for a local timm directory, keras-hub's (1.001e-5) otherwise. A
    model built with it loads them without shifting moving variances.

    Example:

    >>> bn_epsilon("kaggle://keras/densenet/keras/densenet_121_imagenet")
    1.001e-05
    """
    path = os.path.join(os.fspath(preset), names.CONFIG_FILE)
    if os.path.isfile(path):
        try:
            with open(path, encoding="utf-8") as f:
                if "architecture" in json.load(f):
                    return TORCH_BN_EPSILON
        except (OSError, ValueError, TypeError):
            pass  # read_preset names the problem
    return names.HUB_BN_EPSILON


def _json(directory: str, name: str) -> dict:
    path = os.path.join(directory, name)
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except FileNotFoundError:
        raise file_error(directory, f"not a keras-hub or timm preset: no {name}") from None
    except (OSError, ValueError) as e:
        raise file_error(path, f"not readable JSON: {reason(e)}") from None
    if not isinstance(value, dict) or not isinstance(value.get("config", {}), dict):
        raise file_error(path, "not a keras-hub or timm config (expected a JSON object)")
    return value


def _h5_arrays(group) -> list:
    out = []
    for i in range(len(group)):
        data = group[str(i)]
        value = np.asarray(data)
        if data.attrs.get("dtype") == "bfloat16":  # Keras stores bfloat16 as its upper 16 bits
            value = (value.astype("uint32") << 16).view("float32")
        out.append(value.astype("float32"))
    return out


def read_h5_layers(path: str, layer_keys: dict) -> dict:
    """Reads the named layers of a Keras 3 ``.weights.h5``.

    Args:
        path: the file.
        layer_keys: layer name -> its group (``layers/conv2d_3``), used only
            when the file does not name its layers (older Keras).

    Returns:
        layer name -> arrays, for the names of `layer_keys` found.

    Raises:
        ValueError: the file is missing or not HDF5; names it.
    """
    if not os.path.isfile(path):
        raise file_error(path, "no such file")
    try:
        with h5py.File(path, "r") as f:
            layers = f.get("layers", {})
            named = {}
            for key in layers:
                group = layers[key].get("vars")
                if group is not None and "name" in group.attrs:
                    named[str(group.attrs["name"])] = group
            out = {}
            for name, key in layer_keys.items():
                group = named.get(name) if named else f.get(f"{key}/vars")
                if group is not None and len(group):
                    out[name] = _h5_arrays(group)
            return out
    except FileError:
        raise
    except Exception as e:  # h5py and NumPy raise many types for damaged or hostile files
        raise file_error(path, f"not a readable Keras weights file (truncated or corrupted?): {reason(e)}") from None


def _rename(hub_table: dict) -> dict:
    return {names.our_layer(name): values for name, values in hub_table.items()}


def _read_local_hub(directory: str, config: dict, include_top: bool) -> PresetWeights:
    if config.get("registered_name") != names.BACKBONE_CLASS:
        raise file_error(directory, f"holds a {config.get('registered_name')!r}, not a keras-hub DenseNetBackbone")
    try:
        arch = names.hub_arch(config["config"])
    except (KeyError, ValueError) as e:
        raise file_error(directory, f"config.json: {e}") from None
    keys = names.h5_keys(arch.blocks)
    table = _rename(read_h5_layers(os.path.join(directory, names.WEIGHTS_FILE), keys))
    converter = None
    if os.path.isfile(os.path.join(directory, names.IMAGE_CONVERTER_FILE)):
        converter = _json(directory, names.IMAGE_CONVERTER_FILE).get("config")
    weights = PresetWeights(arch, table, names.HUB_BN_EPSILON, directory, image_converter=converter)
    if include_top:
        if not os.path.isfile(os.path.join(directory, names.TASK_WEIGHTS_FILE)):
            raise file_error(directory, "has no classifier (no task.weights.h5): load it with include_top=False")
        task = _json(directory, names.TASK_FILE).get("config", {})
        head = read_h5_layers(os.path.join(directory, names.TASK_WEIGHTS_FILE), {"predictions": "layers/dense"})
        if "predictions" not in head:
            raise file_error(directory, "task.weights.h5 holds no 'predictions' layer")
        weights.table["predictions"] = head["predictions"]
        weights.classes = int(head["predictions"][0].shape[-1])
        weights.pooling = task.get("pooling", "avg")
    return weights


def _read_local_timm(directory: str, config: dict, include_top: bool) -> PresetWeights:
    path = os.path.join(directory, TIMM_WEIGHTS_FILE)
    state = read_state_dict(path)
    arch, classes, _ = detect_arch(state, path)
    table = {name: [t.value for t in tensors] for name, tensors in state_to_table(state, path).items()}
    if include_top and classes is None:
        raise file_error(directory, "has no classifier (no classifier.weight): load it with include_top=False")
    if not include_top:
        table.pop("predictions", None)
    cfg = config.get("pretrained_cfg") or {}
    converter = None
    if "mean" in cfg and "std" in cfg:
        converter = {"image_size": cfg.get("input_size", [None, None, None])[1:],
                     "scale": [1 / 255 / s for s in cfg["std"]],
                     "offset": [-m / s for m, s in zip(cfg["mean"], cfg["std"], strict=True)]}
    return PresetWeights(arch, table, TORCH_BN_EPSILON, directory, classes if include_top else None,
                         "avg" if include_top else None, converter)


def read_with_keras_hub(preset: str, include_top: bool) -> PresetWeights:
    """Reads a preset through keras-hub's public ``from_preset`` (any handle
    keras-hub accepts: ``kaggle://``, ``hf://``, a local directory, a timm
    model on the Hugging Face Hub).

    Raises:
        MissingExtraError: keras-hub is not installed (names the ``[hub]`` extra).
        ValueError: naming `preset`: the download or build failed, or it is
            not a DenseNet.
    """
    keras_hub = extras.import_from("hub", "keras_hub", f"loading the keras-hub preset {preset!r}")
    try:
        if include_top:
            task = keras_hub.models.ImageClassifier.from_preset(preset)
            backbone = task.backbone
        else:
            backbone = keras_hub.models.Backbone.from_preset(preset)
    except Exception as e:  # downloads, missing kagglehub, bad configs: all "cannot load"
        extra = " (or load it with include_top=False)" if include_top else ""
        raise ValueError(f"could not load the keras-hub preset {preset!r}{extra}: {reason(e)}") from None
    if type(backbone).__name__ != "DenseNetBackbone":
        raise ValueError(f"`preset` {preset!r} holds a {type(backbone).__name__}, not a DenseNetBackbone")
    arch = names.hub_arch(backbone.get_config())

    def arrays(layer) -> list:
        return [np.asarray(keras.ops.convert_to_numpy(w), "float32") for w in layer.weights]

    table = {names.our_layer(n): arrays(backbone.get_layer(n)) for n, _ in names.hub_weight_layers(arch.blocks)}
    weights = PresetWeights(arch, table, float(backbone.get_layer("bn").epsilon), preset)
    if include_top:
        weights.table["predictions"] = arrays(task.get_layer("predictions"))
        weights.classes = int(weights.table["predictions"][0].shape[-1])
        weights.pooling = task.pooling
    return weights


def _builtin(preset: str) -> bool:
    """Whether `preset` names one of keras-hub's own DenseNet presets
    (``densenet_121_imagenet``...), keras-hub being installed."""
    if os.path.exists(preset) or not preset.startswith("densenet_") or not extras.installed("keras_hub"):
        return False
    import keras_hub

    return preset in keras_hub.models.DenseNetBackbone.presets


def read_preset(preset, include_top: bool = False) -> PresetWeights:
    """Reads a keras-hub preset or timm directory into this package's layout.

    Args:
        preset: a local keras-hub preset directory (read without keras-hub),
            a local timm directory, a ``kaggle://`` / ``hf://`` handle, or
            the name of one of keras-hub's own DenseNet presets
            (``"densenet_121_imagenet"``; those two through keras-hub).
        include_top: read the classifier too (a ``DenseNetImageClassifier``
            preset's ``task.weights.h5``, a timm ``classifier``).

    Returns:
        A `PresetWeights`.

    Raises:
        ValueError: naming `preset`: missing, not a DenseNet preset, or
            without the requested classifier.
    """
    if not isinstance(preset, (str, os.PathLike)):
        raise ValueError(f"`preset` must be a preset directory or a kaggle:// or hf:// handle. Received: {preset!r}")
    preset = os.fspath(preset)
    if preset.startswith(REMOTE_SCHEMES) or _builtin(preset):
        return read_with_keras_hub(preset, include_top)
    if not os.path.isdir(preset):
        raise ValueError(f"`preset` {preset!r} is not a directory, a kaggle:// or hf:// handle, nor one of "
                         "keras-hub's DenseNet presets")
    config = _json(preset, names.CONFIG_FILE)
    if "architecture" in config:
        return _read_local_timm(preset, config, include_top)
    return _read_local_hub(preset, config, include_top)


def dense_layers(model: keras.Model) -> dict:
    """This package's layer name -> layer, for every weighted DenseNet layer
    of `model` at any depth (nested backbones, memory-efficient layers'
    weight holders), the classifier ``predictions`` included.

    Raises:
        ValueError: naming `model`: two layers of one name.
    """
    layers = {}
    for layer in internals.flatten_layers(model):
        if names.layer_kind(layer.name) is not None:
            if layer.name in layers:
                raise ValueError(f"`model` {model.name!r} has two layers named {layer.name!r}")
            layers[layer.name] = layer
    return layers


def _shape(layer) -> tuple:
    return tuple(int(d) for d in layer.weights[0].shape)


def arch_of(layers: dict, model: keras.Model) -> ArchConfig:
    """The architecture of a model's weighted DenseNet layers (`dense_layers`),
    read from their shapes as `keras_densenet.weights.checkpoints.detect_arch`
    reads a state dict's.

    Raises:
        ValueError: naming `model`: no DenseNet layers, or an invalid one.
    """
    if "conv1_conv" not in layers or "conv2_block1_2_conv" not in layers:
        raise ValueError(f"`model` {model.name!r} is not a DenseNet of keras_densenet "
                         "(no 'conv1_conv' and 'conv2_block1_2_conv' layers)")
    blocks = []
    while f"conv{len(blocks) + 2}_block1_0_bn" in layers:
        stage, n = len(blocks) + 2, 0
        while f"conv{stage}_block{n + 1}_0_bn" in layers:
            n += 1
        blocks.append(n)
    growth = _shape(layers["conv2_block1_2_conv"])[-1]
    bottleneck = "conv2_block1_1_conv" in layers
    compression = 0.5
    if "pool2_conv" in layers:
        inp, out = _shape(layers["pool2_conv"])[2:]
        if out != int(inp * 0.5):  # any theta with floor(theta * inp) == out, as detect_arch
            compression = min(1.0, (out + 0.5) / inp)
    try:
        return ArchConfig(
            blocks=tuple(blocks), growth_rate=growth, bottleneck=bottleneck,
            bn_size=_shape(layers["conv2_block1_1_conv"])[-1] // growth if bottleneck else 4,
            compression=compression, num_init_features=_shape(layers["conv1_conv"])[-1],
            stem="imagenet" if "conv1_bn" in layers else "cifar",
        )
    except ValueError as e:
        raise ValueError(f"`model` {model.name!r} is not a valid DenseNet: {e}") from None


def assign_table(model: keras.Model, layers: dict, table: dict, bn_epsilon: float, source: str) -> None:
    """Sets `layers` (name -> layer of `model`) from `table`, all or nothing.

    Every layer must be in `table` with arrays of its weights' shapes, and
    every entry of `table` must have a layer. BatchNormalization moving
    variances are shifted by ``bn_epsilon - layer.epsilon``.

    Raises:
        ValueError: naming `source` and the missing, unexpected or
            mis-shaped weights.
    """
    problems, plan = [], []
    for name, layer in layers.items():
        values = table.get(name)
        if values is None:
            problems.append(f"missing {name!r} (keras-hub's {names.hub_layer(name)!r})")
            continue
        shapes = [tuple(w.shape) for w in layer.weights]
        if [tuple(v.shape) for v in values] != shapes:
            problems.append(f"{name!r}: expected shapes {shapes}, got {[tuple(v.shape) for v in values]}")
            continue
        values = list(values)
        if names.layer_kind(name) == "bn" and bn_epsilon != layer.epsilon:
            shifted = values[3].astype("float64") + bn_epsilon - layer.epsilon
            values[3] = np.maximum(shifted, 0.0).astype("float32")
        plan.append((layer, values))
    extra = sorted(set(table) - set(layers))
    if extra:
        problems.insert(0, f"weights the model has no layer for: {', '.join(extra[:3])}")
    if problems:
        more = f"; and {len(problems) - 4} more" if len(problems) > 4 else ""
        raise file_error(source, f"does not fit {model.name} ({len(problems)} problem(s)): "
                         + "; ".join(problems[:4]) + more)
    for layer, values in plan:
        layer.set_weights(values)


def load_preset(model: keras.Model, preset, include_top: bool = True) -> PresetWeights:
    """Loads a keras-hub DenseNet preset (or a timm directory) into `model`.

    Args:
        model: a DenseNet of this package (any builder; memory-efficient and
            fused-BatchNormalization models too), e.g. built with
            ``weights=None``.
        preset: a local preset directory or a ``kaggle://`` / ``hf://``
            handle (those need the ``[hub]`` extra).
        include_top: load the classifier of a ``DenseNetImageClassifier``
            preset into `model`'s ``predictions`` layer. keras-hub's head
            gives logits or probabilities as its preset says; `model` keeps
            its own ``classifier_activation``.

    Returns:
        What was read (`PresetWeights`: architecture, image converter...).

    Raises:
        ValueError: one line naming the preset: another architecture (both
            are named), no classifier with ``include_top=True``, missing or
            mis-shaped weights. Nothing is loaded then.
        MissingExtraError: a remote handle without keras-hub installed.

    Example:

    >>> import keras_densenet
    >>> model = keras_densenet.DenseNet121(weights=None, input_shape=(225, 225, 3))  # doctest: +SKIP
    >>> load_preset(model, "kaggle://keras/densenet/keras/densenet_121_imagenet")  # doctest: +SKIP
    """
    weights = read_preset(preset, include_top)
    layers = dense_layers(model)
    arch = arch_of(layers, model)
    if not names.same_network(weights.arch, arch):
        raise ValueError(
            f"`preset` {weights.source!r} holds a DenseNet with {describe(weights.arch)}, but the model "
            f"{model.name!r} is one with {describe(arch)}"
        )
    if include_top:
        if "predictions" not in layers:
            raise ValueError(f"`include_top` is True but the model {model.name!r} has no classifier")
        flat = internals.flatten_layers(model)
        pooling = "max" if any(isinstance(layer, keras.layers.GlobalMaxPooling2D) for layer in flat) else "avg"
        if weights.pooling != pooling:
            raise ValueError(f"`preset` {weights.source!r} pools with {weights.pooling!r} before its classifier, "
                             f"the model {model.name!r} with {pooling!r}")
    assign_table(model, layers, weights.table, weights.bn_epsilon, weights.source)
    return weights
