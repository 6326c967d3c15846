"""Post-training int8 quantization of serving artifacts, and its calibration images.

Two formats quantize (`QUANTIZABLE`): LiteRT, in its converter (full-integer
quantization: every operation in int8, float input and output, so the
artifact takes the same pixels as the model), and OpenVINO, where NNCF
quantizes the float ``.xml`` already written. Both calibrate on images of
the model's training split (`calibration_split`, split as ``train`` splits
them, so the held-out images stay held out for the accuracy check of
`keras_densenet.deployment.export`).

Example:

>>> from keras_densenet.deployment import quantize
>>> quantize.check_quantize("int8", "litert")
>>> quantize.check_quantize("int8", "onnx")
Traceback (most recent call last):
ValueError: `quantize`: int8 is for litert and openvino, not onnx
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from keras_densenet.core import checks, extras
from keras_densenet.data import datasets
from keras_densenet.deployment import writers

QUANTIZATIONS = ("int8",)
#: Formats with post-training int8 quantization (LiteRT's converter, NNCF).
QUANTIZABLE = ("litert", "openvino")
#: Calibration images of int8 quantization (from the training split).
CALIBRATION_SAMPLES = 300


def check_quantize(quantize: str, fmt: str) -> None:
    """Raises a `ValueError` unless `fmt` artifacts can be quantized as `quantize`."""
    checks.one_of("quantize", quantize, QUANTIZATIONS)
    if fmt not in QUANTIZABLE:
        raise ValueError(f"`quantize`: {quantize} is for {' and '.join(QUANTIZABLE)}, not {fmt}")


def calibration_split(model, data, seed: int, validation_split: float, samples: int) -> tuple:
    """``(calibration images, held-out images, held-out labels)`` at the
    model's training size, split as ``train`` splits.

    Args:
        model: the Keras model (its `Resizing` layer or fixed input gives
            the training size).
        data: an image folder (one sub-folder per class), or ``None`` for
            the bundled digits.
        seed, validation_split: the split, as in training.
        samples: calibration images, drawn from the training split.

    Raises:
        ValueError: the training size is unknown, or `data` has another
            number of classes than the model.
    """
    size = writers.resize_size(model)
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


def write_int8(model, fmt: str, path: str, calibration: np.ndarray, float_path: Optional[str] = None) -> None:
    """Writes `model` as an int8 `fmt` artifact at `path`, unchecked.

    Args:
        model: a Keras model.
        fmt: one of `QUANTIZABLE`.
        path: the file to write.
        calibration: the calibration images (batch first, at a size the
            model takes).
        float_path: OpenVINO: the float ``.xml`` already written, which NNCF
            quantizes.

    Raises:
        ValueError: `fmt` does not quantize, or OpenVINO without `float_path`.
    """
    check_quantize("int8", fmt)
    if fmt == "litert":
        return writers.write_artifact(model, fmt, path, exporter_options=_litert_int8_options(calibration))
    if float_path is None:
        raise ValueError("`float_path`: OpenVINO int8 quantizes the float .xml, which must be written first")
    _quantize_openvino(float_path, path, calibration)


def _litert_int8_options(calibration: np.ndarray) -> dict:
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
