"""Which Keras backend to run on, decided without importing keras.

Keras fixes its backend when it is imported: ``$KERAS_BACKEND``, else the
``backend`` of ``~/.keras/keras.json``, else TensorFlow. On a machine that has
only JAX (the digits quick start installs just that), the fallback crashes with
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

#: Keras' backends, in the order the CLI prefers when none is chosen (JAX
#: first: the backend of the README's first command).
BACKENDS = ("jax", "tensorflow", "torch")
#: The /proc/cpuinfo flag of AVX-512 Foundation, which every AVX-512 CPU has.
AVX512_FLAG = "avx512f"
#: TensorFlow's switch of its oneDNN CPU kernels (read when TF is imported).
ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"


def cpu_info() -> dict:
    """CPU model, core count and whether it has AVX-512, from /proc/cpuinfo.

    ``avx512`` is ``None`` where /proc/cpuinfo cannot be read (not Linux).

    Example:

    >>> sorted(cpu_info())
    ['avx512', 'cpu', 'cpu_count']
    """
    import platform

    info = {"cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(), "avx512": None}
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.readlines()
    except OSError:
        return info
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    if names:
        info["cpu"] = names[0]
    flags = next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), None)
    if flags is not None:
        info["avx512"] = AVX512_FLAG in flags
    return info


def enable_onednn(environ=None) -> Optional[str]:
    """Turns TensorFlow's oneDNN CPU kernels on, unless ``$TF_ENABLE_ONEDNN_OPTS`` is set.

    TensorFlow enables them by default only on CPUs with AVX-512; on others
    the digits quick start's training step ran 1.55x faster with them (2-core AMD EPYC,
    AVX2). They may round differently, so when this changes TensorFlow's
    default the returned note says so (the CLI prints it); otherwise None.
    Call it before TensorFlow is imported.

    Example:

    >>> env = {"TF_ENABLE_ONEDNN_OPTS": "0"}
    >>> enable_onednn(env) is None and env["TF_ENABLE_ONEDNN_OPTS"]
    '0'
    """
    environ = os.environ if environ is None else environ
    if ONEDNN_ENV in environ:
        return None  # the user's choice
    environ[ONEDNN_ENV] = "1"
    if cpu_info()["avx512"] is not False:
        return None  # TensorFlow's own default there (or unknown CPU)
    return (f"TensorFlow's oneDNN kernels turned on ({ONEDNN_ENV}=1, faster on this CPU "
            f"without AVX-512; results may differ in the last bits; {ONEDNN_ENV}=0 turns them off)")


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
