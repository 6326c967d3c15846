"""``keras-densenet features``: pooled DenseNet features of image files,
written as one ``.npy`` array (one row per image) with the images' paths,
one per line, beside it (``feats.npy`` -> ``feats.paths.txt``).

Images stream through `keras_densenet.data.images` and rows are written as
they come (`keras_densenet.deployment.features`), so memory does not grow
with the number of images.

Example::

    keras-densenet features photos/ --arch densenet121 --output feats.npy
    keras-densenet features "scans/*.png" --model run/model.keras --output feats.npy
"""

from __future__ import annotations

import argparse

from keras_densenet.cli import common
from keras_densenet.core import extras
from keras_densenet.deployment import features as features_lib
from keras_densenet.deployment import predict as deploy

_EPILOG = f"""\
exit status: 0 every image has its row; {deploy.EXIT_SKIPPED} some image files could not be read (each is
named on stderr in one line with the reason, and has no row); 2 bad arguments,
or no image could be read.

Rows: DenseNet-121 gives 1024 features per image (the last feature map, average-
pooled). With --arch, images go in at the variant's size (224 for the ImageNet
variants) through keras_densenet.preprocess_input; with --model (a .keras file
written by `train`), at its training size, raw pixels, features of the layer
its classifier reads. Both files are written under temporary names and
renamed at the end: an interrupted run leaves nothing at the final names.

Read them back:
  x = numpy.load("feats.npy", mmap_mode="r")
  paths = open("feats.paths.txt", encoding="utf-8").read().splitlines()
"""


def add_parser(sub) -> None:
    """Adds ``features`` to the sub-parsers `sub`."""
    p = common.command_parser(
        sub,
        "features",
        help="pooled features of images to a .npy file",
        description="Write the pooled DenseNet features of image files to a .npy file, one row per image, "
                    "with their paths beside it.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common.add_image_inputs(p, "inputs", "INPUT")
    p.add_argument("--arch", metavar="VARIANT", help=f"a registered variant: {common.VARIANTS}")
    common.add_weights_option(p, argparse.SUPPRESS, "with --arch: a weight-set name or a weights file",
                              default_means="imagenet")
    p.add_argument("--model", metavar="MODEL", help="a .keras model written by `train` (instead of --arch)")
    p.add_argument("--output", required=True, metavar="FILE.npy",
                   help="the features file; the paths go to FILE.paths.txt")
    p.add_argument("--layer", metavar="NAME", help="pool this layer's output (default: the last feature map)")
    p.add_argument("--pool", choices=features_lib.POOLS, default="avg",
                   help="pooling over the feature map (default %(default)s)")
    p.add_argument("--image-size", type=int, metavar="SIDE",
                   help="input side (default: the model's own size, else the variant's)")
    common.add_batching_options(p, deploy.DEFAULT_BATCH_SIZE)
    p.set_defaults(func=run, check=check)


def _arguments(args) -> dict:
    # Not given: imagenet with --arch; given with --model: an error, named.
    weights = getattr(args, "weights", "imagenet" if args.arch is not None else None)
    return dict(model=args.model, arch=args.arch, weights=weights, pool=args.pool, batch_size=args.batch_size)


def check(args) -> None:
    """Answers bad options before keras is imported (ValueError)."""
    extras.require("train", "keras-densenet features")  # reading image files
    if args.model is None and args.arch is None:
        raise ValueError("give a model: --arch VARIANT (with --weights) or --model FILE.keras")
    common.check_batching_options(args)
    if args.image_size is not None and args.image_size < 1:
        raise ValueError(f"--image-size must be an integer >= 1. Received: {args.image_size}")
    features_lib.check_features(args.inputs, args.output, **_arguments(args))


def run(args) -> int:
    """Writes the features and their paths; exit status `deploy.EXIT_SKIPPED`
    when files were skipped."""
    result = features_lib.extract_features(
        args.inputs, args.output, **_arguments(args), layer=args.layer, image_size=args.image_size,
        workers=args.workers, progress=True,
    )
    print(f"wrote {result.count} x {result.shape[1]} features to {result.output}, paths to {result.paths_file}"
          + (f" ({len(result.skipped)} files skipped)" if result.skipped else ""))
    return deploy.EXIT_SKIPPED if result.skipped else 0
