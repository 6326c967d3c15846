"""The only place where this package uses Keras' and JAX's private APIs.

Everything else uses public APIs only. Each function below wraps one private
use for which no public API exists, says why, and is checked by
``tests/test_internals.py``, so that a Keras or JAX release that changes it
fails there, with the function's name, instead of somewhere deep in a build.
The module imports nothing of keras or jax at import time.

Example:

>>> from keras_densenet.core import internals
>>> internals.keras_home().endswith(".keras")
True
"""

from __future__ import annotations

from typing import Callable


def keras_home() -> str:
    """Keras' cache root (``$KERAS_HOME``, ``~/.keras``, or a temporary
    fallback when that is not writable), where `keras.utils.get_file`
    stores downloads. Public Keras has no accessor; converted checkpoints
    are cached beside the downloads, so they must agree with it."""
    from keras.src.backend import config

    return config.keras_home()


def obtain_input_shape(**kwargs):
    """keras.applications' own input-shape validation
    (``imagenet_utils.obtain_input_shape``), so that our builders accept and
    reject exactly what `keras.applications.DenseNet121` does, with its
    messages. `keras.applications.imagenet_utils` exports only the pre- and
    post-processing functions."""
    from keras.src.applications import imagenet_utils

    return imagenet_utils.obtain_input_shape(**kwargs)


def validate_activation(classifier_activation, weights) -> None:
    """keras.applications' check that pretrained weights come with a
    ``softmax`` (or ``None``) classifier (``imagenet_utils.validate_activation``)."""
    from keras.src.applications import imagenet_utils

    imagenet_utils.validate_activation(classifier_activation, weights)


def flatten_layers(layer) -> list:
    """`layer` and every layer nested in it, at any depth
    (``Layer._flatten_layers``): sub-models, and the weight holders inside
    custom layers, which `Model.layers` (one level, functional nodes only)
    does not list."""
    return list(layer._flatten_layers(include_self=True, recursive=True))


def uninitialized_variables() -> list:
    """Keras' list of variables created but not yet given a value (created in
    a ``StatelessScope(initialize_variables=False)``), the list itself, so
    that callers can take their own off it. It lives in
    ``keras.src.backend.common.global_state``."""
    from keras.src.backend.common import global_state

    return global_state.get_global_attribute("uninitialized_variables", [], set_to_default=True)


def in_stateless_scope() -> bool:
    """Whether a `keras.StatelessScope` is active (no public query exists)."""
    from keras.src.backend.common.stateless_scope import in_stateless_scope as query

    return query()


def supports_deferred_initialization() -> bool:
    """Whether Keras' variables still have the private hooks
    `initialize_with` uses."""
    try:
        from keras.src.backend.common.variables import Variable
    except ImportError:
        return False
    return hasattr(Variable, "_deferred_initialize")


def variable_initializer(variable):
    """The initializer a deferred variable will be filled with."""
    return variable._initializer


def initialize_with(variable, value=None) -> None:
    """Gives a deferred variable its value: `value` (an array of its shape)
    when given, else its own initializer's draw."""
    if value is not None:
        variable._initializer = lambda shape, dtype=None, value=value: value
    variable._deferred_initialize()


def saved_residuals(fun: Callable, *args) -> list:
    """``(abstract value, source description)`` of every residual JAX saves
    for the backward pass of ``fun(*args)``. JAX publishes only
    ``jax.ad_checkpoint.print_saved_residuals``, which prints the same list."""
    from jax._src.ad_checkpoint import saved_residuals as residuals

    return list(residuals(fun, *args))
