"""Serving artifacts of a ``.keras`` model, each checked in its own runtime:
what ``keras-densenet export`` runs.

`export` writes the artifact with `keras.Model.export`, loads it back in its
runtime (`runtimes.open_artifact`), runs a batch through it and compares
with the Keras model. A float artifact off by more than `FLOAT_TOLERANCE`,
or an int8 one that loses more than `max_drop` points of top-1 accuracy on
the held-out split, is an `ExportCheckError` and nothing is left at the
destination. When the active backend cannot write the format, the model is
reloaded under one that can, in a child process (a ``.keras`` file is
backend-agnostic).

Example:

>>> from keras_densenet.deployment import export
>>> export.backend_for("torch", active="torch")
'torch'
>>> report = export.export("run/model.keras", "litert", "model.tflite", quantize="int8")  # doctest: +SKIP
>>> report.accuracy, report.float_accuracy  # doctest: +SKIP
(0.9917, 0.9944)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
from typing import TYPE_CHECKING, Optional

import numpy as np

from keras_densenet.core import checks, extras
from keras_densenet.core.files import atomic_write
from keras_densenet.deployment import runtimes
from keras_densenet.data import datasets
from keras_densenet.models import saved

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
QUANTIZATIONS = ("int8",)
#: Formats with post-training int8 quantization (LiteRT's converter, NNCF).
QUANTIZABLE = ("litert", "openvino")
#: Largest difference allowed between a float artifact and `predict`.
FLOAT_TOLERANCE = 1e-4
#: Top-1 points an int8 artifact may lose on the held-out split by default.
MAX_DROP = 1.0
#: Calibration images of int8 quantization (from the training split).
CALIBRATION_SAMPLES = 300
#: Images of the float check.
CHECK_BATCH = 8
#: A second input size checked where the artifact takes any size: images are
#: resized inside (the `Resizing` layer travels in the model).
OTHER_SIZE_OFFSET = 7


class ExportCheckError(RuntimeError):
    """The written artifact does not behave like the Keras model (nothing was
    left at the destination)."""


@dataclasses.dataclass
class ExportReport:
    """What `export` wrote and measured.

    Attributes:
        path: the artifact (a file, or a SavedModel directory).
        format: a key of `KERAS_FORMATS`.
        backend: the Keras backend that wrote it.
        quantize: ``None`` or ``"int8"``.
        max_diff: largest difference to `predict` on the check batch, at
            every size in `checked_sizes`.
        checked_sizes: input sides the artifact was run at.
        bytes: the artifact's size on disk.
        float_bytes: int8 only: the size of the same artifact in float32.
        accuracy, float_accuracy: int8 only: top-1 on the held-out split of
            the artifact and of the Keras model.
        heldout: int8 only: images of the held-out split.
    """

    path: str
    format: str
    backend: str
    quantize: Optional[str] = None
    max_diff: float = 0.0
    checked_sizes: list = dataclasses.field(default_factory=list)
    bytes: int = 0
    float_bytes: Optional[int] = None
    accuracy: Optional[float] = None
    float_accuracy: Optional[float] = None
    heldout: Optional[int] = None

    def lines(self) -> list:
        """The report as ``keras-densenet export`` prints it."""
        sizes = ", ".join(f"{s}x{s}" for s in self.checked_sizes)
        out = [f"checked in the {self.format} runtime at {sizes}: largest difference to predict {self.max_diff:.2e}"]
        if self.quantize:
            out.append(
                f"{self.quantize}: {self.bytes / 1e6:.2f} MB against {self.float_bytes / 1e6:.2f} MB in float32 "
                f"({self.bytes / self.float_bytes:.0%}); top-1 on the {self.heldout} held-out images "
                f"{100 * self.accuracy:.2f}% against {100 * self.float_accuracy:.2f}% in float32"
            )
        out.append(f"exported: {self.path} ({self.bytes / 1e6:.2f} MB, written by the {self.backend} backend)")
        return out


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


def check_export(model_path, fmt: str, out, quantize: Optional[str] = None) -> None:
    """The argument checks of `export` that need no keras.

    Raises:
        ValueError: naming the first bad argument.
    """
    checks.one_of("format", fmt, FORMATS)
    saved.check_keras_file(model_path)
    if quantize is not None:
        checks.one_of("quantize", quantize, QUANTIZATIONS)
        if fmt not in QUANTIZABLE:
            raise ValueError(f"`quantize`: {quantize} is for {' and '.join(QUANTIZABLE)}, not {fmt}")
    out = os.path.abspath(os.fspath(out))
    suffix = runtimes.SUFFIXES[fmt]
    if suffix and not out.endswith(suffix):
        raise ValueError(f"output {out!r}: a {fmt} artifact is a {suffix} file")
    if not suffix and os.path.isfile(out):
        raise ValueError(f"output {out!r}: a SavedModel is a directory, and a file is there")
    parent = os.path.dirname(out)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        raise ValueError(f"cannot write the export to {out!r}: {parent!r} is not a writable directory")


def export(
    model_path,
    fmt: str,
    out,
    *,
    quantize: Optional[str] = None,
    data=None,
    seed: int = 0,
    validation_split: float = 0.2,
    samples: int = CALIBRATION_SAMPLES,
    max_drop: float = MAX_DROP,
    say=print,
) -> ExportReport:
    """Writes a serving artifact of a ``.keras`` model and checks it.

    Formats: ``savedmodel`` (a directory), ``onnx``, ``litert`` (``.tflite``),
    ``openvino`` (``.xml`` with its ``.bin``) and ``torch``
    (``torch.export``, ``.pt2``). The artifact takes raw pixels, like the
    model; where the model resizes inside, so does the artifact (except those
    written by JAX, the writer of last resort, whose exporters cannot trace
    the resize: they take the training size).

    Args:
        model_path: the ``.keras`` model.
        fmt: a key of `KERAS_FORMATS`.
        out: where to write; an existing artifact there is replaced.
        quantize: ``"int8"`` for LiteRT (full-integer post-training
            quantization; float input and output) or OpenVINO (NNCF).
        data: an image folder (one sub-folder per class) for int8
            calibration and the accuracy check; default: the bundled digits.
        seed, validation_split: the split of `data`, as in training (give
            the training run's values, so the held-out images are held out).
        samples: calibration images (from the training split).
        max_drop: top-1 points the int8 artifact may lose.
        say: where the one-line notes go (the child-process fallback).

    Returns:
        An `ExportReport`.

    Raises:
        ValueError: bad arguments or files; no installed backend can write
            `fmt`.
        ExportCheckError: the artifact is off by more than `FLOAT_TOLERANCE`
            or loses more than `max_drop` points; nothing is written.
    """
    check_export(model_path, fmt, out, quantize)
    checks.integer("samples", samples, minimum=1)
    checks.number("max_drop", max_drop)
    import keras

    active = keras.backend.backend()
    backend = backend_for(fmt, active)
    args = dict(model_path=os.path.abspath(os.fspath(model_path)), fmt=fmt, out=os.path.abspath(os.fspath(out)),
                quantize=quantize, data=None if data is None else os.path.abspath(os.fspath(data)), seed=seed,
                validation_split=validation_split, samples=samples, max_drop=max_drop)
    if backend == active:
        report = export_here(**args)
    else:
        why = f"'s {fmt} exporter {LAST_RESORT[fmt, active]}" if (fmt, active) in LAST_RESORT else f" cannot write {fmt}"
        say(f"the {active} backend{why}: exporting with the {backend} backend in a child process")
        report = _export_in_child(backend, args)
    _copy_class_names(args["model_path"], args["out"], say)
    return report


def _copy_class_names(model_path: str, out: str, say) -> None:
    """Puts the model's ``class_names.json`` beside the artifact, where
    ``predict`` looks for it (never over a different one)."""
    source = os.path.join(os.path.dirname(model_path), datasets.CLASS_NAMES_FILE)
    target = os.path.join(os.path.dirname(out), datasets.CLASS_NAMES_FILE)
    if not os.path.isfile(source) or os.path.abspath(source) == os.path.abspath(target):
        return
    with open(source, "rb") as f:
        names = f.read()
    if os.path.isfile(target):
        with open(target, "rb") as f:
            if f.read() != names:
                say(f"kept the different {target}: predict reads it; give --class-names {source} instead")
        return

    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(names)

    atomic_write(target, write)


def _export_in_child(backend: str, args: dict) -> ExportReport:
    with tempfile.TemporaryDirectory() as tmp:
        report_path = os.path.join(tmp, "report.json")
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
        proc = subprocess.run([sys.executable, "-m", "keras_densenet.deployment.export", json.dumps(args), report_path],
                              env=env, capture_output=True, text=True)
        if not os.path.isfile(report_path):
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise ExportCheckError(f"the {backend} export process failed (exit {proc.returncode}: {tail}): "
                                   "nothing was written")
        with open(report_path) as f:
            result = json.load(f)
    if "error" in result:
        raise {"ValueError": ValueError, "ExportCheckError": ExportCheckError}[result["error"]](result["message"])
    return ExportReport(**result)


def export_here(model_path, fmt, out, quantize=None, data=None, seed=0, validation_split=0.2,
                samples=CALIBRATION_SAMPLES, max_drop=MAX_DROP) -> ExportReport:
    """`export` on the active backend (which must be able to write `fmt`)."""
    import keras

    model = saved.load_keras_model(model_path)
    split = _heldout_split(model, data, seed, validation_split, samples) if quantize else None
    staging = tempfile.mkdtemp(dir=os.path.dirname(out), prefix=f".{os.path.basename(out)}.")
    try:
        tmp = os.path.join(staging, os.path.basename(out))
        report = ExportReport(out, fmt, keras.backend.backend(), quantize)
        with _exporter_errors(fmt, report.backend):
            if quantize:
                float_tmp = os.path.join(staging, "float", os.path.basename(out))
                os.mkdir(os.path.dirname(float_tmp))
                write_artifact(model, fmt, float_tmp)
                report.float_bytes = artifact_bytes(float_tmp)
                write_artifact(model, fmt, tmp, calibration=split[0], float_path=float_tmp)
            else:
                write_artifact(model, fmt, tmp)
        _check(model, runtimes.open_artifact(tmp, trust_pickle=True), report, split, max_drop)  # ours
        report.bytes = artifact_bytes(tmp)
        _publish(tmp, out)
        return report
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def _exporter_errors(fmt: str, backend: str):
    """An exporter's own failure (a conversion error, an unsupported
    operation) as one `ExportCheckError` line; a missing package stays a
    `MissingExtraError`."""
    try:
        yield
    except extras.MissingExtraError:
        raise
    except ImportError as e:  # an exporter's optional dependency
        raise ValueError(f"export to {fmt} on {backend} needs a package: {e}") from None
    except Exception as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ExportCheckError(f"Keras could not write {fmt} on the {backend} backend "
                               f"({type(e).__name__}: {reason[:300]}): nothing was written") from None


def artifact_bytes(path: str) -> int:
    """Bytes on disk of an artifact: a file (with OpenVINO's ``.bin``) or a
    directory tree."""
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)
    sidecar = path[: -len(".xml")] + ".bin" if path.endswith(".xml") else None
    return os.path.getsize(path) + (os.path.getsize(sidecar) if sidecar and os.path.isfile(sidecar) else 0)


def _publish(tmp: str, out: str) -> None:
    """Moves the checked artifact onto `out` (OpenVINO: the ``.bin`` first,
    so an ``.xml`` never points at a missing or older one)."""
    if tmp.endswith(".xml"):
        os.replace(tmp[:-4] + ".bin", out[:-4] + ".bin")
    if os.path.isdir(tmp) and os.path.isdir(out) and not os.path.islink(out):
        shutil.rmtree(out)  # os.replace cannot replace a non-empty directory
    os.replace(tmp, out)


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


def write_artifact(model, fmt: str, path: str, calibration: Optional[np.ndarray] = None,
                   float_path: Optional[str] = None) -> None:
    """Writes `model` as `fmt` at `path` on the active backend, unchecked.

    Args:
        model: a Keras model (a freshly loaded one is called once first:
            some exporters refuse a model never called).
        fmt: a key of `KERAS_FORMATS`.
        path: the file or directory to write.
        calibration: int8 quantization from these images (batch first, at a
            size the model takes); ``None``: float32.
        float_path: OpenVINO int8: the float artifact already written, which
            NNCF quantizes.
    """
    target = exportable(model)
    size = resize_size(model)
    if size is not None:
        target(np.zeros((1,) + _fill(target.input_shape[1:], size), "float32"))
    kwargs = _torch_kwargs(target) if fmt == "torch" else {}
    if calibration is not None and fmt == "openvino":
        return _quantize_openvino(float_path, path, calibration)
    if calibration is not None:
        kwargs.update(_litert_int8(calibration))
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


def _fill(shape: tuple, size: tuple) -> tuple:
    """`shape` (no batch, channels last) with its free sides set to `size`."""
    return (shape[0] or size[0], shape[1] or size[1]) + tuple(shape[2:])


def _litert_int8(calibration: np.ndarray) -> dict:
    """TFLite converter settings of full-integer post-training quantization:
    every operation in int8, float input and output (the artifact takes the
    same pixels as the model)."""
    import tensorflow as tf

    def representative():
        for i in range(len(calibration)):
            yield [calibration[i : i + 1]]

    return dict(
        optimizations=[tf.lite.Optimize.DEFAULT],
        representative_dataset=representative,
        target_spec={"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]},
    )


def _quantize_openvino(float_path: str, path: str, calibration: np.ndarray) -> None:
    ov = extras.import_from("openvino", "openvino", "OpenVINO int8 export")
    nncf = extras.import_from("openvino", "nncf", "OpenVINO int8 quantization")
    model = ov.Core().read_model(float_path)
    dataset = nncf.Dataset([calibration[i : i + 1] for i in range(len(calibration))])
    ov.save_model(nncf.quantize(model, dataset, subset_size=len(calibration)), path, compress_to_fp16=False)


def _heldout_split(model, data, seed: int, validation_split: float, samples: int) -> tuple:
    """``(calibration images, held-out images, held-out labels)`` at the
    model's training size, split as ``train`` splits."""
    size = resize_size(model)
    if size is None:
        raise ValueError("`quantize`: the model takes any image size and does not resize inside: "
                         "its training size is unknown")
    channels = model.input_shape[-1]
    classes = model.output_shape[-1]
    x_train, x_val, y_val, names = datasets.labelled_arrays(data, size[0], channels, validation_split, seed,
                                                            train_limit=samples)
    if len(names) != classes:
        source = "the bundled digits" if data is None else repr(data)
        raise ValueError(f"`data`: the model has {classes} classes and {source} {len(names)}: "
                         "give the image folder the model was trained on")
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(x_train), size=min(samples, len(x_train)), replace=False)
    return x_train[pick].astype("float32"), x_val.astype("float32"), np.asarray(y_val)


def _check_images(model, artifact, seed: int = 0) -> list:
    """Check batches: at the training size and, where the artifact takes any
    size, at another one."""
    size = resize_size(model) or (32, 32)
    shape = artifact.input_shape
    channels = shape[-1] or model.input_shape[-1]
    sides = [size[0]] + ([size[0] + OTHER_SIZE_OFFSET] if shape[1] is None and shape[2] is None else [])
    rng = np.random.default_rng(seed)
    return [rng.uniform(0, 255, (CHECK_BATCH, side, side, channels)).astype("float32") for side in sides]


def _check(model, artifact, report: ExportReport, split, max_drop: float) -> None:
    """Runs the artifact against the Keras model; raises `ExportCheckError`."""
    import keras

    for x in _check_images(model, artifact):
        expected = keras.ops.convert_to_numpy(model.predict(x, verbose=0))
        report.max_diff = max(report.max_diff, float(np.max(np.abs(artifact(x) - expected))))
        report.checked_sizes.append(x.shape[1])
    if split is None:
        if report.max_diff > FLOAT_TOLERANCE:
            raise ExportCheckError(f"the {report.format} artifact differs from predict by {report.max_diff:.2e} "
                                   f"(more than {FLOAT_TOLERANCE:g}): nothing was written")
        return
    _, x_val, y_val = split
    report.float_accuracy = float(np.mean(np.argmax(model.predict(x_val, verbose=0), -1) == y_val))
    batches = [artifact(x_val[i : i + 64]) for i in range(0, len(x_val), 64)]
    report.accuracy = float(np.mean(np.argmax(np.concatenate(batches), -1) == y_val))
    report.heldout = len(y_val)
    drop = 100 * (report.float_accuracy - report.accuracy)
    if drop > max_drop:
        raise ExportCheckError(f"the int8 {report.format} artifact loses {drop:.2f} points of top-1 "
                               f"({100 * report.accuracy:.2f}% against {100 * report.float_accuracy:.2f}%), "
                               f"more than max_drop={max_drop:g}: nothing was written")


def _child_main(argv: list) -> int:
    """``python -m keras_densenet.deployment.export ARGS_JSON REPORT_PATH``:
    `export_here` on the child's backend, its report (or error) as JSON."""
    args, report_path = json.loads(argv[0]), argv[1]
    try:
        result = dataclasses.asdict(export_here(**args))
        code = 0
    except (ValueError, ExportCheckError, extras.MissingExtraError) as e:
        kind = "ExportCheckError" if isinstance(e, ExportCheckError) else "ValueError"
        result = {"error": kind, "message": str(e)}
        code = 1
    with open(report_path, "w") as f:
        json.dump(result, f)
    return code


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
