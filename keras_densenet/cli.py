"""The ``keras-densenet`` command line: a thin layer over the library.

Every subcommand parses its arguments here and calls one library function.
Bad input (a `ValueError`, a missing file) becomes one line on stderr and
exit code 2, without a traceback.

Example::

    keras-densenet table
    keras-densenet train --epochs 3
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

# Keras-free modules only: keras (hence its backend) is imported by the
# subcommands, after the arguments are checked and the backend is chosen.
from keras_densenet import backends, deploy
from keras_densenet.config import LR_SCALING


# --- train -----------------------------------------------------------------

_TRAIN_EPILOG = """\
defaults: a DenseNet-BC (depth 22, k=12, 73K parameters) trained from scratch
on scikit-learn's bundled handwritten digits (1797 real 8x8 scans, upsampled
to 32x32, stratified 80/20 split), AdamW with cosine decay, random shifts of
up to 2 pixels. --bn-momentum defaults to 0.9, not Keras' 0.99: with 0.99 the
BatchNormalization moving statistics average over ~100 steps, longer than
the whole run's first epochs (45 steps each), so validation (which uses them)
sees statistics of an untrained network (17% measured vs 99% training
accuracy).

output directory: model.keras (best validation accuracy), log.csv,
learning_curve.png, class_names.json. Interrupted? Run the same command
again: it resumes after the last completed epoch (backup/ holds it).

--distribute: data parallel over every local device with the backend's own
engine (jax: keras.distribution.DataParallel; tensorflow:
tf.distribute.MirroredStrategy over the GPUs, else the CPU; torch: none,
Keras has no engine for it, so one device). --batch-size is then per device:
the global batch is batch-size x devices, and the learning rate is scaled by
--lr-scaling (sqrt by default, for AdamW). BatchNormalization: jax normalizes
over the global batch; tensorflow per replica unless --sync-bn.
"""


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train or fine-tune a DenseNet (default: the embedded digits)",
        description="Train a DenseNet from scratch, or fine-tune pretrained weights.",
        epilog=_TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", metavar="DIR", help="image folder, one sub-folder per class "
                   "(default: the embedded handwritten digits)")
    p.add_argument("--arch", help="registered variant (see `keras-densenet table`); "
                   "default: a DenseNet-BC of --depth and --growth-rate")
    p.add_argument("--depth", type=int, default=22, help="DenseNet-BC depth 6n+4 (default 22)")
    p.add_argument("--growth-rate", type=int, default=12, help="DenseNet-BC k (default 12)")
    p.add_argument("--weights", metavar="NAME|PATH", help="fine-tune from pretrained weights: "
                   "a weight-set name of --arch (e.g. imagenet) or a backbone weights file; "
                   "first the new head alone, then everything at lr/10")
    p.add_argument("--epochs", type=int, default=8, help="epochs (default 8)")
    p.add_argument("--head-epochs", type=int, help="fine-tuning: epochs with the backbone "
                   "frozen (default: a third of --epochs)")
    p.add_argument("--batch-size", type=int, default=32, help="batch size (default 32)")
    p.add_argument("--image-size", type=int, default=32, help="input side in pixels, >= 32 (default 32)")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default 0.002)")
    p.add_argument("--bn-momentum", type=float, default=0.9,
                   help="BatchNormalization momentum (default 0.9; see below)")
    p.add_argument("--memory-efficient", action="store_true",
                   help="recompute concatenations in the backward pass (less memory)")
    p.add_argument("--mixed-precision", choices=("bfloat16", "float16"),
                   help="mixed-precision policy (the softmax output stays float32)")
    p.add_argument("--output", default="densenet_run", metavar="DIR",
                   help="output directory (default: ./densenet_run)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--validation-split", type=float, default=0.2, help="held-out fraction (default 0.2)")
    p.add_argument("--limit", type=int, help="digits only: use this many images (quick runs)")
    # Data parallelism (keras_densenet.distribute):
    p.add_argument("--distribute", action="store_true",
                   help="data parallel on every local device (see below); "
                   "--batch-size becomes per device")
    p.add_argument("--sync-bn", action="store_true",
                   help="with --distribute on tensorflow: synchronized BatchNormalization "
                   "(statistics of the global batch, as on jax)")
    p.add_argument("--lr-scaling", choices=LR_SCALING, default="sqrt",
                   help="with --distribute: learning rate x sqrt(devices) (default, AdamW), "
                   "x devices (linear, SGD) or unchanged")
    p.set_defaults(func=_run_train, check=_check_train)


def _train_config(args):
    from keras_densenet.config import TrainConfig, validate

    config = TrainConfig(
        data=args.data,
        arch=args.arch,
        depth=args.depth,
        growth_rate=args.growth_rate,
        weights=args.weights,
        epochs=args.epochs,
        head_epochs=args.head_epochs,
        batch_size=args.batch_size,
        image_size=args.image_size,
        lr=args.lr,
        bn_momentum=args.bn_momentum,
        memory_efficient=args.memory_efficient,
        mixed_precision=args.mixed_precision,
        output=args.output,
        seed=args.seed,
        validation_split=args.validation_split,
        limit=args.limit,
        distribute=args.distribute,
        sync_bn=args.sync_bn,
        lr_scaling=args.lr_scaling,
    )
    validate(config)
    return config


def _check_train(args) -> None:
    _train_config(args)


def _run_train(args) -> int:
    import warnings

    from keras_densenet.data import DataWarning
    from keras_densenet.train import train

    config = _train_config(args)
    # Data parallelism (keras_densenet.distribute):
    plan = None
    if config.distribute:
        from keras_densenet import distribute

        plan = distribute.data_parallel(sync_bn=config.sync_bn)
        print(plan.describe(config.batch_size, config.lr, config.lr_scaling))
    default_show = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        # Our own data warnings (corrupt files) as one plain line, at once.
        if issubclass(category, DataWarning):
            print(f"keras-densenet train: warning: {message}", file=sys.stderr)
        else:
            default_show(message, category, filename, lineno, file, line)

    from keras_densenet import compile_cache

    compile_cache.enable()  # JAX: reuse compiled steps across runs
    with warnings.catch_warnings():
        warnings.simplefilter("always", DataWarning)
        warnings.showwarning = show
        result = train(config, distribution=plan)
    # Corrupt files were reported once, by the warning, as they were found.
    print(f"best validation accuracy: {result.best_val_accuracy:.4f}")
    print(f"saved: {', '.join(result.files())}")
    return 0


# --- predict ---------------------------------------------------------------


def _add_predict(sub) -> None:
    p = sub.add_parser(
        "predict",
        help="top-k classes of images",
        description="Classify images with a trained .keras model or a pretrained variant.",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--model", metavar="M.keras", help="a model written by `train`")
    p.add_argument("--arch", help="a registered variant, with --weights")
    p.add_argument("--weights", default=None, metavar="NAME|PATH",
                   help="with --arch: imagenet (default) or a weights file")
    p.add_argument("--top", type=int, default=5, help="classes per image (default 5)")
    p.set_defaults(func=_run_predict, check=_check_predict)


def _check_predict(args) -> None:
    if args.model is None and args.arch is None:
        raise ValueError("give a model: --model M.keras (from `train`) or --arch NAME (with --weights)")
    if args.model is not None and args.arch is not None:
        raise ValueError("give --model or --arch, not both")
    if args.model is not None and args.weights is not None:
        raise ValueError("--weights goes with --arch; a --model file has its weights")
    if args.top < 1:
        raise ValueError(f"--top must be a positive integer. Received: {args.top}")
    for path in args.images:
        if not os.path.isfile(path):
            raise ValueError(f"image file not found: {path!r}")


def _run_predict(args) -> int:
    from keras_densenet import deploy

    weights = args.weights
    if args.arch is not None and weights is None:
        weights = "imagenet"
    results = deploy.predict(args.images, model_path=args.model, arch=args.arch,
                             weights=weights, top=args.top)
    for path, rows in zip(args.images, results):
        print(path)
        for _, name, score in rows:
            print(f"  {score:7.2%}  {name}")
    return 0


# --- export ----------------------------------------------------------------


def _add_export(sub) -> None:
    p = sub.add_parser(
        "export",
        help="write a serving artifact (TF SavedModel or ONNX)",
        description="Export a .keras model with keras.Model.export.",
    )
    p.add_argument("model", metavar="M.keras", help="the model to export")
    p.add_argument("--format", required=True, choices=tuple(deploy.EXPORT_FORMATS),
                   help="savedmodel (directory) or onnx (file)")
    p.add_argument("out", metavar="OUT", help="the directory or file to write")
    p.set_defaults(func=_run_export, check=_check_export)


def _check_export(args) -> None:
    if not os.path.isfile(args.model):
        raise ValueError(f"model file not found: {args.model!r} (expected a .keras file)")


def _run_export(args) -> int:
    from keras_densenet import deploy

    print(f"exported: {deploy.export(args.model, args.format, args.out)}")
    return 0


# --- table -----------------------------------------------------------------


def _add_table(sub) -> None:
    p = sub.add_parser(
        "table",
        help="the registered variants and ResNets: depth, parameters, MACs, memory, connections",
        description="Every registered variant plus keras.applications' ResNet-50/101/152, "
        "with facts counted from the built graphs (keras_densenet.analysis): depth, "
        "parameters, multiply-accumulates, training activation memory per image "
        "(standard and memory-efficient), direct connections and channels per dense block.",
    )
    p.add_argument("--format", default="text", choices=("text", "json", "markdown"),
                   help="text (default), json (one object per model) or markdown")
    p.add_argument("--models", metavar="A,B", help="comma-separated subset (default: all)")
    p.set_defaults(func=_run_table)


def param_count(arch, classes: int = 1000) -> int:
    """Parameters of a DenseNet with the top (BN moving statistics included),
    computed from the architecture, so the table needs no model builds.

    Example:

    >>> from keras_densenet import registry
    >>> param_count(registry.get_variant("densenet121").arch)
    8062504
    """
    def bn(c):  # gamma, beta, moving mean, moving variance
        return 4 * c

    c = arch.num_init_features
    if arch.stem == "imagenet":
        total = 7 * 7 * 3 * c + bn(c)
    else:
        total = 3 * 3 * 3 * c
    for stage, layers in enumerate(arch.blocks):
        for _ in range(layers):
            if arch.bottleneck:
                width = arch.bn_size * arch.growth_rate
                total += bn(c) + c * width + bn(width) + 9 * width * arch.growth_rate
            else:
                total += bn(c) + 9 * c * arch.growth_rate
            c += arch.growth_rate
        if stage < len(arch.blocks) - 1:
            out = int(c * arch.compression)
            total += bn(c) + c * out
            c = out
    return total + bn(c) + c * classes + classes


def _run_table(args) -> int:
    from keras_densenet import analysis

    rows = analysis.table(_csv(args.models) if args.models else None)
    print(analysis.format_table(rows, args.format))
    if args.format != "json":  # keep the JSON parseable
        import keras

        print(f"keras {keras.__version__}, backend: {keras.backend.backend()}")
    return 0


_SUBCOMMANDS = [_add_train, _add_predict, _add_export, _add_table]


# --- bench -----------------------------------------------------------------


def _csv(text: str) -> list:
    return [t.strip() for t in text.split(",") if t.strip()]


def _add_bench(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="memory-efficient vs standard: activation memory, step time, peak RSS; "
        "throughput against keras.applications and native PyTorch",
    )
    p.add_argument("--measure", default="activations,time,rss",
                   help="comma-separated: activations, time, rss, throughput, build "
                   "(default: activations,time,rss)")
    p.add_argument("--variants", default="densenet121,densenet264",
                   help="variants for the activation and build-time tables (default: densenet121,densenet264)")
    p.add_argument("--image-size", type=int, default=224, help="input side for activations (224)")
    p.add_argument("--backends", default="tensorflow,jax,torch", help="backends for step time")
    p.add_argument("--time-variant", default="densenet_bc_100_k12",
                   help="variant for step time and peak RSS (densenet_bc_100_k12)")
    p.add_argument("--time-size", type=int, default=32, help="input side for step time / RSS (32)")
    p.add_argument("--time-batch", type=int, default=32, help="batch for step time (32)")
    p.add_argument("--rss-batch", type=int, default=64, help="batch for peak RSS (64)")
    p.add_argument("--steps", type=int, default=5, help="timed steps / fit steps (5)")
    # --measure throughput (keras_densenet.throughput)
    p.add_argument("--throughput-variant", default="densenet121", help="variant for throughput (densenet121)")
    p.add_argument("--throughput-size", type=int, default=224, help="input side for throughput (224)")
    p.add_argument("--throughput-batch", type=int, default=64, help="batch for throughput (64)")
    p.add_argument("--rounds", type=int, default=7, help="alternating timed rounds for throughput (7)")
    p.add_argument("--iters", type=int, default=5, help="calls per candidate per round (5)")
    p.add_argument("--precision", default="float32",
                   help="Keras dtype policy for throughput: float32, mixed_bfloat16, mixed_float16")
    p.add_argument("--json", metavar="FILE", help="also write all results as JSON to FILE ('-': stdout)")
    # --measure build
    p.add_argument("--repeats", type=int, default=3, help="fresh-process builds per model for build time (3)")
    p.set_defaults(func=_run_bench)


def _run_bench(args) -> int:
    from keras_densenet import bench

    bench.run(
        _csv(args.measure),
        backends=_csv(args.backends),
        variants=_csv(args.variants),
        image_size=args.image_size,
        time_variant=args.time_variant,
        time_size=args.time_size,
        time_batch=args.time_batch,
        steps=args.steps,
        rss_batch=args.rss_batch,
        throughput_variant=args.throughput_variant,
        throughput_size=args.throughput_size,
        throughput_batch=args.throughput_batch,
        rounds=args.rounds,
        iters=args.iters,
        precision=args.precision,
        json_path=args.json,
        repeats=args.repeats,
    )
    return 0


_SUBCOMMANDS.append(_add_bench)


# --- convert ---------------------------------------------------------------


def _add_convert(sub) -> None:
    p = sub.add_parser(
        "convert",
        help="convert a torchvision/timm DenseNet checkpoint (.pth, .safetensors) to .keras or .weights.h5",
    )
    p.add_argument("src", help="PyTorch state dict: .pth (loaded with weights_only=True) or .safetensors")
    p.add_argument("dst", help="output: .keras (complete model with top) or .weights.h5")
    p.add_argument(
        "--arch",
        # Literal, not read from the registry: importing the package here
        # would import keras before the backend is chosen.
        choices=("densenet121", "densenet161", "densenet169", "densenet201"),
        help="architecture (default: detected from the tensor shapes)",
    )
    p.set_defaults(func=_run_convert)


def _run_convert(args) -> int:
    from keras_densenet.convert import convert_checkpoint

    model = convert_checkpoint(args.src, args.dst, arch=args.arch)
    print(f"{args.src} -> {args.dst} ({model.name}, {model.count_params():,} parameters)")
    return 0


_SUBCOMMANDS.append(_add_convert)


# --- reuse -----------------------------------------------------------------


def _add_reuse(sub) -> None:
    p = sub.add_parser(
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
    p.set_defaults(func=_run_reuse)


def _run_reuse(args) -> int:
    from keras_densenet import analysis

    model = analysis.load_for_reuse(args.model, args.weights)
    json_path, png_path = analysis.write_feature_reuse(model, args.out, normalize=args.normalize)
    print(f"saved: {png_path}, {json_path}")
    return 0


_SUBCOMMANDS.append(_add_reuse)


def _backend_option(parser: argparse.ArgumentParser, default) -> None:
    parser.add_argument(
        "--backend",
        choices=backends.BACKENDS,
        default=default,
        help="Keras backend (default: $KERAS_BACKEND, ~/.keras/keras.json, else the first "
        f"installed of {', '.join(backends.BACKENDS)})",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keras-densenet",
        description="DenseNet for Keras 3: train, predict, convert, export, table, bench, reuse.",
    )
    _backend_option(parser, None)
    # Also accepted after the subcommand; there it must not reset a value
    # given before it, hence SUPPRESS.
    common = argparse.ArgumentParser(add_help=False)
    _backend_option(common, argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_parser = sub.add_parser

    def add_with_common(*args, **kwargs):
        kwargs["parents"] = [*kwargs.get("parents", ()), common]
        return add_parser(*args, **kwargs)

    sub.add_parser = add_with_common
    for add in _SUBCOMMANDS:
        add(sub)
    return parser


def _keras_backend_mismatch() -> Optional[str]:
    """The backend keras was imported with, if it differs from $KERAS_BACKEND."""
    keras = sys.modules.get("keras")
    wanted = os.environ.get("KERAS_BACKEND")
    if keras is None or wanted is None:
        return None  # keras not imported yet: it will read $KERAS_BACKEND
    current = keras.backend.backend()
    return current if current != wanted else None


def _error(command: str, error: BaseException) -> int:
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    print(f"keras-densenet {command}: error: {message}", file=sys.stderr)
    return 2


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the CLI; returns the exit code (0 ok, 2 bad input)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)  # argparse exits 2 on bad usage
    try:
        # Everything here runs before keras is imported: bad arguments are
        # answered at once, and the backend is still free to choose.
        if getattr(args, "check", None) is not None:
            args.check(args)
        backend, note = backends.choose(args.backend)
    except ValueError as e:
        return _error(args.command, e)
    os.environ["KERAS_BACKEND"] = backend
    current = _keras_backend_mismatch()
    if current is not None:
        # Only when called in-process after keras was imported: the console
        # script imports nothing of keras before this point.
        print(
            f"keras-densenet: error: --backend {backend} cannot apply: "
            f"keras is already running on {current} in this process",
            file=sys.stderr,
        )
        return 2
    if note is not None and "keras" not in sys.modules:
        print(f"keras-densenet: {note}", file=sys.stderr)
    try:
        return args.func(args) or 0
    except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as e:
        return _error(args.command, e)
    except KeyboardInterrupt:
        print(f"keras-densenet {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
