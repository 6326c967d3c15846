"""``keras-densenet predict``: the top classes of images, from a trained
model (``.keras`` or an exported artifact) or a pretrained variant; with a
segmentation model, a mask per image.

Inputs are files, directories (searched recursively for images) and glob
patterns; images stream through `keras_densenet.data.images` in batches, so
a folder of any size runs in bounded memory. Rows go to stdout as they
come, or to a CSV / JSON Lines file (``--output``).

Example::

    keras-densenet predict scan.png --model digits_run/model.keras
    keras-densenet predict photos/ --arch densenet121 --output preds.csv
"""

from __future__ import annotations

import argparse
import sys

from keras_densenet.cli import common
from keras_densenet.core import extras
from keras_densenet.deployment import predict as deploy

_EPILOG = f"""\
exit status: 0 every image predicted; {deploy.EXIT_SKIPPED} some image files could not be read (each is
named on stderr in one line with the reason, and has no row); 2 bad arguments,
or no image could be read.

--output FILE writes one row per image as the batches come (flushed per batch:
an interrupted run leaves complete rows only): CSV (.csv) with the columns
path,class_id_1,class_name_1,score_1,... or JSON Lines (.jsonl), one
{{"path": ..., "top": [{{"class_id", "class_name", "score"}}, ...]}} per line.
"""


def add_parser(sub) -> None:
    """Adds ``predict`` to the sub-parsers `sub`."""
    p = common.command_parser(
        sub,
        "predict",
        help="top-k classes of images",
        description="Classify images with a trained model (.keras, or an artifact written by export) "
                    "or a pretrained variant.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common.add_image_inputs(p, "images", "IMAGE")
    p.add_argument("--model", dest="model_path", metavar="MODEL",
                   help="a model written by `train` (.keras) or `export` (.tflite, .xml, .onnx, .pt2, "
                        "a SavedModel directory)")
    p.add_argument("--class-names", metavar="JSON",
                   help="with --model: its class names (default: the class_names.json beside it)")
    p.add_argument("--arch", metavar="VARIANT", help=f"a registered variant, with --weights: {common.VARIANTS}")
    common.add_weights_option(p, argparse.SUPPRESS, "with --arch: a weight-set name or a weights file",
                              default_means="imagenet")
    p.add_argument("--top", type=int, default=deploy.DEFAULT_TOP, help="classes per image (default %(default)s)")
    p.add_argument("--output", metavar="FILE",
                   help="write the rows to FILE, CSV (.csv) or JSON Lines (.jsonl), instead of stdout")
    common.add_batching_options(p, deploy.DEFAULT_BATCH_SIZE)
    p.add_argument("--masks", metavar="DIR", default=None,
                   help="with a segmentation --model (from `segment`): write a mask PNG per image to DIR")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow a .pt2 --model: torch.export.load unpickles it, which can run code; only for "
                        "files you made")
    p.set_defaults(func=run, check=check)


def _predict_arguments(args) -> dict:
    if hasattr(args, "weights"):
        weights = args.weights  # None: `--weights none`, random initial weights
    else:
        weights = "imagenet" if args.arch is not None else None
    return dict(model_path=args.model_path, arch=args.arch, weights=weights, top=args.top,
                class_names=args.class_names, trust_pickle=args.trust_pickle, batch_size=args.batch_size,
                output=args.output)


def check(args) -> None:
    """Answers bad options before keras is imported (ValueError)."""
    extras.require("train", "keras-densenet predict")  # reading image files
    common.check_batching_options(args)
    if args.masks is not None:
        if args.model_path is None or not args.model_path.endswith(".keras"):
            raise ValueError("--masks goes with a segmentation --model, a .keras file written by `segment`")
        if args.output is not None:
            raise ValueError("--output goes with classifiers; --masks writes a PNG per image")
    deploy.check_predict(args.images, **_predict_arguments(args))


def _print_rows(paths, rows) -> None:
    for path, top in zip(paths, rows, strict=True):
        print(path)
        for _, name, score in top:
            print(f"  {score:7.2%}  {name}")
    sys.stdout.flush()


def _masks(args) -> int:
    from keras_densenet.deployment import masks

    written = masks.predict_masks(args.images, args.model_path, args.masks, on_error="skip", workers=args.workers)
    for path, (mask, shares) in zip(written.paths, written, strict=True):
        top = sorted(shares.items(), key=lambda kv: -kv[1])[: args.top]
        print(f"{path} -> {mask}: " + ", ".join(f"{name} {share:.1%}" for name, share in top))
    return deploy.EXIT_SKIPPED if written.skipped else 0


def run(args) -> int:
    """Prints each image's top classes (or writes them to --output), or
    writes its mask; exit status `deploy.EXIT_SKIPPED` when files were skipped."""
    if args.masks is not None:
        return _masks(args)
    to_file = args.output is not None
    results = deploy.predict(args.images, **_predict_arguments(args), on_rows=None if to_file else _print_rows,
                             workers=args.workers, progress=to_file)
    if to_file:
        print(f"wrote {results.count} rows to {results.output}"
              + (f" ({len(results.skipped)} files skipped)" if results.skipped else ""))
    return deploy.EXIT_SKIPPED if results.skipped else 0
