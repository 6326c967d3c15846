"""Optional dependencies, grouped as the package's pip extras.

The core install (keras, numpy, h5py, safetensors and one backend) builds
every model, loads weights and round-trips ``.keras`` files. Heavier
capabilities live in extras; a function that needs one calls `require` (or
`import_from`) first, so a missing package is reported in one line that
names the extra to install, before any work starts.

Example:

>>> from keras_densenet.core import extras
>>> extras.EXTRAS["train"]
('sklearn', 'matplotlib', 'PIL')
>>> extras.require("train", "the trainer")  # all installed: no error
"""

from __future__ import annotations

import importlib
import importlib.util

#: Extra name -> the modules it provides (import names, not pip names).
#: `train`: the trainer, the bundled digits (scikit-learn), plots
#: (matplotlib) and reading image files (Pillow).
#: The serving runtimes (``export``, ``predict`` on artifacts, ``bench
#: runtimes``): `litert` (the LiteRT interpreter; TensorFlow
#: writes .tflite files), `openvino` (with NNCF for int8), `onnx` (ONNX
#: Runtime and Keras' exporters), and the backends' own. `hub`: keras-hub,
#: to write keras-hub presets and fetch ``kaggle://`` / ``hf://`` ones (local
#: preset directories load without it).
EXTRAS = {
    "train": ("sklearn", "matplotlib", "PIL"),
    "litert": ("ai_edge_litert",),
    "openvino": ("openvino",),
    "onnx": ("onnx", "onnxruntime"),
    "hub": ("keras_hub",),
    "tensorflow": ("tensorflow",),
    "torch": ("torch",),
    "jax": ("jax",),
}


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the extra."""


def installed(module: str) -> bool:
    """Whether `module` (an import name) can be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a hidden or broken package
        return False


def missing(extra: str) -> tuple:
    """The modules of `extra` that are not installed (empty when all are)."""
    return tuple(m for m in EXTRAS[extra] if not installed(m))


def install_hint(extra: str) -> str:
    """The command that installs `extra`, e.g. ``pip install "keras-densenet[train]"``."""
    return f'pip install "keras-densenet[{extra}]"'


def _missing_error(extra: str, what: str, absent) -> MissingExtraError:
    return MissingExtraError(
        f"{what} needs the [{extra}] extra ({', '.join(absent)} not installed): {install_hint(extra)}"
    )


def require(extra: str, what: str) -> None:
    """Raises `MissingExtraError` unless every module of `extra` is installed.

    Args:
        extra: a key of `EXTRAS`.
        what: what needs it, for the message (e.g. ``"keras-densenet train"``).

    Raises:
        MissingExtraError: naming the missing modules and the install command.
    """
    absent = missing(extra)
    if absent:
        raise _missing_error(extra, what, absent)


def import_from(extra: str, module: str, what: str):
    """Imports `module` (one of `extra`'s), or raises `MissingExtraError`.

    Example:

    >>> import_from("train", "matplotlib", "plots").__name__
    'matplotlib'
    """
    top = module.split(".")[0]
    if not installed(top):
        raise _missing_error(extra, what, [top])
    return importlib.import_module(module)
