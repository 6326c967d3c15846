"""The explicit map between this package's DenseNet and keras-hub's, as data.

keras-hub's ``DenseNetBackbone`` has the same weights as this package's
DenseNet (same order and shapes for DenseNet-121), but other layer names,
and its dense layers number their BatchNormalizations from 1 where
keras.applications numbers them from 0. Copying weights by order would
silently pair the wrong tensors the day either graph changes, so the map is
by name, from `LAYER_NAMES`, read both ways. The module is keras-free: it also
holds the architecture keras-hub can express (`hub_arch`,
`why_not_expressible`) and the keys keras-hub's weight files use.

Example:

>>> hub_layer("conv3_block4_0_bn")
'stack2_block4_1_bn'
>>> our_layer("transition1_conv")
'pool2_conv'
>>> hub_arch({"stackwise_num_repeats": [6, 12, 24, 16], "growth_rate": 32}).param_count(classes=None)
7037504
"""

from __future__ import annotations

import re
from typing import Optional

from keras_densenet.core.arch import ArchConfig
from keras_densenet.core.pretrained import KERAS_BN_EPSILON

#: ``(this package's layer, keras-hub's layer, kind)``. ``{stage}`` numbers
#: keras.applications' dense blocks and transitions from 2 (``conv1`` is the
#: stem); ``{block}`` numbers keras-hub's stacks and transitions from 1, so
#: ``stage = block + 1``; ``{layer}`` is the 1-based dense layer. The kind
#: says which weights the layer has (``bn``: gamma, beta, moving mean,
#: moving variance; ``conv``: kernel; ``dense``: kernel, bias).
LAYER_NAMES = (
    ("conv1_conv", "conv1_conv", "conv"),
    ("conv1_bn", "conv1_bn", "bn"),
    ("conv{stage}_block{layer}_0_bn", "stack{block}_block{layer}_1_bn", "bn"),
    ("conv{stage}_block{layer}_1_conv", "stack{block}_block{layer}_1_conv", "conv"),
    ("conv{stage}_block{layer}_1_bn", "stack{block}_block{layer}_2_bn", "bn"),
    ("conv{stage}_block{layer}_2_conv", "stack{block}_block{layer}_2_conv", "conv"),
    ("pool{stage}_bn", "transition{block}_bn", "bn"),
    ("pool{stage}_conv", "transition{block}_conv", "conv"),
    ("bn", "bn", "bn"),
    ("predictions", "predictions", "dense"),
)

#: keras-hub's fixed choices (its DenseNetBackbone source): a 7x7/2
#: stem conv with 64 filters, 1x1 bottlenecks of 4k filters, and
#: BatchNormalization epsilon 1.001e-5 (keras.applications' value).
HUB_STEM_FEATURES = 64
HUB_BN_SIZE = 4
HUB_BN_EPSILON = KERAS_BN_EPSILON

#: ``registered_name`` of keras-hub's classes in a preset's JSON files.
BACKBONE_CLASS = "keras_hub>DenseNetBackbone"
CLASSIFIER_CLASS = "keras_hub>DenseNetImageClassifier"
#: Files of a keras-hub preset directory.
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
METADATA_FILE = "metadata.json"
TASK_FILE = "task.json"
TASK_WEIGHTS_FILE = "task.weights.h5"
IMAGE_CONVERTER_FILE = "image_converter.json"
#: Preset handles that only keras-hub can fetch.
REMOTE_SCHEMES = ("kaggle://", "hf://", "gs://", "modelscope://")


def _pattern(template: str) -> re.Pattern:
    """A regex matching `template`, its ``{field}``s as named groups."""
    parts = re.split(r"\{(\w+)\}", template)
    regex = "".join(re.escape(p) if i % 2 == 0 else rf"(?P<{p}>[1-9]\d*)" for i, p in enumerate(parts))
    return re.compile(f"^{regex}$")


_OURS = [(_pattern(ours), hub, kind) for ours, hub, kind in LAYER_NAMES]
_HUBS = [(_pattern(hub), ours, kind) for ours, hub, kind in LAYER_NAMES]


def _translate(name: str, patterns, from_hub: bool) -> Optional[tuple]:
    for pattern, template, kind in patterns:
        match = pattern.match(name)
        if match:
            fields = {k: int(v) for k, v in match.groupdict().items()}
            if from_hub and "block" in fields:
                fields["stage"] = fields["block"] + 1
            elif not from_hub and "stage" in fields:
                fields["block"] = fields["stage"] - 1
            return template.format(**fields), kind
    return None


def hub_layer(name: str) -> Optional[str]:
    """keras-hub's name for this package's layer `name` (``None``: no weights there).

    Example:

    >>> hub_layer("pool4_bn"), hub_layer("conv1_pad")
    ('transition3_bn', None)
    """
    found = _translate(name, _OURS, from_hub=False)
    return found[0] if found else None


def our_layer(name: str) -> Optional[str]:
    """This package's name for keras-hub's layer `name` (``None``: unknown).

    Example:

    >>> our_layer("stack1_block2_2_conv")
    'conv2_block2_2_conv'
    """
    found = _translate(name, _HUBS, from_hub=True)
    return found[0] if found else None


def layer_kind(name: str) -> Optional[str]:
    """``"bn"``, ``"conv"`` or ``"dense"`` for one of this package's weighted
    DenseNet layers, ``None`` for any other name.

    Example:

    >>> layer_kind("conv2_block1_1_bn"), layer_kind("relu")
    ('bn', None)
    """
    found = _translate(name, _OURS, from_hub=False)
    return found[1] if found else None


def hub_weight_layers(blocks) -> list:
    """keras-hub's weighted backbone layers, in its model's layer order, as
    ``(name, kind)``.

    Example:

    >>> [name for name, _ in hub_weight_layers([1, 1])][:4]
    ['conv1_conv', 'conv1_bn', 'stack1_block1_1_bn', 'stack1_block1_1_conv']
    """
    out = [("conv1_conv", "conv"), ("conv1_bn", "bn")]
    for index, repeats in enumerate(blocks, start=1):
        for layer in range(1, repeats + 1):
            prefix = f"stack{index}_block{layer}"
            out += [(f"{prefix}_1_bn", "bn"), (f"{prefix}_1_conv", "conv"),
                    (f"{prefix}_2_bn", "bn"), (f"{prefix}_2_conv", "conv")]
        if index < len(blocks):
            out += [(f"transition{index}_bn", "bn"), (f"transition{index}_conv", "conv")]
    return out + [("bn", "bn")]


#: Keras' weight-file group of each kind: the layer's class in snake case.
_KEY_STEMS = {"bn": "batch_normalization", "conv": "conv2d", "dense": "dense"}


def h5_keys(blocks) -> dict:
    """keras-hub layer name -> its group in a ``model.weights.h5``.

    Keras 3 files address a layer by its class and rank among the model's
    layers of that class (``layers/batch_normalization_3``), and name it in
    the group's ``name`` attribute only in recent Keras releases; the loader
    prefers that attribute and falls back to these keys for older presets.

    Example:

    >>> h5_keys([1, 1])["stack1_block1_2_bn"]
    'layers/batch_normalization_2'
    """
    counts, keys = {}, {}
    for name, kind in hub_weight_layers(blocks):
        n = counts.get(kind, 0)
        counts[kind] = n + 1
        keys[name] = f"layers/{_KEY_STEMS[kind]}" + (f"_{n}" if n else "")
    return keys


#: Dense layers a preset may declare: DenseNet-264 has 130; a file asking
#: for millions is damaged or hostile, and is refused before any work.
MAX_LAYERS = 10_000


def hub_arch(config: dict) -> ArchConfig:
    """The architecture of a keras-hub ``DenseNetBackbone`` config (the
    ``config`` of its ``config.json``).

    Raises:
        ValueError: the config has no valid ``stackwise_num_repeats``, or
            one beyond any DenseNet (more than `MAX_LAYERS` dense layers).
    """
    repeats = config.get("stackwise_num_repeats") if isinstance(config, dict) else None
    if isinstance(repeats, (list, tuple)) and all(isinstance(r, int) for r in repeats) and sum(repeats) > MAX_LAYERS:
        raise ValueError(f"stackwise_num_repeats={repeats!r}: more than {MAX_LAYERS} dense layers")
    try:
        return ArchConfig(
            blocks=tuple(config["stackwise_num_repeats"]),
            growth_rate=int(config.get("growth_rate", 32)),
            bn_size=HUB_BN_SIZE,
            compression=float(config.get("compression_ratio", 0.5)),
            num_init_features=HUB_STEM_FEATURES,
        )
    except (KeyError, TypeError) as e:
        raise ValueError(f"not a DenseNetBackbone config ({type(e).__name__}: {e}): {config!r}") from None


def hub_config(arch: ArchConfig) -> dict:
    """The ``DenseNetBackbone`` constructor arguments of `arch` (expressible
    ones: see `why_not_expressible`).

    Example:

    >>> hub_config(ArchConfig((6, 12, 32, 32)))
    {'stackwise_num_repeats': [6, 12, 32, 32], 'growth_rate': 32, 'compression_ratio': 0.5}
    """
    return {"stackwise_num_repeats": list(arch.blocks), "growth_rate": arch.growth_rate,
            "compression_ratio": arch.compression}


def why_not_expressible(arch: ArchConfig) -> Optional[str]:
    """Why keras-hub's ``DenseNetBackbone`` cannot express `arch`, or ``None``.

    keras-hub builds the 7x7/2 ImageNet stem with 64 filters and dense layers
    with a 1x1 bottleneck of 4k filters; blocks, growth rate and compression
    are free.

    Example:

    >>> why_not_expressible(ArchConfig((6, 12, 36, 24), 48, num_init_features=96))
    'its stem has 96 filters (DenseNet-161 has 96), keras-hub always builds 64'
    >>> why_not_expressible(ArchConfig((6, 12, 24, 16))) is None
    True
    """
    if arch.stem != "imagenet":
        return (f"its stem is {arch.stem!r} (one 3x3 conv), keras-hub builds only the ImageNet stem "
                "(7x7/2 conv, 3x3/2 max-pool)")
    if arch.num_init_features != HUB_STEM_FEATURES:
        return (f"its stem has {arch.num_init_features} filters (DenseNet-161 has 96), keras-hub always "
                f"builds {HUB_STEM_FEATURES}")
    if not arch.bottleneck:
        return "its dense layers have no 1x1 bottleneck, keras-hub's always have one"
    if arch.bn_size != HUB_BN_SIZE:
        return f"its bottlenecks have {arch.bn_size}k filters, keras-hub's have {HUB_BN_SIZE}k"
    return None


def same_network(a: ArchConfig, b: ArchConfig) -> bool:
    """Whether `a` and `b` build the same layers with the same shapes:
    compressions are compared by the channels they keep, so 0.5 and
    0.5000001 are one network.

    Example:

    >>> same_network(ArchConfig((2, 2), 8, compression=0.5), ArchConfig((2, 2), 8, compression=0.51))
    True
    """
    return (a.blocks, a.growth_rate, a.bottleneck, a.bn_size, a.num_init_features, a.stem, a.block_channels()) == (
        b.blocks, b.growth_rate, b.bottleneck, b.bn_size, b.num_init_features, b.stem, b.block_channels())
