"""The image input of every builder: its shape, its tensor and its layout.

Shared by the DenseNet and FC-DenseNet builders: the shape of a given
`input_tensor`, the `Input` layer (or that tensor), and the layout the layers
compute in (`compute_data_format`), with the names of the transposes a
channels_first model computed in NHWC gets.

Example:

>>> from keras_densenet.models import inputs
>>> inputs.compute_data_format("channels_last")
'channels_last'
"""

from __future__ import annotations

from typing import Optional

import keras

from keras_densenet.models.options import BuildOptions

#: Names of the transposes around a channels_first model computed in NHWC.
TO_CHANNELS_LAST = "to_channels_last"
TO_CHANNELS_FIRST = "to_channels_first"


def compute_data_format(data_format: str) -> str:
    """The layout the layers compute in, for a model whose inputs are `data_format`.

    TensorFlow's CPU kernels cannot run channels_first (NCHW) convolutions
    everywhere: without oneDNN (the default on CPUs without AVX-512, or with
    ``TF_ENABLE_ONEDNN_OPTS=0``) Conv2D refuses NCHW, and its backward pass
    refuses it on every CPU. So on TensorFlow without a GPU, a channels_first
    model keeps its NCHW inputs and outputs but computes in NHWC, transposing
    once at the input (and once at a 4D output). The same weights fit both
    layouts, and the outputs are identical. Everywhere else: `data_format`.

    Example:

    >>> compute_data_format("channels_last")
    'channels_last'
    """
    if data_format == "channels_first" and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if not tf.config.list_physical_devices("GPU"):
            return "channels_last"
    return data_format


def input_shape_of(input_tensor) -> Optional[tuple]:
    """The shape of the 4D image tensor `input_tensor`, without the batch axis.

    Raises:
        ValueError: naming `input_tensor` if it is not a 4D tensor.

    Example:

    >>> input_shape_of(keras.KerasTensor((None, 32, 32, 3)))
    (32, 32, 3)
    """
    shape = getattr(input_tensor, "shape", None)
    if shape is None or len(shape) != 4:
        raise ValueError(
            "`input_tensor` must be a 4D image tensor (batch, height, width, "
            f"channels) or (batch, channels, height, width). Received shape: {shape}"
        )
    return tuple(shape[1:])


def image_input(opts: BuildOptions, input_shape: tuple):
    """The model's image input: a new `Input`, or the given `input_tensor`.

    Example:

    >>> image_input(BuildOptions(), (32, 32, 3)).shape
    (None, 32, 32, 3)
    """
    input_tensor = opts.input_tensor
    if input_tensor is None:
        return keras.layers.Input(shape=input_shape, name="input_layer")
    if keras.backend.is_keras_tensor(input_tensor):
        return input_tensor
    return keras.layers.Input(tensor=input_tensor, shape=input_shape)
