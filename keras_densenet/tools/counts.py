"""What a model's graph costs, counted from the graph itself.

The depth, compute and training memory the papers state, read from a built
functional Keras model rather than copied from tables:

* `weighted_depth`: the depth as the papers count it: the most weighted
  layers (convolutions and the classifier) on any path from input to output
  (DenseNet-121: 121; ResNet-50: 50, its projection shortcuts lie on shorter
  paths).
* `count_macs`: multiply-accumulates of one image's forward pass.
* `activation_bytes`: bytes of the activations a training step keeps for its
  backward pass, per image.

Counting needs shapes only: build with
`keras_densenet.layers.initialization.shape_only`, which creates no weight
values, so even DenseNet-264 takes about a second on every backend.

Example:

>>> from keras_densenet.layers.initialization import shape_only
>>> from keras_densenet.models import densenet
>>> from keras_densenet.tools import counts
>>> with shape_only():
...     model = densenet.build("densenet121")
>>> counts.weighted_depth(model), round(counts.count_macs(model) / 1e9, 2)
(121, 2.83)
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import layers

from keras_densenet.core import internals
from keras_densenet.layers.efficient import EfficientDenseLayer

# How a layer's backward pass uses its tensors (see `activation_bytes`).
_KEEPS_NOTHING = (
    layers.InputLayer, layers.Concatenate, layers.Add, layers.ZeroPadding2D,
    layers.AveragePooling2D, layers.GlobalAveragePooling2D, layers.Flatten,
    layers.Reshape, layers.Rescaling, layers.Normalization, layers.Resizing,
)
_KEEPS_OUTPUT = (layers.Activation, layers.ReLU, layers.Softmax, layers.Dropout)
_WEIGHTED = (layers.Conv1D, layers.Conv2D, layers.Conv3D, layers.DepthwiseConv2D, layers.Dense)


# --- walking the graph ----------------------------------------------------------


def _nodes(model: keras.Model) -> list:
    """The model's graph nodes, inputs first (each with its `operation`)."""
    return internals.functional_nodes(model)


def _static_shape(tensor, layer) -> tuple:
    shape = tuple(tensor.shape[1:])
    if any(d is None for d in shape):
        raise ValueError(
            f"`model` needs a static input shape to count; layer {layer.name!r} has "
            f"shape {tuple(tensor.shape)}. Build it with e.g. input_shape=(224, 224, 3)."
        )
    return shape


def _size(tensor, layer) -> int:
    return math.prod(_static_shape(tensor, layer))


def _spatial(tensor, layer, channels: int) -> int:
    """Positions per image of a conv output (all elements / channels)."""
    return _size(tensor, layer) // channels


def _check_model(model) -> None:
    if not isinstance(model, keras.Model) or internals.functional_nodes(model) is None:
        raise ValueError(
            "`model` must be a functional keras.Model (as this package and "
            f"keras.applications build). Received: {type(model).__name__}"
        )


# --- the counts -----------------------------------------------------------------


def weighted_depth(model: keras.Model) -> int:
    """Depth as the papers count it: the most weighted layers on one path.

    Weighted layers are convolutions and Dense layers; a memory-efficient
    dense layer counts as its 2 (or 1, without bottleneck) convolutions and a
    nested model as its own weighted depth. DenseNet-121 gives 121 (stem conv
    + 58 dense layers x 2 + 3 transitions + classifier), DenseNet-BC-100 100,
    ResNet-50 50.

    Example:

    >>> from keras_densenet.layers.initialization import shape_only
    >>> from keras_densenet.models import densenet
    >>> with shape_only():
    ...     weighted_depth(densenet.build("densenet_bc_100_k12"))
    100
    """
    _check_model(model)
    depth: dict = {}
    for node in _nodes(model):
        op = node.operation
        if isinstance(op, keras.Model):
            own = weighted_depth(op)
        elif isinstance(op, EfficientDenseLayer):
            own = 2 if op.bottleneck else 1
        else:
            own = 1 if isinstance(op, _WEIGHTED) else 0
        start = max((depth.get(id(t), 0) for t in node.input_tensors), default=0)
        for t in node.output_tensors:
            depth[id(t)] = start + own
    return max(depth.get(id(t), 0) for t in model.outputs)


def count_macs(model: keras.Model) -> int:
    """Multiply-accumulates of one image's forward pass (static input shape).

    Counts `Conv1D`/`Conv2D`/`Conv3D`/`DepthwiseConv2D` layers (output
    positions x kernel size; grouped and depthwise kernels hold only the
    inputs each output reads) and `Dense` layers (inputs x units), including
    those inside memory-efficient dense layers and nested models; other
    layer types (e.g. transposed or separable convolutions) count 0. Bias
    additions, BatchNormalization, ReLU, pooling and concatenation are left
    out, as in torchvision's "GFLOPS" column, which counts the same
    multiply-accumulates.

    Example:

    >>> from keras_densenet.layers.initialization import shape_only
    >>> with shape_only():
    ...     count_macs(keras.applications.ResNet50(weights=None)) / 1e9  # doctest: +ELLIPSIS
    3.85...
    """
    _check_model(model)
    total = 0
    for node in _nodes(model):
        op = node.operation
        if isinstance(op, keras.Model):
            total += count_macs(op)
        elif isinstance(op, EfficientDenseLayer):
            out = node.output_tensors[0]
            positions = _spatial(out, op, op.growth_rate)
            convs = ([op.conv1] if op.bottleneck else []) + [op.conv2]
            total += sum(positions * math.prod(c.kernel.shape) for c in convs)
        elif isinstance(op, layers.Dense):
            out = node.output_tensors[0]
            total += _spatial(out, op, op.units) * math.prod(op.kernel.shape)
        elif isinstance(op, _WEIGHTED):
            out = node.output_tensors[0]
            axis = -1 if op.data_format == "channels_last" else 1
            total += _spatial(out, op, out.shape[axis]) * math.prod(op.kernel.shape)
    return total


def _kept(node) -> list:
    """The tensors a layer's backward pass keeps (see `activation_bytes`)."""
    op = node.operation
    if isinstance(op, _KEEPS_NOTHING):
        return []
    if isinstance(op, layers.Dropout):
        return list(node.output_tensors) if op.rate > 0 else []
    if isinstance(op, _KEEPS_OUTPUT):
        return list(node.output_tensors)
    if isinstance(op, EfficientDenseLayer):
        # Recomputed in the backward pass: only its inputs (earlier maps,
        # shared with the other layers) and, with dropout, the mask.
        return list(node.input_tensors) + (list(node.output_tensors) if op.drop_rate > 0 else [])
    # Conv, Dense, BatchNormalization, max pooling and unknown layers keep
    # their input.
    return list(node.input_tensors)


def activation_bytes(model: keras.Model) -> int:
    """Bytes of activations one training step keeps for its backward pass, per image.

    A model of what reverse-mode differentiation must keep, read from the
    graph, so it is the same on every backend and deterministic:

    * convolutions, Dense and BatchNormalization layers keep their input,
      ReLU/activation layers their output, max pooling its input, dropout
      its mask (counted at the output's size and dtype);
    * concatenation, addition, padding, average pooling, rescaling keep
      nothing (their backward pass only routes or scales gradients);
    * a memory-efficient dense layer (`EfficientDenseLayer`) is recomputed
      in the backward pass and keeps only its inputs, the earlier feature
      maps, which the block keeps anyway;
    * each tensor counts once however many layers keep it (a ReLU output
      feeding a conv), at its dtype's size;
    * not counted: the input batch, weights, gradients, optimizer state and
      BatchNormalization's per-channel statistics.

    This is the standard implementation's ideal. Real backends differ a
    little: on TensorFlow and PyTorch the memory-efficient layer also keeps
    its 4k-channel bottleneck output (see `keras_densenet.layers.efficient`), and
    ``keras-densenet bench activations`` measures what JAX keeps.

    Example:

    >>> from keras_densenet.layers.initialization import shape_only
    >>> from keras_densenet.models import densenet
    >>> with shape_only():
    ...     standard = activation_bytes(densenet.build("densenet121"))
    ...     efficient = activation_bytes(densenet.build("densenet121", memory_efficient=True))
    >>> round(standard / 1e6), round(efficient / 1e6)
    (129, 27)
    """
    _check_model(model)
    inputs = {id(t) for t in model.inputs}
    kept: dict = {}
    extra = 0
    for node in _nodes(model):
        op = node.operation
        if isinstance(op, keras.Model):
            extra += activation_bytes(op)
            continue
        for t in _kept(node):
            if id(t) not in inputs:
                kept[id(t)] = _size(t, op) * np.dtype(keras.backend.standardize_dtype(t.dtype)).itemsize
    return extra + sum(kept.values())
