"""Serving artifacts run in their own runtimes: LiteRT, OpenVINO, ONNX
Runtime, TensorFlow (SavedModel) and PyTorch (``torch.export``).

`open_artifact` gives one interface over all of them, so ``export`` can check
what it wrote, ``predict`` can serve it and ``bench runtimes`` can
time it. Keras-free: only the runtime of the artifact is imported, and a
missing one is reported in one line naming the extra that installs it.

Example:

>>> from keras_densenet.deployment import runtimes
>>> runtimes.artifact_format("model.tflite")
'litert'
>>> art = runtimes.open_artifact("model.onnx")  # doctest: +SKIP
>>> art.input_shape, art(images).shape  # doctest: +SKIP
((None, None, None, 1), (8, 10))
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Optional

import numpy as np

from keras_densenet.core import checks, extras

#: Artifact format -> the file ending `keras.Model.export` requires (the
#: SavedModel is a directory, with no ending).
SUFFIXES = {"litert": ".tflite", "openvino": ".xml", "onnx": ".onnx", "torch": ".pt2", "savedmodel": ""}
#: Artifact format -> (extra, module) of its runtime.
RUNTIMES = {
    "litert": ("litert", "ai_edge_litert.interpreter"),
    "openvino": ("openvino", "openvino"),
    "onnx": ("onnx", "onnxruntime"),
    "torch": ("torch", "torch"),
    "savedmodel": ("tensorflow", "tensorflow"),
}
#: OpenVINO's CPU plugin runs float models in bfloat16 on CPUs that have it
#: (its default hint): 1e-2 off the Keras model. The artifacts are checked,
#: served and timed in float32.
OPENVINO_CONFIG = {"INFERENCE_PRECISION_HINT": "f32"}


def artifact_format(path) -> str:
    """The format of a serving artifact, from its name (a SavedModel: a
    directory with ``saved_model.pb``).

    Raises:
        ValueError: naming the file and the endings allowed.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "saved_model.pb")):
            return "savedmodel"
        raise ValueError(f"{path!r} is a directory without saved_model.pb: not a SavedModel")
    for fmt, suffix in SUFFIXES.items():
        if suffix and path.endswith(suffix):
            return fmt
    endings = ", ".join(s for s in SUFFIXES.values() if s)
    raise ValueError(f"model file {path!r}: expected .keras, {endings} or a SavedModel directory")


def model_file_format(path) -> str:
    """``"keras"`` for a ``.keras`` file, else the artifact's format.

    Raises:
        ValueError: naming the file and the kinds allowed.
    """
    path = os.fspath(path)
    if path.endswith(".keras") and not os.path.isdir(path):
        return "keras"
    return artifact_format(path)


def check_model_file(path) -> str:
    """`path` as a string, if it is an existing ``.keras`` file or serving
    artifact (keras-free).

    Raises:
        ValueError: naming the file: missing, or of an unknown kind.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"model file not found: {path!r}")
    model_file_format(path)
    return path


@dataclasses.dataclass
class Artifact:
    """A loaded serving artifact.

    Attributes:
        format: a key of `SUFFIXES`.
        path: where it was read from.
        input_shape: the input's shape, batch first, ``None`` where any size
            is taken.
        run: float32 batch -> float32 outputs (NumPy in, NumPy out).
    """

    format: str
    path: str
    input_shape: tuple
    run: Callable[[np.ndarray], np.ndarray]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.run(np.ascontiguousarray(x, dtype="float32"))


def _dims(shape) -> tuple:
    """Sizes, with ``None`` for every dynamic one (-1, strings, symbols)."""
    return tuple(d if isinstance(d, int) and d > 0 else None for d in shape)


def _open_litert(path: str, threads: Optional[int]) -> Artifact:
    module = extras.import_from("litert", RUNTIMES["litert"][1], "running a .tflite model")
    interpreter = module.Interpreter(model_path=path, num_threads=threads)
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    shape = [int(d) for d in inp["shape_signature"]]

    allocated = [None]  # the input shape the interpreter's tensors have

    def run(x):
        if allocated[0] != x.shape:
            interpreter.resize_tensor_input(inp["index"], x.shape)
            interpreter.allocate_tensors()
            allocated[0] = x.shape
        interpreter.set_tensor(inp["index"], _quantize(x, inp))
        interpreter.invoke()
        return _dequantize(interpreter.get_tensor(out["index"]), out)

    return Artifact("litert", path, _dims(shape), run)


def _quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    # Integer-only inputs take int8/uint8 with the tensor's scale and zero point.
    if detail["dtype"] == np.float32:
        return x
    scale, zero = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(detail["dtype"])


def _dequantize(y: np.ndarray, detail: dict) -> np.ndarray:
    if detail["dtype"] == np.float32:
        return y.copy()  # the interpreter reuses its buffers
    scale, zero = detail["quantization"]
    return ((y.astype("float32") - zero) * scale).astype("float32")


def _open_openvino(path: str, threads: Optional[int]) -> Artifact:
    ov = extras.import_from("openvino", "openvino", "running an OpenVINO model")
    core = ov.Core()
    model = core.read_model(path)
    config = dict(OPENVINO_CONFIG)
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    compiled = core.compile_model(model, "CPU", config)
    shape = model.inputs[0].get_partial_shape()
    dims = tuple(d.get_length() if d.is_static else None for d in shape)
    request = compiled.create_infer_request()

    def run(x):
        return np.array(request.infer([x])[compiled.outputs[0]], dtype="float32")

    return Artifact("openvino", path, dims, run)


def _open_onnx(path: str, threads: Optional[int]) -> Artifact:
    ort = extras.import_from("onnx", "onnxruntime", "running an ONNX model")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]

    def run(x):
        return session.run(None, {inp.name: x})[0]

    return Artifact("onnx", path, _dims(inp.shape), run)


def _open_torch(path: str, threads: Optional[int]) -> Artifact:
    torch = extras.import_from("torch", "torch", "running a torch.export (.pt2) model")
    if threads:
        torch.set_num_threads(int(threads))
    program = torch.export.load(path)
    placeholder = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name in
                       program.graph_signature.user_inputs)
    shape = _dims(int(d) if isinstance(d, int) else None for d in placeholder.meta["val"].shape)
    module = program.module()

    def run(x):
        with torch.no_grad():
            return module(torch.from_numpy(x)).numpy()

    return Artifact("torch", path, shape, run)


def _open_savedmodel(path: str, threads: Optional[int]) -> Artifact:
    tf = extras.import_from("tensorflow", "tensorflow", "running a SavedModel")
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(int(threads))
    loaded = tf.saved_model.load(path)
    spec = next(iter(loaded.signatures["serving_default"].structured_input_signature[1].values()))

    def run(x):
        out = loaded.serve(tf.constant(x))
        return (out if not isinstance(out, dict) else next(iter(out.values()))).numpy()

    run.keep = loaded  # the function owns the variables
    return Artifact("savedmodel", path, _dims(spec.shape.as_list()), run)


_OPENERS = {
    "litert": _open_litert,
    "openvino": _open_openvino,
    "onnx": _open_onnx,
    "torch": _open_torch,
    "savedmodel": _open_savedmodel,
}


def check_trusted(path, trust_pickle: bool) -> None:
    """Refuses a ``.pt2`` file unless `trust_pickle`: `torch.export.load`
    unpickles parts of it, and unpickling can run code.

    Raises:
        ValueError: naming the file and the option that allows it.
    """
    if model_file_format(path) == "torch" and not trust_pickle:
        raise ValueError(f"{os.fspath(path)!r} is a torch.export archive, which torch.export.load unpickles "
                         "(that can run code): pass trust_pickle=True (--trust-pickle) only for a file you made")


def open_artifact(path, threads: Optional[int] = None, trust_pickle: bool = False) -> Artifact:
    """Loads a serving artifact in its runtime.

    Args:
        path: a ``.tflite``, ``.xml`` (OpenVINO, its ``.bin`` beside it),
            ``.onnx`` or ``.pt2`` file, or a SavedModel directory.
        threads: the runtime's thread count (``None``: its own default).
        trust_pickle: needed for ``.pt2`` files: `torch.export.load`
            unpickles parts of them, which can run code. Only for files you
            made (``export`` checks its own with it).

    Returns:
        An `Artifact`: call it on a float32 batch.

    Raises:
        ValueError: the file is missing, of an unknown kind, or its runtime
            cannot read it (the message names the file).
        MissingExtraError: the runtime is not installed (names the extra).
    """
    checks.boolean("trust_pickle", trust_pickle)
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"model file not found: {path!r}")
    fmt = artifact_format(path)
    check_trusted(path, trust_pickle)
    extra, module = RUNTIMES[fmt]
    extras.import_from(extra, module, f"running a {fmt} model")  # before the broad except below
    try:
        return _OPENERS[fmt](path, threads)
    except extras.MissingExtraError:
        raise
    except Exception as e:  # each runtime has its own parse errors
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path!r} is not a readable {fmt} model: {reason[:300]}") from None
