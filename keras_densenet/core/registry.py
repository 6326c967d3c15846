"""The one registry of named models: DenseNet variants and FC-DenseNets.

Every named model in this package is a row here: an architecture (the knobs
of the paper, `keras_densenet.core.arch` and `keras_densenet.core.fc_arch`)
plus the weights published for it (`keras_densenet.core.pretrained`).
Builders, the weight loader, the CLI and the test suite all read these
tables, so adding a variant is adding a row (and the tests pick it up
automatically).

The architecture and weights classes are importable from here too, as the
registry's vocabulary (``registry.ArchConfig``, ``registry.WeightsSpec``).

Example:

>>> from keras_densenet.core import registry
>>> registry.get_variant("densenet121").arch.blocks
(6, 12, 24, 16)
>>> sorted(registry.get_variant("densenet121").weights)
['imagenet', 'torchvision']
>>> registry.get_variant("densenet121").num_params  # model.count_params()
8062504
"""

from __future__ import annotations

import dataclasses
from typing import Optional, TypeVar

from keras_densenet.core import pretrained
from keras_densenet.core.arch import STEMS, ArchConfig, check_bc_depth
from keras_densenet.core.fc_arch import CAMVID_CLASSES, FCArchConfig
from keras_densenet.core.pretrained import KERAS_BN_EPSILON, TORCH_BN_EPSILON, WeightsSpec

__all__ = [
    # The registry.
    "Variant", "FCVariant", "VARIANTS", "FC_VARIANTS", "KERAS_APPLICATIONS",
    "get_variant", "get_fc_variant", "find_variant",
    # Its vocabulary, defined in core.arch, core.fc_arch and core.pretrained.
    "ArchConfig", "STEMS", "check_bc_depth", "FCArchConfig", "CAMVID_CLASSES",
    "WeightsSpec", "KERAS_BN_EPSILON", "TORCH_BN_EPSILON",
]


@dataclasses.dataclass(frozen=True)
class Variant:
    """A named DenseNet: architecture plus its published weights.

    Attributes:
        name: registry key, e.g. ``"densenet121"``.
        arch: the architecture.
        weights: weight sets by every name ``weights=`` accepts
            (``"imagenet"``, ``"torchvision"``...; an alias maps to the same
            spec as the name it stands for).
        default_weights: what the named builder loads when ``weights`` is
            not given (``None`` for variants without published weights).
        description: one line for tables and help texts.
        num_params: parameters of the model with its classifier of
            `classes` (``model.count_params()``: BatchNormalization moving
            statistics included), checked against the built model by the
            tests, as torchvision checks its weights' metadata.
        classes: the classifier size `build` defaults to.
        builder: the name of this variant's builder function in
            `keras_densenet` (``None``: reach it through `build`).
        keras_application: whether `keras.applications` has a builder of
            the same name (and layer names and weights) to be checked against.
    """

    name: str
    arch: ArchConfig
    weights: dict = dataclasses.field(default_factory=dict)
    default_weights: Optional[str] = None
    description: str = ""
    num_params: Optional[int] = None
    classes: int = 1000
    builder: Optional[str] = None
    keras_application: bool = False


@dataclasses.dataclass(frozen=True)
class FCVariant:
    """A named FC-DenseNet (Jégou et al., Table 2).

    Attributes:
        name: registry key, e.g. ``"fc_densenet103"``.
        arch: the architecture.
        description: one line for tables and help texts.
        num_params: ``model.count_params()`` with `classes` classes
            (BatchNormalization moving statistics included), checked against
            the built model by the tests.
        builder: the name of this variant's builder in `keras_densenet`.
        classes: the classifier size the builder defaults to (CamVid's 11).
    """

    name: str
    arch: FCArchConfig
    description: str = ""
    num_params: Optional[int] = None
    builder: Optional[str] = None
    classes: int = CAMVID_CLASSES


def _imagenet(name: str, blocks, description: str, num_params: int, *, growth_rate: int = 32,
              num_init_features: Optional[int] = None, keras_application: bool = False) -> Variant:
    """An ImageNet DenseNet row: its weights and builder follow from its name."""
    weights = pretrained.weight_sets(name)
    return Variant(
        name,
        ArchConfig(blocks=blocks, growth_rate=growth_rate, num_init_features=num_init_features),
        weights,
        pretrained.DEFAULT_WEIGHTS if weights else None,
        description,
        num_params=num_params,
        builder=name.replace("densenet", "DenseNet"),
        keras_application=keras_application,
    )


def _cifar_bc(depth: int, growth_rate: int, description: str, num_params: int) -> Variant:
    """A CIFAR DenseNet-BC row (10 classes, no published weights; `build` builds it)."""
    arch = ArchConfig.bc(depth, growth_rate)
    return Variant(f"densenet_bc_{depth}_k{growth_rate}", arch, description=description,
                   num_params=num_params, classes=10)


#: DenseNets by name (classifiers; ImageNet's, then the paper's CIFAR nets).
VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in [
        _imagenet("densenet121", (6, 12, 24, 16), "DenseNet-121 (k=32), ImageNet", 8_062_504,
                  keras_application=True),
        _imagenet("densenet161", (6, 12, 36, 24), "DenseNet-161 (k=48), ImageNet, torchvision weights",
                  28_900_936, growth_rate=48, num_init_features=96),
        _imagenet("densenet169", (6, 12, 32, 32), "DenseNet-169 (k=32), ImageNet", 14_307_880,
                  keras_application=True),
        _imagenet("densenet201", (6, 12, 48, 32), "DenseNet-201 (k=32), ImageNet", 20_242_984,
                  keras_application=True),
        _imagenet("densenet264", (6, 12, 64, 48), "DenseNet-264 (k=32), paper Table 1, no published weights",
                  33_736_232),
        _cifar_bc(100, 12, "CIFAR DenseNet-BC, L=100, k=12 (0.8M params)", 793_150),
        _cifar_bc(250, 24, "CIFAR DenseNet-BC, L=250, k=24 (15.3M params)", 15_582_382),
        _cifar_bc(190, 40, "CIFAR DenseNet-BC, L=190, k=40 (25.6M params)", 25_881_390),
    ]
}

#: FC-DenseNets by name (segmentation nets, the paper's Table 2).
FC_VARIANTS: dict[str, FCVariant] = {
    v.name: v
    for v in [
        FCVariant(
            "fc_densenet56",
            FCArchConfig(down_blocks=(4,) * 5, bottleneck_layers=4, growth_rate=12),
            "FC-DenseNet56: 4 layers per dense block, k=12",
            num_params=1_396_187,
            builder="FCDenseNet56",
        ),
        FCVariant(
            "fc_densenet67",
            FCArchConfig(down_blocks=(5,) * 5, bottleneck_layers=5, growth_rate=16),
            "FC-DenseNet67: 5 layers per dense block, k=16",
            num_params=3_500_155,
            builder="FCDenseNet67",
        ),
        FCVariant(
            "fc_densenet103",
            FCArchConfig(down_blocks=(4, 5, 7, 10, 12), bottleneck_layers=15, growth_rate=16),
            "FC-DenseNet103: blocks 4-5-7-10-12 | 15 | 12-10-7-5-4, k=16",
            num_params=9_421_147,
            builder="FCDenseNet103",
        ),
    ]
}

#: keras.applications' builder names, by the variant they build.
KERAS_APPLICATIONS = {v.name: v.builder for v in VARIANTS.values() if v.keras_application}

_Row = TypeVar("_Row", Variant, FCVariant)


def _lookup(table: dict[str, _Row], name: str, kind: str) -> _Row:
    """The row of `table` called `name`: case-insensitive, ``-`` read as ``_``.

    The one lookup of both tables (a test may add a row to one for a while).

    Raises:
        ValueError: if no row has that name; the message lists them.
    """
    key = str(name).lower().replace("-", "_")
    if key not in table:
        raise ValueError(f"Unknown {kind} variant {name!r}. Registered variants: {', '.join(table)}.")
    return table[key]


def get_variant(name: str) -> Variant:
    """Returns the registered DenseNet called `name` (case-insensitive).

    Raises:
        ValueError: if no variant has that name; the message lists them.

    Example:

    >>> get_variant("DenseNet121").name
    'densenet121'
    >>> get_variant("densenet99")
    Traceback (most recent call last):
    ...
    ValueError: Unknown DenseNet variant 'densenet99'. Registered variants: densenet121, ...
    """
    return _lookup(VARIANTS, name, "DenseNet")


def get_fc_variant(name: str) -> FCVariant:
    """Returns the registered FC-DenseNet called `name` (case-insensitive).

    Raises:
        ValueError: if no FC-DenseNet has that name; the message lists them.

    Example:

    >>> get_fc_variant("FC-DenseNet67").arch.growth_rate
    16
    """
    return _lookup(FC_VARIANTS, name, "FC-DenseNet")


def find_variant(arch: ArchConfig) -> Optional[Variant]:
    """Returns the registered variant whose architecture equals `arch`.

    `default_size` is ignored, so a generic `DenseNet(...)` call that happens
    to spell out DenseNet-121 can use DenseNet-121's weights.

    Example:

    >>> find_variant(ArchConfig(blocks=(6, 12, 24, 16))).name
    'densenet121'
    """
    for variant in VARIANTS.values():
        if variant.arch.same_architecture(arch):
            return variant
    return None
