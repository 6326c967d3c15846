"""The model `train` fits, and how it is compiled.

`build_classifier` puts a DenseNet backbone (a CIFAR DenseNet-BC, or any
registered variant, pretrained or not) between stock preprocessing layers
(resizing to the training size, rescaling, the ImageNet mean/std when
fine-tuning) and a new softmax head, so that saved and exported models take
raw pixels of any size. `compile_classifier` compiles it with AdamW.

Example:

>>> from keras_densenet.training.classifier import build_classifier, compile_classifier
>>> from keras_densenet.training.config import TrainConfig
>>> model, backbone = build_classifier(TrainConfig(depth=10, growth_rate=4), num_classes=10, channels=1)
>>> compile_classifier(model, lr=5e-3)
>>> model.input_shape, model.output_shape
((None, None, None, 1), (None, 10))
"""

from __future__ import annotations

import keras

from keras_densenet.data import datasets as data_lib
from keras_densenet.models import densenet
from keras_densenet.training.config import IMAGENET_MEAN, IMAGENET_STD, WEIGHT_DECAY, TrainConfig


def compile_classifier(model: keras.Model, lr: float) -> None:
    """Compiles `model` as `train` does: AdamW, sparse cross-entropy, accuracy.

    Example::

        compile_classifier(model, lr=5e-3)
        model.train_on_batch(x, y)
    """
    model.compile(
        optimizer=keras.optimizers.AdamW(lr, weight_decay=WEIGHT_DECAY),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )


def _backbone(config: TrainConfig, channels: int) -> keras.Model:
    """The DenseNet of `config` without its top, average-pooled."""
    size = config.image_size
    kwargs = dict(
        include_top=False,
        weights=config.weights,
        input_shape=(size, size, channels),
        pooling="avg",
        bn_momentum=config.bn_momentum,
        memory_efficient=config.memory_efficient,
    )
    if config.arch is None:
        return densenet.DenseNetBC(config.depth, config.growth_rate, **kwargs)
    return densenet.build(config.arch, **kwargs)


def build_classifier(config: TrainConfig, num_classes: int, channels: int) -> tuple:
    """The model `train` fits: resizing and rescaling, DenseNet backbone, new head.

    Args:
        config: the options (architecture, weights, image size, BN momentum,
            memory efficiency).
        num_classes: outputs of the new softmax head.
        channels: image channels (1 for the digits, 3 otherwise).

    Returns:
        ``(model, backbone)``; the backbone is a nested model so that
        fine-tuning can freeze it.
    """
    size = config.image_size
    backbone = _backbone(config, channels)

    # Any image size goes in: the model resizes to `image_size` itself, with
    # the resize its training data went through (`data.resize_images`;
    # the identity on training batches, which already have that size).
    inputs = keras.Input((None, None, channels), name="image")
    resize = keras.layers.Resizing(size, size, interpolation=data_lib.RESIZE_INTERPOLATION, name="resize")
    # Keras' image preprocessing layers default to `training=True` and pass
    # that on to every later layer when the model is called without
    # `training` (`model(x)`, exported `serve` endpoints): BatchNormalization
    # would then use batch statistics. Recording False here keeps inference
    # the default; `fit` and `predict` still pass their own value to every layer.
    x = resize(inputs, training=False)
    x = keras.layers.Rescaling(1.0 / 255, name="rescale")(x)
    pretrained = config.weights is not None
    if pretrained and channels == 3:
        x = keras.layers.Normalization(
            mean=IMAGENET_MEAN, variance=[s * s for s in IMAGENET_STD], name="imagenet_norm"
        )(x)
    # Pretrained backbones keep BatchNormalization in inference mode, also
    # once unfrozen: updating ImageNet statistics from a few small batches
    # would wreck them (Keras' transfer-learning guide).
    x = backbone(x, training=False) if pretrained else backbone(x)
    outputs = keras.layers.Dense(
        num_classes, activation="softmax", dtype="float32", name="predictions"
    )(x)
    return keras.Model(inputs, outputs, name=f"{backbone.name}_classifier"), backbone
