"""Serving artifacts of a ``.keras`` model, each checked in its own runtime:
what ``keras-densenet export`` runs.

`export` writes the artifact (`keras_densenet.deployment.writers`; int8
through `keras_densenet.deployment.quantize`) into a staging directory,
loads it back in its runtime (`runtimes.open_artifact`), runs a batch
through it and compares with the Keras model. A float artifact off by more
than `FLOAT_TOLERANCE`, or an int8 one that loses more than `max_drop`
points of top-1 accuracy on the held-out split, is an `ExportCheckError`
and nothing is left at the destination; a checked one is moved there, with
the model's class names beside it. When the active backend cannot write
the format, the model is reloaded under one that can, in a child process (a
``.keras`` file is backend-agnostic). `ExportReport` says what was written
and measured.

Example:

>>> from keras_densenet.deployment import export
>>> report = export.ExportReport("model.onnx", "onnx", "torch", max_diff=3e-6, checked_sizes=[32, 39],
...                              bytes=2_000_000)
>>> print("\\n".join(report.lines()))
checked in the onnx runtime at 32x32, 39x39: largest difference to predict 3.00e-06
exported: model.onnx (2.00 MB, written by the torch backend)
>>> report = export.export("run/model.keras", "litert", "model.tflite", quantize="int8")  # doctest: +SKIP
>>> report.accuracy, report.float_accuracy  # doctest: +SKIP
(0.9917, 0.9944)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from typing import Optional

import numpy as np

from keras_densenet.core import checks, extras
from keras_densenet.core.files import atomic_path, atomic_write, recover
from keras_densenet.data import datasets
from keras_densenet.deployment import runtimes
from keras_densenet.deployment.quantize import (
    CALIBRATION_SAMPLES,
    QUANTIZATIONS,  # noqa: F401  (re-exported: the choices of export's --quantize)
    calibration_split,
    check_quantize,
    write_int8,
)
from keras_densenet.deployment.writers import (
    FORMATS,
    LAST_RESORT,
    artifact_bytes,
    backend_for,
    resize_size,
    write_artifact,
)
from keras_densenet.models import saved

#: Largest difference allowed between a float artifact and `predict`.
FLOAT_TOLERANCE = 1e-4
#: Top-1 points an int8 artifact may lose on the held-out split by default.
MAX_DROP = 1.0
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
        format: one of `writers.FORMATS`.
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


def check_export(model_path, fmt: str, out, quantize: Optional[str] = None) -> None:
    """The argument checks of `export` that need no keras.

    Raises:
        ValueError: naming the first bad argument.
    """
    checks.one_of("format", fmt, FORMATS)
    saved.check_keras_file(model_path)
    if quantize is not None:
        check_quantize(quantize, fmt)
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
        fmt: one of `writers.FORMATS`.
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
        last_resort = LAST_RESORT.get((fmt, active))
        why = f"'s {fmt} exporter {last_resort}" if last_resort else f" cannot write {fmt}"
        say(f"the {active} backend{why}: exporting with the {backend} backend in a child process")
        report = _export_in_child(backend, args)
    _copy_class_names(args["model_path"], args["out"], say)
    return report


def _copy_class_names(model_path: str, out: str, say) -> None:
    """Puts the model's ``class_names.json`` beside the artifact, where
    ``predict`` looks for it (never over a different one)."""
    source = os.path.join(os.path.dirname(model_path), datasets.CLASS_NAMES_FILE)
    target = os.path.join(os.path.dirname(out), datasets.CLASS_NAMES_FILE)
    recover(target)  # a killed copy's leftovers, even when nothing is copied now
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
    split = calibration_split(model, data, seed, validation_split, samples) if quantize else None
    # The staging directory is atomic_path's: flushed, then renamed in (an
    # existing SavedModel renamed aside until the new one is in), and the
    # leftovers of a killed export are removed by the next one.
    with atomic_path(out) as tmp:
        staging = os.path.dirname(tmp)
        report = ExportReport(out, fmt, keras.backend.backend(), quantize)
        with _exporter_errors(fmt, report.backend):
            if quantize:
                float_tmp = os.path.join(staging, "float", os.path.basename(out))
                os.mkdir(os.path.dirname(float_tmp))
                write_artifact(model, fmt, float_tmp)
                report.float_bytes = artifact_bytes(float_tmp)
                write_int8(model, fmt, tmp, split[0], float_path=float_tmp)
            else:
                write_artifact(model, fmt, tmp)
        _check(model, runtimes.open_artifact(tmp, trust_pickle=True), report, split, max_drop)  # ours
        report.bytes = artifact_bytes(tmp)
        if tmp.endswith(".xml"):
            _publish_bin(tmp, out)
    return report


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


def _publish_bin(tmp: str, out: str) -> None:
    """Moves an OpenVINO artifact's ``.bin`` onto its place, before its
    ``.xml`` (which `atomic_path` moves last), so that an ``.xml`` never
    points at a missing ``.bin``."""
    with atomic_path(out[:-4] + ".bin") as tmp_bin:
        os.rename(tmp[:-4] + ".bin", tmp_bin)


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
