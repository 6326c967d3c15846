"""``keras-densenet convert``: a DenseNet from one file format to another.

What SRC is decides the conversion:

- a torchvision or timm checkpoint (``.pth``, ``.safetensors``...) -> a
  ``.keras`` model or ``.weights.h5`` file (`keras_densenet.tools.convert`);
- a keras-hub preset (a directory, a ``kaggle://`` or ``hf://`` handle, or
  one of keras-hub's preset names) or a timm directory -> a ``.keras`` model
  or ``.weights.h5`` file (`keras_densenet.hub.convert.preset_to_keras`);
- a ``.keras`` model of this package -> a keras-hub preset directory
  (``--to keras-hub``, the default) or a timm directory (``--to timm``)
  (`keras_densenet.hub.convert.keras_to_preset`).

Example::

    keras-densenet convert densenet121.pth densenet121.keras
    keras-densenet convert densenet_121_preset/ densenet121.keras --no-top
    keras-densenet convert densenet121.keras densenet121_preset --to keras-hub
"""

from __future__ import annotations

import os

from keras_densenet.cli import common
from keras_densenet.core import extras, registry
from keras_densenet.weights.hub_names import REMOTE_SCHEMES

#: ``--to`` values: the directory a ``.keras`` model becomes.
TARGETS = ("keras-hub", "timm")
#: ``--preprocessing`` values (``none``: the preset takes raw pixels unchanged).
PREPROCESSINGS = ("auto", "torch", "none")
#: What a preset or checkpoint becomes.
FILE_OUTPUTS = (".keras", ".weights.h5")


def add_parser(sub) -> None:
    """Adds ``convert`` to the sub-parsers `sub`."""
    p = common.command_parser(
        sub,
        "convert",
        help="convert a PyTorch checkpoint or a keras-hub/timm preset to .keras, or a .keras model to a preset",
    )
    p.add_argument("src", help="a PyTorch state dict (.pth, loaded with weights_only=True, or .safetensors), "
                               "a keras-hub or timm preset (directory, kaggle:// or hf:// handle), or a "
                               ".keras model of this package")
    p.add_argument("dst", help="output: .keras (complete model) or .weights.h5; for a .keras SRC, the preset "
                               "directory to write")
    p.add_argument("--arch", metavar="VARIANT",
                   help=f"checkpoint's architecture: {common.VARIANTS} (default: detected from the tensor shapes)")
    p.add_argument("--to", choices=TARGETS,
                   help="for a .keras SRC: write a keras-hub preset (default) or a timm directory")
    p.add_argument("--preprocessing", choices=PREPROCESSINGS,
                   help="for a .keras SRC: the preset's image scaling: the model's own Rescaling/Normalization "
                        "layers, else ImageNet's (auto, the default); ImageNet's (torch); none")
    p.add_argument("--no-top", action="store_true",
                   help="for a preset SRC: the backbone only, without the preset's classifier")
    p.set_defaults(func=run, check=check)


def source_kind(src: str) -> str:
    """``"model"`` (a ``.keras`` file), ``"preset"`` (a directory, a remote
    handle, or a bare name such as ``densenet_121_imagenet``) or
    ``"checkpoint"`` (anything else: a PyTorch file), decided without
    reading it.

    Example:

    >>> source_kind("m.keras"), source_kind("hf://me/densenet"), source_kind("densenet121.pth")
    ('model', 'preset', 'checkpoint')
    """
    if src.startswith(REMOTE_SCHEMES) or os.path.isdir(src):
        return "preset"
    if src.endswith(".keras"):
        return "model"
    if not os.path.exists(src) and not os.path.splitext(src)[1]:
        return "preset"  # keras-hub's own preset names
    return "checkpoint"


def _refuse_options(args, kind: str, options: dict) -> None:
    """Raises a one-line ValueError for an option that `kind` of SRC does not take."""
    for option, given in options.items():
        if given:
            raise ValueError(f"{option} does not apply to {args.src!r} (a {kind}); see `keras-densenet "
                             "convert --help`")


def check(args) -> None:
    """Answers options that do not fit SRC, an unknown --arch and a missing
    keras-hub before keras is imported (ValueError, MissingExtraError)."""
    kind = source_kind(args.src)
    if kind == "model":
        _refuse_options(args, "model", {"--arch": args.arch, "--no-top": args.no_top})
        if args.dst.endswith(FILE_OUTPUTS):
            raise ValueError(f"DST {args.dst!r} must be a directory name: a .keras model becomes a "
                             f"{args.to or TARGETS[0]} directory")
        if (args.to or TARGETS[0]) == "keras-hub":
            extras.require("hub", "keras-densenet convert --to keras-hub")
        return
    if kind == "preset":
        _refuse_options(args, "preset", {"--arch": args.arch, "--to": args.to, "--preprocessing": args.preprocessing})
        if args.src.startswith(REMOTE_SCHEMES) or not os.path.exists(args.src):
            extras.require("hub", f"keras-densenet convert {args.src}")
    else:
        _refuse_options(args, "PyTorch checkpoint", {"--to": args.to, "--preprocessing": args.preprocessing,
                                                     "--no-top": args.no_top})
        if args.arch is not None:
            registry.get_variant(args.arch)  # lists the variants when unknown
    if not args.dst.endswith(FILE_OUTPUTS):
        raise ValueError(f"DST must end with {' or '.join(FILE_OUTPUTS)}. Received: {args.dst!r}")


def run(args) -> int:
    """Converts; prints what was written."""
    kind = source_kind(args.src)
    if kind == "model":
        from keras_densenet.hub.convert import keras_to_preset

        to = args.to or TARGETS[0]
        preprocessing = None if args.preprocessing == "none" else args.preprocessing or "auto"
        out = keras_to_preset(args.src, args.dst, to=to, preprocessing=preprocessing)
        print(f"{args.src} -> {out} ({to} directory: {', '.join(sorted(os.listdir(out)))})")
        return 0
    if kind == "preset":
        from keras_densenet.hub.convert import preset_to_keras

        model = preset_to_keras(args.src, args.dst, include_top=False if args.no_top else None)
    else:
        from keras_densenet.tools.convert import convert_checkpoint

        model = convert_checkpoint(args.src, args.dst, arch=args.arch)
    print(f"{args.src} -> {args.dst} ({model.name}, {model.count_params():,} parameters)")
    return 0
