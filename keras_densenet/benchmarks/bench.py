"""Benchmark of memory-efficient training: memory saved and time it costs;
build time, throughput and the trainer's training-step time.

The measures (the first three: standard vs ``memory_efficient=True``):

* ``activations``: bytes saved for the backward pass per image, one training
  step, measured deterministically on the JAX backend from the residuals of
  the loss's VJP (`internals.saved_residuals`, the function
  behind `jax.ad_checkpoint.print_saved_residuals`). Tracing is abstract, so
  224x224 DenseNet-264 needs no memory. Residuals that are the function's
  arguments (weights, the input batch) are not activations and are left out;
  "per image" is the difference between batch 2 and batch 1.
* ``time``: seconds per ``train_on_batch`` step on each backend.
* ``rss``: peak resident memory (``ru_maxrss``) of a process that runs
  ``model.fit``, by default on the torch backend.
* ``build``: seconds to build each of `variants` (``weights=None``, the
  builder call only, imports excluded), each build in a fresh process,
  alternating with keras.applications' builder where it has the variant;
  median of `repeats`.
* ``throughput``: inference and training images/s of this package's model
  against keras.applications' DenseNet and a native PyTorch DenseNet, in
  alternating rounds in one process per backend, with peak training memory
  where the backend reports it (`keras_densenet.benchmarks.throughput`).
* ``step``: milliseconds per ``train_on_batch`` step of the model
  ``keras-densenet train`` fits by default (`training.train.build_classifier`
  on the `TrainConfig` defaults: DenseNet-BC depth 22, k=12, batch 32, AdamW),
  median of `step_count` steps after warm-up, at each of `step_sizes`, in a
  fresh process per backend and size; on TensorFlow optionally with oneDNN
  forced on or off (``TF_ENABLE_ONEDNN_OPTS`` in the child's environment).
* ``runtimes``: CPU inference images/s of one variant through Keras'
  ``predict_on_batch`` on each backend, its LiteRT, OpenVINO (float32 and
  int8), ONNX Runtime and ``torch.export`` artifacts, and native PyTorch
  eager, each candidate in a fresh process per alternating round
  (`keras_densenet.benchmarks.runtime_bench`).

What each measure runs on is a `BenchOptions`; `MEASURE_FIELDS` says which
of its fields each measure reads.

Each measurement runs in a fresh subprocess
(`keras_densenet.benchmarks.bench_worker`), since the Keras backend is fixed
at import and peak RSS is per process.

Example::

    keras-densenet bench activations
    keras-densenet bench time --backends tensorflow,jax,torch
    keras-densenet bench throughput --backends jax,torch --json tp.json
    keras-densenet bench step --sizes 32,16 --onednn default,on
    keras-densenet bench runtimes --candidates onnx,openvino,native_torch
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Optional, Sequence, Tuple, Union

from keras_densenet.benchmarks import bench_tables, runtime_bench
from keras_densenet.benchmarks.bench_tables import print_throughput
from keras_densenet.benchmarks.bench_worker import (
    DIGITS_CHANNELS,
    DIGITS_CLASSES,
    ONEDNN,
    STEP_WARMUP,
    TRAIN_DEFAULTS,
    activations_per_image,
    build_seconds,
    peak_rss,
    residual_bytes,
    step_time,
    train_step_ms,
)
from keras_densenet.core import backends as backends_lib
from keras_densenet.core import checks, registry
from keras_densenet.core.files import atomic_write
from keras_densenet.data import datasets as data_lib
from keras_densenet.training import config

__all__ = [
    "BACKENDS", "DEFAULT_MEASURES", "DIGITS_CHANNELS", "DIGITS_CLASSES", "MEASURES", "MEASURE_FIELDS", "ONEDNN",
    "PRECISIONS", "STEP_WARMUP", "TRAIN_DEFAULTS", "BenchOptions", "activations_per_image", "build_seconds",
    "measures", "peak_rss", "print_throughput", "residual_bytes", "run", "step_time", "train_step_ms",
    "write_json",
]

MEASURES = ("activations", "time", "rss", "throughput", "build", "step", "runtimes")
#: What runs when no measure is named (throughput is long: ask for it).
DEFAULT_MEASURES = ("activations", "time", "rss")
BACKENDS = backends_lib.BACKENDS
#: Keras dtype policies the throughput benchmark takes.
PRECISIONS = config.DTYPE_POLICIES
#: The `BenchOptions` fields each measure reads (the others it ignores).
MEASURE_FIELDS = {
    "activations": ("variants", "image_size"),
    "time": ("backends", "time_variant", "time_size", "time_batch", "steps"),
    "rss": ("rss_backend", "time_variant", "time_size", "rss_batch", "steps"),
    "throughput": ("backends", "throughput_variant", "throughput_size", "throughput_batch", "rounds", "iters",
                   "precision"),
    "build": ("backends", "variants", "repeats"),
    "step": ("backends", "step_sizes", "step_count", "onednn"),
    "runtimes": ("backends", "runtimes_variant", "runtimes_size", "runtimes_batch", "runtimes_threads",
                 "runtimes_candidates", "runtimes_dir", "rounds", "iters"),
}


def _items(value) -> tuple:
    """A sequence option as a tuple; a lone string is one item."""
    return (value,) if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__") else tuple(value)


@dataclasses.dataclass(frozen=True)
class BenchOptions:
    """What each measure runs on; `MEASURE_FIELDS` says which fields each
    measure reads. Each field is an option of its measure's sub-command,
    without the measure's prefix (``runtimes_size``: ``keras-densenet bench
    runtimes --size``).

    Checked when made: a bad value raises a ValueError naming the field.

    Attributes:
        backends: backends of the time, build, throughput and step tables.
        variants: registered variants of the activation and build tables.
        image_size: input side of the activation table.
        time_variant: registered variant of step time and peak RSS.
        time_size: input side of step time and peak RSS.
        time_batch: batch size of step time.
        steps: timed steps (step time) and fit steps (peak RSS).
        rss_backend: backend of the peak-RSS table.
        rss_batch: batch size of peak RSS.
        throughput_variant: registered variant of the throughput table.
        throughput_size: input side of throughput.
        throughput_batch: batch size of throughput.
        rounds: alternating timed rounds (throughput, runtimes).
        iters: calls per candidate per round (throughput, runtimes).
        precision: Keras dtype policy of throughput (one of `PRECISIONS`).
        repeats: fresh-process builds per variant and source (build time).
        step_sizes: input sides of the training-step table (``step``), each
            at least the trainer's `data.MIN_IMAGE_SIZE`; default: the
            trainer's default image size.
        step_count: timed steps of the training-step table (median).
        onednn: TensorFlow rows of the training-step table, any of
            ``"default"``, ``"on"``, ``"off"`` (keys of `ONEDNN`).
        runtimes_variant: registered variant of the runtimes table.
        runtimes_size: input side of the runtimes table, at least the
            variant's smallest.
        runtimes_batch: batch size of the runtimes table.
        runtimes_threads: threads of every runtime (``None``:
            ``os.cpu_count()``).
        runtimes_candidates: which of `runtime_bench.CANDIDATES` to run
            (Keras ones only for backends among `backends`).
        runtimes_dir: keep the ``.keras`` file and the artifacts there, and
            reuse them on the next run of the same variant and size
            (``None``: a temporary directory).

    Example:

    >>> BenchOptions(backends=["jax"], steps=3).backends
    ('jax',)
    >>> BenchOptions(onednn=["fast"])
    Traceback (most recent call last):
    ...
    ValueError: `onednn` must be one of 'default', 'on', 'off'. Received: onednn='fast'
    """

    backends: Tuple[str, ...] = BACKENDS
    # activations (and build)
    variants: Tuple[str, ...] = ("densenet121", "densenet264")
    image_size: int = 224
    # time and rss
    time_variant: str = "densenet_bc_100_k12"
    time_size: int = 32
    time_batch: int = 32
    steps: int = 5
    rss_backend: str = "torch"
    rss_batch: int = 64
    # throughput
    throughput_variant: str = "densenet121"
    throughput_size: int = 224
    throughput_batch: int = 64
    rounds: int = 7
    iters: int = 5
    precision: str = "float32"
    # build
    repeats: int = 3
    # step
    step_sizes: Tuple[int, ...] = (TRAIN_DEFAULTS.image_size,)
    step_count: int = 20
    onednn: Tuple[str, ...] = ("default",)
    # runtimes
    runtimes_variant: str = "densenet121"
    runtimes_size: int = 224
    runtimes_batch: int = 16
    runtimes_threads: Optional[int] = None
    runtimes_candidates: Tuple[str, ...] = runtime_bench.CANDIDATES
    runtimes_dir: Optional[str] = None

    def __post_init__(self):
        for name in ("backends", "variants", "step_sizes", "onednn", "runtimes_candidates"):
            # Repeats would only run the same measurement twice.
            object.__setattr__(self, name, tuple(dict.fromkeys(_items(getattr(self, name)))))
        for b in self.backends + (self.rss_backend,):
            checks.one_of("backends", b, BACKENDS)
        for v in self.variants + (self.time_variant, self.throughput_variant, self.runtimes_variant):
            registry.get_variant(v)  # raises ValueError naming the allowed variants
        for name in ("image_size", "time_size", "time_batch", "steps", "rss_batch", "throughput_size",
                     "throughput_batch", "rounds", "iters", "repeats", "step_count", "runtimes_batch"):
            checks.integer(name, getattr(self, name))
        checks.one_of("precision", self.precision, PRECISIONS)
        if not self.step_sizes or not self.onednn:
            empty = "step_sizes" if not self.step_sizes else "onednn"
            raise ValueError(f"`{empty}` must name at least one value. Received: {empty}=()")
        for size in self.step_sizes:
            checks.integer("step_sizes", size, minimum=data_lib.MIN_IMAGE_SIZE)
        for value in self.onednn:
            checks.one_of("onednn", value, ONEDNN)
        self._check_runtimes()

    def _check_runtimes(self):
        """The ``runtimes`` fields (the variant is checked with the others)."""
        smallest = registry.get_variant(self.runtimes_variant).arch.min_input_size
        checks.integer("runtimes_size", self.runtimes_size, minimum=smallest,
                       hint=f"the smallest input of {self.runtimes_variant}")
        if self.runtimes_threads is not None:
            checks.integer("runtimes_threads", self.runtimes_threads)
        if not self.runtimes_candidates:
            raise ValueError("`runtimes_candidates` must name at least one value. Received: runtimes_candidates=()")
        for name in self.runtimes_candidates:
            checks.one_of("runtimes_candidates", name, runtime_bench.CANDIDATES)
        if self.runtimes_dir is not None and os.path.exists(self.runtimes_dir) and not os.path.isdir(self.runtimes_dir):
            raise ValueError(f"`runtimes_dir` must be a directory. Received: runtimes_dir={self.runtimes_dir!r}")



#: Each measure's runner, in the order they run.
_RUNNERS = {
    "activations": bench_tables.activations_table, "time": bench_tables.time_table, "rss": bench_tables.rss_table,
    "build": bench_tables.build_table, "throughput": bench_tables.throughput_table, "step": bench_tables.step_table,
    "runtimes": runtime_bench.measure,
}


def measures(measure: Union[str, Sequence[str]]) -> tuple:
    """`measure` (one name, or several) as a tuple in the order they run.

    Raises:
        ValueError: a name that is not one of `MEASURES`.

    Example:

    >>> measures(["rss", "time"])
    ('time', 'rss')
    >>> measures("speed")
    Traceback (most recent call last):
    ...
    ValueError: `measure` must be one of 'activations', 'time', 'rss', 'throughput', 'build', 'step', \
'runtimes'. Received: measure='speed'
    """
    names = (measure,) if isinstance(measure, str) else tuple(measure)
    for name in names:
        checks.one_of("measure", name, MEASURES)
    return tuple(name for name in _RUNNERS if name in names)


def run(
    measure: Union[str, Sequence[str]] = DEFAULT_MEASURES,
    options: Optional[BenchOptions] = None,
    *,
    json_path: Optional[str] = None,
    out=None,
) -> dict:
    """Runs the benchmark and prints Markdown tables; returns the numbers.

    Args:
        measure: any of `MEASURES` (one name, or several); they run in the
            order of `_RUNNERS`.
        options: what each measure runs on (default: ``BenchOptions()``).
        json_path: also write the results as JSON there (``"-"``: stdout),
            atomically.
        out: a text stream (default stdout).

    Returns:
        ``{"activations": {variant: {"standard": bytes, "memory_efficient":
        bytes}}, "time": {backend: {...}}, "rss": {...}, "build": {backend:
        {variant: {source: {"median", "runs"}}}}, "throughput": {backend:
        throughput.measure(...)}, "step": {"config", "machine", "rows":
        {label: {"backend", "onednn", "model", "params", "versions", "sizes":
        {size: train_step_ms(...)}}}}, "runtimes": runtime_bench.measure(...)}``
        for what was run.

    Raises:
        ValueError: an unknown measure (bad options fail in `BenchOptions`).

    Example::

        from keras_densenet.benchmarks import bench
        bench.run(["time"], bench.BenchOptions(backends=["jax"], steps=3))
        bench.run(["step"], bench.BenchOptions(backends=["jax"], step_sizes=[32], step_count=5))
    """
    out = out or sys.stdout
    options = BenchOptions() if options is None else options
    results = {name: _RUNNERS[name](options, out) for name in measures(measure)}
    if json_path == "-":
        print(json.dumps(results, indent=1), file=out)
    elif json_path:
        write_json(results, json_path)
    return results



def write_json(results: dict, path: str) -> None:
    """Writes `results` to `path` atomically (temporary file, then rename)."""

    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(results, f, indent=1)

    atomic_write(os.path.abspath(path), write)


