"""Memory-efficient dense layers (Pleiss et al., 2017) on every Keras backend.

A standard dense layer stores, for the backward pass, the concatenation of
all earlier feature maps plus its BatchNormalization and ReLU outputs, so
activation memory grows quadratically with depth. `EfficientDenseLayer`
instead receives the *list* of earlier feature maps and returns only its
``k`` new maps: the whole concat -> BN -> ReLU -> 1x1 conv -> BN -> ReLU ->
3x3 conv runs inside ``keras.remat`` (``jax.checkpoint``,
``tf.recompute_grad`` or ``torch.utils.checkpoint(use_reentrant=False)``) and
is recomputed in the backward pass. Only each layer's new maps (and the tiny
batch statistics) are saved, so memory grows linearly with depth; one
concatenation per block feeds the transition. On TensorFlow and PyTorch,
whose checkpoints replay everything they wrap, only the cheap concat -> BN
-> ReLU -> 1x1 conv is recomputed (Pleiss et al.'s choice); the 4k-channel
bottleneck output is kept, which is still linear in depth.

BatchNormalization cannot run as a Keras layer inside the recomputed function
(its in-place moving-statistics update leaks tracers out of
``jax.checkpoint``), so the function computes the batch mean and variance
itself with the same ops as `keras.layers.BatchNormalization`, returns them,
and the layer updates the moving statistics outside it with Keras' rule
``moving = moving * momentum + batch * (1 - momentum)``.

The layer keeps stock `BatchNormalization` and `Conv2D` sublayers named as
keras.applications' (``{name}_0_bn``, ``{name}_1_conv``, ``{name}_1_bn``,
``{name}_2_conv``) purely as weight holders, in the standard layer order, so
``get_weights()`` of a memory-efficient model equals that of the standard one
(same order and shapes) and ``set_weights`` moves weights between them.

Example:

>>> import keras
>>> import keras_densenet
>>> model = keras_densenet.DenseNetBC(40, 12, memory_efficient=True)
>>> model.get_layer("conv2_block1").__class__.__name__
'EfficientDenseLayer'
>>> standard = keras_densenet.DenseNetBC(40, 12)
>>> standard.set_weights(model.get_weights())  # same weight list
"""

from __future__ import annotations

import os
import zipfile
from typing import Optional

import keras
from keras import layers, ops

from keras_densenet.layers import fused
from keras_densenet.layers.blocks import BN_EPSILON, CONV_INITIALIZER, LayerOptions

#: Backends whose checkpoint (tf.recompute_grad, torch.utils.checkpoint)
#: replays the whole wrapped function in the backward pass.
_REPLAYING_BACKENDS = ("tensorflow", "torch")

#: Class-derived path of this layer inside Keras weight files; its presence
#: marks a file saved from a memory-efficient model.
WEIGHTS_FILE_MARKER = "efficient_dense_layer"


def _bn_train(x, gamma, beta, axis: int, epsilon: float, synchronized: bool = False):
    """Training-mode BatchNormalization as keras computes it: float32 batch
    moments (all-reduced over the replicas of a TensorFlow strategy when
    `synchronized`), then ``ops.batch_normalization``. Returns (y, mean,
    variance)."""
    x = ops.cast(x, "float32")
    reduction = [a for a in range(len(x.shape)) if a != axis % len(x.shape)]
    mean, variance = ops.moments(x, axes=reduction, synchronized=synchronized)
    y = ops.batch_normalization(x, mean, variance, axis=axis, offset=beta, scale=gamma, epsilon=epsilon)
    return y, mean, variance


def _bn_infer(x, gamma, beta, mean, variance, axis: int, epsilon: float):
    x = ops.cast(x, "float32")
    return ops.batch_normalization(x, mean, variance, axis=axis, offset=beta, scale=gamma, epsilon=epsilon)


@keras.saving.register_keras_serializable(package="keras_densenet")
class EfficientDenseLayer(layers.Layer):
    """One memory-efficient dense layer: list of feature maps in, ``k`` maps out.

    Same math and weights as the standard dense layer of `blocks.dense_layer`
    (BN-ReLU-Conv1x1-BN-ReLU-Conv3x3, then optional dropout), minus the final
    concatenation; the activations inside are recomputed in the backward pass.

    Args:
        growth_rate: ``k``, feature maps this layer adds.
        bottleneck: the 1x1 bottleneck conv (DenseNet-B).
        bn_size: bottleneck width as a multiple of ``k``.
        drop_rate: dropout rate on the new maps, in [0, 1).
        epsilon: BatchNormalization epsilon.
        momentum: BatchNormalization momentum (Keras convention).
        data_format: ``"channels_last"`` or ``"channels_first"``.
        fused_bn: on the torch backend, run BatchNormalization inside the
            recomputed function with PyTorch's fused kernel
            (`fused.torch_batch_norm`) instead of Keras' element-wise ops.
        **kwargs: `keras.layers.Layer` arguments (``name``, ``dtype``...).

    Example:

    >>> import keras
    >>> from keras_densenet.layers.efficient import EfficientDenseLayer
    >>> a, b = keras.Input((8, 8, 16)), keras.Input((8, 8, 12))
    >>> EfficientDenseLayer(12, name="conv2_block2")([a, b]).shape
    (None, 8, 8, 12)
    """

    def __init__(
        self,
        growth_rate: int,
        bottleneck: bool = True,
        bn_size: int = 4,
        drop_rate: float = 0.0,
        epsilon: float = BN_EPSILON,
        momentum: float = 0.99,
        data_format: str = "channels_last",
        fused_bn: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.fused_bn = bool(fused_bn)
        self.growth_rate = int(growth_rate)
        self.bottleneck = bool(bottleneck)
        self.bn_size = int(bn_size)
        self.drop_rate = float(drop_rate)
        self.epsilon = float(epsilon)
        self.momentum = float(momentum)
        self.data_format = data_format
        self.axis = -1 if data_format == "channels_last" else 1
        # Weight holders, created in the standard layer order so that
        # `weights` (each sublayer's trainable then non-trainable variables)
        # lists exactly what the standard graph lists.
        sub = dict(dtype=self.dtype_policy)
        bn = dict(axis=self.axis, epsilon=self.epsilon, momentum=self.momentum, **sub)
        conv = dict(use_bias=False, data_format=data_format, kernel_initializer=CONV_INITIALIZER, **sub)
        self.bn0 = layers.BatchNormalization(name=f"{self.name}_0_bn", **bn)
        if self.bottleneck:
            self.conv1 = layers.Conv2D(self.bn_size * self.growth_rate, 1, name=f"{self.name}_1_conv", **conv)
            self.bn1 = layers.BatchNormalization(name=f"{self.name}_1_bn", **bn)
        self.conv2 = layers.Conv2D(self.growth_rate, 3, padding="same", name=f"{self.name}_2_conv", **conv)
        self.drop = layers.Dropout(self.drop_rate, name=f"{self.name}_drop", **sub) if self.drop_rate > 0 else None

    def _channels(self, input_shape) -> int:
        shapes = input_shape if isinstance(input_shape[0], (list, tuple)) else [input_shape]
        return sum(int(s[self.axis]) for s in shapes)

    def build(self, input_shape):
        channels = self._channels(input_shape)
        spatial = (None, None, None)
        shape_in = spatial + (channels,) if self.axis == -1 else (None, channels, None, None)
        self.bn0.build(shape_in)
        width = channels
        if self.bottleneck:
            self.conv1.build(shape_in)
            width = self.bn_size * self.growth_rate
            mid = spatial + (width,) if self.axis == -1 else (None, width, None, None)
            self.bn1.build(mid)
        else:
            mid = shape_in
        self.conv2.build(mid)
        if self.drop is not None:
            self.drop.build(spatial + (self.growth_rate,))

    def compute_output_shape(self, input_shape):
        shapes = input_shape if isinstance(input_shape[0], (list, tuple)) else [input_shape]
        out = list(shapes[0])
        out[self.axis] = self.growth_rate
        return tuple(out)

    def _forward(self, batch_stats: bool, n_inputs: int, paddings: tuple, *args):
        """BN-ReLU-conv units on the concatenated inputs: pure in its
        arguments (no variable writes), so it can be recomputed.

        ``args`` are the input maps, then per unit (gamma, beta[, moving mean,
        moving variance when not `batch_stats`], conv kernel); ``paddings``
        gives each unit's conv padding. Returns the output, then each BN's
        batch mean and variance when `batch_stats`.
        """
        feats, params = list(args[:n_inputs]), list(args[n_inputs:])
        dtype = self.compute_dtype
        h = feats[0] if len(feats) == 1 else ops.concatenate(feats, axis=self.axis)
        stats = []
        # Synchronized BN (TensorFlow strategies) follows the weight holders'
        # flag, which `keras_densenet.training.distribute` sets on every BN layer.
        synchronized = self.bn0.synchronized
        fused_bn = self.fused_bn and keras.backend.backend() == "torch"
        for padding in paddings:
            gamma, beta = params.pop(0), params.pop(0)
            if fused_bn:  # torch only: one device, so nothing to synchronize
                mean = var = None
                if not batch_stats:
                    mean, var = params.pop(0), params.pop(0)
                h, mean, var = fused.torch_batch_norm(
                    ops.cast(h, "float32"), gamma, beta, mean, var, self.axis, self.epsilon, batch_stats
                )
                if batch_stats:
                    stats.extend([mean, var])
            elif batch_stats:
                h, mean, var = _bn_train(h, gamma, beta, self.axis, self.epsilon, synchronized)
                stats.extend([mean, var])
            else:
                mean, var = params.pop(0), params.pop(0)
                h = _bn_infer(h, gamma, beta, mean, var, self.axis, self.epsilon)
            h = ops.relu(ops.cast(h, dtype))
            kernel = ops.cast(params.pop(0), dtype)
            h = ops.conv(h, kernel, strides=1, padding=padding, data_format=self.data_format)
        return (h, *stats)

    def call(self, inputs, training=None):
        feats = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        batch_stats = bool(training) and self.trainable
        bns = [self.bn0] + ([self.bn1] if self.bottleneck else [])
        convs = ([self.conv1] if self.bottleneck else []) + [self.conv2]
        paddings = ("valid", "same") if self.bottleneck else ("same",)
        params = []
        for bn, conv in zip(bns, convs, strict=True):
            params += [bn.gamma, bn.beta]
            if not batch_stats:
                params += [bn.moving_mean, bn.moving_variance]
            params.append(conv.kernel)
        # Tensors (not variables) as explicit arguments: every backend's
        # checkpoint then differentiates with respect to them directly.
        params = [ops.cast(p, "float32") for p in params]
        n = len(feats)
        if self.bottleneck and keras.backend.backend() in _REPLAYING_BACKENDS:
            # These checkpoints replay everything they wrap (JAX's drops what
            # the backward pass does not need): recompute only Pleiss et al.'s
            # cheap concat-BN-ReLU-1x1 conv; the 4k-channel rest is linear.
            first_params = len(params) // 2
            first = keras.remat(lambda *a: self._forward(batch_stats, n, paddings[:1], *a))(
                *feats, *params[:first_params]
            )
            second = self._forward(batch_stats, 1, paddings[1:], first[0], *params[first_params:])
            outputs = (second[0], *first[1:], *second[1:])
        else:
            outputs = keras.remat(lambda *a: self._forward(batch_stats, n, paddings, *a))(*feats, *params)
        y = outputs[0]
        if batch_stats:
            for bn, mean, var in zip(bns, outputs[1::2], outputs[2::2], strict=True):
                # Outside the recomputed function, as BatchNormalization does.
                mean, var = ops.stop_gradient(mean), ops.stop_gradient(var)
                bn.moving_mean.assign(bn.moving_mean * self.momentum + mean * (1.0 - self.momentum))
                bn.moving_variance.assign(bn.moving_variance * self.momentum + var * (1.0 - self.momentum))
        if self.drop is not None:
            y = self.drop(y, training=training)
        return y

    def get_config(self):
        config = super().get_config()
        config.update(
            growth_rate=self.growth_rate,
            bottleneck=self.bottleneck,
            bn_size=self.bn_size,
            drop_rate=self.drop_rate,
            epsilon=self.epsilon,
            momentum=self.momentum,
            data_format=self.data_format,
            fused_bn=self.fused_bn,
        )
        return config


def dense_block(
    x,
    num_layers: int,
    growth_rate: int,
    name: str,
    opts: LayerOptions,
    bottleneck: bool = True,
    bn_size: int = 4,
    drop_rate: float = 0.0,
):
    """Memory-efficient counterpart of `blocks.dense_block`.

    Layer ``i`` (named ``{name}_block{i}``) sees the list of the block input
    and all earlier new maps; one `Concatenate` named
    ``{name}_block{num_layers}_concat`` (the standard block-output name, so
    `multiscale_features` finds it) joins them for the transition.

    Example:

    >>> import keras
    >>> from keras_densenet.layers import blocks, efficient
    >>> x = keras.Input((16, 16, 24))
    >>> y = efficient.dense_block(x, 3, 12, "conv2", blocks.LayerOptions())
    >>> y.shape
    (None, 16, 16, 60)
    """
    features = [x]
    for i in range(num_layers):
        features.append(
            EfficientDenseLayer(
                growth_rate,
                bottleneck=bottleneck,
                bn_size=bn_size,
                drop_rate=drop_rate,
                epsilon=opts.bn_epsilon,
                momentum=opts.bn_momentum,
                data_format=opts.data_format,
                fused_bn=opts.fused_bn,
                name=f"{name}_block{i + 1}",
            )(features)
        )
    return layers.Concatenate(axis=opts.channel_axis, name=f"{name}_block{num_layers}_concat")(features)


def saved_memory_efficient(weights) -> Optional[bool]:
    """Whether `weights` is a Keras weights file saved from a memory-efficient model.

    Keras' ``.weights.h5`` files address layers by class and position, so a
    file fits only the graph kind it was saved from. Returns ``True`` for a
    ``.weights.h5`` / ``.keras`` file holding `EfficientDenseLayer` weights,
    ``False`` for any other existing file of those kinds, ``None`` otherwise
    (weight-set names, ``None``, other files: they are standard-graph files
    or rejected elsewhere).

    Example:

    >>> from keras_densenet.layers.efficient import saved_memory_efficient
    >>> saved_memory_efficient("imagenet") is None
    True
    """
    if not isinstance(weights, (str, os.PathLike)):
        return None
    path = os.fspath(weights)
    if not os.path.isfile(path) or not path.endswith((".weights.h5", ".keras")):
        return None
    import h5py

    def has_marker(h5) -> bool:
        group = h5.get("layers")
        return group is not None and any(k.startswith(WEIGHTS_FILE_MARKER) for k in group.keys())

    try:
        if path.endswith(".keras"):
            with zipfile.ZipFile(path) as archive, archive.open("model.weights.h5") as f:
                with h5py.File(f, "r") as h5:
                    return has_marker(h5)
        with h5py.File(path, "r") as h5:
            return has_marker(h5)
    except (OSError, KeyError, zipfile.BadZipFile):
        return None
