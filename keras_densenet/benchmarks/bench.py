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

What each measure runs on is a `BenchOptions`.

Each measurement runs in a fresh subprocess, since the Keras backend is fixed
at import and peak RSS is per process.

Example::

    keras-densenet bench --measure activations
    keras-densenet bench --measure time --backends tensorflow,jax,torch
    keras-densenet bench --measure throughput --backends jax,torch --json tp.json
    keras-densenet bench --measure step --step-sizes 32,16 --onednn default,on
    keras-densenet bench --measure runtimes --runtimes-candidates onnx,openvino,native_torch
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
from typing import Optional, Sequence, Tuple

from keras_densenet.core import backends as backends_lib
from keras_densenet.core import checks, internals, registry
from keras_densenet.core.files import atomic_write
from keras_densenet.benchmarks import runtime_bench
from keras_densenet.training import config
from keras_densenet.data import datasets as data_lib

MEASURES = ("activations", "time", "rss", "throughput", "build", "step", "runtimes")
#: What runs when no measure is named (throughput is long: ask for it).
DEFAULT_MEASURES = ("activations", "time", "rss")
BACKENDS = backends_lib.BACKENDS
#: Keras dtype policies the throughput benchmark takes.
PRECISIONS = config.DTYPE_POLICIES
MB = 1e6
#: What `keras-densenet train` runs without options: the `step` measure's job.
TRAIN_DEFAULTS = config.TrainConfig()
#: The default training data (the embedded digits): gray images, 10 classes.
DIGITS_CHANNELS = 1
DIGITS_CLASSES = 10
#: `train_on_batch` calls before timing: compilation, optimizer state.
STEP_WARMUP = 3
#: ``TF_ENABLE_ONEDNN_OPTS`` of the TensorFlow child by ``--onednn`` value
#: (``None``: unset, TensorFlow's own default).
ONEDNN = {"default": None, "on": "1", "off": "0"}


def residual_bytes(model, batch_size: int) -> int:
    """Bytes JAX saves for the backward pass of one training step of `model`.

    Only on the JAX backend. The loss is the mean of the model output, so its
    own residuals are nil; residuals that are arguments (trainable weights,
    the input batch) are not counted.

    Args:
        model: a built Keras model with a static input shape.
        batch_size: the batch size to trace with.

    Returns:
        The total size in bytes of the saved residuals.

    Example::

        # KERAS_BACKEND=jax
        import keras_densenet
        from keras_densenet.benchmarks.bench import residual_bytes
        residual_bytes(keras_densenet.DenseNetBC(40, 12), batch_size=1)
    """
    import jax
    import keras

    if keras.backend.backend() != "jax":
        raise ValueError(
            "residual_bytes needs KERAS_BACKEND=jax. "
            f"Received backend: {keras.backend.backend()!r}"
        )
    non_trainable = [v.value for v in model.non_trainable_variables]

    def loss_fn(trainable, x):
        y, _ = model.stateless_call(trainable, non_trainable, x, training=True)
        y = y if not isinstance(y, (list, tuple)) else y[-1]
        return keras.ops.mean(y)

    trainable = [jax.ShapeDtypeStruct(tuple(v.shape), v.dtype) for v in model.trainable_variables]
    x = jax.ShapeDtypeStruct((batch_size,) + tuple(model.input_shape[1:]), "float32")
    total = 0
    for aval, source in internals.saved_residuals(loss_fn, trainable, x):
        if not source.startswith("from the argument"):
            total += aval.size * aval.dtype.itemsize
    return total


def _build(variant: str, memory_efficient: bool, image_size: int, drop_rate: float = 0.0):
    import keras_densenet

    return keras_densenet.build(
        variant,
        input_shape=(image_size, image_size, 3),
        memory_efficient=memory_efficient,
        drop_rate=drop_rate,
    )


def activations_per_image(variant: str, memory_efficient: bool, image_size: int = 224) -> float:
    """Activation bytes saved per image for one training step (JAX backend)."""
    model = _build(variant, memory_efficient, image_size)
    return float(residual_bytes(model, 2) - residual_bytes(model, 1))


def _timed_steps(model, x, y, warmup: int, steps: int) -> list:
    """Seconds of each of `steps` ``train_on_batch`` calls after `warmup` untimed ones."""
    import time

    for _ in range(warmup):  # compilation, optimizer state
        model.train_on_batch(x, y)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        model.train_on_batch(x, y)  # returns the metrics as numbers: the step is done
        times.append(time.perf_counter() - start)
    return times


def step_time(variant: str, memory_efficient: bool, image_size: int, batch_size: int, steps: int) -> float:
    """Median seconds per ``train_on_batch`` step on the current backend."""
    import numpy as np

    model = _build(variant, memory_efficient, image_size)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (batch_size, image_size, image_size, 3)).astype("float32")
    y = rng.integers(0, model.output_shape[-1], (batch_size,))
    return float(np.median(_timed_steps(model, x, y, warmup=2, steps=steps)))


def peak_rss(variant: str, memory_efficient: bool, image_size: int, batch_size: int, steps: int) -> dict:
    """Peak RSS in MB of this process around ``model.fit`` (call it in a fresh one)."""
    import resource

    import numpy as np

    model = _build(variant, memory_efficient, image_size)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (batch_size * steps, image_size, image_size, 3)).astype("float32")
    y = rng.integers(0, model.output_shape[-1], (batch_size * steps,))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"peak_before_fit_mib": before, "peak_mib": after}


def build_seconds(variant: str, source: str) -> float:
    """Seconds of one builder call (``weights=None``) in this process."""
    import time

    import keras

    from keras_densenet.models import densenet

    start = time.perf_counter()
    if source == "keras_applications":
        getattr(keras.applications, registry.KERAS_APPLICATIONS[variant])(weights=None)
    else:
        densenet.build(variant)
    return time.perf_counter() - start


def train_step_ms(image_size: int, steps: int, warmup: int = STEP_WARMUP) -> dict:
    """Milliseconds per ``train_on_batch`` step of ``keras-densenet train``'s model.

    The model, optimizer and loss are the trainer's defaults
    (`training.train.build_classifier` on `TRAIN_DEFAULTS` at `image_size`,
    gray digits-sized input, 10 classes); the batch is random pixels in
    [0, 255] of `TRAIN_DEFAULTS.batch_size` images. Runs on the current
    backend: call it in a fresh process.

    Returns:
        ``{"ms_per_step": median, "min_ms", "max_ms", "steps_ms": [...],
        "model", "params", "machine": throughput.machine(),
        "tf_enable_onednn_opts": the environment variable or None}``.
    """
    import keras
    import numpy as np

    from keras_densenet.benchmarks import throughput
    from keras_densenet.training import train as train_lib

    cfg = dataclasses.replace(TRAIN_DEFAULTS, image_size=image_size)
    keras.utils.set_random_seed(cfg.seed)
    model, _ = train_lib.build_classifier(cfg, DIGITS_CLASSES, DIGITS_CHANNELS)
    train_lib.compile_classifier(model, cfg.lr)
    rng = np.random.default_rng(cfg.seed)
    x = rng.uniform(0, 255, (cfg.batch_size, image_size, image_size, DIGITS_CHANNELS)).astype("float32")
    y = rng.integers(0, DIGITS_CLASSES, (cfg.batch_size,))
    times = [1000 * t for t in _timed_steps(model, x, y, warmup, steps)]
    return {
        "ms_per_step": float(statistics.median(times)), "min_ms": min(times), "max_ms": max(times),
        "steps_ms": times, "model": model.name, "params": int(model.count_params()),
        "machine": throughput.machine(), "tf_enable_onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
    }


def _worker(job: dict) -> dict:
    kind = job.pop("measure")
    if kind == "build":
        return {"seconds": build_seconds(**job)}
    if kind == "throughput":
        from keras_densenet.benchmarks import throughput

        return throughput.measure(job.pop("variant"), **job)
    if kind == "activations":
        return {"bytes_per_image": activations_per_image(**job)}
    if kind == "time":
        return {"seconds_per_step": step_time(**job)}
    if kind == "step":
        return train_step_ms(**job)
    return peak_rss(**job)


def _spawn(backend: str, job: dict, onednn: Optional[str] = None) -> dict:
    """`_worker(job)` in a fresh process on `backend`; `onednn`: a key of
    `ONEDNN` sets the child's ``TF_ENABLE_ONEDNN_OPTS`` (``None``: inherited)."""
    # JAX must not take most of the GPU at start-up: native PyTorch shares it.
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3", XLA_PYTHON_CLIENT_PREALLOCATE="false")
    if onednn is not None:
        env.pop("TF_ENABLE_ONEDNN_OPTS", None)  # "default": TensorFlow's own choice
        if ONEDNN[onednn] is not None:
            env["TF_ENABLE_ONEDNN_OPTS"] = ONEDNN[onednn]
    proc = subprocess.run(
        [sys.executable, "-m", "keras_densenet.benchmarks.bench", json.dumps(job)],
        env=env,
        capture_output=True,
        text=True,
    )
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    if proc.returncode or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"bench worker {job} on {backend} failed: {tail}")
    return json.loads(lines[-1])


def _items(value) -> tuple:
    """A sequence option as a tuple; a lone string is one item."""
    return (value,) if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__") else tuple(value)


@dataclasses.dataclass(frozen=True)
class BenchOptions:
    """What each measure runs on; every field is a ``keras-densenet bench``
    option of the same name (``time_batch``: ``--time-batch``).

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


_KINDS = (("standard", False), ("memory_efficient", True))


def _activations(options: BenchOptions, out) -> dict:
    """Activation bytes per image, standard vs memory-efficient (JAX)."""
    size, table = options.image_size, {}
    print(f"\nActivation memory saved for backward, MB/image ({size}x{size}, JAX residuals)", file=out)
    print("| model | standard | memory-efficient | ratio |\n|---|---:|---:|---:|", file=out)
    for v in options.variants:
        row = {
            k: _spawn("jax", dict(measure="activations", variant=v, memory_efficient=me, image_size=size))[
                "bytes_per_image"]
            for k, me in _KINDS
        }
        table[v] = row
        print(f"| {v} | {row['standard'] / MB:.1f} | {row['memory_efficient'] / MB:.1f} "
              f"| {row['memory_efficient'] / row['standard']:.2f} |", file=out, flush=True)
    return table


def _time(options: BenchOptions, out) -> dict:
    """Seconds per step, standard vs memory-efficient, per backend."""
    o, table = options, {}
    print(f"\nTraining step time, s ({o.time_variant}, {o.time_size}x{o.time_size}, batch {o.time_batch}, "
          f"median of {o.steps})", file=out)
    print("| backend | standard | memory-efficient | overhead |\n|---|---:|---:|---:|", file=out)
    for b in o.backends:
        job = dict(measure="time", variant=o.time_variant, image_size=o.time_size, batch_size=o.time_batch,
                   steps=o.steps)
        row = {k: _spawn(b, dict(job, memory_efficient=me))["seconds_per_step"] for k, me in _KINDS}
        table[b] = row
        print(f"| {b} | {row['standard']:.3f} | {row['memory_efficient']:.3f} "
              f"| {100 * (row['memory_efficient'] / row['standard'] - 1):+.0f}% |", file=out, flush=True)
    return table


def _rss(options: BenchOptions, out) -> dict:
    """Peak RSS around ``model.fit``, standard vs memory-efficient."""
    o = options
    job = dict(measure="rss", variant=o.time_variant, image_size=o.time_size, batch_size=o.rss_batch, steps=o.steps)
    row = {k: _spawn(o.rss_backend, dict(job, memory_efficient=me)) for k, me in _KINDS}
    print(f"\nPeak RSS during fit, MiB ({o.rss_backend}, {o.time_variant}, {o.time_size}x{o.time_size}, "
          f"batch {o.rss_batch})", file=out)
    print("| graph | before fit | peak in fit | growth in fit |\n|---|---:|---:|---:|", file=out)
    for k, r in row.items():
        print(f"| {k} | {r['peak_before_fit_mib']:.0f} | {r['peak_mib']:.0f} "
              f"| {r['peak_mib'] - r['peak_before_fit_mib']:.0f} |", file=out, flush=True)
    return row


def _build_row(backend: str, variant: str, repeats: int) -> dict:
    """Build seconds of `variant`, ours alternating with keras.applications'."""
    sources = (["keras_applications"] if variant in registry.KERAS_APPLICATIONS else []) + ["ours"]
    times = {src: [] for src in sources}
    for _ in range(repeats):
        for src in sources:
            times[src].append(_spawn(backend, dict(measure="build", variant=variant, source=src))["seconds"])
    return {src: {"median": float(statistics.median(t)), "runs": t} for src, t in times.items()}


def _build_times(options: BenchOptions, out) -> dict:
    """Build seconds per backend and variant, each build in a fresh process."""
    table = {}
    print(f"\nBuild time, s (weights=None, each build in a fresh process, median of {options.repeats}, "
          "alternating)", file=out)
    print("| backend | model | ours | keras.applications | ratio |\n|---|---|---:|---:|---:|", file=out)
    for b in options.backends:
        for v in options.variants:
            row = table.setdefault(b, {})[v] = _build_row(b, v, options.repeats)
            theirs = row.get("keras_applications", {}).get("median")
            ratio = f"{row['ours']['median'] / theirs:.2f}" if theirs else "-"
            print(f"| {b} | {v} | {row['ours']['median']:.1f} | {f'{theirs:.1f}' if theirs else '-'} | {ratio} |",
                  file=out, flush=True)
    return table


def _throughput(options: BenchOptions, out) -> dict:
    """`throughput.measure` per backend, one process each."""
    o, table = options, {}
    job = dict(measure="throughput", variant=o.throughput_variant, image_size=o.throughput_size,
               batch_size=o.throughput_batch, rounds=o.rounds, iters=o.iters, precision=o.precision)
    for b in o.backends:
        table[b] = _spawn(b, dict(job))
        print_throughput(table[b], out)
    return table


def _step_rows(options: BenchOptions) -> list:
    """``(label, backend, onednn)`` of each training-step row; only
    TensorFlow has oneDNN (``onednn`` is ``None`` elsewhere)."""
    rows = []
    for b in options.backends:
        if b != "tensorflow":
            rows.append((b, b, None))
            continue
        for value in options.onednn:
            rows.append((b if value == "default" else f"{b} (oneDNN {value})", b, value))
    return rows


def _step(options: BenchOptions, out) -> dict:
    """Training-step ms of the trainer's model per backend row and size."""
    o, d = options, TRAIN_DEFAULTS
    sizes = [str(s) for s in o.step_sizes]  # JSON keys are strings
    print(f"\nTraining step time, ms: keras-densenet train's model (DenseNet-BC depth {d.depth}, k={d.growth_rate}, "
          f"{DIGITS_CHANNELS}-channel input, {DIGITS_CLASSES} classes, AdamW), batch {d.batch_size}, "
          f"median [min-max] of {o.step_count} train_on_batch steps after {STEP_WARMUP} warm-up steps, "
          "each backend and size in a fresh process", file=out)
    print("| backend | " + " | ".join(f"{s}x{s}" for s in sizes) + " |\n|---|" + "---:|" * len(sizes), file=out)
    rows, machine = {}, None
    for label, backend, onednn in _step_rows(o):
        runs = {str(s): _spawn(backend, dict(measure="step", image_size=s, steps=o.step_count), onednn)
                for s in o.step_sizes}
        first = next(iter(runs.values()))
        machine = machine or {k: first["machine"][k] for k in ("cpu", "cpu_count", "avx512")}
        rows[label] = {
            "backend": backend, "onednn": onednn, "model": first["model"], "params": first["params"],
            "versions": {k: v for k, v in first["machine"].items() if k in ("keras", backend)},
            "sizes": {s: {k: v for k, v in r.items() if k != "machine"} for s, r in runs.items()},
        }
        cells = (f"{r['ms_per_step']:.1f} [{r['min_ms']:.1f}-{r['max_ms']:.1f}]" for r in runs.values())
        print(f"| {label} | " + " | ".join(cells) + " |", file=out, flush=True)
    if machine:
        # Other processes' load inflates the times: say how busy the CPUs were.
        machine["load_average"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        avx = {True: "yes", False: "no", None: "unknown"}[machine["avx512"]]
        load = f", load average {machine['load_average']:.1f}" if machine["load_average"] is not None else ""
        print(f"(machine: {machine['cpu']}, {machine['cpu_count']} cores, AVX-512: {avx}{load})", file=out, flush=True)
    setup = dict(depth=d.depth, growth_rate=d.growth_rate, batch_size=d.batch_size, image_sizes=list(o.step_sizes),
                 steps=o.step_count, warmup=STEP_WARMUP, optimizer="AdamW", channels=DIGITS_CHANNELS,
                 classes=DIGITS_CLASSES)
    return {"config": setup, "machine": machine, "rows": rows}


#: Each measure's runner, in the order they run.
_RUNNERS = {
    "activations": _activations, "time": _time, "rss": _rss, "build": _build_times, "throughput": _throughput,
    "step": _step, "runtimes": runtime_bench.measure,
}


def run(
    measure: Sequence[str] = DEFAULT_MEASURES,
    options: Optional[BenchOptions] = None,
    *,
    json_path: Optional[str] = None,
    out=None,
) -> dict:
    """Runs the benchmark and prints Markdown tables; returns the numbers.

    Args:
        measure: any of `MEASURES`; they run in the order of `_RUNNERS`.
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
    for m in measure:
        checks.one_of("measure", m, MEASURES)
    results = {name: runner(options, out) for name, runner in _RUNNERS.items() if name in measure}
    if json_path == "-":
        print(json.dumps(results, indent=1), file=out)
    elif json_path:
        write_json(results, json_path)
    return results


def print_throughput(result: dict, out) -> None:
    """One Markdown table of `throughput.measure`'s result, ratios to ``ours``."""
    c, m = result["config"], result["machine"]
    print(
        f"\nThroughput, images/s: {m['backend']} on {m.get('device', 'cpu')} ({m['cpu']}, {m['cpu_count']} cores); "
        f"{c['variant']} {c['image_size']}x{c['image_size']}, batch {c['batch_size']}, {c['precision']}, "
        f"median [min-max] of {c['rounds']} alternating rounds of {c['iters']} calls",
        file=out,
    )
    print("| candidate | inference | x ours | training | x ours | training MB/image |\n|---|---:|---:|---:|---:|---:|", file=out)
    names = []
    for mode in ("inference", "training"):
        names += [n for n in result.get(mode, {}) if n != "skipped" and n not in names]
    for name in names:
        cells = []
        for mode in ("inference", "training"):
            r = result.get(mode, {}).get(name)
            ratio = result["ratios"].get(mode, {}).get(name)
            cells.append(f"{r['images_per_s']:.1f} [{r['min']:.1f}-{r['max']:.1f}]" if r else "-")
            cells.append(f"{ratio:.2f}" if ratio is not None else "-")
        mem = result.get("memory_mb_per_image", {}).get(name)
        cells.append(f"{mem:.1f}" if mem is not None else "n/a")
        print(f"| {name} | " + " | ".join(cells) + " |", file=out)
    for mode in ("inference", "training"):
        for name, why in result.get(mode, {}).get("skipped", {}).items():
            print(f"({mode}: {name} skipped: {why})", file=out)
    if "native_source" in result:
        print(f"(native: {result['native_source']}; memory: {result['memory_method']})", file=out, flush=True)


def write_json(results: dict, path: str) -> None:
    """Writes `results` to `path` atomically (temporary file, then rename)."""

    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(results, f, indent=1)

    atomic_write(os.path.abspath(path), write)


if __name__ == "__main__":  # worker: python -m keras_densenet.benchmarks.bench '{json job}'
    print(json.dumps(_worker(json.loads(sys.argv[1]))))
