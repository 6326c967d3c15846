"""PyTorch (torchvision, timm) DenseNet checkpoints to Keras, with exact parity.

A torchvision or timm DenseNet state dict maps one-to-one onto this package's
layers (see `keras_densenet.blocks` for the key table). Conversion is a key
rename plus two transposes:

* Conv2D kernel: PyTorch ``(out, in, h, w)`` to Keras ``(h, w, in, out)``
  (Keras stores HWIO kernels for both data formats).
* Dense kernel: ``classifier.weight.T``.
* BatchNormalization: gamma, beta, moving mean, moving variance are
  ``weight``, ``bias``, ``running_mean``, ``running_var``;
  ``num_batches_tracked`` is ignored.

Models converted from PyTorch use PyTorch's BatchNormalization epsilon
(`registry.TORCH_BN_EPSILON`); the stem pads 3 and 1 symmetrically like
PyTorch, so the logits match to float32 round-off.

`.pth` files are read with ``torch.load(..., weights_only=True)`` only (never
unrestricted unpickling); `.safetensors` files need no torch at all.

Example:

>>> from keras_densenet.convert import convert_checkpoint
>>> model = convert_checkpoint("densenet121-a639ec97.pth",
...                            "densenet121.keras")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
from typing import Optional, Union

import numpy as np

from keras_densenet import registry
from keras_densenet.registry import ArchConfig

#: File endings read as PyTorch state dicts.
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
#: File endings `convert_checkpoint` writes.
OUTPUT_SUFFIXES = (".keras", ".weights.h5")

# torchvision's checkpoints from before 0.4 use `denselayer1.norm.1.weight`
# for `denselayer1.norm1.weight`; this is torchvision's own remapping regex.
_LEGACY_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)
_BN_PARAMS = ("weight", "bias", "running_mean", "running_var")
_CONV = (2, 3, 1, 0)  # (out, in, h, w) -> (h, w, in, out)
_DENSE = (1, 0)

# torch module path -> Keras layer name; `{b}` is the 1-based torch block.
_MODULES = [
    (re.compile(r"^features\.conv0$"), lambda m: "conv1_conv"),
    (re.compile(r"^features\.norm0$"), lambda m: "conv1_bn"),
    (
        re.compile(r"^features\.denseblock(\d+)\.denselayer(\d+)\.(norm1|conv1|norm2|conv2)$"),
        lambda m: f"conv{int(m[1]) + 1}_block{m[2]}_"
        + {"norm1": "0_bn", "conv1": "1_conv", "norm2": "1_bn", "conv2": "2_conv"}[m[3]],
    ),
    (
        re.compile(r"^features\.transition(\d+)\.(norm|conv)$"),
        lambda m: f"pool{int(m[1]) + 1}_{'bn' if m[2] == 'norm' else 'conv'}",
    ),
    # torchvision calls the final norm `norm5` whatever the number of blocks.
    (re.compile(r"^features\.norm([1-9]\d*)$"), lambda m: "bn"),
    (re.compile(r"^classifier$"), lambda m: "predictions"),
]


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


def _fail(path, problem: str) -> ValueError:
    return ValueError(f"{os.fspath(path)!r}: {problem}")


def _check_readable(path) -> None:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise _fail(path, "no such file")
    if os.path.getsize(path) == 0:
        raise _fail(path, "the file is empty (an interrupted download?)")


def read_state_dict(path) -> dict:
    """Reads a PyTorch DenseNet state dict as NumPy arrays.

    Keys are normalised: a ``module.`` prefix (DataParallel) is dropped and
    torchvision's legacy ``denselayer1.norm.1.weight`` names become
    ``denselayer1.norm1.weight``. A checkpoint dict that nests the weights
    under ``"state_dict"`` or ``"model"`` is unwrapped.

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
    _check_readable(path)
    if path.endswith(".safetensors"):
        from safetensors.numpy import load_file

        try:
            raw = load_file(path)
        except Exception as e:  # SafetensorError, OSError: truncated/corrupted
            raise _fail(path, f"not a readable safetensors file (truncated or corrupted?): {e}") from e
    elif path.endswith((".pth", ".pt", ".bin")):
        try:
            import torch
        except ImportError as e:
            raise _fail(
                path,
                "reading .pth files needs PyTorch (pip install torch); or "
                "convert it to .safetensors",
            ) from e
        try:
            # weights_only: never run pickled code from a downloaded file.
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # RuntimeError/UnpicklingError/EOFError
            raise _fail(path, f"not a readable PyTorch checkpoint (truncated or corrupted?): {e}") from e
        if isinstance(raw, dict) and not any(hasattr(v, "shape") for v in raw.values()):
            for nested in ("state_dict", "model", "state_dict_ema"):
                if isinstance(raw.get(nested), dict):
                    raw = raw[nested]
                    break
        if not isinstance(raw, dict):
            raise _fail(path, f"expected a state dict (dict of tensors), found {type(raw).__name__}")
        raw = {
            k: v.detach().cpu().float().numpy() if v.is_floating_point() else v.detach().cpu().numpy()
            for k, v in raw.items()
            if isinstance(v, torch.Tensor)
        }
    else:
        raise _fail(path, f"unknown checkpoint type; expected one of {', '.join(TORCH_SUFFIXES)}")
    if not raw:
        raise _fail(path, "the checkpoint holds no tensors")
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
        for pattern, name_of in _MODULES:
            match = pattern.match(module)
            if match:
                grouped.setdefault(name_of(match), {})[param] = (key, value)
                break
        else:
            unexpected.append(key)
    if unexpected:
        raise _fail(path, f"unexpected key(s), not part of a DenseNet: {_some(unexpected)}")
    table: Table = {}
    missing = []
    for name, params in grouped.items():
        prefix = next(iter(params.values()))[0].rpartition(".")[0]
        if name.endswith("_conv"):
            wanted, perms = ("weight",), (_CONV,)
        elif name == "predictions":
            wanted, perms = ("weight", "bias"), (_DENSE, None)
        else:
            wanted, perms = _BN_PARAMS, (None,) * 4
        extra = sorted(set(params) - set(wanted))
        if extra:
            unexpected.extend(f"{prefix}.{p}" for p in extra)
        missing.extend(f"{prefix}.{p}" for p in wanted if p not in params)
        if all(p in params for p in wanted):
            table[name] = [
                Tensor(params[p][0], _transpose(params[p][1], perm), perm)
                for p, perm in zip(wanted, perms)
            ]
    if unexpected:
        raise _fail(path, f"unexpected key(s): {_some(unexpected)}")
    if missing:
        raise _fail(path, f"missing key(s): {_some(missing)}")
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


def torch_key(layer_name: str) -> str:
    """The PyTorch module path of Keras layer `layer_name` (for messages).

    Example:

    >>> torch_key("conv3_block2_1_conv")
    'features.denseblock2.denselayer2.conv1'
    """
    for pattern, fmt in (
        (r"^conv1_conv$", "features.conv0"),
        (r"^conv1_bn$", "features.norm0"),
        (r"^conv(\d+)_block(\d+)_0_bn$", "features.denseblock{b}.denselayer{i}.norm1"),
        (r"^conv(\d+)_block(\d+)_1_conv$", "features.denseblock{b}.denselayer{i}.conv1"),
        (r"^conv(\d+)_block(\d+)_1_bn$", "features.denseblock{b}.denselayer{i}.norm2"),
        (r"^conv(\d+)_block(\d+)_2_conv$", "features.denseblock{b}.denselayer{i}.conv2"),
        (r"^pool(\d+)_bn$", "features.transition{b}.norm"),
        (r"^pool(\d+)_conv$", "features.transition{b}.conv"),
        (r"^bn$", "features.norm5"),
        (r"^predictions$", "classifier"),
    ):
        match = re.match(pattern, layer_name)
        if match:
            groups = match.groups()
            b = int(groups[0]) - 1 if groups else 0
            i = groups[1] if len(groups) > 1 else 0
            return fmt.format(b=b, i=i)
    return layer_name


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
            what = f"{torch_key(name)}.*" if torch_names else f"layer {name!r}"
            problems.append(f"missing {what} (for layer {name!r})" if torch_names else f"missing {what}")
            continue
        used.add(name)
        tensors = table[name]
        if len(tensors) != len(variables):
            problems.append(
                f"layer {name!r} has {len(variables)} weights, the file has {len(tensors)}"
            )
            continue
        bad = False
        for tensor, var in zip(tensors, variables):
            if tuple(tensor.value.shape) != tuple(var.shape):
                want = tensor.source_shape(var.shape)
                got = tensor.source_shape(tensor.value.shape) if tensor.perm and tensor.value.ndim == len(tensor.perm) else tuple(tensor.value.shape)
                problems.append(f"{tensor.key}: expected shape {want}, got {got}")
                bad = True
        if not bad:
            plan.append((layer, [t.value for t in tensors]))
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
        raise _fail(
            path,
            f"does not fit {model.name} ({len(problems)} problem(s)): " + "; ".join(problems[:6])
            + (f"; and {len(problems) - 6} more" if len(problems) > 6 else ""),
        )
    for layer, values in plan:
        layer.set_weights(values)


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
    try:
        conv0 = state["features.conv0.weight"]
    except KeyError:
        raise _fail(
            path,
            "not a torchvision/timm DenseNet state dict: no 'features.conv0.weight' "
            f"(found keys: {_some(sorted(state), 4)})",
        ) from None
    if conv0.ndim != 4:
        raise _fail(path, f"features.conv0.weight must be 4-D, got shape {conv0.shape}")
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
        raise _fail(path, "no dense blocks found (keys 'features.denseblock1.denselayer1.*')")
    layer1 = "features.denseblock1.denselayer1"
    try:
        growth = int(state[f"{layer1}.conv2.weight"].shape[0])
    except KeyError:
        raise _fail(path, f"missing key {layer1}.conv2.weight") from None
    bottleneck = f"{layer1}.conv1.weight" in state
    bn_size = 4
    if bottleneck:
        width = int(state[f"{layer1}.conv1.weight"].shape[0])
        if width % growth:
            raise _fail(
                path,
                f"bottleneck width {width} is not a multiple of the growth rate {growth}",
            )
        bn_size = width // growth
    compression = 0.5
    transition = state.get("features.transition1.conv.weight")
    if transition is not None and transition.ndim == 4:
        out, inp = int(transition.shape[0]), int(transition.shape[1])
        if out != int(inp * 0.5):
            # Any theta with floor(theta * inp) == out; +0.5 keeps float
            # round-off from flooring to out - 1.
            compression = min(1.0, (out + 0.5) / inp)
    classifier = state.get("classifier.weight")
    classes = int(classifier.shape[0]) if classifier is not None else None
    try:
        arch = ArchConfig(
            blocks=tuple(blocks),
            growth_rate=growth,
            bottleneck=bottleneck,
            bn_size=bn_size,
            compression=compression,
            num_init_features=int(conv0.shape[0]),
            stem=stem,
            default_size=224 if stem == "imagenet" else 32,
        )
    except ValueError as e:
        raise _fail(path, f"not a valid DenseNet: {e}") from e
    return arch, classes, int(conv0.shape[1])


def describe(arch: ArchConfig) -> str:
    """One line naming an architecture's knobs, for messages."""
    return (
        f"blocks={arch.blocks}, growth_rate={arch.growth_rate}, "
        f"num_init_features={arch.num_init_features}, bn_size={arch.bn_size}, "
        f"compression={arch.compression:g}, bottleneck={arch.bottleneck}, stem={arch.stem!r}"
    )


def _resolve_arch(arch, detected: ArchConfig, path):
    """(ArchConfig, name) for the `arch` argument of `convert_checkpoint`."""
    if isinstance(arch, ArchConfig):
        variant = registry.find_variant(arch)
        return arch, variant.name if variant else "densenet"
    if arch is None:
        variant = registry.find_variant(detected)
        if variant is None:
            raise _fail(
                path,
                f"found a DenseNet with {describe(detected)}, which matches no "
                f"registered variant ({', '.join(registry.VARIANTS)}); pass "
                "arch=ArchConfig(...) to convert a custom architecture",
            )
        return variant.arch, variant.name
    if isinstance(arch, str):
        variant = registry.get_variant(arch)
        return variant.arch, variant.name
    raise ValueError(
        "`arch` must be None (detect), a registered variant name or an "
        f"ArchConfig. Received: arch={arch!r}"
    )


def build_converted(path, arch=None, *, classifier_activation="softmax", data_format=None, state=None):
    """Builds the Keras model of a PyTorch DenseNet checkpoint, weights loaded.

    Args:
        path: `.pth`/`.pt`/`.bin`/`.safetensors` state dict.
        arch: ``None`` (detect from the shapes and match a registered
            variant), a registered variant name, or an `ArchConfig`.
        classifier_activation: activation of the classifier (``None`` for
            logits, as PyTorch returns).
        data_format: ``"channels_last"``, ``"channels_first"`` or ``None``.
        state: the already-read state dict, if any.

    Returns:
        A `keras.Model` with the classifier, BatchNormalization epsilon
        `registry.TORCH_BN_EPSILON`.

    Raises:
        ValueError: unreadable file, unknown architecture, or missing,
            unexpected or mis-shaped keys (named, with shapes).
    """
    from keras_densenet import models

    if state is None:
        state = read_state_dict(path)
    detected, classes, channels = detect_arch(state, path)
    cfg, name = _resolve_arch(arch, detected, path)
    if cfg.same_architecture(detected) is False:
        found = registry.find_variant(detected)
        raise _fail(
            path,
            f"holds a DenseNet with {describe(detected)}"
            + (f" ({found.name})" if found else "")
            + f", not {name} ({describe(cfg)})",
        )
    if classes is None:
        raise _fail(path, "missing key(s): classifier.weight, classifier.bias (a checkpoint without the classifier)")
    table = state_to_table(state, path)
    size = cfg.default_size
    data_format = data_format or "channels_last"
    shape = (size, size, channels) if data_format == "channels_last" else (channels, size, size)
    model = models.DenseNet(
        **cfg.builder_kwargs(),
        weights=None,
        include_top=True,
        classes=classes,
        input_shape=shape,
        classifier_activation=classifier_activation,
        bn_epsilon=registry.TORCH_BN_EPSILON,
        data_format=data_format,
        name=name,
    )
    assign(model, table, path, torch_names=True)
    return model


def atomic_save(model, dst) -> str:
    """Saves `model` (`.keras`) or its weights (`.weights.h5`) to `dst`.

    Writes a temporary file in the same directory, then renames it, so `dst`
    is either complete or untouched.

    Raises:
        ValueError: unsupported ending or missing directory.
    """
    dst = os.fspath(dst)
    suffix = next((s for s in OUTPUT_SUFFIXES if dst.endswith(s)), None)
    if suffix is None:
        raise ValueError(
            f"Output file {dst!r} must end with {' or '.join(OUTPUT_SUFFIXES)}."
        )
    directory = os.path.dirname(os.path.abspath(dst))
    if not os.path.isdir(directory):
        raise ValueError(f"Output directory {directory!r} of {dst!r} does not exist.")
    fd, tmp = tempfile.mkstemp(suffix=suffix, prefix=".tmp-", dir=directory)
    os.close(fd)
    try:
        os.remove(tmp)  # keras refuses to overwrite without asking
        if suffix == ".keras":
            model.save(tmp)
        else:
            model.save_weights(tmp)
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return dst


def convert_checkpoint(
    src,
    dst,
    arch: Union[None, str, ArchConfig] = None,
    *,
    classifier_activation="softmax",
):
    """Converts a torchvision/timm DenseNet checkpoint into a Keras file.

    Args:
        src: a PyTorch DenseNet state dict: `.safetensors` (no torch needed)
            or `.pth` (read with ``torch.load(weights_only=True)``).
            torchvision's legacy key names are accepted.
        dst: `.keras` (the complete model, with top) or `.weights.h5`.
        arch: ``None`` to detect the architecture from the tensor shapes
            (it must match a registered variant), a variant name such as
            ``"densenet161"``, or an `ArchConfig` for a custom DenseNet.
        classifier_activation: the classifier's activation (``None`` gives
            PyTorch's logits).

    Returns:
        The converted `keras.Model` (also saved at `dst`). Load a
        `.weights.h5` result with ``bn_epsilon=1e-5`` to match PyTorch.

    Raises:
        ValueError: unreadable file, unknown architecture, or missing,
            unexpected or mis-shaped keys (named, with expected and actual
            shapes); nothing is written then.

    Example:

    >>> import keras_densenet
    >>> model = keras_densenet.convert_checkpoint(
    ...     "densenet161-8d451a50.pth", "densenet161.keras")  # doctest: +SKIP
    >>> model.name  # doctest: +SKIP
    'densenet161'
    """
    dst = os.fspath(dst)
    if not dst.endswith(OUTPUT_SUFFIXES):
        raise ValueError(f"Output file {dst!r} must end with {' or '.join(OUTPUT_SUFFIXES)}.")
    model = build_converted(src, arch, classifier_activation=classifier_activation)
    atomic_save(model, dst)
    return model
