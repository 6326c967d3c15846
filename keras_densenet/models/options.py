"""`BuildOptions`: every builder argument besides the architecture, validated once.

The public builders keep explicit signatures (keras.applications parity);
each gathers its arguments into one `BuildOptions`, so the DenseNet and
FC-DenseNet builders check their shared options in one place, with the same
messages. `appending_doc` gives the named builders of a family one shared
argument documentation.

Example:

>>> from keras_densenet.models.options import BuildOptions
>>> BuildOptions(pooling="avg", include_top=False).pooling
'avg'
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import keras

from keras_densenet.core import checks
from keras_densenet.layers.blocks import BN_MOMENTUM

POOLINGS = (None, "avg", "max")
DATA_FORMATS = ("channels_last", "channels_first")


@dataclasses.dataclass(frozen=True)
class BuildOptions:
    """Every builder argument besides the architecture, validated once.

    It checks them all on creation and resolves ``data_format=None`` to
    Keras' configured default. The attributes are the builders' arguments of
    the same names (see `keras_densenet.DenseNet`).

    Example:

    >>> BuildOptions(pooling="avg", include_top=False).pooling
    'avg'
    >>> BuildOptions(drop_rate=1.0)
    Traceback (most recent call last):
    ...
    ValueError: `drop_rate` (dropout after each dense layer) must be a number in [0, 1). Received: drop_rate=1.0
    """

    include_top: bool = True
    weights: object = None
    input_tensor: object = None
    input_shape: Optional[tuple] = None
    pooling: Optional[str] = None
    classes: int = 1000
    classifier_activation: object = "softmax"
    name: str = "densenet"
    data_format: Optional[str] = None
    drop_rate: float = 0.0
    bn_epsilon: Optional[float] = None
    bn_momentum: float = BN_MOMENTUM
    memory_efficient: bool = False
    fused_bn: bool = False

    def __post_init__(self):
        checks.boolean("include_top", self.include_top)
        checks.boolean("memory_efficient", self.memory_efficient)
        checks.boolean("fused_bn", self.fused_bn)
        checks.number("drop_rate", self.drop_rate, low=0, high=1, high_open=True,
                      about=" (dropout after each dense layer)")
        checks.one_of("pooling", self.pooling, POOLINGS)
        if self.include_top:
            checks.integer("classes", self.classes)
        if self.data_format is None:
            object.__setattr__(self, "data_format", keras.config.image_data_format())
        checks.one_of("data_format", self.data_format, DATA_FORMATS)
        if self.bn_epsilon is not None:
            checks.positive("bn_epsilon", self.bn_epsilon)
        checks.number("bn_momentum", self.bn_momentum, low=0, high=1, high_open=True,
                      about=" (Keras convention: weight of the old moving statistics)")

    @classmethod
    def of(cls, arguments: dict) -> "BuildOptions":
        """The options among a builder's arguments (its ``locals()``)."""
        return cls(**{key: arguments[key] for key in OPTION_NAMES})

    def replace(self, **changes) -> "BuildOptions":
        """A copy with `changes`, validated again."""
        return dataclasses.replace(self, **changes)


#: The names of `BuildOptions`: every builder's keyword options.
OPTION_NAMES = tuple(field.name for field in dataclasses.fields(BuildOptions))


def appending_doc(text: str):
    """A decorator that appends `text` (the argument documentation the named
    builders of a family share) to a builder's docstring.

    Example:

    >>> @appending_doc("    Args:\\n        x: a number.\\n")
    ... def double(x):
    ...     '''Twice `x`.'''
    ...     return 2 * x
    >>> print(double.__doc__)
    Twice `x`.
        Args:
            x: a number.
    <BLANKLINE>
    """

    def decorate(function):
        function.__doc__ = function.__doc__.rstrip() + "\n" + text
        return function

    return decorate
