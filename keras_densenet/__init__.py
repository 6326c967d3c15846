"""keras-densenet: DenseNet for Keras 3 on TensorFlow, JAX and PyTorch.

Example:

>>> import keras_densenet
>>> model = keras_densenet.DenseNet121(include_top=False, weights=None,
...                                    input_shape=(64, 64, 3), pooling="avg")
>>> model.output_shape
(None, 1024)
"""

import importlib
import importlib.abc
import importlib.util
import sys

__version__ = "0.2.0"

# Public name -> defining module. Importing keras fixes its backend, so the
# package imports its modules lazily (PEP 562): `keras-densenet --backend jax`
# must be able to set $KERAS_BACKEND after `keras_densenet.cli` is imported.
_EXPORTS = {
    "DenseNet": "models.densenet",
    "DenseNet121": "models.densenet",
    "DenseNet161": "models.densenet",
    "DenseNet169": "models.densenet",
    "DenseNet201": "models.densenet",
    "DenseNet264": "models.densenet",
    "DenseNetBC": "models.densenet",
    "build": "models.densenet",
    "multiscale_features": "models.features",
    "FCDenseNet": "models.fcdensenet",
    "FCDenseNet56": "models.fcdensenet",
    "FCDenseNet67": "models.fcdensenet",
    "FCDenseNet103": "models.fcdensenet",
    "segmentation_head": "models.segmentation",
    "PixelCrossentropy": "layers.losses",
    "convert_checkpoint": "tools.convert",
    "load_preset": "weights.presets",
    "save_preset": "hub.save",
    "decode_predictions": "models.imagenet",
    "preprocess_input": "models.imagenet",
    "VARIANTS": "core.registry",
    "get_variant": "core.registry",
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


#: The modules whose import registers this package's Keras layers and loss
#: (for `keras.saving.load_model` of memory-efficient, fused-BN and compiled
#: segmentation models).
_LAYER_MODULES = ("keras_densenet.layers.efficient", "keras_densenet.layers.fused", "keras_densenet.layers.losses")


def _register_layers() -> None:
    for module in _LAYER_MODULES:
        importlib.import_module(module)


class _RegisterAfterKeras(importlib.abc.MetaPathFinder):
    """Registers our layers as soon as keras finishes importing.

    The package must not import keras itself (that would fix the backend
    before the CLI chooses it), yet ``import keras_densenet`` must be enough
    for ``keras.saving.load_model`` whatever the import order. So the first
    import of keras runs keras' own loader, then imports our layer modules.
    """

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "keras":
            return None
        sys.meta_path.remove(self)  # once; and lets the lookup below through
        spec = importlib.util.find_spec("keras")
        if spec is None or spec.loader is None:
            return spec
        exec_keras = spec.loader.exec_module

        def exec_module(module):
            exec_keras(module)
            _register_layers()

        spec.loader.exec_module = exec_module
        return spec


if "keras" in sys.modules:
    _register_layers()  # keras and its backend are loaded already
else:
    sys.meta_path.insert(0, _RegisterAfterKeras())
