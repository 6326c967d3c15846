"""Benchmark of memory-efficient training: memory saved and time it costs.

Three measurements, standard vs ``memory_efficient=True``:

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
  where the backend reports it (`keras_densenet.tools.throughput`).

Each measurement runs in a fresh subprocess, since the Keras backend is fixed
at import and peak RSS is per process.

Example::

    keras-densenet bench --measure activations
    keras-densenet bench --measure time --backends tensorflow,jax,torch
    keras-densenet bench --measure throughput --backends jax,torch --json tp.json
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from typing import Optional, Sequence

from keras_densenet.core import backends as backends_lib
from keras_densenet.core import checks, internals, registry
from keras_densenet.core.files import atomic_write
from keras_densenet.training import config

MEASURES = ("activations", "time", "rss", "throughput", "build")
#: What runs when no measure is named (throughput is long: ask for it).
DEFAULT_MEASURES = ("activations", "time", "rss")
BACKENDS = backends_lib.BACKENDS
#: Keras dtype policies the throughput benchmark takes.
PRECISIONS = config.DTYPE_POLICIES
MB = 1e6


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
        from keras_densenet.tools.bench import residual_bytes
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


def step_time(variant: str, memory_efficient: bool, image_size: int, batch_size: int, steps: int) -> float:
    """Median seconds per ``train_on_batch`` step on the current backend."""
    import time

    import numpy as np

    model = _build(variant, memory_efficient, image_size)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (batch_size, image_size, image_size, 3)).astype("float32")
    y = rng.integers(0, model.output_shape[-1], (batch_size,))
    for _ in range(2):  # compile / warm up
        model.train_on_batch(x, y)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


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


def _worker(job: dict) -> dict:
    kind = job.pop("measure")
    if kind == "build":
        return {"seconds": build_seconds(**job)}
    if kind == "throughput":
        from keras_densenet.tools import throughput

        return throughput.measure(job.pop("variant"), **job)
    if kind == "activations":
        return {"bytes_per_image": activations_per_image(**job)}
    if kind == "time":
        return {"seconds_per_step": step_time(**job)}
    return peak_rss(**job)


def _spawn(backend: str, job: dict) -> dict:
    # JAX must not take most of the GPU at start-up: native PyTorch shares it.
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3", XLA_PYTHON_CLIENT_PREALLOCATE="false")
    proc = subprocess.run(
        [sys.executable, "-m", "keras_densenet.tools.bench", json.dumps(job)],
        env=env,
        capture_output=True,
        text=True,
    )
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    if proc.returncode or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"bench worker {job} on {backend} failed: {tail}")
    return json.loads(lines[-1])


def _check(measure: Sequence[str], backends: Sequence[str], variants: Sequence[str], **ints) -> None:
    for m in measure:
        checks.one_of("measure", m, MEASURES)
    for b in backends:
        checks.one_of("backends", b, BACKENDS)
    for v in variants:
        registry.get_variant(v)  # raises ValueError naming the allowed variants
    for name, value in ints.items():
        checks.integer(name, value)


def run(
    measure: Sequence[str] = DEFAULT_MEASURES,
    *,
    backends: Sequence[str] = BACKENDS,
    variants: Sequence[str] = ("densenet121", "densenet264"),
    image_size: int = 224,
    time_variant: str = "densenet_bc_100_k12",
    time_size: int = 32,
    time_batch: int = 32,
    steps: int = 5,
    rss_backend: str = "torch",
    rss_batch: int = 64,
    throughput_variant: str = "densenet121",
    throughput_size: int = 224,
    throughput_batch: int = 64,
    rounds: int = 7,
    iters: int = 5,
    precision: str = "float32",
    json_path: Optional[str] = None,
    repeats: int = 3,
    out=None,
) -> dict:
    """Runs the benchmark and prints Markdown tables; returns the numbers.

    Args:
        measure: any of ``"activations"``, ``"time"``, ``"rss"``.
        backends: backends for the step-time table.
        variants: registered variants for the activation table.
        image_size: input side for the activation table.
        time_variant: registered variant for step time and peak RSS.
        time_size: input side for step time and peak RSS.
        time_batch: batch size for step time.
        steps: timed steps (step time) and fit steps (peak RSS).
        rss_backend: backend for the peak-RSS table.
        rss_batch: batch size for peak RSS.
        throughput_variant: registered variant for the throughput table.
        throughput_size: input side for throughput.
        throughput_batch: batch size for throughput.
        rounds: alternating timed rounds (throughput).
        iters: calls per candidate per round (throughput).
        precision: Keras dtype policy for throughput (``float32``,
            ``mixed_bfloat16``, ``mixed_float16``).
        json_path: also write the results as JSON there (``"-"``: stdout).
        repeats: fresh-process builds per variant and source (build time).
        out: a text stream (default stdout).

    Returns:
        ``{"activations": {variant: {"standard": bytes, "memory_efficient":
        bytes}}, "time": {backend: {...}}, "rss": {...}, "throughput":
        {backend: throughput.measure(...)}}`` for what was run.

    Raises:
        ValueError: an unknown measure, backend or variant, or a
            non-positive size.

    Example::

        from keras_densenet.tools import bench
        bench.run(["time"], backends=["jax"], steps=3)
    """
    out = out or sys.stdout
    _check(
        measure, list(backends) + [rss_backend], list(variants) + [time_variant, throughput_variant],
        image_size=image_size, time_size=time_size, time_batch=time_batch,
        steps=steps, rss_batch=rss_batch, throughput_size=throughput_size,
        throughput_batch=throughput_batch, rounds=rounds, iters=iters, repeats=repeats,
    )
    checks.one_of("precision", precision, PRECISIONS)
    kinds = (("standard", False), ("memory_efficient", True))
    results: dict = {}
    if "activations" in measure:
        results["activations"] = table = {}
        print(f"\nActivation memory saved for backward, MB/image ({image_size}x{image_size}, JAX residuals)", file=out)
        print("| model | standard | memory-efficient | ratio |\n|---|---:|---:|---:|", file=out)
        for v in variants:
            row = {
                k: _spawn("jax", dict(measure="activations", variant=v, memory_efficient=me, image_size=image_size))["bytes_per_image"]
                for k, me in kinds
            }
            table[v] = row
            print(f"| {v} | {row['standard'] / MB:.1f} | {row['memory_efficient'] / MB:.1f} "
                  f"| {row['memory_efficient'] / row['standard']:.2f} |", file=out, flush=True)
    if "time" in measure:
        results["time"] = table = {}
        print(f"\nTraining step time, s ({time_variant}, {time_size}x{time_size}, batch {time_batch}, median of {steps})", file=out)
        print("| backend | standard | memory-efficient | overhead |\n|---|---:|---:|---:|", file=out)
        for b in backends:
            job = dict(measure="time", variant=time_variant, image_size=time_size, batch_size=time_batch, steps=steps)
            row = {k: _spawn(b, dict(job, memory_efficient=me))["seconds_per_step"] for k, me in kinds}
            table[b] = row
            print(f"| {b} | {row['standard']:.3f} | {row['memory_efficient']:.3f} "
                  f"| {100 * (row['memory_efficient'] / row['standard'] - 1):+.0f}% |", file=out, flush=True)
    if "rss" in measure:
        job = dict(measure="rss", variant=time_variant, image_size=time_size, batch_size=rss_batch, steps=steps)
        row = {k: _spawn(rss_backend, dict(job, memory_efficient=me)) for k, me in kinds}
        results["rss"] = row
        print(f"\nPeak RSS during fit, MiB ({rss_backend}, {time_variant}, {time_size}x{time_size}, batch {rss_batch})", file=out)
        print("| graph | before fit | peak in fit | growth in fit |\n|---|---:|---:|---:|", file=out)
        for k, r in row.items():
            print(f"| {k} | {r['peak_before_fit_mib']:.0f} | {r['peak_mib']:.0f} "
                  f"| {r['peak_mib'] - r['peak_before_fit_mib']:.0f} |", file=out, flush=True)
    if "build" in measure:
        results["build"] = table = {}
        print(f"\nBuild time, s (weights=None, each build in a fresh process, median of {repeats}, alternating)", file=out)
        print("| backend | model | ours | keras.applications | ratio |\n|---|---|---:|---:|---:|", file=out)
        for b in backends:
            for v in variants:
                sources = (["keras_applications"] if v in registry.KERAS_APPLICATIONS else []) + ["ours"]
                times = {src: [] for src in sources}
                for _ in range(repeats):
                    for src in sources:
                        times[src].append(_spawn(b, dict(measure="build", variant=v, source=src))["seconds"])
                row = {src: {"median": float(statistics.median(t)), "runs": t} for src, t in times.items()}
                table.setdefault(b, {})[v] = row
                theirs = row.get("keras_applications", {}).get("median")
                ratio = f"{row['ours']['median'] / theirs:.2f}" if theirs else "-"
                print(f"| {b} | {v} | {row['ours']['median']:.1f} | {f'{theirs:.1f}' if theirs else '-'} | {ratio} |",
                      file=out, flush=True)
    if "throughput" in measure:
        results["throughput"] = table = {}
        job = dict(measure="throughput", variant=throughput_variant, image_size=throughput_size,
                   batch_size=throughput_batch, rounds=rounds, iters=iters, precision=precision)
        for b in backends:
            table[b] = _spawn(b, dict(job))
            print_throughput(table[b], out)
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


if __name__ == "__main__":  # worker: python -m keras_densenet.tools.bench '{json job}'
    print(json.dumps(_worker(json.loads(sys.argv[1]))))
