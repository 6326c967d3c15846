"""Loading ``.keras`` model files, in safe mode, with one clear error for a
file that is not a Keras model.

What loading promises, whatever the file holds: it returns a model or
raises the `ValueError` below, and it runs no code from the file. Keras'
safe mode refuses Python code stored in the file (``Lambda`` layers); the
archive and the model's configuration are checked first as well, so the
promise holds on the oldest Keras this package supports, which lacks some
of Keras' later hardening:

- the zip archive: no member leaving the archive (``../``, absolute paths),
  no symbolic link, no decompression bomb
  (`keras_densenet.core.files.check_zip_members`), and weights that HDF5
  reads within a memory cap and a time limit (`keras_densenet.core.hdf5`);
- the configuration: every object comes from Keras or this package, or is
  one registered with Keras (a layer of a package the caller imported);
  functions only from Keras' activations, losses and metrics, or registered
  ones (never, say,
  ``keras.config.enable_unsafe_deserialization`` or
  ``keras.utils.get_file``, which a crafted configuration could call).

Example:

>>> from keras_densenet.models import saved
>>> model = saved.load_keras_model("run/model.keras")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import zipfile
from typing import TYPE_CHECKING

from keras_densenet.core import hdf5
from keras_densenet.core.files import FileError, check_zip_members, file_error, reason

if TYPE_CHECKING:  # keras is imported lazily: the CLI sets the backend first
    import keras

#: Modules whose objects a configuration may name without registration.
_TRUSTED_MODULES = ("keras", "keras_densenet")
#: The kinds of Keras *functions* a configuration may name (activations,
#: losses, metrics); any other function is refused (`_function_modules`).
_FUNCTION_KINDS = ("activations", "losses", "metrics")
#: Layer widths a configuration may declare (filters, units...): far above
#: any real model's, far below what would exhaust memory while building.
_SIZE_KEYS, _MAX_LAYER_SIZE = ("filters", "units", "output_dim", "input_dim"), 1 << 20
#: The configuration is read whole; no model's is anywhere near this.
_MAX_CONFIG_BYTES = 64 << 20


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


def _module_of(obj: dict) -> str:
    module = obj.get("module")
    return module if isinstance(module, str) else ""


def _function_modules() -> tuple:
    """The module prefixes of the functions a configuration may name: Keras'
    activations, losses and metrics, under their public names and under the
    implementation package Keras writes into configurations (learnt from a
    public function's ``__module__``, so no private name is spelled here),
    and this package's."""
    import keras

    implementation = keras.activations.relu.__module__.split(".activations")[0]
    return tuple(f"{root}.{kind}" for root in ("keras", implementation) for kind in _FUNCTION_KINDS) + (
        "keras_densenet.",)


def _is_trusted(module: str, roots=_TRUSTED_MODULES) -> bool:
    return any(module == root or module.startswith(f"{root}.") for root in roots)


def check_config(config, path) -> None:
    """Refuses a model configuration that names objects from outside Keras
    and this package (unless registered) or functions outside Keras'
    activations, losses and metrics (see the module's docstring).

    Raises:
        ValueError: naming the file and the object.
    """
    stack = [config]
    while stack:  # no recursion: a deeply nested file must not exhaust the stack
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        stack.extend(node.values())
        if "class_name" not in node or "module" not in node:
            continue
        module, name = _module_of(node), node.get("class_name")
        _check_sizes(node, path)
        if name == "function":
            # "builtins": Keras looks the name up among its own activations,
            # losses and metrics; "package>name": a registered function.
            allowed = module == "builtins" or module.startswith(_function_modules()) or ">" in str(node.get("config"))
            if not allowed:
                what = f"{module}.{node.get('config')}"
                raise file_error(path, f"the model's configuration calls the function {what!r}, which safe mode "
                                       "refuses (only Keras' activations, losses and metrics are allowed)")
        elif not _is_trusted(module) and not node.get("registered_name"):
            raise file_error(path, f"the model's configuration names {module}.{name}, which is neither part of "
                                   "Keras nor registered with it: refused in safe mode")


def _check_sizes(node: dict, path) -> None:
    """Refuses a layer declaring a width above `_MAX_LAYER_SIZE` (Keras would
    try to allocate it while building the model, before any weight is read)."""
    config = node.get("config")
    if not isinstance(config, dict):
        return
    for key in _SIZE_KEYS:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > _MAX_LAYER_SIZE:
            raise file_error(path, f"the model's configuration declares {key}={value} in a "
                                   f"{node.get('class_name')} layer, more than {_MAX_LAYER_SIZE:,}: refused")


def _not_a_model(path: str, why: str) -> FileError:
    return FileError(f"{path!r} is not a loadable Keras model: {why}")


def _check_archive(path: str) -> None:
    """The checks before Keras sees the file: a zip archive, no hostile
    member, and a configuration `check_config` accepts."""
    if not zipfile.is_zipfile(path):  # keras would say "File not found"
        raise _not_a_model(path, "a .keras file is a zip archive")
    with zipfile.ZipFile(path) as archive:
        check_zip_members(path, archive)
        try:
            info = archive.getinfo("config.json")
        except KeyError:
            raise _not_a_model(path, "the archive holds no config.json") from None
        if info.file_size > _MAX_CONFIG_BYTES:
            raise _not_a_model(path, f"config.json declares {info.file_size} bytes")
        config = json.loads(archive.read(info))
        if "model.weights.h5" in archive.namelist():  # Keras reads it with h5py
            with archive.open("model.weights.h5") as weights:
                hdf5.check_heaps(weights.read(), path)
            hdf5.probe(path, "model.weights.h5", archive.getinfo("model.weights.h5").file_size)
    check_config(config, path)


def load_keras_model(path) -> keras.Model:
    """Loads a ``.keras`` model with safe mode on (see the module's docstring).

    Raises:
        ValueError: the file does not exist or is not a Keras model, or
            holds something safe mode refuses; the message names the file.
    """
    path = check_keras_file(path)
    try:
        _check_archive(path)
        import keras

        return keras.saving.load_model(path, safe_mode=True)
    except FileError:
        raise
    except Exception as e:  # zipfile, json (RecursionError too), h5py, Keras' own... all mean "not a model"
        raise _not_a_model(path, reason(e)) from None
