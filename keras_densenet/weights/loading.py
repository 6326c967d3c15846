"""Pretrained weights: resolving the `weights` argument, downloading, loading.

`weights` is ``None`` (random init), a weight-set name from the registry
(``"imagenet"``, ``"torchvision"``...), a path to a weights file:
``.weights.h5`` (Keras 3), legacy ``.h5`` (keras.applications' published
format), ``.keras``, or a PyTorch DenseNet state dict (``.pth``,
``.safetensors``), converted on load; or a keras-hub DenseNet preset (a
directory holding ``config.json``, or a ``kaggle://`` / ``hf://`` handle),
loaded by layer name through `keras_densenet.weights.presets`.

Downloads go through `keras.utils.get_file` into the Keras cache, and their
hash is verified before use: keras' files by full md5, torchvision's by the
sha256 prefix in their file name (torch.hub's convention). Converted PyTorch
checkpoints are cached next to them as ``<file>.keras_densenet.safetensors``
(in Keras layout, keyed by layer name), so the second load skips both the
download and the conversion.

Loading is all or nothing: a file that covers only some layers, has other
shapes or another architecture raises a `ValueError` naming the file, and
the model is not returned.

Example:

>>> import keras_densenet
>>> model = keras_densenet.DenseNet161(weights="imagenet")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import mmap
import os
import zipfile
from typing import Optional

import h5py
import keras
import numpy as np

from keras_densenet.core import hdf5, internals, registry
from keras_densenet.core.files import FileError, atomic_write, check_readable, check_zip_members, file_error, reason
from keras_densenet.core.registry import Variant, WeightsSpec
from keras_densenet.weights import presets
from keras_densenet.weights.checkpoints import TORCH_SUFFIXES, Tensor, assign, read_state_dict, state_to_table

#: File endings `weights=PATH` accepts.
WEIGHT_FILE_SUFFIXES = (".weights.h5", ".h5", ".keras") + TORCH_SUFFIXES
#: Sources whose files are PyTorch state dicts, converted on load.
TORCH_SOURCES = ("torchvision", "timm")
#: Suffix of converted checkpoints in the Keras cache.
CONVERTED_SUFFIX = ".keras_densenet.safetensors"
#: What `weights` may be, for error messages.
_ALLOWED = ("a weights file (" + ", ".join(WEIGHT_FILE_SUFFIXES) + "), a keras-hub preset "
            "(a directory with config.json, or a kaggle:// or hf:// handle)")


def _looks_like_path(weights: str) -> bool:
    return os.sep in weights or "/" in weights or weights.endswith(WEIGHT_FILE_SUFFIXES)


def _is_torch_file(path: str) -> bool:
    return path.endswith(TORCH_SUFFIXES)


def bn_epsilon_for(weights, spec: Optional[WeightsSpec]) -> float:
    """The BatchNormalization epsilon `weights` were trained with.

    The registry says it for named weight sets; PyTorch files and timm
    directories use PyTorch's (1e-5); keras-hub presets and anything else
    keras.applications' (1.001e-5).
    """
    if spec is not None:
        return spec.bn_epsilon
    if presets.is_preset(weights):
        return presets.bn_epsilon(weights)
    if isinstance(weights, (str, os.PathLike)) and _is_torch_file(os.fspath(weights)):
        return registry.TORCH_BN_EPSILON
    return registry.KERAS_BN_EPSILON


def resolve(
    weights,
    variant: Optional[Variant],
    include_top: bool,
    classes: int,
) -> Optional[WeightsSpec]:
    """Validates `weights` and returns the registry spec it names, if any.

    Args:
        weights: the builder's `weights` argument.
        variant: the registered variant being built, or ``None`` for an
            architecture without published weights.
        include_top: whether the model has the classifier.
        classes: the classifier's size.

    Returns:
        The `WeightsSpec` for a weight-set name, ``None`` for ``None``, a
        file path or a preset (`load` reads those).

    Raises:
        ValueError: unknown name, missing file, a directory that is not a
            preset, or `classes` that does not match the pretrained
            classifier.
    """
    if weights is None:
        return None
    if isinstance(weights, os.PathLike):
        weights = os.fspath(weights)
    if not isinstance(weights, str):
        raise ValueError(
            "`weights` must be None, a weight-set name, a file path or a keras-hub preset. "
            f"Received: weights={weights!r}"
        )
    available = dict(variant.weights) if variant is not None else {}
    if weights in available:
        spec = available[weights]
        if include_top and classes != spec.classes:
            raise ValueError(
                f"`classes` must be {spec.classes} to load weights={weights!r} "
                f"with include_top=True (the pretrained classifier has "
                f"{spec.classes} classes). Received: classes={classes}. Use "
                "include_top=False and add your own classifier instead."
            )
        return spec
    if presets.is_preset(weights):
        return None  # `load` reads it, and checks its architecture
    if os.path.isdir(weights):
        raise ValueError(
            f"`weights` directory {weights!r} is not a keras-hub or timm preset: it has no "
            f"{presets.names.CONFIG_FILE}. Pass {_ALLOWED}, a weight-set name or None."
        )
    if os.path.isfile(weights):
        if not weights.endswith(WEIGHT_FILE_SUFFIXES):
            raise ValueError(
                f"`weights` file {weights!r} has an unknown type; expected one "
                f"of {', '.join(WEIGHT_FILE_SUFFIXES)}."
            )
        return None
    if _looks_like_path(weights):
        raise ValueError(
            f"`weights` file not found: {weights!r}. Pass {_ALLOWED}, a weight-set name or None."
        )
    names = sorted(available)
    where = f"for {variant.name}" if variant is not None else "for this architecture"
    raise ValueError(
        f"Unknown `weights` {weights!r} {where}. Allowed: None, "
        + (", ".join(repr(n) for n in names) + ", " if names else "")
        + f"{_ALLOWED}."
    )


#: Sub-directory of Keras' cache for downloaded and converted weights.
CACHE_SUBDIR = "models"


def _cache_dir() -> str:
    return os.path.join(os.path.expanduser(internals.keras_home()), CACHE_SUBDIR)


def file_hash(path: str, algorithm: str) -> str:
    """Hex digest of file `path` (``"md5"`` or ``"sha256"``), read in chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _verify_hash(path: str, spec_hash: str, algorithm: str) -> None:
    """Checks a downloaded file; a mismatch deletes it and raises."""
    actual = file_hash(path, algorithm)
    # torchvision's names carry a sha256 *prefix*; keras' md5 is complete.
    if not actual.startswith(spec_hash.lower()):
        os.remove(path)  # so that the next call downloads it again
        raise ValueError(
            f"{path!r}: {algorithm} hash mismatch (expected {spec_hash}"
            f"{'...' if len(spec_hash) < len(actual) else ''}, got {actual}); "
            "the file was corrupted or changed and has been deleted. Try again, "
            "or pass a verified local file as `weights=PATH`."
        )


def fetch(spec: WeightsSpec, include_top: bool, variant_name: str) -> str:
    """Downloads (or finds in the Keras cache) the file for `spec`.

    Returns:
        The local path, hash verified.

    Raises:
        ValueError: the download failed (e.g. offline): the message names the
            URL and suggests a local path or ``weights=None``; or the hash
            does not match: the file is deleted and the message names it with
            the expected and actual hashes.
    """
    url, file_hash = spec.url, spec.file_hash
    if not include_top and spec.notop_url:
        url, file_hash = spec.notop_url, spec.notop_file_hash
    fname = url.rsplit("/", 1)[-1]
    try:
        # No hash here: get_file's check wants a full digest, torchvision
        # publishes a prefix; `_verify_hash` handles both the same way.
        path = keras.utils.get_file(
            fname, url, cache_dir=os.path.expanduser(internals.keras_home()), cache_subdir=CACHE_SUBDIR
        )
    except Exception as e:  # get_file raises several types for network errors
        raise ValueError(
            f"Could not download the {variant_name} weights from {url} ({e}). "
            "Download the file yourself and pass its path as `weights=PATH`, "
            "or use weights=None."
        ) from e
    _verify_hash(path, file_hash, spec.hash_algorithm)
    return path


def _converted(spec: WeightsSpec, variant_name: str) -> tuple:
    """The Keras-layout table of a PyTorch weight set, converting at most once.

    Returns:
        ``(table, path)``: path is the file the table was read from (the
        cached conversion, or the download), named in errors.
    """
    from safetensors.numpy import load_file, save_file

    fname = spec.url.rsplit("/", 1)[-1]
    stem = fname.split(".")[0]
    cached = os.path.join(_cache_dir(), f"{stem}{CONVERTED_SUFFIX}")
    if os.path.isfile(cached):
        try:
            flat = load_file(cached)
            return _unflatten(flat), cached
        except Exception:
            pass  # a damaged cache entry: convert again below
    path = fetch(spec, True, variant_name)
    table = state_to_table(read_state_dict(path), path)
    os.makedirs(os.path.dirname(cached), exist_ok=True)
    atomic_write(
        cached,
        lambda tmp: save_file(
            {f"{name}/{i}": t.value for name, ts in table.items() for i, t in enumerate(ts)},
            tmp,
            metadata={"source": spec.url, "hash": spec.file_hash},
        ),
    )
    return table, path


def _unflatten(flat: dict) -> dict:
    table: dict = {}
    for key in sorted(flat, key=lambda k: (k.rpartition("/")[0], int(k.rpartition("/")[2]))):
        name = key.rpartition("/")[0]
        table.setdefault(name, []).append(Tensor(key, flat[key]))
    return table


def _h5_vars(f: h5py.File) -> list:
    """The layer weights of a Keras 3 weights file: ``[(name, dataset)]``."""
    found = []

    def visit(name, obj):
        # Only layer weights: a compiled model's `.keras` also stores its
        # optimizer's variables. Names are text (h5py decodes them), but a
        # damaged file can hand back bytes: compared as text either way.
        name = name.decode("utf8", "replace") if isinstance(name, bytes) else str(name)
        if isinstance(obj, h5py.Dataset) and name.startswith("layers/") and name.rpartition("/")[0].endswith("vars"):
            found.append((name, obj))

    f.visititems(visit)
    return found


def _check_h5_vars(model: keras.Model, f: h5py.File, path: str) -> None:
    """Checks a Keras 3 weights file against `model` before Keras loads it:
    the same number of arrays and the same shapes (so that no damaged size
    makes Keras allocate a huge array), numbers only, every array readable
    (so that Keras cannot fail half-way through the layers)."""
    datasets = _h5_vars(f)
    # Keras 3 silently ignores weights the model has no place for, so
    # count them first: "partial loads are never silent".
    if len(datasets) != len(model.weights):
        raise file_error(
            path,
            f"does not fit {model.name}: the file holds {len(datasets)} weight arrays, "
            f"the model has {len(model.weights)} (another architecture, or include_top "
            "does not match the file)",
        )
    in_file = sorted(tuple(int(d) for d in ds.shape) for _, ds in datasets)
    in_model = sorted(tuple(int(d) for d in v.shape) for v in model.weights)
    if in_file != in_model:
        odd = sorted(set(in_file) - set(in_model))[:3]
        raise file_error(path, f"does not fit {model.name}: the file holds arrays of shapes the model has "
                               f"no weight of ({', '.join(map(str, odd)) or 'a different count per shape'})")
    for name, ds in datasets:
        if ds.dtype.kind not in "fiu":
            raise file_error(path, f"{name}: expected numbers, got dtype {ds.dtype}")
        ds[()]  # reads it: a damaged block fails here, not inside Keras


#: A `.keras` archive's weights may be this much larger than the model's
#: weights (optimizer variables, HDF5 overhead) before loading refuses them.
_MAX_WEIGHTS_RATIO, _MAX_WEIGHTS_SLACK = 8, 64 << 20


@contextlib.contextmanager
def _open_h5(path: str, model: keras.Model, trusted: bool):
    """Opens a `.weights.h5`/`.h5`, or the weights inside a `.keras` zip,
    once `core.hdf5`'s checks accept it (a `trusted` file, whose hash was
    verified, skips the child-process probe)."""
    if not path.endswith(".keras"):
        with open(path, "rb") as raw, mmap.mmap(raw.fileno(), 0, access=mmap.ACCESS_READ) as data:
            hdf5.check_heaps(data, path)
        if not trusted:
            hdf5.probe(path)
        with h5py.File(path, "r") as f:
            yield f
        return
    with zipfile.ZipFile(path) as z:
        check_zip_members(path, z)
        try:
            info = z.getinfo("model.weights.h5")
        except KeyError:
            raise file_error(path, "the .keras archive holds no model.weights.h5") from None
        limit = _MAX_WEIGHTS_RATIO * sum(int(np.prod(v.shape)) * 8 for v in model.weights) + _MAX_WEIGHTS_SLACK
        if info.file_size > limit:
            raise file_error(path, f"model.weights.h5 declares {info.file_size} bytes, far more than the "
                                   f"weights of {model.name} need")
        data = z.read(info)
    hdf5.check_heaps(data, path)
    if not trusted:
        hdf5.probe(path, "model.weights.h5", len(data))
    with h5py.File(io.BytesIO(data), "r") as f:
        yield f


def _legacy_table(group, path: str) -> list:
    """[(layer_name, [Tensor])] of a legacy (Keras 2 / keras.applications) h5.

    The tensors' values are the h5py datasets, read only once `assign` has
    checked every shape (a damaged shape cannot make it allocate).
    """
    def text(v):
        return v.decode("utf8", "replace") if hasattr(v, "decode") else str(v)

    layers = []
    for name in np.atleast_1d(group.attrs["layer_names"]):
        name = text(name)
        g = group[name]
        weight_names = [text(w) for w in np.atleast_1d(g.attrs.get("weight_names", []))]
        if weight_names:
            tensors = [Tensor(f"{name}/{w}", g[w]) for w in weight_names]
            if not all(isinstance(t.value, h5py.Dataset) for t in tensors):
                raise file_error(path, f"layer {name!r}: a weight is not an array")
            layers.append((name, tensors))
    return layers


def _load_legacy(model: keras.Model, group, path: str, include_top: bool) -> None:
    layers = _legacy_table(group, path)
    # keras.applications' older files name layers `conv1/conv`, ours `conv1_conv`.
    by_name = {name.replace("/", "_"): ts for name, ts in layers}
    if "fc1000" in by_name and "predictions" not in by_name:
        by_name["predictions"] = by_name.pop("fc1000")
    wanted = [layer.name for layer in model.layers if layer.weights]
    if all(name in by_name for name in wanted):
        table = by_name
    else:
        # keras itself loads this format by layer order: do the same, then
        # let `assign` check every count and shape.
        if not include_top and len(layers) == len(wanted) + 1:
            layers = layers[:-1]  # the file's classifier
        if len(layers) != len(wanted):
            raise file_error(
                path,
                f"does not fit {model.name}: the file has {len(layers)} layers with "
                f"weights, the model {len(wanted)} (another architecture, or "
                "include_top does not match the file)",
            )
        table = {name: ts for name, (_, ts) in zip(wanted, layers, strict=True)}
    assign(model, table, path, skip=() if include_top else ("predictions",))


def load_file(model: keras.Model, path, include_top: bool = True, trusted: bool = False) -> None:
    """Loads a weights file of any supported type into `model`, all or nothing.

    Args:
        model: a DenseNet built by this package.
        path: ``.weights.h5``, legacy ``.h5``, ``.keras``, or a PyTorch
            state dict (``.pth``/``.safetensors``, converted on the fly).
        include_top: whether `model` has the classifier; without it, a
            classifier in a legacy ``.h5`` or PyTorch file is ignored.
        trusted: the file's hash was verified (a registered weight set):
            HDF5 files skip the child-process probe of `core.hdf5`.

    Raises:
        ValueError: the file is empty, truncated, corrupted, of another
            architecture, or covers only some layers; names the file.
    """
    path = os.fspath(path)
    check_readable(path)
    skip = () if include_top else ("predictions",)
    if _is_torch_file(path):
        table = state_to_table(read_state_dict(path), path)
        assign(model, table, path, skip=skip, torch_names=True)
        return
    try:
        with _open_h5(path, model, trusted) as f:
            if "layer_names" in f.attrs:
                return _load_legacy(model, f, path, include_top)
            if "model_weights" in f and "layer_names" in f["model_weights"].attrs:
                return _load_legacy(model, f["model_weights"], path, include_top)
            if path.endswith(".h5") and not path.endswith(".weights.h5"):
                raise file_error(path, "not a legacy Keras .h5 weights file (no 'layer_names')")
            _check_h5_vars(model, f, path)
    except FileError:
        raise
    except Exception as e:  # h5py's OSError/KeyError/RuntimeError/TypeError, BadZipFile...: damaged
        raise file_error(path, f"not a readable Keras weights file (truncated or corrupted?): {reason(e)}") from None
    # The file has been read whole above; should Keras still fail, the
    # model gets its weights back (all or nothing).
    before = [keras.ops.convert_to_numpy(v) for v in model.weights]
    try:
        model.load_weights(path)
    except Exception as e:
        for v, value in zip(model.weights, before, strict=True):
            v.assign(value)
        raise file_error(path, f"does not fit {model.name}: {reason(e)}") from None


def load(model: keras.Model, weights, spec: Optional[WeightsSpec], include_top: bool,
         variant: Optional[Variant]) -> None:
    """Loads `weights` into `model` in place; raises instead of loading part.

    Args:
        model: the DenseNet just built.
        weights: the builder's `weights` argument, as `resolve` accepted it.
        spec: what `resolve` returned for it.
        include_top: whether `model` has the classifier (loaded too).
        variant: the registered variant `model` is, if any (named in errors).

    Raises:
        ValueError: the file or preset does not fit the model or cannot be
            read, or the download failed; the message names the file, preset
            or URL.
        MissingExtraError: a ``kaggle://`` / ``hf://`` preset without
            keras-hub (the ``[hub]`` extra).
    """
    if weights is None:
        return
    name = variant.name if variant else model.name
    if spec is None and presets.is_preset(weights):
        presets.load_preset(model, weights, include_top)
        return
    if spec is None:
        return load_file(model, os.fspath(weights), include_top)
    if spec.source in TORCH_SOURCES:
        table, path = _converted(spec, name)
        skip = () if include_top else ("predictions",)
        return assign(model, table, path, skip=skip, torch_names=True)
    return load_file(model, fetch(spec, include_top, name), include_top, trusted=True)


def sources_markdown() -> str:
    """docs/weights.md's table of pretrained weights, generated from the registry.

    Example:

    >>> print(sources_markdown().splitlines()[0])
    | variant | weights | source | top-1 / top-5 (%) | input | preprocessing | BN epsilon | file |
    """
    rows = [
        "| variant | weights | source | top-1 / top-5 (%) | input | preprocessing | BN epsilon | file |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for variant in registry.VARIANTS.values():
        # An alias is the same file as the set it names: one row, both names.
        names_of: dict = {}
        for name, spec in variant.weights.items():
            names_of.setdefault(id(spec), (spec, []))[1].append(name)
        for spec, names in names_of.values():
            label = ", ".join(
                f"`{name!r}`" + (" (default)" if name == variant.default_weights else "") for name in names
            )
            accuracy = f"{spec.top1} / {spec.top5}" if spec.top1 is not None else "-"
            file = spec.url.rsplit("/", 1)[-1]
            rows.append(
                f"| {variant.name} | {label} | {spec.source} | {accuracy} | "
                f"{spec.input_size} | `{spec.preprocessing}` | {spec.bn_epsilon:g} | "
                f"[{file}]({spec.url}) ({spec.hash_algorithm} `{spec.file_hash}`)"
                + (f", [no top]({spec.notop_url})" if spec.notop_url else "")
                + " |"
            )
    return "\n".join(rows)
