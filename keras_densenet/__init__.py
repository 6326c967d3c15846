"""keras-densenet: DenseNet for Keras 3 on TensorFlow, JAX and PyTorch.

Example:

>>> import keras_densenet
>>> model = keras_densenet.DenseNet121(include_top=False, weights=None,
...                                    input_shape=(64, 64, 3), pooling="avg")
>>> model.output_shape
(None, 1024)
"""

from keras_densenet.convert import convert_checkpoint
from keras_densenet.imagenet import decode_predictions, preprocess_input
from keras_densenet.models import (
    DenseNet,
    DenseNet121,
    DenseNet161,
    DenseNet169,
    DenseNet201,
    DenseNet264,
    DenseNetBC,
    build,
    multiscale_features,
)
from keras_densenet.registry import VARIANTS, get_variant

__version__ = "0.1.0"

__all__ = [
    "DenseNet",
    "DenseNet121",
    "DenseNet161",
    "DenseNet169",
    "DenseNet201",
    "DenseNet264",
    "DenseNetBC",
    "VARIANTS",
    "build",
    "convert_checkpoint",
    "decode_predictions",
    "get_variant",
    "multiscale_features",
    "preprocess_input",
]
