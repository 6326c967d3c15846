"""``keras-densenet train``: train a DenseNet from scratch, or fine-tune
pretrained weights (default: the digits quick start).

Example::

    keras-densenet train --epochs 3
    keras-densenet train --data photos/ --arch densenet121 --weights imagenet
    keras-densenet train --data photos/ --skip-unreadable
"""

from __future__ import annotations

import argparse
import dataclasses

from keras_densenet.cli import common
from keras_densenet.core import checks, cluster, extras, registry
from keras_densenet.data.datasets import MIN_IMAGE_SIZE
from keras_densenet.data.images import UnreadableImageError
from keras_densenet.training import addresses, compile_cache, config

#: Every `TrainConfig` default, by option name: the train options' defaults.
_TRAIN = {f.name: f.default for f in dataclasses.fields(config.TrainConfig)}

_EPILOG = """\
defaults: a DenseNet-BC (depth {depth}, k={growth_rate}, {params:,} parameters) trained from scratch
on scikit-learn's bundled handwritten digits (1797 real 8x8 scans, upsampled
to {image_size}x{image_size}, stratified 80/20 split), {epochs} epochs of AdamW with cosine decay
from {lr:g}, random shifts of up to image-size/16 pixels (none below 16x16).
--bn-momentum defaults to {bn_momentum}, not Keras' 0.99: with 0.99 the BatchNormalization
moving statistics average over ~100 steps, longer than the whole run's first
epochs (45 steps each), so validation (which uses them) sees statistics of an
untrained network (17% measured vs 99% training accuracy).

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


def add_parser(sub) -> None:
    """Adds ``train`` to the sub-parsers `sub`."""
    p = common.command_parser(
        sub,
        "train",
        help="train or fine-tune a DenseNet (default: the embedded digits)",
        description="Train a DenseNet from scratch, or fine-tune pretrained weights.",
        epilog=_EPILOG.format(
            params=registry.ArchConfig.bc(_TRAIN["depth"], _TRAIN["growth_rate"]).param_count(10, in_channels=1),
            **{k: _TRAIN[k] for k in ("depth", "growth_rate", "bn_momentum", "image_size", "epochs", "lr")},
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", metavar="DIR", help="image folder, one sub-folder per class "
                   "(default: the embedded handwritten digits)")
    p.add_argument("--arch", metavar="VARIANT",
                   help=f"registered variant: {common.VARIANTS}; default: a DenseNet-BC of --depth and --growth-rate")
    p.add_argument("--depth", type=int, default=_TRAIN["depth"], help="DenseNet-BC depth 6n+4 (default %(default)s)")
    p.add_argument("--growth-rate", type=int, default=_TRAIN["growth_rate"], help="DenseNet-BC k (default %(default)s)")
    common.add_weights_option(p, None, "fine-tune from pretrained weights: a weight-set name of --arch "
                              "(e.g. imagenet) or a backbone weights file; first the new head alone, then "
                              "everything at lr/10")
    p.add_argument("--epochs", type=int, default=_TRAIN["epochs"], help="epochs (default %(default)s)")
    p.add_argument("--head-epochs", type=int, help="fine-tuning: epochs with the backbone "
                   "frozen (default: a third of --epochs)")
    p.add_argument("--batch-size", type=int, default=_TRAIN["batch_size"], help="batch size (default %(default)s)")
    p.add_argument("--image-size", type=int,
                   help=f"input side in pixels, >= {MIN_IMAGE_SIZE} (default: {_TRAIN['image_size']} for the "
                        "digits; with --data, the architecture's own: 224 for the ImageNet variants, 32 for "
                        "DenseNet-BC)")
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
    p.add_argument("--skip-unreadable", action="store_true",
                   help="with --data: leave out image files that cannot be read, each named on stderr "
                        "(default: stop before the first epoch, naming the file)")
    # Data parallelism (keras_densenet.training.launch and .distribute):
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
    p.add_argument("--gloo-address", metavar="ADDR|IFACE",
                   help="several processes on CPUs: this host's address, or its network interface, where gloo's "
                        "collectives listen; every other process must reach it (default: "
                        "$KERAS_DENSENET_GLOO_ADDRESS, else the address of the route to the coordinator)")
    p.set_defaults(func=run, check=check)


def default_image_size(args) -> int:
    """``--image-size`` when not given: the digits' size, or with ``--data``
    the architecture's own (``--arch``'s default size, else DenseNet-BC's)."""
    if args.data is None:
        return _TRAIN["image_size"]
    if args.arch is not None:
        return registry.get_variant(args.arch).arch.default_size  # lists the variants when unknown
    registry.check_bc_depth(args.depth)
    return registry.ArchConfig.bc(args.depth, args.growth_rate).default_size


def train_config(args) -> config.TrainConfig:
    """The checked `TrainConfig` of `args` (the options' dests are its field names)."""
    values = {k: v for k, v in vars(args).items() if k in _TRAIN}
    if values["image_size"] is None:
        values["image_size"] = default_image_size(args)
    result = config.TrainConfig(**values)
    config.validate(result)
    return result


def check(args) -> None:
    """Answers bad options before keras is imported (ValueError)."""
    extras.require("train", "keras-densenet train")
    cfg = train_config(args)
    job = cluster.job_from_environment()
    if job is not None and not cfg.distribute:
        raise ValueError(
            f"{cluster.NUM_PROCESSES}={job.num_processes} is set: add --distribute to train as "
            f"{job.describe()}, or unset the KERAS_DISTRIBUTION_* variables to train alone"
        )
    if args.cpu_devices is not None:
        checks.integer("--cpu-devices", args.cpu_devices)
        if not cfg.distribute:
            raise ValueError("--cpu-devices applies with --distribute only")
    checks.positive("--connect-timeout", args.connect_timeout)
    if args.skip_unreadable and args.data is None:
        raise ValueError("--skip-unreadable applies with --data only")
    if args.gloo_address is not None and not cfg.distribute:
        raise ValueError("--gloo-address applies with --distribute only")
    if job is not None and cfg.distribute:  # --gloo-address, else $KERAS_DENSENET_GLOO_ADDRESS: of this host
        addresses.gloo_endpoint(job.coordinator, args.gloo_address, name="--gloo-address")


def run(args) -> int:
    """Trains; prints the best accuracy, the files written and where the time went."""
    from keras_densenet.training import launch, report

    clock = report.RunClock()
    # keras, its backend and the trainer: on a short run, a large part of the time.
    from keras_densenet.training.train import train

    clock.imports_done()
    cfg = train_config(args)
    plan = launch.start_data_parallel(cfg, args.cpu_devices, args.connect_timeout, args.gloo_address)
    if plan is not None:
        print(plan.describe(cfg.batch_size, cfg.lr, cfg.lr_scaling), flush=True)
    compile_cache.enable()  # JAX: reuse compiled steps across runs
    prog = args.cli_parser.prog
    on_error = "skip" if args.skip_unreadable else "raise"
    with report.data_warnings_as_lines(prog), launch.stop_on_lost_process(plan, prog):
        try:
            result = train(cfg, distribution=plan, on_error=on_error)
        except UnreadableImageError as e:
            raise ValueError(f"{e} (--skip-unreadable leaves such files out)") from None
    clock.run_done()
    # Skipped files were reported as they were found: one line each, then the count.
    print(f"best validation accuracy: {result.best_val_accuracy:.4f}")
    if result.process_id == 0:
        print(f"saved: {', '.join(result.files())}")
    else:
        print(f"process {result.process_id} of {result.num_processes}: done (process 0 wrote the outputs)")
    print(clock.summary(result.timings, result.epochs_run))
    return 0
