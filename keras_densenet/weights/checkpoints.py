"""Reading PyTorch DenseNet checkpoints and mapping them onto Keras layers.

This module sits below both `keras_densenet.weights.loading` (which loads files into
models) and `keras_densenet.tools.convert` (which writes converted files): it
reads a state dict, renames and transposes it with the one name table
`LAYER_NAMES`, and assigns the result to a model, all or nothing. It does
not import keras.

A torchvision or timm DenseNet state dict maps one-to-one onto this
package's layers, whose names are keras.applications' own. Conversion is a
key rename plus two transposes:

* Conv2D kernel: PyTorch ``(out, in, h, w)`` to Keras ``(h, w, in, out)``
  (Keras stores HWIO kernels for both data formats).
* Dense kernel: ``classifier.weight.T``.
* BatchNormalization: gamma, beta, moving mean, moving variance are
  ``weight``, ``bias``, ``running_mean``, ``running_var``;
  ``num_batches_tracked`` is ignored.

`.pth` files are read with ``torch.load(..., weights_only=True)`` only (never
unrestricted unpickling); `.safetensors` files need no torch at all.

Example:

>>> keras_layer("features.denseblock2.denselayer4.conv1")
'conv3_block4_1_conv'
>>> torch_module("conv3_block4_1_conv")
'features.denseblock2.denselayer4.conv1'
"""

from __future__ import annotations

import dataclasses
import os
import re
import zipfile
from typing import Optional

import numpy as np

from keras_densenet.core.files import FileError, check_readable, check_zip_members, file_error, reason
from keras_densenet.core.registry import ArchConfig

#: File endings read as PyTorch state dicts.
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")

#: The one table between Keras layer names (keras.applications') and
#: PyTorch module paths (torchvision's and timm's), read both ways:
#: ``(keras layer, torch module, kind)``. ``{stage}`` numbers Keras' dense
#: blocks and transitions from 2 (``conv1`` is the stem), ``{block}``
#: numbers torchvision's from 1, so ``stage = block + 1``; ``{layer}`` is
#: the 1-based dense layer. torchvision calls the final norm ``norm5``
#: whatever the number of blocks; any ``features.norm<n>`` (n >= 1) is read
#: as it. The kind says which parameters a layer has (`PARAMETERS`).
LAYER_NAMES = (
    ("conv1_conv", "features.conv0", "conv"),
    ("conv1_bn", "features.norm0", "bn"),
    ("conv{stage}_block{layer}_0_bn", "features.denseblock{block}.denselayer{layer}.norm1", "bn"),
    ("conv{stage}_block{layer}_1_conv", "features.denseblock{block}.denselayer{layer}.conv1", "conv"),
    ("conv{stage}_block{layer}_1_bn", "features.denseblock{block}.denselayer{layer}.norm2", "bn"),
    ("conv{stage}_block{layer}_2_conv", "features.denseblock{block}.denselayer{layer}.conv2", "conv"),
    ("pool{stage}_bn", "features.transition{block}.norm", "bn"),
    ("pool{stage}_conv", "features.transition{block}.conv", "conv"),
    ("bn", "features.norm{final}", "bn"),
    ("predictions", "classifier", "dense"),
)
#: Per kind: the PyTorch parameters in Keras' ``layer.get_weights()`` order,
#: with the transpose of each into Keras layout (``None``: none).
PARAMETERS = {
    "conv": (("weight", (2, 3, 1, 0)),),  # (out, in, h, w) -> (h, w, in, out)
    "bn": (("weight", None), ("bias", None), ("running_mean", None), ("running_var", None)),
    "dense": (("weight", (1, 0)), ("bias", None)),
}
#: Written for ``{final}`` when naming torch modules (torchvision's value).
_FINAL_NORM = 5


def _pattern(template: str) -> re.Pattern:
    """A regex matching `template`, its ``{field}``s as named groups."""
    parts = re.split(r"\{(\w+)\}", template)
    regex = "".join(
        # At most 9 digits: int() refuses numbers of thousands of digits, and
        # no DenseNet has a billion blocks or layers.
        re.escape(part) if i % 2 == 0 else rf"(?P<{part}>[1-9]\d{{0,8}})" for i, part in enumerate(parts)
    )
    return re.compile(f"^{regex}$")


_KERAS_PATTERNS = [(_pattern(k), t, kind) for k, t, kind in LAYER_NAMES]
_TORCH_PATTERNS = [(_pattern(t), k, kind) for k, t, kind in LAYER_NAMES]


def torch_module(layer_name: str) -> str:
    """The PyTorch module path of Keras layer `layer_name` (itself if none).

    Example:

    >>> torch_module("pool2_conv")
    'features.transition1.conv'
    """
    for pattern, template, _ in _KERAS_PATTERNS:
        match = pattern.match(layer_name)
        if match:
            fields = {k: int(v) for k, v in match.groupdict().items()}
            if "stage" in fields:
                fields["block"] = fields["stage"] - 1
            return template.format(final=_FINAL_NORM, **fields)
    return layer_name


def keras_layer(module: str) -> Optional[str]:
    """The Keras layer name of PyTorch module path `module`, or ``None``.

    Example:

    >>> keras_layer("features.norm5")
    'bn'
    """
    found = _keras_layer_and_kind(module)
    return found[0] if found else None


def _keras_layer_and_kind(module: str) -> Optional[tuple]:
    for pattern, template, kind in _TORCH_PATTERNS:
        match = pattern.match(module)
        if match:
            fields = {k: int(v) for k, v in match.groupdict().items()}
            if "block" in fields:
                fields["stage"] = fields["block"] + 1
            return template.format(**fields), kind
    return None


# torchvision's checkpoints from before 0.4 use `denselayer1.norm.1.weight`
# for `denselayer1.norm1.weight`; this is torchvision's own remapping regex.
_LEGACY_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


@dataclasses.dataclass
class Tensor:
    """One weight of a checkpoint, already in Keras layout.

    Attributes:
        key: its name in the source file (for error messages).
        value: the array in Keras layout.
        perm: the transpose applied to the source array (``None``: none), so
            errors can show shapes in the source's own layout.
    """

    key: str
    value: np.ndarray
    perm: Optional[tuple] = None

    def source_shape(self, keras_shape) -> tuple:
        """`keras_shape` written in the source's layout."""
        keras_shape = tuple(keras_shape)
        if self.perm is None:
            return keras_shape
        out = [0] * len(self.perm)
        for j, p in enumerate(self.perm):
            out[p] = keras_shape[j]
        return tuple(out)


#: Keras layer name -> its weights in `layer.get_weights()` order.
Table = dict
#: Array kinds a weight may have (NumPy's ``dtype.kind``): floats, integers.
_NUMERIC_KINDS = "fiu"


def _torch_state(path: str) -> dict:
    """The tensors of a `.pth`/`.pt`/`.bin` file, via ``torch.load(weights_only=True)``."""
    try:
        import torch
    except ImportError as e:
        raise file_error(path, "reading .pth files needs PyTorch (pip install torch), or use .safetensors") from e
    try:
        if zipfile.is_zipfile(path):  # torch's own format since 1.6
            with zipfile.ZipFile(path) as archive:
                check_zip_members(path, archive)
        # weights_only: never run pickled code from a downloaded file.
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except FileError:
        raise
    except Exception as e:  # BadZipFile, RuntimeError, UnpicklingError, EOFError...
        raise file_error(path, f"not a readable PyTorch checkpoint (truncated or corrupted?): {reason(e)}") from None
    if isinstance(raw, dict) and not any(isinstance(v, torch.Tensor) for v in raw.values()):
        for nested in ("state_dict", "model", "state_dict_ema"):
            if isinstance(raw.get(nested), dict):
                raw = raw[nested]
                break
    if not isinstance(raw, dict):
        raise file_error(path, f"expected a state dict (dict of tensors), found {type(raw).__name__}")
    state = {}
    for key, value in raw.items():
        if not isinstance(value, torch.Tensor):
            continue
        if not isinstance(key, str):
            raise file_error(path, f"state dict keys must be strings, found {key!r}")
        try:
            value = value.detach().cpu()
            state[key] = value.float().numpy() if value.is_floating_point() else value.numpy()
        except Exception as e:  # sparse, quantized, meta or complex tensors
            raise file_error(path, f"tensor {key!r} ({value.dtype}, {value.layout}) is not a dense array: "
                                   f"{reason(e)}") from None
    return state


def read_state_dict(path) -> dict:
    """Reads a PyTorch DenseNet state dict as NumPy arrays.

    Keys are normalised: a ``module.`` prefix (DataParallel) is dropped and
    torchvision's legacy ``denselayer1.norm.1.weight`` names become
    ``denselayer1.norm1.weight``. A checkpoint dict that nests the weights
    under ``"state_dict"`` or ``"model"`` is unwrapped. Nothing in the file
    is run: `.pth` files are read with ``weights_only=True`` (a pickle that
    calls a function is refused), and zip archives are checked first
    (`check_zip_members`).

    Args:
        path: a `.safetensors` file (read without torch) or a `.pth`/`.pt`/
            `.bin` file (read with ``torch.load(weights_only=True)``).

    Returns:
        ``{key: float32 array}`` in PyTorch layout.

    Raises:
        ValueError: the file is missing, empty, truncated, corrupted or holds
            no tensors; the message names the file.

    Example:

    >>> state = read_state_dict("densenet121-a639ec97.pth")  # doctest: +SKIP
    >>> state["features.conv0.weight"].shape  # doctest: +SKIP
    (64, 3, 7, 7)
    """
    path = os.fspath(path)
    check_readable(path)
    if path.endswith(".safetensors"):
        from safetensors.numpy import load_file

        try:
            raw = load_file(path)
        except Exception as e:  # SafetensorError, OSError, TypeError (bfloat16): truncated/corrupted
            raise file_error(path, f"not a readable safetensors file (truncated or corrupted?): {reason(e)}") from None
    elif path.endswith((".pth", ".pt", ".bin")):
        raw = _torch_state(path)
    else:
        raise file_error(path, f"unknown checkpoint type; expected one of {', '.join(TORCH_SUFFIXES)}")
    if not raw:
        raise file_error(path, "the checkpoint holds no tensors")
    state = {}
    for key, value in raw.items():
        if key.startswith("module."):
            key = key[len("module."):]
        match = _LEGACY_KEY.match(key)
        if match:
            key = match[1] + match[2]
        state[key] = np.asarray(value)
    return state


def state_to_table(state: dict, path) -> Table:
    """Renames and transposes a PyTorch state dict into Keras layout.

    Args:
        state: from `read_state_dict`.
        path: the source file, named in errors.

    Returns:
        ``{keras_layer_name: [Tensor, ...]}`` in `layer.get_weights()` order.

    Raises:
        ValueError: a key that is no DenseNet weight, or a layer with some of
            its parameters missing; the message names the key(s).
    """
    grouped: dict = {}
    unexpected = []
    for key, value in state.items():
        module, _, param = key.rpartition(".")
        if param == "num_batches_tracked":
            continue
        found = _keras_layer_and_kind(module)
        if found is None:
            unexpected.append(key)
            continue
        name, kind = found
        grouped.setdefault((name, kind, module), {})[param] = (key, value)
    if unexpected:
        raise file_error(path, f"unexpected key(s), not part of a DenseNet: {_some(unexpected)}")
    table: Table = {}
    missing = []
    for (name, kind, module), params in grouped.items():
        wanted = PARAMETERS[kind]
        extra = sorted(set(params) - {p for p, _ in wanted})
        unexpected.extend(f"{module}.{p}" for p in extra)
        missing.extend(f"{module}.{p}" for p, _ in wanted if p not in params)
        if all(p in params for p, _ in wanted):
            table[name] = [
                Tensor(params[p][0], _transpose(params[p][1], perm), perm) for p, perm in wanted
            ]
    if unexpected:
        raise file_error(path, f"unexpected key(s): {_some(unexpected)}")
    if missing:
        raise file_error(path, f"missing key(s): {_some(missing)}")
    return table


def _transpose(value: np.ndarray, perm):
    if perm is None:
        return value
    if value.ndim != len(perm):
        return value  # wrong rank: reported as a shape mismatch in `assign`
    return np.ascontiguousarray(np.transpose(value, perm))


def _some(items, limit: int = 6) -> str:
    items = list(items)
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def assign(model, table: Table, path, *, skip=(), torch_names: bool = False) -> None:
    """Sets `model`'s weights from `table`, all or nothing.

    Every layer of `model` that has weights must be in `table` with the same
    number of arrays of the same shapes, and every entry of `table` must be
    used (except the layer names in `skip`). Nothing is assigned unless all
    of that holds.

    Args:
        model: the Keras model.
        table: ``{layer_name: [Tensor, ...]}``.
        path: the source file, named in errors.
        skip: table entries that may be left unused (the classifier when
            loading into a model without top).
        torch_names: name missing layers by their PyTorch keys.

    Raises:
        ValueError: naming the file and the missing, unexpected or mis-shaped
            weights (expected and actual shapes).
    """
    problems, plan = [], []
    used = set()
    for layer in model.layers:
        variables = layer.weights
        if not variables:
            continue
        name = layer.name
        if name not in table:
            what = f"{torch_module(name)}.*" if torch_names else f"layer {name!r}"
            problems.append(f"missing {what} (for layer {name!r})" if torch_names else f"missing {what}")
            continue
        used.add(name)
        tensors = table[name]
        if len(tensors) != len(variables):
            problems.append(
                f"layer {name!r} has {len(variables)} weights, the file has {len(tensors)}"
            )
            continue
        layer_problems = [p for tensor, var in zip(tensors, variables, strict=True) for p in _mismatch(tensor, var)]
        problems.extend(layer_problems)
        if not layer_problems:
            plan.append((layer, tensors))
    extra = [n for n in table if n not in used and n not in skip]
    if extra:
        keys = [t.key.rpartition(".")[0] if torch_names else t.key for n in extra for t in table[n][:1]]
        # Listed first: layers the model lacks say "another architecture".
        problems.insert(
            0,
            f"unexpected weights the model has no layer for ({_some(keys, 3)}): the "
            "file is another architecture",
        )
    if problems:
        raise file_error(
            path,
            f"does not fit {model.name} ({len(problems)} problem(s)): " + "; ".join(problems[:6])
            + (f"; and {len(problems) - 6} more" if len(problems) > 6 else ""),
        )
    # Every array is read before the first is assigned: a read error (a
    # damaged HDF5 dataset) leaves the model as it was.
    values = [[_read(tensor, path) for tensor in tensors] for _, tensors in plan]
    for (layer, _), arrays in zip(plan, values, strict=True):
        layer.set_weights(arrays)


def _read(tensor: Tensor, path) -> np.ndarray:
    try:
        return np.asarray(tensor.value)
    except Exception as e:
        raise file_error(path, f"cannot read {tensor.key}: {reason(e)}") from None


def _mismatch(tensor: Tensor, var) -> list:
    """What keeps `tensor` from being assigned to variable `var`: its shape
    (in the source's layout), or a dtype that is not a number."""
    value = tensor.value
    if tuple(value.shape) != tuple(var.shape):
        want = tensor.source_shape(var.shape)
        got = tuple(value.shape)
        if tensor.perm and value.ndim == len(tensor.perm):
            got = tensor.source_shape(got)
        return [f"{tensor.key}: expected shape {want}, got {got}"]
    if np.dtype(value.dtype).kind not in _NUMERIC_KINDS:
        return [f"{tensor.key}: expected numbers, got dtype {value.dtype}"]
    return []


def _shape(state: dict, key: str, ndim: int, path) -> tuple:
    """The shape of `state[key]`, which must have `ndim` dimensions and
    hold values (a zero in a shape would describe an empty layer)."""
    shape = tuple(int(d) for d in np.shape(state[key]))
    if len(shape) != ndim or 0 in shape:
        raise file_error(path, f"{key} must be a {ndim}-D array with no empty dimension, got shape {shape}")
    return shape


def detect_arch(state: dict, path) -> tuple:
    """Reads the architecture of a DenseNet state dict from its shapes.

    Layers per block are counted from the keys; the growth rate is the
    output channels of the first 3x3 conv, the stem width those of
    ``conv0``, the compression the first transition's channel ratio.

    Returns:
        ``(ArchConfig, classes, in_channels)``; `classes` is ``None`` when
        the checkpoint has no classifier.

    Raises:
        ValueError: the state dict is not a DenseNet's; names the file.
    """
    if "features.conv0.weight" not in state:
        raise file_error(
            path,
            "not a torchvision/timm DenseNet state dict: no 'features.conv0.weight' "
            f"(found keys: {_some(sorted(state), 4)})",
        )
    conv0 = _shape(state, "features.conv0.weight", 4, path)
    stem = "imagenet" if "features.norm0.weight" in state else "cifar"
    blocks = []
    while True:
        b = len(blocks) + 1
        n = 0
        while f"features.denseblock{b}.denselayer{n + 1}.norm1.weight" in state:
            n += 1
        if n == 0:
            break
        blocks.append(n)
    if not blocks:
        raise file_error(path, "no dense blocks found (keys 'features.denseblock1.denselayer1.*')")
    layer1 = "features.denseblock1.denselayer1"
    if f"{layer1}.conv2.weight" not in state:
        raise file_error(path, f"missing key {layer1}.conv2.weight")
    growth = _shape(state, f"{layer1}.conv2.weight", 4, path)[0]
    bottleneck = f"{layer1}.conv1.weight" in state
    bn_size = 4
    if bottleneck:
        width = _shape(state, f"{layer1}.conv1.weight", 4, path)[0]
        if width % growth:
            raise file_error(
                path,
                f"bottleneck width {width} is not a multiple of the growth rate {growth}",
            )
        bn_size = width // growth
    compression = 0.5
    if "features.transition1.conv.weight" in state:
        out, inp = _shape(state, "features.transition1.conv.weight", 4, path)[:2]
        if out != int(inp * 0.5):
            # Any theta with floor(theta * inp) == out; +0.5 keeps float
            # round-off from flooring to out - 1.
            compression = min(1.0, (out + 0.5) / inp)
    classes = _shape(state, "classifier.weight", 2, path)[0] if "classifier.weight" in state else None
    try:
        arch = ArchConfig(
            blocks=tuple(blocks),
            growth_rate=growth,
            bottleneck=bottleneck,
            bn_size=bn_size,
            compression=compression,
            num_init_features=conv0[0],
            stem=stem,
            default_size=224 if stem == "imagenet" else 32,
        )
    except ValueError as e:
        raise file_error(path, f"not a valid DenseNet: {e}") from e
    return arch, classes, conv0[1]


def describe(arch: ArchConfig) -> str:
    """One line naming an architecture's knobs, for messages."""
    return (
        f"blocks={arch.blocks}, growth_rate={arch.growth_rate}, "
        f"num_init_features={arch.num_init_features}, bn_size={arch.bn_size}, "
        f"compression={arch.compression:g}, bottleneck={arch.bottleneck}, stem={arch.stem!r}"
    )
