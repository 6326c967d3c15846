"""keras-densenet: DenseNet for Keras 3 on TensorFlow, JAX and PyTorch.

Example:

>>> import keras_densenet
>>> model = keras_densenet.DenseNet121(include_top=False, weights=None,
...                                    input_shape=(64, 64, 3), pooling="avg")
>>> model.output_shape
(None, 1024)
"""

import importlib
import sys

__version__ = "0.1.0"

# Public name -> defining module. Importing keras fixes its backend, so the
# package imports its modules lazily (PEP 562): `keras-densenet --backend jax`
# must be able to set $KERAS_BACKEND after `keras_densenet.cli` is imported.
_EXPORTS = {
    "DenseNet": "models",
    "DenseNet121": "models",
    "DenseNet161": "models",
    "DenseNet169": "models",
    "DenseNet201": "models",
    "DenseNet264": "models",
    "DenseNetBC": "models",
    "build": "models",
    "multiscale_features": "models",
    "convert_checkpoint": "convert",
    "decode_predictions": "imagenet",
    "preprocess_input": "imagenet",
    "VARIANTS": "registry",
    "get_variant": "registry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'keras_densenet' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"keras_densenet.{_EXPORTS[name]}"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))


if "keras" in sys.modules:
    # keras (hence its backend) is already loaded: nothing to wait for, and
    # importing the models registers the memory-efficient layer, so that
    # `import keras_densenet` is enough for `keras.saving.load_model`.
    from keras_densenet import models as _models  # noqa: F401
