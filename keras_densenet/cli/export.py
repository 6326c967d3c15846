"""``keras-densenet export``: a serving artifact of a ``.keras`` model,
loaded in its own runtime and compared with ``predict`` (exit 1, nothing
written, if it differs).

Example::

    keras-densenet export digits_run/model.keras --format onnx model.onnx
    keras-densenet export digits_run/model.keras --format litert model.tflite --quantize int8
"""

from __future__ import annotations

from keras_densenet.cli import common
from keras_densenet.deployment import export as export_lib
from keras_densenet.training import config


def add_parser(sub) -> None:
    """Adds ``export`` to the sub-parsers `sub`."""
    p = common.command_parser(
        sub,
        "export",
        help="write a serving artifact, checked in its runtime",
        description="Export a .keras model with keras.Model.export, then load the artifact in its own runtime "
                    "and compare it with predict (exit 1, nothing written, if it differs).",
    )
    p.add_argument("model_path", metavar="M.keras", help="the model to export")
    p.add_argument("--format", dest="fmt", required=True, choices=export_lib.FORMATS,
                   help="savedmodel (directory), onnx (.onnx), litert (.tflite), openvino (.xml), torch (.pt2)")
    p.add_argument("out", metavar="OUT", help="the directory or file to write")
    p.add_argument("--quantize", choices=export_lib.QUANTIZATIONS, default=None,
                   help="int8 post-training quantization (litert, openvino), checked on the held-out split")
    p.add_argument("--data", metavar="DIR", default=None,
                   help="--quantize: the image folder the model was trained on (default: the bundled digits)")
    p.add_argument("--seed", type=int, default=config.TrainConfig().seed,
                   help="--quantize: the training run's seed, which drew its split (default %(default)s)")
    p.add_argument("--validation-split", type=float, default=config.TrainConfig().validation_split,
                   help="--quantize: the training run's held-out fraction (default %(default)s)")
    p.add_argument("--calibration-samples", type=int, default=export_lib.CALIBRATION_SAMPLES,
                   help="--quantize: calibration images from the training split (default %(default)s)")
    p.add_argument("--max-drop", type=float, default=export_lib.MAX_DROP,
                   help="--quantize: top-1 points the int8 artifact may lose (default %(default)s)")
    p.set_defaults(func=run, check=check)


def check(args) -> None:
    """Answers bad options before keras is imported (ValueError)."""
    export_lib.check_export(args.model_path, args.fmt, args.out, args.quantize)
    if args.quantize is None and args.data is not None:
        raise ValueError("--data goes with --quantize (calibration and the accuracy check)")


def run(args) -> int:
    """Exports and checks; prints the report (an `ExportCheckError` if the artifact differs)."""
    report = export_lib.export(
        args.model_path, args.fmt, args.out, quantize=args.quantize, data=args.data, seed=args.seed,
        validation_split=args.validation_split, samples=args.calibration_samples, max_drop=args.max_drop,
    )
    print("\n".join(report.lines()))
    return 0
