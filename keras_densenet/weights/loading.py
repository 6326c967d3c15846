"""Pretrained weights: resolving the `weights` argument, downloading, loading.

`weights` is ``None`` (random init), a weight-set name from the registry
(``"imagenet"``, ``"torchvision"``...), or a path to a weights file:
``.weights.h5`` (Keras 3), legacy ``.h5`` (keras.applications' published
format), ``.keras``, or a PyTorch DenseNet state dict (``.pth``,
``.safetensors``), converted on load.

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

import hashlib
import io
import os
import zipfile
from typing import Optional

import h5py
import keras
import numpy as np

from keras_densenet.core import internals, registry
from keras_densenet.core.files import atomic_write
from keras_densenet.core.registry import Variant, WeightsSpec
from keras_densenet.weights.checkpoints import (
    TORCH_SUFFIXES,
    Tensor,
    assign,
    check_readable,
    file_error,
    read_state_dict,
    state_to_table,
)

#: File endings `weights=PATH` accepts.
WEIGHT_FILE_SUFFIXES = (".weights.h5", ".h5", ".keras") + TORCH_SUFFIXES
#: Sources whose files are PyTorch state dicts, converted on load.
TORCH_SOURCES = ("torchvision", "timm")
#: Suffix of converted checkpoints in the Keras cache.
CONVERTED_SUFFIX = ".keras_densenet.safetensors"


def _looks_like_path(weights: str) -> bool:
    return os.sep in weights or "/" in weights or weights.endswith(WEIGHT_FILE_SUFFIXES)


def _is_torch_file(path: str) -> bool:
    return path.endswith(TORCH_SUFFIXES)


def bn_epsilon_for(weights, spec: Optional[WeightsSpec]) -> float:
    """The BatchNormalization epsilon `weights` were trained with.

    The registry says it for named weight sets; PyTorch files use PyTorch's
    (1e-5); anything else keras.applications' (1.001e-5).
    """
    if spec is not None:
        return spec.bn_epsilon
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
        The `WeightsSpec` for a weight-set name, ``None`` for ``None`` or a
        path.

    Raises:
        ValueError: unknown name, missing file, or `classes` that does not
            match the pretrained classifier.
    """
    if weights is None:
        return None
    if isinstance(weights, os.PathLike):
        weights = os.fspath(weights)
    if not isinstance(weights, str):
        raise ValueError(
            "`weights` must be None, a weight-set name or a file path. "
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
    if os.path.isfile(weights):
        if not weights.endswith(WEIGHT_FILE_SUFFIXES):
            raise ValueError(
                f"`weights` file {weights!r} has an unknown type; expected one "
                f"of {', '.join(WEIGHT_FILE_SUFFIXES)}."
            )
        return None
    if _looks_like_path(weights):
        raise ValueError(
            f"`weights` file not found: {weights!r}. Pass an existing "
            f"{', '.join(WEIGHT_FILE_SUFFIXES)} file, a weight-set name or None."
        )
    names = sorted(available)
    where = f"for {variant.name}" if variant is not None else "for this architecture"
    raise ValueError(
        f"Unknown `weights` {weights!r} {where}. Allowed: None, "
        + (", ".join(repr(n) for n in names) + ", " if names else "")
        + "or the path to a weights file."
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


def _count_h5_vars(f: h5py.File) -> int:
    count = 0

    def visit(name, obj):
        nonlocal count
        # Only layer weights: a compiled model's `.keras` also stores its
        # optimizer's variables.
        if (
            isinstance(obj, h5py.Dataset)
            and name.startswith("layers/")
            and name.rpartition("/")[0].endswith("vars")
        ):
            count += 1

    f.visititems(visit)
    return count


def _open_h5(path: str) -> h5py.File:
    """Opens a `.weights.h5`/`.h5`, or the weights inside a `.keras` zip."""
    try:
        if path.endswith(".keras"):
            with zipfile.ZipFile(path) as z:
                data = z.read("model.weights.h5")
            return h5py.File(io.BytesIO(data), "r")
        return h5py.File(path, "r")
    except KeyError:
        raise file_error(path, "the .keras archive holds no model.weights.h5") from None
    except Exception as e:  # OSError, BadZipFile: truncated or not HDF5/zip
        raise file_error(path, f"not a readable Keras weights file (truncated or corrupted?): {e}") from e


def _legacy_table(group, path: str) -> list:
    """[(layer_name, [Tensor])] of a legacy (Keras 2 / keras.applications) h5."""
    def text(v):
        return v.decode("utf8") if hasattr(v, "decode") else str(v)

    layers = []
    for name in group.attrs["layer_names"]:
        name = text(name)
        g = group[name]
        weight_names = [text(w) for w in g.attrs.get("weight_names", [])]
        if weight_names:
            layers.append(
                (name, [Tensor(f"{name}/{w}", np.asarray(g[w])) for w in weight_names])
            )
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
        table = {name: ts for name, (_, ts) in zip(wanted, layers)}
    assign(model, table, path, skip=() if include_top else ("predictions",))


def load_file(model: keras.Model, path, include_top: bool = True) -> None:
    """Loads a weights file of any supported type into `model`, all or nothing.

    Args:
        model: a DenseNet built by this package.
        path: ``.weights.h5``, legacy ``.h5``, ``.keras``, or a PyTorch
            state dict (``.pth``/``.safetensors``, converted on the fly).
        include_top: whether `model` has the classifier; without it, a
            classifier in a legacy ``.h5`` or PyTorch file is ignored.

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
    with _open_h5(path) as f:
        if "layer_names" in f.attrs:
            return _load_legacy(model, f, path, include_top)
        if "model_weights" in f and "layer_names" in f["model_weights"].attrs:
            return _load_legacy(model, f["model_weights"], path, include_top)
        if path.endswith(".h5") and not path.endswith(".weights.h5"):
            raise file_error(path, "not a legacy Keras .h5 weights file (no 'layer_names')")
        # Keras 3 silently ignores weights the model has no place for, so
        # count them first: "partial loads are never silent".
        in_file, in_model = _count_h5_vars(f), len(model.weights)
    if in_file != in_model:
        raise file_error(
            path,
            f"does not fit {model.name}: the file holds {in_file} weight arrays, "
            f"the model has {in_model} (another architecture, or include_top "
            "does not match the file)",
        )
    try:
        model.load_weights(path)
    except Exception as e:
        raise file_error(path, f"does not fit {model.name}: {e}") from e


def load(model: keras.Model, weights, spec: Optional[WeightsSpec], include_top: bool, variant: Optional[Variant]) -> None:
    """Loads `weights` into `model` in place; raises instead of loading part.

    Raises:
        ValueError: the file does not fit the model or cannot be read, or
            the download failed; the message names the file or URL.
    """
    if weights is None:
        return
    name = variant.name if variant else model.name
    if spec is None:
        return load_file(model, os.fspath(weights), include_top)
    if spec.source in TORCH_SOURCES:
        table, path = _converted(spec, name)
        skip = () if include_top else ("predictions",)
        return assign(model, table, path, skip=skip, torch_names=True)
    return load_file(model, fetch(spec, include_top, name), include_top)


def sources_markdown() -> str:
    """The README's table of pretrained weights, generated from the registry.

    Example:

    >>> print(sources_markdown().splitlines()[0])
    | variant | weights | source | top-1 / top-5 (%) | input | preprocessing | BN epsilon | file |
    """
    rows = [
        "| variant | weights | source | top-1 / top-5 (%) | input | preprocessing | BN epsilon | file |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for variant in registry.VARIANTS.values():
        for name, spec in variant.weights.items():
            default = " (default)" if name == variant.default_weights else ""
            accuracy = f"{spec.top1} / {spec.top5}" if spec.top1 is not None else "-"
            file = spec.url.rsplit("/", 1)[-1]
            rows.append(
                f"| {variant.name} | `{name!r}`{default} | {spec.source} | {accuracy} | "
                f"{spec.input_size} | `{spec.preprocessing}` | {spec.bn_epsilon:g} | "
                f"[{file}]({spec.url}) ({spec.hash_algorithm} `{spec.file_hash}`)"
                + (f", [no top]({spec.notop_url})" if spec.notop_url else "")
                + " |"
            )
    return "\n".join(rows)
