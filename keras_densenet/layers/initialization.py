"""Fast weight initialisation: every new variable filled from NumPy in one pass.

Keras creates each variable by calling its initializer eagerly. On the JAX
backend every call (``truncated_normal`` for a kernel shape, ``ones`` for a
BatchNormalization vector...) is an XLA computation compiled for that shape,
so building a DenseNet compiles hundreds of tiny programs: DenseNet-121 took
about 15 s on a 2-core CPU, almost all of it compilation.

`fast_variables` builds the graph with Keras' deferred initialisation instead
(variables created inside a ``keras.StatelessScope`` are registered as
uninitialised), then draws every value with NumPy from the *same
distribution* as the variable's own Keras initializer, read from the
initializer's public attributes (`sample`). Layers keep their stock
initializers, so ``get_config()`` and saved files still name stock Keras
initializers. Initializers it does not know (custom ones, ``Orthogonal``,
seeded with a `keras.random.SeedGenerator`...) run as Keras would run them.

Values are reproducible: each random initializer already holds an integer
seed (its own, or one Keras drew from Python's `random` when it was created,
which `keras.utils.set_random_seed` seeds), and that seed seeds NumPy's
generator. The values differ from Keras' own draws (another generator), not
their distribution; the tests compare the two.

It is on by default on JAX only (it made no difference to build time on
TensorFlow and torch); ``KERAS_DENSENET_FAST_INIT=1`` turns it on everywhere,
``=0`` lets Keras initialise every variable itself.

Example:

>>> import keras
>>> from keras_densenet.layers.initialization import fast_variables
>>> with fast_variables():
...     layer = keras.layers.Dense(4, kernel_initializer="he_normal")
...     y = layer(keras.Input((8,)))
>>> float(keras.ops.max(keras.ops.abs(layer.kernel))) <= 2 * (2 / 8) ** 0.5 / 0.8796
True
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
from typing import Iterator, Optional

import keras
import numpy as np

from keras_densenet.core import internals

#: Environment variable that turns the fast path off (``0``/``false``/``no``).
ENV_SWITCH = "KERAS_DENSENET_FAST_INIT"
#: Keras' truncated normals cut at two standard deviations of the underlying
#: normal; the standard deviation of the truncated distribution is 0.8796 of it.
TRUNCATION = 2.0
TRUNCATED_STD = 0.87962566103423978
#: dtypes NumPy draws in (others fall back to the Keras initializer).
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
#: The ``VarianceScaling`` modes and distributions `sample` reproduces
#: (Keras' own sets); any other value falls back to the Keras initializer.
VARIANCE_SCALING_MODES = ("fan_in", "fan_out", "fan_avg")
VARIANCE_SCALING_DISTRIBUTIONS = ("truncated_normal", "untruncated_normal", "uniform")


#: Backends where it is on by default: measured (DenseNet-121, fresh process,
#: 2-core CPU) 1.1 s instead of 14.6 s on JAX; on TensorFlow (1.2 s) and
#: torch (0.7-0.8 s) it made no difference, so they keep Keras' own path.
DEFAULT_BACKENDS = ("jax",)


def enabled() -> bool:
    """Whether builders use the fast path.

    ``$KERAS_DENSENET_FAST_INIT``: ``0`` (off), ``1`` (on, every backend);
    unset: on for `DEFAULT_BACKENDS`.
    """
    value = os.environ.get(ENV_SWITCH, "").strip().lower()
    if value in ("0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    return keras.backend.backend() in DEFAULT_BACKENDS


def _fans(shape: tuple) -> tuple:
    """Keras' ``compute_fans`` (conv kernels: ``(..., in, out)``)."""
    if len(shape) < 1:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


def _truncated_normal(rng: np.random.Generator, shape: tuple, mean: float, stddev: float) -> np.ndarray:
    """Normal(mean, stddev) cut at +-2 stddev, as ``keras.random.truncated_normal``."""
    x = rng.standard_normal(math.prod(shape), dtype=np.float32)
    out = np.abs(x) > TRUNCATION
    while out.any():  # redraw the ~4.6% outside the cut
        x[out] = rng.standard_normal(int(out.sum()), dtype=np.float32)
        out = np.abs(x) > TRUNCATION
    return (x * np.float32(stddev) + np.float32(mean)).reshape(shape)


def _uniform(rng: np.random.Generator, shape: tuple, low: float, high: float) -> np.ndarray:
    x = rng.random(shape, dtype=np.float32)
    return (x * np.float32(high - low) + np.float32(low)).astype(np.float32)


def _stock(initializer, cls) -> bool:
    """`initializer` is a `cls` that draws exactly as Keras' `cls` does."""
    return isinstance(initializer, cls) and type(initializer).__call__ is cls.__call__


def _number(initializer, name: str) -> Optional[float]:
    """``initializer.<name>`` as a float; None when it is missing or not a
    real number (another Keras version may name or store it differently)."""
    value = getattr(initializer, name, None)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value)


def _variance_scaling(initializer, rng: np.random.Generator, shape: tuple) -> Optional[np.ndarray]:
    """`sample` for a stock ``VarianceScaling``; None unless every attribute
    its draw depends on is there and has a value Keras documents."""
    mode = getattr(initializer, "mode", None)
    distribution = getattr(initializer, "distribution", None)
    scale = _number(initializer, "scale")
    if mode not in VARIANCE_SCALING_MODES or distribution not in VARIANCE_SCALING_DISTRIBUTIONS:
        return None
    if scale is None or scale <= 0:
        return None
    # Recent Keras can take the fans over chosen axes; older releases (3.8,
    # 3.9) have no such attributes and always use the last two (`_fans`).
    if getattr(initializer, "input_axes", None) is not None or getattr(initializer, "output_axes", None) is not None:
        return None
    fan_in, fan_out = _fans(shape)
    fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[mode]
    scale = scale / max(1.0, fan)
    if distribution == "truncated_normal":
        return _truncated_normal(rng, shape, 0.0, math.sqrt(scale) / TRUNCATED_STD)
    if distribution == "untruncated_normal":
        return (rng.standard_normal(shape, dtype=np.float32) * np.float32(math.sqrt(scale))).astype(np.float32)
    limit = math.sqrt(3.0 * scale)
    return _uniform(rng, shape, -limit, limit)


def _random(initializer, rng: np.random.Generator, shape: tuple) -> Optional[np.ndarray]:
    """`sample` for the other seeded random initializers (None: unknown)."""
    inits = keras.initializers
    if _stock(initializer, inits.VarianceScaling):
        return _variance_scaling(initializer, rng, shape)
    if _stock(initializer, inits.TruncatedNormal) or _stock(initializer, inits.RandomNormal):
        mean, stddev = _number(initializer, "mean"), _number(initializer, "stddev")
        if mean is None or stddev is None:
            return None
        if _stock(initializer, inits.TruncatedNormal):
            return _truncated_normal(rng, shape, mean, stddev)
        x = rng.standard_normal(shape, dtype=np.float32)
        return (x * np.float32(stddev) + np.float32(mean)).astype(np.float32)
    if _stock(initializer, inits.RandomUniform):
        low, high = _number(initializer, "minval"), _number(initializer, "maxval")
        if low is None or high is None:
            return None
        return _uniform(rng, shape, low, high)
    return None


def sample(initializer, shape, dtype: str = "float32") -> Optional[np.ndarray]:
    """A NumPy draw from `initializer`'s distribution, or None if unknown.

    Known: ``VarianceScaling`` and its subclasses (``GlorotUniform``,
    ``HeNormal``, ``LecunNormal``...: truncated normal, normal or uniform
    with the scale from the fans), ``RandomNormal``, ``RandomUniform``,
    ``TruncatedNormal``, ``Zeros``, ``Ones`` and ``Constant`` with a scalar.
    Random ones must hold an integer seed (always the case unless seeded
    with a `keras.random.SeedGenerator`). Subclasses that override
    ``__call__`` are unknown, and so is an initializer that lacks an
    attribute its draw depends on, or holds a value this function does not
    know (Keras releases differ: ``VarianceScaling`` has ``input_axes`` in
    recent ones only).

    Args:
        initializer: a Keras initializer (or any callable).
        shape: the variable's shape.
        dtype: the variable's dtype.

    Returns:
        A float32 array of `shape`, or None when `initializer` or `dtype`
        is not one this function reproduces.

    Example:

    >>> import keras
    >>> w = sample(keras.initializers.GlorotUniform(seed=1), (100, 300))
    >>> bool(abs(w).max() <= (6 / 400) ** 0.5)
    True
    """
    shape = tuple(int(d) for d in shape)
    if keras.backend.standardize_dtype(dtype) not in FLOAT_DTYPES:
        return None
    inits = keras.initializers
    if _stock(initializer, inits.Zeros):
        return np.zeros(shape, np.float32)
    if _stock(initializer, inits.Ones):
        return np.ones(shape, np.float32)
    if _stock(initializer, inits.Constant):
        value = _number(initializer, "value")
        return None if value is None else np.full(shape, value, np.float32)
    seed = getattr(initializer, "seed", None)
    if not isinstance(seed, int) or isinstance(seed, bool):
        return None
    return _random(initializer, np.random.default_rng(seed), shape)


def _can_defer() -> bool:
    """Whether `fast_variables` can defer initialisation: every Keras
    internal it relies on is there (each wrapped in
    `keras_densenet.core.internals`) and no stateless scope is active."""
    try:
        return (
            internals.supports_deferred_initialization()
            and isinstance(internals.uninitialized_variables(), list)
            and not internals.in_stateless_scope()
        )
    except (ImportError, AttributeError):  # Keras reorganised its internals
        return False


@contextlib.contextmanager
def fast_variables(active: Optional[bool] = None) -> Iterator[None]:
    """Creates the variables of layers built inside, then fills them with `sample`.

    It needs Keras internals, wrapped in `keras_densenet.core.internals`: the
    list of uninitialised variables and each variable's initializer hooks.
    If they are missing, or when already inside a stateless scope, or
    `active` is False (default: `enabled()`), layers initialise as usual.

    Variables must not be read inside the block (build graphs only); they
    hold their values when it exits.

    Args:
        active: force the fast path on or off; ``None`` reads
            ``$KERAS_DENSENET_FAST_INIT``.

    Example:

    >>> import keras
    >>> with fast_variables():
    ...     model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> model.layers[0].bias.numpy().tolist()
    [0.0, 0.0]
    """
    if active is None:
        active = enabled()
    if not (active and _can_defer()):
        yield  # off, Keras reorganised, or nested: initialise the usual way
        return
    first = len(internals.uninitialized_variables())
    try:
        with keras.StatelessScope(initialize_variables=False):
            yield
    finally:
        # Take this block's variables off Keras' list, then initialise them
        # (also after an error, so that none is left half-made).
        pending = internals.uninitialized_variables()
        mine = pending[first:]
        del pending[first:]
        for variable in mine:
            value = sample(internals.variable_initializer(variable), variable.shape, variable.dtype)
            if value is not None and variable.dtype != "float32":
                value = keras.ops.convert_to_tensor(value, dtype=variable.dtype)
            internals.initialize_with(variable, value)


@contextlib.contextmanager
def shape_only() -> Iterator[None]:
    """Builds models without creating weight values (shapes only).

    Inside, Keras variables get their shapes but no values
    (`keras.StatelessScope` with ``initialize_variables=False``), and they are
    kept off Keras' list of variables to initialize later
    (`internals.uninitialized_variables`). Counting parameters or MACs needs only
    shapes (`keras_densenet.tools.counts`). Models built here cannot be run or
    trained.

    Example:

    >>> import keras
    >>> with shape_only():
    ...     model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> model.count_params()
    8
    """
    pending = internals.uninitialized_variables()
    first = len(pending)
    try:
        with keras.StatelessScope(initialize_variables=False):
            yield
    finally:
        del pending[first:]  # shapes only: never to be initialised
