"""Opt-in fused BatchNormalization for the torch backend.

Keras' torch BatchNormalization is a chain of element-wise ops (moments
computed apart, then subtract, multiply, add), each saving its input for the
backward pass; PyTorch runs the same layer as one fused kernel
(``torch.nn.functional.batch_norm``) that saves only the input and two
per-channel vectors. `BatchNormalization` here is keras' layer with its
``call`` routed through that kernel when the backend is torch, and Keras'
own ``call`` on every other backend (or for options the kernel does not
cover: masks, renormalization).

It is a drop-in subclass: the same variables (``gamma``, ``beta``,
``moving_mean``, ``moving_variance``), the same configuration, Keras'
momentum convention and its *biased* batch variance for the moving
statistics (PyTorch's kernel updates running statistics with the unbiased
variance and the opposite momentum, so the kernel writes into scratch
buffers with momentum 1 and the layer applies Keras' rule). The class has
Keras' class name on purpose: Keras weight files name a layer's group after
its class, so ``.weights.h5`` files move between fused and stock models, and
``.keras`` files load wherever ``keras_densenet`` is imported (registered as
``keras_densenet>BatchNormalization``).

Builders use it with ``fused_bn=True``; outputs, gradients and moving
statistics match the stock layer (tests: ``tests/test_fused.py``).

Example:

>>> import keras
>>> from keras_densenet.layers.fused import BatchNormalization
>>> bn = BatchNormalization(axis=-1, name="conv1_bn")
>>> bn(keras.ops.ones((2, 4, 4, 3))).shape
(2, 4, 4, 3)
"""

from __future__ import annotations

import keras
from keras import layers, ops


def torch_batch_norm(x, gamma, beta, mean, variance, axis: int, epsilon: float, training: bool):
    """``torch.nn.functional.batch_norm`` on a tensor with channels at `axis`.

    In training (`mean`, `variance` ignored) returns ``(y, batch_mean,
    batch_variance)`` with Keras' biased variance; otherwise ``(y, None,
    None)``. Channels-last inputs are viewed as NCHW (no copy: PyTorch's
    kernel handles the channels-last memory format).
    """
    import torch
    import torch.nn.functional as F

    ndim = x.dim()
    axis = axis % ndim
    x_cf = x if axis == 1 else x.movedim(axis, 1)
    channels = x_cf.shape[1]
    n = x_cf.numel() // channels
    if training and n == 1:
        # PyTorch's kernel refuses one value per channel; Keras' variance is 0.
        mean = x_cf.mean(dim=[d for d in range(ndim) if d != 1])
        variance = torch.zeros_like(mean)
        y = F.batch_norm(x_cf, mean, variance, gamma, beta, training=False, eps=epsilon)
    elif training:
        mean = torch.zeros(channels, dtype=x.dtype, device=x.device)
        variance = torch.zeros(channels, dtype=x.dtype, device=x.device)
        y = F.batch_norm(x_cf, mean, variance, gamma, beta, training=True, momentum=1.0, eps=epsilon)
        variance = variance * ((n - 1) / n)  # PyTorch stores the unbiased variance
    else:
        y = F.batch_norm(x_cf, mean, variance, gamma, beta, training=False, eps=epsilon)
        mean = variance = None
    y = y if axis == 1 else y.movedim(1, axis)
    return y, mean, variance


@keras.saving.register_keras_serializable(package="keras_densenet")
class BatchNormalization(layers.BatchNormalization):
    """`keras.layers.BatchNormalization` through PyTorch's fused kernel on torch.

    Same arguments, variables and results as the stock layer; see the module
    docstring.
    """

    def _fusable(self, inputs, mask) -> bool:
        if keras.backend.backend() != "torch" or mask is not None or self.renorm:
            return False
        return self.center and self.scale and len(inputs.shape) >= 2

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        # Keras computes BatchNormalization in float32 at least.
        compute_dtype = keras.backend.result_type(inputs.dtype, "float32")
        x = ops.cast(inputs, compute_dtype)
        gamma = ops.cast(self.gamma, compute_dtype)
        beta = ops.cast(self.beta, compute_dtype)
        moving_mean = ops.cast(self.moving_mean, compute_dtype)
        moving_variance = ops.cast(self.moving_variance, compute_dtype)
        train = bool(training) and self.trainable
        y, mean, variance = torch_batch_norm(
            x, gamma, beta, moving_mean, moving_variance, self.axis, self.epsilon, train
        )
        if train:
            mean, variance = mean.detach(), variance.detach()
            self.moving_mean.assign(moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return ops.cast(y, self.compute_dtype)
