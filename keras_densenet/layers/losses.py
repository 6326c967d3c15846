"""Per-pixel cross-entropy that trains on every backend.

Keras 3.15's torch `sparse_categorical_crossentropy` moves the class axis of
a ``(batch, height, width, classes)`` output to position 1 and hands the
non-contiguous view to ``torch.nn.functional.nll_loss``, whose backward
pass then fails ("grad_input must be contiguous"). `PixelCrossentropy`
flattens the pixels first: ``(batch * height * width, classes)`` against
``(batch * height * width,)`` labels. The mean over all pixels is the same
number on every backend; registered (``keras_densenet>PixelCrossentropy``),
so compiled segmenters reload in safe mode wherever `keras_densenet` is
imported.

Example:

>>> import numpy as np
>>> loss = PixelCrossentropy()
>>> float(loss(np.zeros((1, 2, 2)), np.full((1, 2, 2, 4), 0.25)))  # log(4)
1.3862...
"""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="keras_densenet")
class PixelCrossentropy(keras.losses.Loss):
    """Sparse categorical cross-entropy of per-pixel class probabilities.

    Args:
        name: the loss name.
        reduction: Keras' reduction (the mean over pixels by default).
    """

    def __init__(self, name: str = "pixel_crossentropy", reduction: str = "sum_over_batch_size", **kwargs):
        super().__init__(name=name, reduction=reduction, **kwargs)

    def call(self, y_true, y_pred):
        classes = keras.ops.shape(y_pred)[-1]
        return keras.losses.sparse_categorical_crossentropy(
            keras.ops.reshape(y_true, (-1,)), keras.ops.reshape(y_pred, (-1, classes))
        )
