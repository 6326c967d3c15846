"""The dense connectivity of a model, read back from its layers.

`dense_blocks` finds the dense blocks of a DenseNet built by this package
(standard or memory-efficient graph, possibly nested in a larger model) from
its layer names and kernel shapes, and checks them against the pattern the
paper describes: dense layer ``l`` reads the block input and every earlier
layer's output, ``L(L+1)/2`` direct connections in a block of ``L`` layers,
``k0 + k * L`` channels after it. Each block is a `DenseBlockInfo`, which
also names the convolutions that read each source (for `tools.reuse`).

Example:

>>> from keras_densenet.layers.initialization import shape_only
>>> from keras_densenet.models import densenet
>>> from keras_densenet.tools import connectivity
>>> with shape_only():
...     model = densenet.build("densenet121")
>>> [b.connections for b in connectivity.dense_blocks(model)]
[21, 78, 300, 136]
"""

from __future__ import annotations

import dataclasses
import re
from typing import Optional

import keras
import numpy as np
from keras import layers

from keras_densenet.layers.efficient import EfficientDenseLayer

_FIRST_CONV = re.compile(r"^conv(\d+)_block(\d+)_([12])_conv$")
_EFFICIENT = re.compile(r"^conv(\d+)_block(\d+)$")


@dataclasses.dataclass(frozen=True)
class DenseBlockInfo:
    """One dense block, read from a model.

    Attributes:
        name: the block's name prefix, ``"conv2"`` for the first.
        input_channels: ``k0``, channels of the block input.
        growth: channels each dense layer adds (``k``), one per layer.
        first_convs: each dense layer's first convolution (the 1x1
            bottleneck conv, or the 3x3 conv without bottleneck).
        transition: the 1x1 conv of the transition after the block, if any.
        classifier: the Dense classifier after the last block, if any.
    """

    name: str
    input_channels: int
    growth: tuple
    first_convs: tuple
    transition: Optional[object] = None
    classifier: Optional[object] = None

    @property
    def num_layers(self) -> int:
        """``L``, dense layers in the block."""
        return len(self.growth)

    @property
    def output_channels(self) -> int:
        """``k0 + k * L``: channels after the block."""
        return self.input_channels + sum(self.growth)

    @property
    def connections(self) -> int:
        """Direct connections: layer ``l`` reads ``l`` sources, L(L+1)/2 in all."""
        return sum(len(self.sources_of(i)) for i in range(1, self.num_layers + 1))

    def slices(self) -> list:
        """Channel range ``(start, stop)`` of each source: 0 is the block input,
        ``i`` dense layer ``i``, in concatenation order."""
        bounds = np.cumsum((0, self.input_channels) + self.growth)
        return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    def sources_of(self, layer: int) -> list:
        """The sources dense layer `layer` (1-based) reads: 0 .. layer-1."""
        return list(range(layer))


def _all_layers(model) -> dict:
    """Layers by name, including those of nested models (outer names first)."""
    found, stack = {}, [model]
    while stack:
        current = stack.pop(0)
        for layer in current.layers:
            found.setdefault(layer.name, layer)
            if isinstance(layer, keras.Model):
                stack.append(layer)
    return found


def in_channels(layer) -> int:
    """Input channels of a Conv2D or Dense layer's kernel (its axis -2)."""
    return int(layer.kernel.shape[-2])


def _first_convs(by_name: dict) -> dict:
    """``{(stage, index): (first conv, 3x3 conv)}`` of every dense layer,
    standard or memory-efficient, found by keras.applications' names."""
    first: dict = {}
    for name, layer in by_name.items():
        match = _EFFICIENT.match(name)
        if match and isinstance(layer, EfficientDenseLayer):
            convs = (layer.conv1 if layer.bottleneck else layer.conv2, layer.conv2)
            first[int(match.group(1)), int(match.group(2))] = convs
    for name, layer in by_name.items():
        match = _FIRST_CONV.match(name)
        if not match or not isinstance(layer, layers.Conv2D):
            continue
        stage, index, which = int(match.group(1)), int(match.group(2)), match.group(3)
        prefix = f"conv{stage}_block{index}"
        # The 1x1 bottleneck conv comes first; without it the 3x3 conv does.
        if which == "1" or f"{prefix}_1_conv" not in by_name:
            last = by_name.get(f"{prefix}_2_conv")
            if isinstance(last, layers.Conv2D):
                first[stage, index] = (layer, last)
    return first


def _block(model, stage: int, convs: list) -> DenseBlockInfo:
    """Block `stage` from its dense layers' convs, checked against dense
    connectivity: layer ``i`` reads ``k0 + k_1 + ... + k_(i-1)`` channels."""
    k0 = in_channels(convs[0][0])
    growth = tuple(int(c[1].kernel.shape[-1]) for c in convs)
    for i, (conv, _) in enumerate(convs):
        expected = k0 + sum(growth[:i])
        if in_channels(conv) != expected:
            raise ValueError(
                f"`model` {model.name!r}: {conv.name} reads {in_channels(conv)} channels, "
                f"not the {expected} of dense connectivity; not a DenseNet of this package."
            )
    return DenseBlockInfo(f"conv{stage}", k0, growth, tuple(c[0] for c in convs))


def dense_blocks(model: keras.Model) -> list:
    """The dense blocks of a DenseNet built by this package (standard or
    memory-efficient graph, possibly nested in a larger model).

    Layer names are keras.applications' (``conv{s}_block{i}_1_conv``...):
    dense layer ``i`` of block ``s`` reads ``[x0, y1, ..., y(i-1)]`` in that
    concatenation order, which is checked against every kernel's input
    channels.

    Raises:
        ValueError: `model` has no dense blocks, or its kernels do not fit the
            dense connectivity pattern.

    Example:

    >>> import keras_densenet
    >>> model = keras_densenet.DenseNet((2, 3), 4, num_init_features=6,
    ...                                 input_shape=(16, 16, 3), classes=3)
    >>> [(b.name, b.input_channels, b.output_channels) for b in dense_blocks(model)]
    [('conv2', 6, 14), ('conv3', 7, 19)]
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"`model` must be a keras.Model. Received: {type(model).__name__}")
    by_name = _all_layers(model)
    first = _first_convs(by_name)
    if not first:
        raise ValueError(
            f"`model` {model.name!r} is not a DenseNet built by keras_densenet: it has no "
            "dense layers (named 'conv<stage>_block<i>_1_conv' / '_2_conv')."
        )
    stages = sorted({s for s, _ in first})
    result = []
    for s in stages:
        count = max(i for t, i in first if t == s)
        if any((s, i) not in first for i in range(1, count + 1)):
            raise ValueError(f"`model` {model.name!r}: dense block conv{s} has missing layers.")
        block = _block(model, s, [first[s, i] for i in range(1, count + 1)])
        transition = by_name.get(f"pool{s}_conv")
        classifier = by_name.get("predictions")
        if transition is not None and in_channels(transition) == block.output_channels:
            block = dataclasses.replace(block, transition=transition)
        elif (
            s == stages[-1]
            and isinstance(classifier, layers.Dense)
            and in_channels(classifier) == block.output_channels
        ):
            block = dataclasses.replace(block, classifier=classifier)
        result.append(block)
    return result
