"""The ``keras-densenet bench`` sub-commands: one per measure of
`keras_densenet.benchmarks.bench`, each with the options of the
`BenchOptions` fields it reads, without the measure's prefix.

Example::

    keras-densenet bench runtimes --variant densenet121 --size 224
    keras-densenet bench step --sizes 32,16 --onednn default,on
    keras-densenet bench throughput --backends jax,torch --json tp.json
    keras-densenet --backend jax bench volume --photos 24,120 --images 500
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from keras_densenet.benchmarks import bench as bench_lib
from keras_densenet.cli import common
from keras_densenet.core import checks
from keras_densenet.data.datasets import MIN_IMAGE_SIZE

#: The `BenchOptions` fields given as comma-separated text.
LIST_FIELDS = ("backends", "variants", "step_sizes", "onednn", "runtimes_candidates")

_BACKENDS = ("--backends", "backends", f"comma-separated, a row each: {', '.join(bench_lib.BACKENDS)}")
_ROUNDS = ("--rounds", "rounds", "alternating timed rounds")
_ITERS = ("--iters", "iters", "calls per candidate per round")

#: Each measure's help line and options: ``(flag, BenchOptions field, help)``.
MEASURE_OPTIONS = {
    "activations": (
        "activation memory saved for the backward pass per image, standard vs memory-efficient (JAX residuals)",
        [("--variants", "variants", "comma-separated registered variants"), ("--size", "image_size", "input side")],
    ),
    "time": (
        "training step time, standard vs memory-efficient, per backend",
        [_BACKENDS, ("--variant", "time_variant", "registered variant"), ("--size", "time_size", "input side"),
         ("--batch", "time_batch", "batch size"), ("--steps", "steps", "timed steps (median)")],
    ),
    "rss": (
        "peak resident memory of a process running model.fit, standard vs memory-efficient",
        [("--fit-backend", "rss_backend", "backend of the fitting process"),
         ("--variant", "time_variant", "registered variant"), ("--size", "time_size", "input side"),
         ("--batch", "rss_batch", "batch size"), ("--steps", "steps", "fit steps")],
    ),
    "throughput": (
        "inference and training images/s against keras.applications and native PyTorch",
        [_BACKENDS, ("--variant", "throughput_variant", "registered variant"),
         ("--size", "throughput_size", "input side"), ("--batch", "throughput_batch", "batch size"), _ROUNDS, _ITERS,
         ("--precision", "precision", f"Keras dtype policy: {', '.join(bench_lib.PRECISIONS)}")],
    ),
    "build": (
        "seconds to build each variant, ours alternating with keras.applications', each in a fresh process",
        [_BACKENDS, ("--variants", "variants", "comma-separated registered variants"),
         ("--repeats", "repeats", "fresh-process builds per model (median)")],
    ),
    "step": (
        "the trainer's training step time (keras-densenet train's default model), per backend and size",
        [_BACKENDS, ("--sizes", "step_sizes", f"comma-separated input sides, >= {MIN_IMAGE_SIZE}"),
         ("--steps", "step_count", "timed train_on_batch steps (median)"),
         ("--onednn", "onednn", f"TensorFlow rows, comma-separated: {', '.join(bench_lib.ONEDNN)} "
          "(TF_ENABLE_ONEDNN_OPTS=1/0 or unset)")],
    ),
    "runtimes": (
        "CPU inference images/s by serving runtime (Keras per backend, LiteRT, OpenVINO, ONNX Runtime, "
        "torch.export, native PyTorch)",
        [("--backends", "backends", "comma-separated backends of the Keras rows"),
         ("--variant", "runtimes_variant", "registered variant"), ("--size", "runtimes_size", "input side"),
         ("--batch", "runtimes_batch", "batch size"), ("--threads", "runtimes_threads", "threads of every runtime"),
         ("--candidates", "runtimes_candidates", "comma-separated runtimes to time"),
         ("--dir", "runtimes_dir", "keep the .keras file and artifacts here and reuse them next time"),
         _ROUNDS, _ITERS],
    ),
}

#: What a default of ``None`` means, by field.
_NONE_MEANS = {"runtimes_threads": "the CPU count", "runtimes_dir": "a temporary directory"}
_INTEGER_FIELDS = {"image_size", "time_size", "time_batch", "steps", "rss_batch", "throughput_size",
                   "throughput_batch", "rounds", "iters", "repeats", "step_count", "runtimes_size", "runtimes_batch",
                   "runtimes_threads"}


def _default(field: str) -> str:
    value = getattr(bench_lib.BenchOptions(), field)
    if value is None:
        return _NONE_MEANS[field]
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def add_parsers(sub) -> None:
    """Adds a sub-command per measure to the sub-parsers `sub` of ``bench``.

    Their options default to nothing (``SUPPRESS``): what they leave out
    keeps the ``bench`` parser's value, the `BenchOptions` default.
    """
    for name in bench_lib.MEASURES:
        about, options = MEASURE_OPTIONS[name]
        p = common.command_parser(sub, name, help=about, description=f"{about[0].upper()}{about[1:]}.",
                                  argument_default=argparse.SUPPRESS)
        for flag, field, text in options:
            kind = int if field in _INTEGER_FIELDS else str
            if field == "rss_backend":
                shape = {"choices": bench_lib.BACKENDS}
            else:
                shape = {"metavar": "A,B" if field in LIST_FIELDS else flag[2:].upper()}
            p.add_argument(flag, dest=field, type=kind, help=f"{text} (default: {_default(field)})", **shape)
        p.add_argument("--json", dest="json_path", metavar="FILE",
                       help="also write the results as JSON to FILE ('-': stdout)")


#: ``bench volume``'s help line.
VOLUME_ABOUT = ("predict at volume, on JPEGs it makes: peak RSS over few and many 12-megapixel photos, "
                "images/s of predict --output against model.predict on decoded arrays")


def _pair(text: str) -> tuple:
    """``"4000x3000"`` -> ``(4000, 3000)`` (width, height)."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 4000x3000; got {text!r}")
    return int(parts[0]), int(parts[1])


def add_volume_parser(sub) -> None:
    """Adds ``bench volume`` (`keras_densenet.benchmarks.volume`) to the
    sub-parsers `sub` of ``bench``, with its own check and run."""
    p = common.command_parser(sub, "volume", help=VOLUME_ABOUT, description=f"{VOLUME_ABOUT[0].upper()}"
                              f"{VOLUME_ABOUT[1:]}. Each measure runs in a fresh process on --backend.")
    p.add_argument("--photos", default="24,120", metavar="A,B",
                   help="photo counts of the peak-RSS runs (default %(default)s; empty: none)")
    p.add_argument("--photo-size", type=_pair, default=(4000, 3000), metavar="WxH", help="default 4000x3000")
    p.add_argument("--images", type=int, default=500, help="JPEGs of the images/s run (default %(default)s; 0: none)")
    p.add_argument("--image-shape", type=_pair, default=(1024, 768), metavar="WxH", help="default 1024x768")
    p.add_argument("--arch", default="densenet121", metavar="VARIANT", help="random weights (default %(default)s)")
    p.add_argument("--size", dest="image_size", type=int, default=224, help="input side (default %(default)s)")
    p.add_argument("--batch", dest="batch_size", type=int, default=32, help="images/s batch (default %(default)s)")
    p.add_argument("--rss-batch", dest="rss_batch_size", type=int, default=8,
                   help="peak-RSS batch (default %(default)s)")
    p.add_argument("--workers", type=int, help="decoding threads (default: the pipeline's)")
    p.add_argument("--rounds", type=int, default=2, help="alternating timed rounds (default %(default)s)")
    p.add_argument("--compare", action="store_true", help="also time the other feeders (PyDataset, 1 and 4 "
                   "threads, no read-ahead)")
    p.add_argument("--reference", action="store_true",
                   help="also the peak RSS of reading every photo at full size first")
    p.add_argument("--dir", dest="directory", metavar="DIR", help="keep the JPEGs here and reuse them")
    p.add_argument("--json", dest="json_path", metavar="FILE", help="also write the results as JSON to FILE")
    p.set_defaults(func=run_volume, check=check_volume)


def _volume_kwargs(args) -> dict:
    names = ("photo_size", "images", "image_shape", "arch", "image_size", "batch_size", "rss_batch_size",
             "workers", "rounds", "compare", "reference", "directory")
    return dict({n: getattr(args, n) for n in names}, photos=[int(p) for p in common.csv(args.photos)])


def check_volume(args) -> None:
    """Answers bad ``bench volume`` options before keras is imported."""
    from keras_densenet.core import registry

    for photos in common.csv(args.photos):
        checks.integer("photos", int(photos) if photos.isdigit() else photos)
    for name in ("images", "image_size", "batch_size", "rss_batch_size", "rounds", "workers"):
        if getattr(args, name) is not None:
            checks.integer(name, getattr(args, name), minimum=0 if name == "images" else 1)
    registry.get_variant(args.arch)


def run_volume(args) -> int:
    """Runs `keras_densenet.benchmarks.volume.run_volume` on the chosen backend; prints its table."""
    from keras_densenet.benchmarks import volume

    result = volume.run_volume(os.environ.get("KERAS_BACKEND", "jax"), **_volume_kwargs(args))
    if args.json_path:
        text = json.dumps(result, indent=2, default=str)
        if args.json_path == "-":
            print(text)
        else:
            from keras_densenet.core.files import atomic_path

            with atomic_path(args.json_path) as tmp, open(tmp, "w") as f:
                f.write(text)
    sys.stdout.flush()
    return 0
