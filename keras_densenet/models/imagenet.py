"""ImageNet input preprocessing and prediction decoding.

Both are keras.applications' own functions for DenseNet (``"torch"`` mode:
scale to [0, 1], subtract the ImageNet mean, divide by its std), re-exported
so that `keras_densenet` behaves exactly like `keras.applications.densenet`.
"""

from __future__ import annotations

from keras.applications import imagenet_utils

#: `imagenet_utils` mode of every ImageNet weight set in the registry.
PREPROCESSING_MODE = "torch"


def preprocess_input(x, data_format=None):
    """Preprocesses a batch of RGB images in [0, 255] for DenseNet.

    Same as `keras.applications.densenet.preprocess_input`: pixels are scaled
    to [0, 1], then normalized with the ImageNet mean and std per channel.

    Args:
        x: a NumPy array or tensor, 3D or 4D, RGB, values in [0, 255].
        data_format: ``"channels_last"``, ``"channels_first"`` or ``None``
            (Keras' configured default).

    Returns:
        The preprocessed array or tensor (float32).

    Example:

    >>> import numpy as np
    >>> from keras_densenet import preprocess_input
    >>> preprocess_input(np.full((1, 1, 1, 3), 255.0, "float32")).round(3)
    array([[[[2.249, 2.429, 2.64 ]]]], dtype=float32)
    """
    return imagenet_utils.preprocess_input(x, data_format=data_format, mode=PREPROCESSING_MODE)


def decode_predictions(preds, top=5):
    """Decodes ImageNet predictions into ``(class_id, name, score)`` lists.

    Same as `keras.applications.densenet.decode_predictions` (the class index
    file is fetched once through `keras.utils.get_file`).

    Args:
        preds: array of shape ``(batch, 1000)``.
        top: how many classes to return per image.

    Returns:
        One list of ``(class_id, class_name, score)`` tuples per image.
    """
    return imagenet_utils.decode_predictions(preds, top=top)
