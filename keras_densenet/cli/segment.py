"""``keras-densenet segment``: train an FC-DenseNet to segment canvases of
the bundled digits (a class per pixel: background and 0-9), offline.

Example::

    keras-densenet segment --epochs 2 --output seg_run
"""

from __future__ import annotations

import dataclasses

from keras_densenet.cli import common
from keras_densenet.core import extras, registry
from keras_densenet.training import compile_cache, config

#: Every `SegmentConfig` default, by option name.
_SEGMENT = {f.name: f.default for f in dataclasses.fields(config.SegmentConfig)}


def add_parser(sub) -> None:
    """Adds ``segment`` to the sub-parsers `sub`."""
    p = common.command_parser(
        sub,
        "segment",
        help="train an FC-DenseNet to segment digit canvases (embedded, offline)",
        description="Train an FC-DenseNet (Jegou et al. 2017) on generated canvases of the bundled digits: "
                    "a class per pixel (background and 0-9); reports pixel accuracy and mean IoU per epoch.",
    )
    p.add_argument("--arch", choices=tuple(registry.FC_VARIANTS), default=None,
                   help="a paper variant (default: a small FC-DenseNet sized for a CPU)")
    for flag, kind, about in (
        ("--layers-per-block", int, "without --arch: dense layers per block"),
        ("--growth-rate", int, "without --arch: growth rate k"),
        ("--image-size", int, "canvas side, a multiple of 32"),
        ("--train-canvases", int, "training canvases"),
        ("--val-canvases", int, "validation canvases (from held-out digits)"),
        ("--max-digits", int, "digits per canvas, 1 to this many"),
        ("--epochs", int, "epochs"),
        ("--batch-size", int, "batch size"),
        ("--lr", float, "peak learning rate (cosine decay)"),
        ("--dropout", float, "dropout of the dense layers and transitions down"),
        ("--seed", int, "random seed: data, placement, weights"),
    ):
        dest = flag[2:].replace("-", "_")
        p.add_argument(flag, type=kind, default=_SEGMENT[dest], help=f"{about} (default %(default)s)")
    p.add_argument("--output", default=_SEGMENT["output"], metavar="DIR",
                   help="output directory (default: ./%(default)s)")
    p.set_defaults(func=run, check=check)


def segment_config(args) -> config.SegmentConfig:
    """The checked `SegmentConfig` of `args` (the options' dests are its field names)."""
    result = config.SegmentConfig(**{k: v for k, v in vars(args).items() if k in _SEGMENT})
    config.validate_segment(result)
    return result


def check(args) -> None:
    """Answers bad options before keras is imported (ValueError)."""
    extras.require("train", "keras-densenet segment")
    segment_config(args)


def run(args) -> int:
    """Trains; prints the best mean IoU, the files written and where the time went."""
    from keras_densenet.training import report

    clock = report.RunClock()
    from keras_densenet.training import segment  # keras and its backend

    clock.imports_done()
    compile_cache.enable()  # JAX: reuse compiled steps across runs
    result = segment.train_segmentation(segment_config(args))
    print(f"best validation mean IoU: {result.best_mean_iou:.4f} (pixel accuracy {result.best_pixel_accuracy:.4f})")
    print(f"saved: {result.model_path}, {result.masks_path}")
    print(clock.summary(result.timings, result.epochs_run))
    return 0
