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

from typing import Callable, Optional


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


def functional_nodes(model) -> Optional[list]:
    """The graph nodes of a functional model, inputs first, each with its
    ``operation`` and tensors (``Functional._nodes_by_depth``); None for a
    model that is not functional. Counting MACs and activations walks each
    call of a layer, which `Model.layers` (one entry per layer) cannot give."""
    by_depth = getattr(model, "_nodes_by_depth", None)
    if by_depth is None:
        return None
    return [node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]]


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


def distributed_client():
    """JAX's client of the multi-process job's coordination service
    (``jax._src.distributed.global_state.client``), or ``None`` before
    `jax.distributed.initialize`. Its key-value store is how the processes
    of a job see that the others are alive (`training.watchdog`): JAX's own
    heartbeat takes 100 s and then aborts the process, and public JAX has no
    accessor for the client."""
    from jax._src import distributed

    return distributed.global_state.client


def use_gloo_address(hostname: Optional[str] = None, interface: Optional[str] = None) -> bool:
    """Makes JAX's CPU backend, when it is created, build its gloo
    collectives on `hostname` (an address of this host) or `interface` (a
    network interface's name); whether this JAX can.

    JAX's own CPU client factory (``xla_bridge.make_cpu_client``) calls
    ``make_gloo_tcp_collectives`` with neither, so gloo binds and advertises
    the address this host's name resolves to: loopback on many machines
    (``/etc/hosts`` mapping the hostname to 127.0.0.1), which no other host
    can reach, and ``GLOO_SOCKET_IFNAME`` does not reach it. This registers
    the same factory (same name, priority and failure mode) with gloo's
    address given. Call it before anything creates the CPU backend. An
    older JAX whose ``make_cpu_client`` takes no ``collectives`` (0.4.30
    among them): ``False``, nothing changed.

    Raises:
        RuntimeError: the CPU backend exists already.
    """
    import inspect

    from jax._src import config, distributed, xla_bridge

    try:
        from jax._src.lib import _jax
    except ImportError:
        return False
    if "collectives" not in inspect.signature(xla_bridge.make_cpu_client).parameters:
        return False

    def make_cpu_client():
        collectives = None
        client = distributed.global_state.client
        if client is not None and config.cpu_collectives_implementation.value == "gloo":
            collectives = _jax.make_gloo_tcp_collectives(distributed_client=client, hostname=hostname,
                                                         interface=interface)
        return xla_bridge.make_cpu_client(collectives=collectives)

    xla_bridge.register_backend_factory("cpu", make_cpu_client, priority=0, fail_quietly=False)
    return True


def initialize_keras_rng() -> bool:
    """What `keras.distribution.initialize` does after
    `jax.distributed.initialize` on JAX (``initialize_rng`` of
    ``keras.src.backend.jax.distribution_lib``): without a global seed, every
    process draws one and they agree on their sum, a first collective.
    `training.multiprocess` calls `jax.distributed.initialize` itself, to
    watch the job between the two steps, and then this. Whether it ran:
    an older Keras (3.9.0 among them) has no such step."""
    from keras.src.backend.jax import distribution_lib

    initialize_rng = getattr(distribution_lib, "initialize_rng", None)
    if initialize_rng is None:
        return False
    initialize_rng()
    return True
