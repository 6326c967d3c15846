"""PyTorch (torchvision, timm) DenseNet checkpoints to Keras files, with exact parity.

Reading a checkpoint and mapping its keys onto Keras layers is
`keras_densenet.weights.checkpoints`' job (its `LAYER_NAMES` is the name table);
this module builds the matching Keras model, fills it and writes it.

Models converted from PyTorch use PyTorch's BatchNormalization epsilon
(`registry.TORCH_BN_EPSILON`); the stem pads 3 and 1 symmetrically like
PyTorch, so the logits match to float32 round-off.

Example:

>>> from keras_densenet.tools.convert import convert_checkpoint
>>> model = convert_checkpoint("densenet121-a639ec97.pth",
...                            "densenet121.keras")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import Union

from keras_densenet.core import registry
from keras_densenet.core.files import atomic_path
from keras_densenet.core.registry import ArchConfig
from keras_densenet.models import densenet
from keras_densenet.weights.checkpoints import (
    assign,
    describe,
    detect_arch,
    file_error,
    read_state_dict,
    state_to_table,
)

#: File endings `convert_checkpoint` writes.
OUTPUT_SUFFIXES = (".keras", ".weights.h5")


def _resolve_arch(arch, detected: ArchConfig, path):
    """(ArchConfig, name) for the `arch` argument of `convert_checkpoint`."""
    if isinstance(arch, ArchConfig):
        variant = registry.find_variant(arch)
        return arch, variant.name if variant else "densenet"
    if arch is None:
        variant = registry.find_variant(detected)
        if variant is None:
            raise file_error(
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
    if state is None:
        state = read_state_dict(path)
    detected, classes, channels = detect_arch(state, path)
    cfg, name = _resolve_arch(arch, detected, path)
    if cfg.same_architecture(detected) is False:
        found = registry.find_variant(detected)
        raise file_error(
            path,
            f"holds a DenseNet with {describe(detected)}"
            + (f" ({found.name})" if found else "")
            + f", not {name} ({describe(cfg)})",
        )
    if classes is None:
        raise file_error(
            path, "missing key(s): classifier.weight, classifier.bias (a checkpoint without the classifier)"
        )
    table = state_to_table(state, path)
    size = cfg.default_size
    data_format = data_format or "channels_last"
    shape = (size, size, channels) if data_format == "channels_last" else (channels, size, size)
    model = densenet.DenseNet(
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


def save(model, dst) -> str:
    """Saves `model` (`.keras`) or its weights (`.weights.h5`) to `dst`,
    whole or not at all (`keras_densenet.core.files.atomic_path`).

    Raises:
        ValueError: unsupported ending or missing directory.
    """
    dst = os.fspath(dst)
    if not dst.endswith(OUTPUT_SUFFIXES):
        raise ValueError(
            f"`dst` must end with {' or '.join(OUTPUT_SUFFIXES)}. Received: dst={dst!r}"
        )
    with atomic_path(dst) as tmp:
        if dst.endswith(".keras"):
            model.save(tmp)
        else:
            model.save_weights(tmp)
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
    if not dst.endswith(OUTPUT_SUFFIXES):  # before the slow part
        raise ValueError(f"`dst` must end with {' or '.join(OUTPUT_SUFFIXES)}. Received: dst={dst!r}")
    model = build_converted(src, arch, classifier_activation=classifier_activation)
    save(model, dst)
    return model
