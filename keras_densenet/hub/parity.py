"""How far keras-hub's DenseNet is from this package's, with the same weights.

keras-hub's stem uses ``padding="same"``: at an even input size it pads 2
before and 3 after (7x7/2 conv at 224), where this package pads 3 and 3 like
torchvision; at odd sizes both pad symmetrically and compute the same
features. `feature_difference` measures it for a model at chosen sizes: the
figures of docs/weights.md ("keras-hub presets") come from it.

Example:

>>> import keras_densenet
>>> from keras_densenet.hub.parity import feature_difference
>>> model = keras_densenet.DenseNet121(include_top=False, weights="imagenet")  # doctest: +SKIP
>>> feature_difference(model, sizes=(224, 225))  # doctest: +SKIP
{224: {'max_abs_diff': ..., 'max_abs_feature': ...}, 225: {...}}
"""

from __future__ import annotations

import keras
import numpy as np

from keras_densenet.core import extras
from keras_densenet.hub.anatomy import read_model
from keras_densenet.hub.save import build_backbone, check_expressible, scale_and_offset


def feature_difference(model: keras.Model, sizes=(224, 225), images: int = 2, seed: int = 0) -> dict:
    """Max absolute difference between `model`'s features (its last ReLU,
    before any pooling) and those of keras-hub's ``DenseNetBackbone`` holding
    the same weights, on random-pixel images preprocessed as the model
    expects (`keras_densenet.hub.save.scale_and_offset`).

    Args:
        model: a builder's DenseNet keras-hub can express, channels_last.
        sizes: square input sizes to compare at.
        images: images per size.
        seed: NumPy seed of the pixels.

    Returns:
        ``{size: {"max_abs_diff": ..., "max_abs_feature": ...,
        "max_abs_pooled_diff": ...}}``: the largest feature gives the scale;
        the pooled difference is that of the global average pooling a
        classifier sees.

    Raises:
        ValueError: the model is not a builder's DenseNet keras-hub can express.
        MissingExtraError: keras-hub is not installed.
    """
    anatomy = read_model(model)
    check_expressible(model, anatomy, "keras-hub's DenseNetBackbone")
    if anatomy.scale is not None or "relu" not in [layer.name for layer in model.layers]:
        raise ValueError(f"`model` {model.name!r} must be a builder's DenseNet (with the top-level layer 'relu')")
    keras_hub = extras.import_from("hub", "keras_hub", "comparing with keras-hub")
    hub = build_backbone(keras_hub, anatomy)
    ours = keras.Model(model.input, model.get_layer("relu").output)
    scale, offset = scale_and_offset(model, anatomy, "auto")
    rng = np.random.default_rng(seed)
    out = {}
    for size in sizes:
        raw = rng.uniform(0, 255, (images, size, size, anatomy.in_channels))
        x = (raw * np.asarray(scale) + np.asarray(offset)).astype("float32")
        a, b = ours.predict(x, verbose=0), hub.predict(x, verbose=0)
        out[size] = {
            "max_abs_diff": float(np.abs(a - b).max()),
            "max_abs_feature": float(np.abs(a).max()),
            "max_abs_pooled_diff": float(np.abs(a.mean(axis=(1, 2)) - b.mean(axis=(1, 2))).max()),
        }
    return out
