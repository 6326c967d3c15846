"""Which Keras backend to run on, decided without importing keras.

Keras fixes its backend when it is imported: ``$KERAS_BACKEND``, else the
``backend`` of ``~/.keras/keras.json``, else TensorFlow. On a machine that has
only JAX (README command 1 installs just that), the fallback crashes with
``ModuleNotFoundError: tensorflow``, and keras itself writes ``"tensorflow"``
into a new ``keras.json`` whatever backend it ran on. The CLI therefore
resolves the backend itself before importing keras (`choose`).

Example:

>>> from keras_densenet.core import backends
>>> backends.choose("jax")  # doctest: +SKIP
('jax', None)
"""

from __future__ import annotations

import importlib.util
import json
import os
from typing import Optional

#: Keras' backends, in the order the CLI prefers when none is chosen: JAX
#: trains the DenseNets fastest on a CPU (see the README's figures).
BACKENDS = ("jax", "tensorflow", "torch")


def installed(name: str) -> bool:
    """Whether backend `name`'s package can be imported (nothing is imported)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a broken or blocked installation
        return False


def keras_config_path() -> str:
    """Where keras reads ``keras.json``: ``$KERAS_HOME``, else ``~/.keras``
    (``/tmp/.keras`` when the home directory is not writable), as keras does."""
    if "KERAS_HOME" in os.environ:
        return os.path.join(os.environ["KERAS_HOME"], "keras.json")
    base = os.path.expanduser("~")
    if not os.access(base, os.W_OK):
        base = "/tmp"
    return os.path.join(base, ".keras", "keras.json")


def keras_config_backend() -> Optional[str]:
    """The backend named in ``keras.json``, or None (no file, unreadable)."""
    try:
        with open(keras_config_path()) as f:
            backend = json.load(f).get("backend")
    except (OSError, ValueError, AttributeError):
        return None
    return backend if isinstance(backend, str) and backend else None


def _not_installed(name: str, where: str) -> ValueError:
    return ValueError(
        f"{where} asks for the {name} backend, but {name} is not installed "
        f"(pip install {'tensorflow-cpu' if name == 'tensorflow' else name})"
    )


def choose(requested: Optional[str] = None) -> tuple:
    """The backend to use, and a line to tell the user when it was not chosen.

    In order: `requested` (``--backend``), ``$KERAS_BACKEND``, ``keras.json``
    if that backend is installed, else the first installed of `BACKENDS`.

    Args:
        requested: the backend asked for explicitly, or None.

    Returns:
        ``(backend, note)``: `note` is None when the user chose the backend,
        else one line saying which backend was picked and why.

    Raises:
        ValueError: the requested backend (argument or ``$KERAS_BACKEND``) is
            unknown or not installed, or no backend is installed.
    """
    for name, where in ((requested, "`backend`"), (os.environ.get("KERAS_BACKEND"), "$KERAS_BACKEND")):
        if not name:
            continue
        if name not in BACKENDS:
            raise ValueError(f"{where} must be one of {', '.join(BACKENDS)}. Received: {name!r}")
        if not installed(name):
            raise _not_installed(name, where)
        return name, None
    configured = keras_config_backend()
    if configured in BACKENDS and installed(configured):
        return configured, None
    available = [name for name in BACKENDS if installed(name)]
    if not available:
        raise ValueError(
            f"no Keras backend is installed: pip install one of {', '.join(BACKENDS)}"
        )
    why = (
        f"{keras_config_path()} names {configured!r}, which is not installed"
        if configured
        else "no backend chosen"
    )
    return available[0], (
        f"using the {available[0]} backend ({why}; choose with --backend or $KERAS_BACKEND)"
    )
