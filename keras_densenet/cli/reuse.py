"""``keras-densenet reuse``: the feature-reuse heatmap of a DenseNet
(Figure 5 of the paper), as OUT/reuse.png and OUT/reuse.json.

Example::

    keras-densenet reuse digits_run/model.keras --out reuse/
    keras-densenet reuse densenet121 --out reuse/ --normalize
"""

from __future__ import annotations

from keras_densenet.cli import common
from keras_densenet.core import extras


def add_parser(sub) -> None:
    """Adds ``reuse`` to the sub-parsers `sub`."""
    p = common.command_parser(
        sub,
        "reuse",
        help="feature-reuse heatmap of a DenseNet (Figure 5 of the paper)",
        description="For each dense block, the mean absolute weight each layer's first "
        "convolution (and the transition / classifier) gives to each earlier source. "
        "Writes OUT/reuse.png and OUT/reuse.json.",
    )
    p.add_argument("model", metavar="MODEL", help="a .keras DenseNet built by this package "
                   "(e.g. train's model.keras), or a registered variant name")
    p.add_argument("--weights", metavar="NAME|PATH",
                   help="with a variant name: its weights (default: the variant's default, "
                   "e.g. imagenet; 'none' for random initial weights)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--normalize", action="store_true",
                   help="plot each target's column relative to its largest cell (JSON stays raw)")
    p.set_defaults(func=run, check=check)


def check(args) -> None:
    """Answers a missing [train] extra (the heatmap) before keras is imported."""
    extras.require("train", "keras-densenet reuse")


def run(args) -> int:
    """Writes the heatmap and its numbers; prints their paths."""
    from keras_densenet.tools import reuse

    model = reuse.load_for_reuse(args.model, args.weights)
    json_path, png_path = reuse.write_feature_reuse(model, args.out, normalize=args.normalize)
    print(f"saved: {png_path}, {json_path}")
    return 0
