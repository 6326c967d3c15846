"""JAX's persistent compilation cache for the command line.

On a CPU, most of a short `keras-densenet train` run on JAX is XLA
compilation of the training and evaluation steps. With the persistent cache
a second run with the same model and shapes loads the compiled programs from
disk instead. The CLI turns it on for `train` on the JAX backend; the library
never does (it is process-wide JAX configuration).

The cache lives in ``$KERAS_DENSENET_CACHE_DIR`` or
``~/.cache/keras-densenet/jax``; ``KERAS_DENSENET_COMPILATION_CACHE=0``
turns it off, and a cache directory already configured for JAX (e.g.
``$JAX_COMPILATION_CACHE_DIR``) is left alone.

Example::

    from keras_densenet.training import compile_cache
    compile_cache.enable()  # -> the directory, or None when not applicable
"""

from __future__ import annotations

import os
from typing import Optional

#: Environment variable that turns the cache off (``0``).
ENV_SWITCH = "KERAS_DENSENET_COMPILATION_CACHE"
#: Environment variable naming the cache directory.
ENV_DIR = "KERAS_DENSENET_CACHE_DIR"
DEFAULT_DIR = os.path.join("~", ".cache", "keras-densenet", "jax")
#: Programs that compile faster than this are not worth a disk entry.
MIN_COMPILE_SECONDS = 0.5


def enable(directory: Optional[str] = None) -> Optional[str]:
    """Turns on JAX's persistent compilation cache when Keras runs on JAX.

    Args:
        directory: cache directory (default: ``$KERAS_DENSENET_CACHE_DIR`` or
            ``~/.cache/keras-densenet/jax``).

    Returns:
        The directory in use, or None: another backend, switched off, or
        the directory cannot be created.
    """
    if os.environ.get(ENV_SWITCH, "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    import keras

    if keras.backend.backend() != "jax":
        return None
    import jax

    configured = jax.config.jax_compilation_cache_dir
    if configured:
        return configured
    directory = os.path.expanduser(directory or os.environ.get(ENV_DIR) or DEFAULT_DIR)
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError:
        return None  # read-only home: run without the cache
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    return directory
