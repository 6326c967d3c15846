"""Writing a Keras model as a serving artifact, one format at a time, unchecked.

Which backend can write each format (`WRITERS`, `backend_for`: the active
one if it can, else another installed one, a `LAST_RESORT` writer last),
and `write_artifact`, which writes it with `keras.Model.export` on the
active backend: the input signature with a free batch, the dynamic sizes
``torch.export`` must be told, OpenVINO's static input sizes restored.
`keras_densenet.deployment.export` checks what is written here;
`keras_densenet.deployment.quantize` writes the int8 artifacts on top.

Example:

>>> from keras_densenet.deployment import writers
>>> writers.backend_for("torch", active="torch")
'torch'
>>> writers.FORMATS
('savedmodel', 'onnx', 'litert', 'openvino', 'torch')
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Optional

import numpy as np

from keras_densenet.core import checks, extras

if TYPE_CHECKING:  # keras is imported lazily: the CLI sets the backend first
    import keras

#: ``export`` format -> the `keras.Model.export` format.
KERAS_FORMATS = {
    "savedmodel": "tf_saved_model", "onnx": "onnx", "litert": "litert", "openvino": "openvino", "torch": "torch",
}
FORMATS = tuple(KERAS_FORMATS)
#: Format -> {backend that can write it: the modules it needs}, in the order
#: a fallback backend is chosen.
WRITERS = {
    "savedmodel": {"tensorflow": ("tensorflow",), "jax": ("tensorflow",)},  # JAX: via jax2tf
    "onnx": {"tensorflow": ("tf2onnx", "onnx"), "torch": ("onnxscript", "onnx"), "jax": ("jax2onnx", "onnx")},
    "litert": {"tensorflow": ("ai_edge_litert",), "torch": ("litert_torch", "ai_edge_litert")},
    "openvino": {"tensorflow": ("openvino",), "torch": ("openvino",)},
    "torch": {"torch": ("torch",)},
}
#: The pip extra that brings each module (the backends are extras too).
MODULE_EXTRAS = {
    "tensorflow": "tensorflow", "torch": "torch", "jax": "jax", "tf2onnx": "onnx", "onnx": "onnx",
    "onnxscript": "onnx", "jax2onnx": "onnx", "ai_edge_litert": "litert", "litert_torch": "litert",
    "openvino": "openvino", "nncf": "openvino",
}
#: Writers used only when no other installed backend can write the format,
#: and why: JAX's exporters cannot trace Keras' `Resizing` (their artifacts
#: take the training size only), and jax2onnx writes max pooling that ONNX
#: Runtime refuses ("Unsupported pooling size": every ImageNet-stem DenseNet).
LAST_RESORT = {
    ("savedmodel", "jax"): "writes artifacts of the training size only",
    ("onnx", "jax"): "writes artifacts of the training size only, and max pooling that ONNX Runtime refuses",
}


def backend_for(fmt: str, active: str) -> str:
    """The backend that writes `fmt`: `active` if it can, else the first
    installed one that can (a `LAST_RESORT` writer comes after the others).

    Raises:
        ValueError: no installed backend can; the message names the backend
            and the extra to install.
    """
    checks.one_of("format", fmt, FORMATS)
    writers = WRITERS[fmt]
    order = ([active] if active in writers else []) + [b for b in writers if b != active]
    order.sort(key=lambda b: (fmt, b) in LAST_RESORT)  # stable: otherwise as above
    for backend in order:
        if all(extras.installed(m) for m in (backend,) + writers[backend]):
            return backend
    # Name what the active backend lacks where it can write the format
    # (one extra away), else what the first writer lacks.
    first = active if active in writers else next(iter(writers))
    needs = [m for m in (first,) + writers[first] if not extras.installed(m)]
    pip = " ".join(sorted({f'"keras-densenet[{MODULE_EXTRAS[m]}]"' for m in needs}))
    where = "" if first == active else f" (the {active} backend cannot write {fmt})"
    raise ValueError(f"export to {fmt} needs the {first} backend with {', '.join(needs)}, not installed{where}: "
                     f"pip install {pip}")


def artifact_bytes(path: str) -> int:
    """Bytes on disk of an artifact: a file (with OpenVINO's ``.bin``) or a
    directory tree."""
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)
    sidecar = path[: -len(".xml")] + ".bin" if path.endswith(".xml") else None
    return os.path.getsize(path) + (os.path.getsize(sidecar) if sidecar and os.path.isfile(sidecar) else 0)


def resize_size(model) -> Optional[tuple]:
    """``(height, width)`` of the model's `Resizing` layer, or of its fixed
    input; ``None`` when neither is known."""
    import keras

    resizing = [layer for layer in model.layers if isinstance(layer, keras.layers.Resizing)]
    if resizing:
        return resizing[0].height, resizing[0].width
    shape = model.input_shape
    if isinstance(shape, tuple) and len(shape) == 4 and None not in shape[1:3]:
        return tuple(shape[1:3])
    return None


def exportable(model) -> keras.Model:
    """`model`, or on JAX its part after a leading `Resizing` layer.

    JAX's exporters (jax2tf, jax2onnx) cannot trace Keras' `Resizing` with
    symbolic shapes, not even a symbolic batch size. There the artifact
    starts after the resize and takes images of the training size.
    """
    import keras

    if keras.backend.backend() != "jax" or None not in model.input_shape[1:]:
        return model
    first = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)][:1]
    if not first or not isinstance(first[0], keras.layers.Resizing):
        return model
    return keras.Model(first[0].output, model.output, name=model.name)


def _signature(model) -> list:
    """The input signature: the model's own shape with a free batch. Given
    explicitly so exporters that would otherwise lose the channel count
    (OpenVINO from torch) keep it."""
    import keras

    return [keras.InputSpec(shape=(None,) + tuple(model.input_shape[1:]), dtype="float32")]


def _torch_kwargs(model) -> dict:
    # torch.export fixes every size it is not told is dynamic; its sample
    # input has 2 where the model takes any size.
    import torch

    dims = {0: torch.export.Dim("batch", min=1, max=4096)}
    for axis, size in enumerate(model.input_shape[1:], start=1):
        if size is None:
            dims[axis] = torch.export.Dim(f"size{axis}", min=2, max=4096)
    return {"dynamic_shapes": dims}


def _fill(shape: tuple, size: tuple) -> tuple:
    """`shape` (no batch, channels last) with its free sides set to `size`."""
    return (shape[0] or size[0], shape[1] or size[1]) + tuple(shape[2:])


def write_artifact(model, fmt: str, path: str, exporter_options: Optional[dict] = None) -> None:
    """Writes `model` as `fmt` at `path` on the active backend, unchecked.

    Args:
        model: a Keras model (a freshly loaded one is called once first:
            some exporters refuse a model never called).
        fmt: a key of `KERAS_FORMATS`.
        path: the file or directory to write.
        exporter_options: more keyword arguments of `keras.Model.export`
            (LiteRT int8: the converter's quantization settings, from
            `keras_densenet.deployment.quantize`).
    """
    target = exportable(model)
    size = resize_size(model)
    if size is not None:
        target(np.zeros((1,) + _fill(target.input_shape[1:], size), "float32"))
    kwargs = _torch_kwargs(target) if fmt == "torch" else {}
    kwargs.update(exporter_options or {})
    target.export(path, format=KERAS_FORMATS[fmt], verbose=False, input_signature=_signature(target), **kwargs)
    if fmt == "openvino":
        _pin_openvino_shape(path, target.input_shape)


def _pin_openvino_shape(path: str, shape: tuple) -> None:
    """Gives the OpenVINO model the Keras input's static sizes (its torch
    route leaves every size dynamic, the channel count too)."""
    import openvino as ov

    model = ov.Core().read_model(path)
    wanted = ov.PartialShape([-1 if d is None else d for d in shape])
    if model.inputs[0].get_partial_shape() == wanted:
        return
    model.reshape({model.inputs[0]: wanted})
    os.remove(path)
    os.remove(path[: -len(".xml")] + ".bin")  # still mapped by `model`; not to be written over in place
    ov.save_model(model, path, compress_to_fp16=False)  # its default halves the weights: 2e-3 off predict
