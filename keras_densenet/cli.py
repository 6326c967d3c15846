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
import dataclasses
import os
import re
import sys
from typing import Optional, Sequence

# Keras-free modules only: keras (hence its backend) is imported by the
# subcommands, after the arguments are checked and the backend is chosen.
from keras_densenet.core import backends, checks, extras, registry
from keras_densenet.benchmarks import bench
from keras_densenet.core import cluster
from keras_densenet.deployment import predict as deploy
from keras_densenet.training import compile_cache, config
from keras_densenet.deployment import export as export_lib
from keras_densenet.data.datasets import MIN_IMAGE_SIZE, DataWarning

#: Every `TrainConfig` default, by option name: the train options' defaults.
_TRAIN = {f.name: f.default for f in dataclasses.fields(config.TrainConfig)}
_VARIANTS = ", ".join(registry.VARIANTS)


# --- train -----------------------------------------------------------------

_TRAIN_EPILOG = """\
defaults: a DenseNet-BC (depth {depth}, k={growth_rate}, {params:,} parameters) trained from scratch
on scikit-learn's bundled handwritten digits (1797 real 8x8 scans, upsampled
to {image_size}x{image_size}, stratified 80/20 split), {epochs} epochs of AdamW with cosine decay
from {lr:g}, random shifts of up to image-size/16 pixels (none below 16x16).
--bn-momentum defaults to {bn_momentum}, not Keras' 0.99: with 0.99 the BatchNormalization moving statistics average over ~100 steps, longer than
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

several processes (jax): start the same command in every process with Keras'
variables KERAS_DISTRIBUTION_JOB_ADDRESSES (process 0's host:port),
KERAS_DISTRIBUTION_NUM_PROCESSES and KERAS_DISTRIBUTION_PROCESS_ID set; each
process reads its own share of the data, process 0 writes the outputs, and
every process keeps its backup in backup/process-N. A lost process stops the
others (exit 1); run the same commands again to resume.
"""


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train or fine-tune a DenseNet (default: the embedded digits)",
        description="Train a DenseNet from scratch, or fine-tune pretrained weights.",
        epilog=_TRAIN_EPILOG.format(
            depth=_TRAIN["depth"],
            growth_rate=_TRAIN["growth_rate"],
            bn_momentum=_TRAIN["bn_momentum"],
            image_size=_TRAIN["image_size"],
            epochs=_TRAIN["epochs"],
            lr=_TRAIN["lr"],
            params=registry.ArchConfig.bc(_TRAIN["depth"], _TRAIN["growth_rate"]).param_count(10, in_channels=1),
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", metavar="DIR", help="image folder, one sub-folder per class "
                   "(default: the embedded handwritten digits)")
    p.add_argument("--arch", metavar="VARIANT",
                   help=f"registered variant: {_VARIANTS}; default: a DenseNet-BC of --depth and --growth-rate")
    p.add_argument("--depth", type=int, default=_TRAIN["depth"], help="DenseNet-BC depth 6n+4 (default %(default)s)")
    p.add_argument("--growth-rate", type=int, default=_TRAIN["growth_rate"], help="DenseNet-BC k (default %(default)s)")
    p.add_argument("--weights", metavar="NAME|PATH", help="fine-tune from pretrained weights: "
                   "a weight-set name of --arch (e.g. imagenet) or a backbone weights file; "
                   "first the new head alone, then everything at lr/10")
    p.add_argument("--epochs", type=int, default=_TRAIN["epochs"], help="epochs (default %(default)s)")
    p.add_argument("--head-epochs", type=int, help="fine-tuning: epochs with the backbone "
                   "frozen (default: a third of --epochs)")
    p.add_argument("--batch-size", type=int, default=_TRAIN["batch_size"], help="batch size (default %(default)s)")
    p.add_argument("--image-size", type=int, default=_TRAIN["image_size"],
                   help=f"input side in pixels, >= {MIN_IMAGE_SIZE} (default %(default)s)")
    p.add_argument("--lr", type=float, default=_TRAIN["lr"], help="peak learning rate (default %(default)s)")
    p.add_argument("--bn-momentum", type=float, default=_TRAIN["bn_momentum"],
                   help="BatchNormalization momentum (default %(default)s; see below)")
    p.add_argument("--memory-efficient", action="store_true",
                   help="recompute concatenations in the backward pass (less memory)")
    p.add_argument("--mixed-precision", choices=config.MIXED_PRECISION,
                   help="mixed-precision policy (the softmax output stays float32)")
    p.add_argument("--output", default=_TRAIN["output"], metavar="DIR",
                   help="output directory (default: ./%(default)s)")
    p.add_argument("--seed", type=int, default=_TRAIN["seed"], help="random seed (default %(default)s)")
    p.add_argument("--validation-split", type=float, default=_TRAIN["validation_split"],
                   help="held-out fraction (default %(default)s)")
    p.add_argument("--limit", type=int, help="digits only: use this many images (quick runs)")
    # Data parallelism (keras_densenet.training.distribute):
    p.add_argument("--distribute", action="store_true",
                   help="data parallel on every local device (see below); "
                   "--batch-size becomes per device")
    p.add_argument("--sync-bn", action="store_true",
                   help="with --distribute on tensorflow: synchronized BatchNormalization "
                   "(statistics of the global batch, as on jax)")
    p.add_argument("--lr-scaling", choices=config.LR_SCALING, default=_TRAIN["lr_scaling"],
                   help="with --distribute: learning rate x sqrt(devices) (default, AdamW), "
                   "x devices (linear, SGD) or unchanged")
    p.add_argument("--cpu-devices", type=int, metavar="N",
                   help="with --distribute on jax: split this process's CPU into N devices "
                        "(to try data parallelism without accelerators)")
    p.add_argument("--connect-timeout", type=float, default=cluster.DEFAULT_CONNECT_TIMEOUT_S, metavar="S",
                   help="several processes: give up (exit 2) if the job has not formed within S seconds "
                        "(default %(default)s)")
    p.set_defaults(func=_run_train, check=_check_train)


def _train_config(args):
    # The options' dests are `TrainConfig`'s field names.
    train_config = config.TrainConfig(**{k: v for k, v in vars(args).items() if k in _TRAIN})
    config.validate(train_config)
    return train_config


def _check_train(args) -> None:
    extras.require("train", "keras-densenet train")
    train_config = _train_config(args)
    job = cluster.job_from_environment()
    if job is not None and not train_config.distribute:
        raise ValueError(
            f"{cluster.NUM_PROCESSES}={job.num_processes} is set: add --distribute to train as "
            f"{job.describe()}, or unset the KERAS_DISTRIBUTION_* variables to train alone"
        )
    if args.cpu_devices is not None:
        checks.integer("--cpu-devices", args.cpu_devices)
        if not train_config.distribute:
            raise ValueError("--cpu-devices applies with --distribute only")
    checks.positive("--connect-timeout", args.connect_timeout)


def _start_engine(args, train_config):
    """The data-parallel plan of `--distribute` (``None`` without it), after
    joining the multi-process job that Keras' variables describe, if any:
    before anything uses a device."""
    if not train_config.distribute:
        return None
    from keras_densenet.training import distribute

    job = cluster.job_from_environment()
    if args.cpu_devices is not None and os.environ["KERAS_BACKEND"] != "jax":
        raise ValueError(f"--cpu-devices applies to the jax backend only, not {os.environ['KERAS_BACKEND']}")
    if job is not None:
        distribute.initialize_job(job, args.connect_timeout, args.cpu_devices)
    else:
        distribute.set_cpu_devices(args.cpu_devices)
    plan = distribute.data_parallel(sync_bn=train_config.sync_bn)
    print(plan.describe(train_config.batch_size, train_config.lr, train_config.lr_scaling), flush=True)
    return plan


def _train_or_stop(train_config, plan):
    """`train`; a process that lost another process of its job stops at once
    with one line (JAX's exit handler would wait for the lost process)."""
    from keras_densenet.training import distribute
    from keras_densenet.training.train import train

    try:
        return train(train_config, distribution=plan)
    except Exception as e:  # noqa: BLE001 -- JAX raises its runtime errors as several types
        message = distribute.lost_process_message(e, plan)
        if message is None:
            raise
        print(flush=True)  # end the progress bar's line
        print(f"keras-densenet train: error: {message}", file=sys.stderr, flush=True)
        os._exit(1)


def _run_train(args) -> int:
    import time
    import warnings

    started = time.perf_counter()
    # keras, its backend and the package's modules: on a short run, a
    # large part of the time.
    from keras_densenet.training.train import format_timings

    imported = time.perf_counter()
    train_config = _train_config(args)
    plan = _start_engine(args, train_config)  # data parallelism (training.distribute)
    default_show = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        # Our own data warnings (corrupt files) as one plain line, at once.
        if issubclass(category, DataWarning):
            print(f"keras-densenet train: warning: {message}", file=sys.stderr)
        else:
            default_show(message, category, filename, lineno, file, line)

    compile_cache.enable()  # JAX: reuse compiled steps across runs
    with warnings.catch_warnings():
        warnings.simplefilter("always", DataWarning)
        warnings.showwarning = show
        result = _train_or_stop(train_config, plan)
    finished = time.perf_counter()
    # Corrupt files were reported once, by the warning, as they were found.
    print(f"best validation accuracy: {result.best_val_accuracy:.4f}")
    if result.process_id == 0:
        print(f"saved: {', '.join(result.files())}")
    else:
        print(f"process {result.process_id} of {result.num_processes}: done (process 0 wrote the outputs)")
    timings = dict(result.timings, imports=imported - started, total=finished - started)
    # What ran here between the imports and `train` (the distribution plan,
    # the compile cache) is setup too: the phases still add up to the total.
    timings["setup"] += (finished - imported) - result.timings["total"]
    print(format_timings(timings, result.epochs_run))
    return 0


# --- predict ---------------------------------------------------------------


def _add_predict(sub) -> None:
    p = sub.add_parser(
        "predict",
        help="top-k classes of images",
        description="Classify images with a trained model (.keras, or an artifact written by export) "
                    "or a pretrained variant.",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--model", dest="model_path", metavar="MODEL",
                   help="a model written by `train` (.keras) or `export` (.tflite, .xml, .onnx, .pt2, "
                        "a SavedModel directory)")
    p.add_argument("--class-names", metavar="JSON",
                   help="with --model: its class names (default: the class_names.json beside it)")
    p.add_argument("--arch", metavar="VARIANT", help=f"a registered variant, with --weights: {_VARIANTS}")
    p.add_argument("--weights", default=None, metavar="NAME|PATH",
                   help="with --arch: imagenet (default) or a weights file")
    p.add_argument("--top", type=int, default=deploy.DEFAULT_TOP, help="classes per image (default %(default)s)")
    p.add_argument("--masks", metavar="DIR", default=None,
                   help="with a segmentation --model (from `segment`): write a mask PNG per image to DIR")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow a .pt2 --model: torch.export.load unpickles it, which can run code; only for "
                        "files you made")
    p.set_defaults(func=_run_predict, check=_check_predict)


def _predict_arguments(args) -> dict:
    weights = args.weights
    if args.arch is not None and weights is None:
        weights = "imagenet"
    return dict(model_path=args.model_path, arch=args.arch, weights=weights, top=args.top,
                class_names=args.class_names, trust_pickle=args.trust_pickle)


def _check_predict(args) -> None:
    extras.require("train", "keras-densenet predict")  # reading image files
    deploy.check_predict(args.images, **_predict_arguments(args))
    if args.masks is not None and (args.model_path is None or not args.model_path.endswith(".keras")):
        raise ValueError("--masks goes with a segmentation --model, a .keras file written by `segment`")


def _run_predict(args) -> int:
    if args.masks is not None:
        from keras_densenet.deployment import masks

        for path, (mask, shares) in zip(args.images, masks.predict_masks(args.images, args.model_path, args.masks)):
            top = sorted(shares.items(), key=lambda kv: -kv[1])[: args.top]
            print(f"{path} -> {mask}: " + ", ".join(f"{name} {share:.1%}" for name, share in top))
        return 0
    results = deploy.predict(args.images, **_predict_arguments(args))
    for path, rows in zip(args.images, results):
        print(path)
        for _, name, score in rows:
            print(f"  {score:7.2%}  {name}")
    return 0


# --- segment ---------------------------------------------------------------

_SEGMENT = {f.name: f.default for f in dataclasses.fields(config.SegmentConfig)}


def _add_segment(sub) -> None:
    p = sub.add_parser(
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
    p.add_argument("--output", default=_SEGMENT["output"], metavar="DIR", help="output directory (default: ./%(default)s)")
    p.set_defaults(func=_run_segment, check=_check_segment)


def _segment_config(args):
    segment_config = config.SegmentConfig(**{k: v for k, v in vars(args).items() if k in _SEGMENT})
    config.validate_segment(segment_config)
    return segment_config


def _check_segment(args) -> None:
    extras.require("train", "keras-densenet segment")
    _segment_config(args)


def _run_segment(args) -> int:
    import time

    started = time.perf_counter()
    from keras_densenet.training import segment
    from keras_densenet.training.train import format_timings

    imported = time.perf_counter()
    compile_cache.enable()
    result = segment.train_segmentation(_segment_config(args))
    print(f"best validation mean IoU: {result.best_mean_iou:.4f} (pixel accuracy {result.best_pixel_accuracy:.4f})")
    print(f"saved: {result.model_path}, {result.masks_path}")
    timings = dict(result.timings, imports=imported - started, total=time.perf_counter() - started)
    timings["setup"] += timings["total"] - timings["imports"] - result.timings["total"]
    print(format_timings(timings, result.epochs_run))
    return 0


# --- export ----------------------------------------------------------------


def _add_export(sub) -> None:
    p = sub.add_parser(
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
    p.set_defaults(func=_run_export, check=_check_export)


def _check_export(args) -> None:
    export_lib.check_export(args.model_path, args.fmt, args.out, args.quantize)
    if args.quantize is None and args.data is not None:
        raise ValueError("--data goes with --quantize (calibration and the accuracy check)")


def _run_export(args) -> int:
    report = export_lib.export(
        args.model_path, args.fmt, args.out, quantize=args.quantize, data=args.data, seed=args.seed,
        validation_split=args.validation_split, samples=args.calibration_samples, max_drop=args.max_drop,
    )
    print("\n".join(report.lines()))
    return 0


# --- table -----------------------------------------------------------------


def _add_table(sub) -> None:
    p = sub.add_parser(
        "table",
        help="the registered variants and ResNets: depth, parameters, MACs, memory, connections",
        description="Every registered variant plus keras.applications' ResNet-50/101/152, "
        "with facts counted from the built graphs (keras_densenet.tools.analysis): depth, "
        "parameters, multiply-accumulates, training activation memory per image "
        "(standard and memory-efficient), direct connections and channels per dense block.",
    )
    p.add_argument("--format", default="text", choices=("text", "json", "markdown"),
                   help="text (default), json (one object per model) or markdown")
    p.add_argument("--models", metavar="A,B", help="comma-separated subset (default: all)")
    p.set_defaults(func=_run_table)


def _run_table(args) -> int:
    from keras_densenet.tools import analysis

    rows = analysis.table(_csv(args.models) if args.models else None)
    print(analysis.format_table(rows, args.format))
    if args.format != "json":  # keep the JSON parseable
        import keras

        print(f"keras {keras.__version__}, backend: {keras.backend.backend()}")
    return 0


_SUBCOMMANDS = [_add_train, _add_segment, _add_predict, _add_export, _add_table]


# --- bench -----------------------------------------------------------------


def _csv(text: str) -> list:
    return [t.strip() for t in text.split(",") if t.strip()]


def _add_bench(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="memory-efficient vs standard: activation memory, step time, peak RSS; "
        "throughput against keras.applications and native PyTorch; the trainer's step time; "
        "CPU inference by runtime",
    )
    d = bench.BenchOptions()  # the bench options' defaults
    p.add_argument("--measure", default=",".join(bench.DEFAULT_MEASURES),
                   help=f"comma-separated: {', '.join(bench.MEASURES)} (default: %(default)s)")
    p.add_argument("--variants", default=",".join(d.variants),
                   help="variants for the activation and build-time tables (default: %(default)s)")
    p.add_argument("--image-size", type=int, default=d.image_size, help="input side for activations (%(default)s)")
    p.add_argument("--backends", default=",".join(d.backends), help="backends for step time (%(default)s)")
    p.add_argument("--time-variant", default=d.time_variant,
                   help="variant for step time and peak RSS (%(default)s)")
    p.add_argument("--time-size", type=int, default=d.time_size, help="input side for step time / RSS (%(default)s)")
    p.add_argument("--time-batch", type=int, default=d.time_batch, help="batch for step time (%(default)s)")
    p.add_argument("--rss-batch", type=int, default=d.rss_batch, help="batch for peak RSS (%(default)s)")
    p.add_argument("--steps", type=int, default=d.steps, help="timed steps / fit steps (%(default)s)")
    # --measure throughput (keras_densenet.benchmarks.throughput)
    p.add_argument("--throughput-variant", default=d.throughput_variant,
                   help="variant for throughput (%(default)s)")
    p.add_argument("--throughput-size", type=int, default=d.throughput_size,
                   help="input side for throughput (%(default)s)")
    p.add_argument("--throughput-batch", type=int, default=d.throughput_batch,
                   help="batch for throughput (%(default)s)")
    p.add_argument("--rounds", type=int, default=d.rounds,
                   help="alternating timed rounds for throughput and runtimes (%(default)s)")
    p.add_argument("--iters", type=int, default=d.iters,
                   help="calls per candidate per round, throughput and runtimes (%(default)s)")
    p.add_argument("--precision", default=d.precision,
                   help=f"Keras dtype policy for throughput: {', '.join(bench.PRECISIONS)} (%(default)s)")
    p.add_argument("--json", dest="json_path", metavar="FILE",
                   help="also write all results as JSON to FILE ('-': stdout)")
    # --measure build
    p.add_argument("--repeats", type=int, default=d.repeats,
                   help="fresh-process builds per model for build time (%(default)s)")
    # --measure step: the model `keras-densenet train` fits by default
    p.add_argument("--step-sizes", default=",".join(map(str, d.step_sizes)),
                   help=f"comma-separated input sides for the trainer's step time, >= {MIN_IMAGE_SIZE} "
                   "(default: the trainer's default, %(default)s)")
    p.add_argument("--step-count", type=int, default=d.step_count,
                   help="timed train_on_batch steps for the trainer's step time, median (%(default)s)")
    p.add_argument("--onednn", default=",".join(d.onednn),
                   help=f"TensorFlow rows of the trainer's step time, comma-separated: {', '.join(bench.ONEDNN)} "
                   "(TF_ENABLE_ONEDNN_OPTS=1/0 or unset; default: %(default)s)")
    # --measure runtimes (keras_densenet.benchmarks.runtime_bench)
    p.add_argument("--runtimes-variant", default=d.runtimes_variant,
                   help="variant for CPU inference by runtime (%(default)s)")
    p.add_argument("--runtimes-size", type=int, default=d.runtimes_size,
                   help="input side for runtimes (%(default)s)")
    p.add_argument("--runtimes-batch", type=int, default=d.runtimes_batch, help="batch for runtimes (%(default)s)")
    p.add_argument("--runtimes-threads", type=int, default=d.runtimes_threads,
                   help="threads of every runtime (default: the CPU count)")
    p.add_argument("--runtimes-candidates", default=",".join(d.runtimes_candidates),
                   help="comma-separated runtimes to time; Keras ones only for --backends (default: %(default)s)")
    p.add_argument("--runtimes-dir", metavar="DIR", default=d.runtimes_dir,
                   help="keep the .keras file and artifacts in DIR and reuse them next time (default: a temporary "
                   "directory)")
    p.set_defaults(func=_run_bench)


def _run_bench(args) -> int:
    fields = {f.name for f in dataclasses.fields(bench.BenchOptions)}
    options = {k: v for k, v in vars(args).items() if k in fields}
    for name in ("backends", "variants", "onednn", "runtimes_candidates"):
        options[name] = _csv(options[name])
    # Integers become ints; anything else goes on as text, for BenchOptions
    # to reject by name.
    options["step_sizes"] = [int(s) if re.fullmatch(r"[+-]?\d+", s) else s for s in _csv(options["step_sizes"])]
    bench.run(_csv(args.measure), bench.BenchOptions(**options), json_path=args.json_path)
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
    p.add_argument("--arch", metavar="VARIANT",
                   help=f"architecture: {_VARIANTS} (default: detected from the tensor shapes)")
    p.set_defaults(func=_run_convert, check=_check_convert)


def _check_convert(args) -> None:
    if args.arch is not None:
        registry.get_variant(args.arch)  # lists the variants when unknown


def _run_convert(args) -> int:
    from keras_densenet.tools.convert import convert_checkpoint

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
    p.set_defaults(func=_run_reuse, check=_check_reuse)


def _check_reuse(args) -> None:
    extras.require("train", "keras-densenet reuse")  # the heatmap


def _run_reuse(args) -> int:
    from keras_densenet.tools import analysis

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


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that remembers how its options are spelled, so that
    library errors, which name function arguments (`` `model_path` ``), reach
    the user in the CLI's words (``--model``)."""

    def __init__(self, *args, **kwargs):
        self.spelling: dict = {}  # before super(), which adds --help
        super().__init__(*args, **kwargs)

    def add_argument(self, *args, **kwargs):
        action = super().add_argument(*args, **kwargs)
        if action.option_strings:
            self.spelling[action.dest] = action.option_strings[-1]
        elif isinstance(action.metavar, str):
            self.spelling[action.dest] = action.metavar
        return action

    def in_cli_words(self, message: str) -> str:
        """`message` with every known argument name as the CLI spells it."""
        def spell(match):
            return match[0].replace(match[1], self.spelling.get(match[1], match[1]))

        message = re.sub(r"`(\w+)`", spell, message)
        return re.sub(r"Received: (\w+)=", spell, message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="keras-densenet",
        description="DenseNet for Keras 3: train, segment, predict, convert, export, table, bench, reuse.",
    )
    _backend_option(parser, None)
    # Also accepted after the subcommand; there it must not reset a value
    # given before it, hence SUPPRESS.
    common = argparse.ArgumentParser(add_help=False)
    _backend_option(common, argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    add_parser = sub.add_parser

    def add_with_common(*args, **kwargs):
        kwargs["parents"] = [*kwargs.get("parents", ()), common]
        return add_parser(*args, **kwargs)

    sub.add_parser = add_with_common
    for add in _SUBCOMMANDS:
        add(sub)
    parser.subcommands = dict(sub.choices)
    return parser


def _keras_backend_mismatch() -> Optional[str]:
    """The backend keras was imported with, if it differs from $KERAS_BACKEND."""
    keras = sys.modules.get("keras")
    wanted = os.environ.get("KERAS_BACKEND")
    if keras is None or wanted is None:
        return None  # keras not imported yet: it will read $KERAS_BACKEND
    current = keras.backend.backend()
    return current if current != wanted else None


def _error(command: str, error: BaseException, parser: Optional[_Parser] = None) -> int:
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if parser is not None:
        message = parser.in_cli_words(message)
    print(f"keras-densenet {command}: error: {message}", file=sys.stderr)
    return 2


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the CLI; returns the exit code (0 ok, 2 bad input, 1 an exported artifact that failed its check)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)  # argparse exits 2 on bad usage
    subparser = parser.subcommands[args.command]
    try:
        # Everything here runs before keras is imported: bad arguments are
        # answered at once, and the backend is still free to choose.
        if getattr(args, "check", None) is not None:
            args.check(args)
        backend, note = backends.choose(args.backend)
    except (ValueError, extras.MissingExtraError) as e:
        return _error(args.command, e, subparser)
    os.environ["KERAS_BACKEND"] = backend
    if backend == "tensorflow" and "tensorflow" not in sys.modules:
        onednn_note = backends.enable_onednn()
        if onednn_note is not None:
            print(f"keras-densenet: {onednn_note}", file=sys.stderr)
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
    except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError,
            extras.MissingExtraError) as e:
        return _error(args.command, e, subparser)
    except export_lib.ExportCheckError as e:  # the input was fine; the artifact was not
        _error(args.command, e)
        return 1
    except KeyboardInterrupt:
        print(f"keras-densenet {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
