"""The tables of ``keras-densenet bench``: each measure's runner spawns its
child processes (`bench_worker.spawn`), prints a Markdown table as rows
arrive and returns the numbers; `keras_densenet.benchmarks.bench.run` calls
them in order.

Example::

    import sys
    from keras_densenet.benchmarks import bench, bench_tables

    bench_tables.time_table(bench.BenchOptions(backends=["jax"], steps=3), sys.stdout)
"""

from __future__ import annotations

import os
import statistics

from keras_densenet.benchmarks.bench_worker import DIGITS_CHANNELS, DIGITS_CLASSES, STEP_WARMUP, TRAIN_DEFAULTS, spawn
from keras_densenet.core import registry

MB = 1e6


_KINDS = (("standard", False), ("memory_efficient", True))


def activations_table(options, out) -> dict:
    """Activation bytes per image, standard vs memory-efficient (JAX)."""
    size, table = options.image_size, {}
    print(f"\nActivation memory saved for backward, MB/image ({size}x{size}, JAX residuals)", file=out)
    print("| model | standard | memory-efficient | ratio |\n|---|---:|---:|---:|", file=out)
    for v in options.variants:
        row = {
            k: spawn("jax", dict(measure="activations", variant=v, memory_efficient=me, image_size=size))[
                "bytes_per_image"]
            for k, me in _KINDS
        }
        table[v] = row
        print(f"| {v} | {row['standard'] / MB:.1f} | {row['memory_efficient'] / MB:.1f} "
              f"| {row['memory_efficient'] / row['standard']:.2f} |", file=out, flush=True)
    return table


def time_table(options, out) -> dict:
    """Seconds per step, standard vs memory-efficient, per backend."""
    o, table = options, {}
    print(f"\nTraining step time, s ({o.time_variant}, {o.time_size}x{o.time_size}, batch {o.time_batch}, "
          f"median of {o.steps})", file=out)
    print("| backend | standard | memory-efficient | overhead |\n|---|---:|---:|---:|", file=out)
    for b in o.backends:
        job = dict(measure="time", variant=o.time_variant, image_size=o.time_size, batch_size=o.time_batch,
                   steps=o.steps)
        row = {k: spawn(b, dict(job, memory_efficient=me))["seconds_per_step"] for k, me in _KINDS}
        table[b] = row
        print(f"| {b} | {row['standard']:.3f} | {row['memory_efficient']:.3f} "
              f"| {100 * (row['memory_efficient'] / row['standard'] - 1):+.0f}% |", file=out, flush=True)
    return table


def rss_table(options, out) -> dict:
    """Peak RSS around ``model.fit``, standard vs memory-efficient."""
    o = options
    job = dict(measure="rss", variant=o.time_variant, image_size=o.time_size, batch_size=o.rss_batch, steps=o.steps)
    row = {k: spawn(o.rss_backend, dict(job, memory_efficient=me)) for k, me in _KINDS}
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
            times[src].append(spawn(backend, dict(measure="build", variant=variant, source=src))["seconds"])
    return {src: {"median": float(statistics.median(t)), "runs": t} for src, t in times.items()}


def build_table(options, out) -> dict:
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


def throughput_table(options, out) -> dict:
    """`throughput.measure` per backend, one process each."""
    o, table = options, {}
    job = dict(measure="throughput", variant=o.throughput_variant, image_size=o.throughput_size,
               batch_size=o.throughput_batch, rounds=o.rounds, iters=o.iters, precision=o.precision)
    for b in o.backends:
        table[b] = spawn(b, dict(job))
        print_throughput(table[b], out)
    return table


def _step_rows(options) -> list:
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


def step_table(options, out) -> dict:
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
        runs = {str(s): spawn(backend, dict(measure="step", image_size=s, steps=o.step_count), onednn)
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



def print_throughput(result: dict, out) -> None:
    """One Markdown table of `throughput.measure`'s result, ratios to ``ours``."""
    c, m = result["config"], result["machine"]
    print(
        f"\nThroughput, images/s: {m['backend']} on {m.get('device', 'cpu')} ({m['cpu']}, {m['cpu_count']} cores); "
        f"{c['variant']} {c['image_size']}x{c['image_size']}, batch {c['batch_size']}, {c['precision']}, "
        f"median [min-max] of {c['rounds']} alternating rounds of {c['iters']} calls",
        file=out,
    )
    print("| candidate | inference | x ours | training | x ours | training MB/image |\n"
          "|---|---:|---:|---:|---:|---:|", file=out)
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
