"""Loading ``.keras`` model files, in safe mode, with one clear error for a
file that is not a Keras model.

Example:

>>> from keras_densenet.models import saved
>>> model = saved.load_keras_model("run/model.keras")  # doctest: +SKIP
"""

from __future__ import annotations

import os
import zipfile
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # keras is imported lazily: the CLI sets the backend first
    import keras


def check_keras_file(path) -> str:
    """`path` as a string, if it is an existing ``.keras`` file (keras-free).

    Raises:
        ValueError: naming the file: missing, or not a ``.keras`` file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"model file not found: {path!r} (expected a .keras file)")
    if not path.endswith(".keras"):
        raise ValueError(f"model file {path!r} must be a .keras file")
    return path


def load_keras_model(path) -> keras.Model:
    """Loads a ``.keras`` model with safe mode on.

    Raises:
        ValueError: the file does not exist or is not a Keras model; the
            message names the file.
    """
    import keras

    path = check_keras_file(path)
    if not zipfile.is_zipfile(path):  # keras would say "File not found"
        raise ValueError(f"{path!r} is not a loadable Keras model: a .keras file is a zip archive")
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except Exception as e:  # zipfile, json, h5py... all mean "not a model"
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path!r} is not a loadable Keras model: {reason}") from None
