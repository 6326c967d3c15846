"""`multiscale_features`: every dense block's output of a DenseNet, as a model.

A backbone for detection and segmentation (`keras_densenet.segmentation_head`
decodes it). It finds the blocks by keras.applications' layer names, so it
works on any DenseNet this package builds or loads.

Example:

>>> import keras_densenet
>>> backbone = keras_densenet.DenseNetBC(depth=22, growth_rate=4, include_top=False)
>>> len(keras_densenet.multiscale_features(backbone).outputs)  # one per dense block
3
"""

from __future__ import annotations

import re

import keras

from keras_densenet.models.inputs import TO_CHANNELS_FIRST, TO_CHANNELS_LAST

_BLOCK_OUTPUT = re.compile(r"^conv(\d+)_block(\d+)_concat$")


def multiscale_features(model: keras.Model) -> keras.Model:
    """A model returning every dense block's output, for detection/segmentation.

    Level ``i`` is the output of dense block ``i`` (before its transition):
    strides 4, 8, 16, 32 for the ImageNet variants (1, 2, 4 for CIFAR ones).
    The last level is taken after the final BN-ReLU (the ``relu`` layer),
    since that is what the classifier sees.

    Args:
        model: a DenseNet built by this package (any `include_top`).

    Returns:
        A `keras.Model` with the same inputs and one output per dense block,
        sharing `model`'s layers and weights.

    Raises:
        ValueError: if `model` has no DenseNet block outputs.

    Example:

    >>> import keras_densenet
    >>> backbone = keras_densenet.DenseNet121(include_top=False, weights=None)
    >>> features = keras_densenet.multiscale_features(backbone)
    >>> [tuple(s) for s in features.output_shape]  # doctest: +NORMALIZE_WHITESPACE
    [(None, None, None, 256), (None, None, None, 512),
     (None, None, None, 1024), (None, None, None, 1024)]
    """
    last_block = {}
    for layer in model.layers:
        match = _BLOCK_OUTPUT.match(layer.name)
        if match:
            stage, index = int(match.group(1)), int(match.group(2))
            if index >= last_block.get(stage, (0, None))[0]:
                last_block[stage] = (index, layer)
    if not last_block:
        raise ValueError(
            f"`model` {model.name!r} has no dense block outputs (layers named "
            "'conv<stage>_block<i>_concat'); pass a model built by keras_densenet."
        )
    stages = sorted(last_block)
    outputs = [last_block[s][1].output for s in stages[:-1]]
    outputs.append(model.get_layer("relu").output)
    if any(layer.name == TO_CHANNELS_LAST for layer in model.layers):
        # A channels_first model computed in NHWC: give NCHW features back.
        outputs = [
            keras.layers.Permute((3, 1, 2), name=f"{TO_CHANNELS_FIRST}_{i}")(o)
            for i, o in enumerate(outputs)
        ]
    # `model.inputs` is a list; a single-input model wants its single input
    # back, or Keras warns on every call that the input structure differs.
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return keras.Model(inputs, outputs, name=f"{model.name}_features")
