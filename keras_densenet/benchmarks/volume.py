"""``keras-densenet bench volume``: ``predict`` at a user's volume.

Makes its own JPEGs (smooth random colour fields with fine noise, saved by
Pillow) in a temporary directory, then measures, each in a fresh process on
one backend (`KERAS_BACKEND`):

* ``rss``: peak resident memory (``ru_maxrss``) of a process that runs the
  library's `predict` with a row file over `photos` photos of `photo_size`
  (24 and 120 of 4000x3000 by default): memory must not grow with the
  number of photos (target: the larger run within 15% of the smaller).
  With `reference`, also a process that first reads the smaller set as
  ``predict`` did before the streaming pipeline (every photo decoded at full
  resolution, kept in memory).
* ``throughput``: images/s of `predict` writing a row file over `images`
  JPEGs of `image_shape` (500 of 1024x768) with `arch` at `image_size`
  (DenseNet-121 at 224, random weights), against ``model.predict`` on the
  same images already decoded into one array (the model alone: the
  ceiling), in one process, the model compiled for both first (target: at
  least 0.85 of the ceiling). With `compare`, the same images through the
  other feeders measured to choose the pipeline's design: ``model.predict``
  on the `images.image_batches` PyDataset (Keras' worker threads), the
  pipeline's thread pool at 1 and 4 workers, and no read-ahead at all.

Example::

    from keras_densenet.benchmarks.volume import run_volume
    result = run_volume("jax", photos=(24, 120), images=500)
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from typing import Optional, Sequence

import numpy as np

from keras_densenet.core import checks, registry

#: The child that measures peak memory: `predict` over the photos listed in
#: a file, rows to a CSV file; prints its ``ru_maxrss`` in bytes as JSON.
_RSS_CHILD = """
import json, resource, sys, time
args = json.loads(sys.argv[1])
from keras_densenet.deployment import predict as deploy
from keras_densenet.models import densenet
size = args["image_size"]
model = densenet.build(args["arch"], weights=None, input_shape=(size, size, 3))
paths = open(args["list"]).read().splitlines()
if args["reference"]:  # the read path before streaming: every photo decoded at full size, all kept
    import keras
    held = [keras.utils.img_to_array(keras.utils.load_img(p)) for p in paths]
start = time.perf_counter()
result = deploy.predict(paths, model=model, batch_size=args["batch_size"], output=args["output"],
                        workers=args["workers"])
seconds = time.perf_counter() - start
scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
print(json.dumps({"rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale, "count": result.count,
                  "seconds": seconds}))
"""

#: The child that measures images/s: the ceiling first, then the pipeline.
_THROUGHPUT_CHILD = """
import json, sys, time
import numpy as np
args = json.loads(sys.argv[1])
import keras
from keras_densenet.data import images
from keras_densenet.deployment import predict as deploy
from keras_densenet.models import densenet
paths = open(args["list"]).read().splitlines()
size, bs, n = args["image_size"], args["batch_size"], len(paths)
model = densenet.build(args["arch"], weights=None, input_shape=(size, size, 3))
x = np.stack([images.decode(p, 3, size) for p in paths])
model.predict(x[:bs], batch_size=bs, verbose=0)  # compile both batch lengths first
model.predict(x[: n % bs or bs], batch_size=bs, verbose=0)
deploy.predict(paths[:bs], model=model, batch_size=bs, output=args["output"])  # and predict_on_batch
def pydataset():
    model.predict(images.image_batches(paths, size, bs, workers=args["workers"] or images.DEFAULT_WORKERS),
                  verbose=0)
def sequential():
    files = images.ImageFiles(paths, size, bs)
    run = deploy.keras_runner(model, bs, n)
    for i in range(len(files)):
        run(files.batch(i).x)
candidates = {
    "ceiling": lambda: model.predict(x, batch_size=bs, verbose=0),
    "predict": lambda: deploy.predict(paths, model=model, batch_size=bs, output=args["output"],
                                      workers=args["workers"]),
}
if args["compare"]:
    candidates.update(pydataset=pydataset, sequential=sequential)
    for w in (1, 4):
        candidates[f"threads_{w}"] = lambda w=w: deploy.predict(paths, model=model, batch_size=bs,
                                                                output=args["output"], workers=w)
rates = {name: [] for name in candidates}
for _ in range(args["rounds"]):  # alternating, so a busy spell of the machine hits every candidate
    for name, work in candidates.items():
        start = time.perf_counter()
        work()
        rates[name].append(n / (time.perf_counter() - start))
print(json.dumps({"rates": rates, "backend": keras.backend.backend(), "keras": keras.__version__}))
"""


def make_jpegs(directory, count: int, size: Sequence[int] = (4000, 3000), seed: int = 0, quality: int = 90,
               start: int = 0) -> list:
    """Writes `count` JPEGs of `size` ``(width, height)``: a smooth random
    colour field (a 12x16 grid, bilinearly enlarged) with fine noise, like a
    photo's mix of smooth areas and grain. Returns their paths.

    Example:

    >>> paths = make_jpegs(tempfile.mkdtemp(), 2, (64, 48))
    >>> [os.path.basename(p) for p in paths]
    ['photo_0000.jpg', 'photo_0001.jpg']
    """
    from PIL import Image

    width, height = size
    tile = np.random.default_rng(seed).integers(-8, 9, (256, 256, 3), dtype="int16")
    noise = np.tile(tile, (height // 256 + 1, width // 256 + 1, 1))[:height, :width]
    paths = []
    for i in range(start, start + count):
        grid = np.random.default_rng([seed, i]).integers(0, 256, (12, 16, 3), dtype="uint8")
        field = np.asarray(Image.fromarray(grid).resize((width, height), Image.BILINEAR), "int16")
        path = os.path.join(os.fspath(directory), f"photo_{i:04d}.jpg")
        Image.fromarray(np.clip(field + noise, 0, 255).astype("uint8")).save(path, quality=quality)
        paths.append(path)
    return paths


def _child(code: str, backend: str, args: dict, timeout: float) -> dict:
    env = dict(os.environ, KERAS_BACKEND=backend)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    done = subprocess.run([sys.executable, "-c", code, json.dumps(args)], env=env, capture_output=True, text=True,
                          timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"the {backend} benchmark process failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _write_list(directory: str, name: str, paths: list) -> str:
    path = os.path.join(directory, name)
    with open(path, "w") as f:
        f.write("\n".join(paths))
    return path


def machine() -> dict:
    """The machine in plain words: CPU model, cores, AVX-512 or AVX2, load."""
    flags = model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and not model:
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags") and not flags:
                    flags = line
    except OSError:
        model = platform.processor()
    vector = "AVX-512" if " avx512f" in flags else "AVX2" if " avx2" in flags else "no AVX2"
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {"cpu": model, "cores": os.cpu_count(), "vector": vector, "load": [round(v, 2) for v in load]}


def run_volume(
    backend: str = "jax",
    photos: Sequence[int] = (24, 120),
    photo_size: Sequence[int] = (4000, 3000),
    images: int = 500,
    image_shape: Sequence[int] = (1024, 768),
    arch: str = "densenet121",
    image_size: int = 224,
    batch_size: int = 32,
    rss_batch_size: int = 8,
    workers: Optional[int] = None,
    compare: bool = False,
    rounds: int = 2,
    reference: bool = False,
    directory=None,
    timeout: float = 3600,
    out=None,
) -> dict:
    """Peak memory and throughput of `predict` at volume, on one backend;
    prints a Markdown table.

    Args:
        backend: the Keras backend of the measuring processes.
        photos: photo counts of the peak-memory runs (empty: none).
        photo_size: ``(width, height)`` of those photos.
        images: JPEGs of the throughput run (0: none).
        image_shape: their ``(width, height)``.
        arch: the registered variant (random weights).
        image_size: its input side.
        batch_size: images per batch of the throughput run.
        rss_batch_size: images per batch of the peak-memory runs: small
            enough that the smallest run fills the read-ahead (at 32, 24
            photos are less than one batch, so a larger run holds more
            batches and runs a larger model step: the growth stops there,
            but it is not the one the measure is after).
        workers: decoding threads (default: the pipeline's).
        compare: also time the other feeders (see the module docstring).
        rounds: alternating timed rounds of the throughput candidates; the
            best round of each is reported (the machine's quietest moment),
            with the median.
        reference: also the peak memory of the old read path (all photos
            decoded at full size; about 144 MB per 12-megapixel photo).
        directory: where the JPEGs go (default: a temporary directory,
            removed after); existing ones of the same name are reused.
        timeout: seconds per measuring process.
        out: a text stream for the table (default stdout).

    Returns:
        ``{"machine", "backend", "rss": {count: {"rss", "seconds"}},
        "rss_ratio", "throughput": {"predict", "ceiling", ...: {"best",
        "median", "rounds"}: images/s}, "throughput_ratio"}`` (best over
        best).

    Raises:
        ValueError: a bad argument, named.
    """
    registry.get_variant(arch)
    checks.one_of("backend", backend, ("jax", "tensorflow", "torch"))
    photos = [checks.integer("photos", p, minimum=1) for p in photos]
    checks.integer("images", images, minimum=0)
    checks.integer("batch_size", batch_size)
    checks.integer("rss_batch_size", rss_batch_size)
    checks.integer("rounds", rounds)
    out = out or sys.stdout
    owned = directory is None
    directory = tempfile.mkdtemp(prefix="keras_densenet_volume_") if owned else os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    result = {"machine": machine(), "backend": backend, "arch": arch, "image_size": image_size,
              "batch_size": batch_size, "rss_batch_size": rss_batch_size, "rss": {}, "throughput": {}}
    common = dict(arch=arch, batch_size=batch_size, workers=workers, image_size=image_size)
    try:
        if photos:
            big = os.path.join(directory, f"photos_{photo_size[0]}x{photo_size[1]}")
            os.makedirs(big, exist_ok=True)
            paths = _existing_or_made(big, max(photos), photo_size)
            for count in sorted(set(photos)):
                args = dict(common, list=_write_list(directory, f"list_{count}.txt", paths[:count]),
                            output=os.path.join(directory, f"rows_{count}.csv"), reference=False,
                            batch_size=rss_batch_size)
                result["rss"][count] = _child(_RSS_CHILD, backend, args, timeout)
            if reference:
                args = dict(common, list=_write_list(directory, "list_ref.txt", paths[: min(photos)]),
                            output=os.path.join(directory, "rows_ref.csv"), reference=True,
                            batch_size=rss_batch_size)
                result["rss"]["reference"] = _child(_RSS_CHILD, backend, args, timeout)
            low, high = result["rss"][min(photos)]["rss"], result["rss"][max(photos)]["rss"]
            result["rss_ratio"] = high / low
        if images:
            small = os.path.join(directory, f"images_{image_shape[0]}x{image_shape[1]}")
            os.makedirs(small, exist_ok=True)
            paths = _existing_or_made(small, images, image_shape)
            args = dict(common, list=_write_list(directory, "list_tp.txt", paths),
                        output=os.path.join(directory, "rows_tp.csv"), compare=compare, rounds=rounds)
            child = _child(_THROUGHPUT_CHILD, backend, args, timeout)
            result["throughput"] = {name: {"best": max(r), "median": float(np.median(r)), "rounds": r}
                                    for name, r in child["rates"].items()}
            result["keras"] = child["keras"]
            best = result["throughput"]
            result["throughput_ratio"] = best["predict"]["best"] / best["ceiling"]["best"]
    finally:
        if owned:
            import shutil

            shutil.rmtree(directory, ignore_errors=True)
    result["machine"]["load_after"] = machine()["load"]
    print_table(result, photo_size, image_shape, out)
    return result


def _existing_or_made(directory: str, count: int, size: Sequence[int]) -> list:
    have = sorted(p for p in os.listdir(directory) if p.startswith("photo_") and p.endswith(".jpg"))
    paths = [os.path.join(directory, p) for p in have[:count]]
    if len(paths) < count:
        paths += make_jpegs(directory, count - len(paths), size, start=len(paths))
    return paths


def print_table(result: dict, photo_size, image_shape, out=None) -> None:
    """The Markdown table of `run_volume`'s result."""
    out = out or sys.stdout
    m = result["machine"]
    print(f"\n{m['cpu']}, {m['cores']} cores, {m['vector']}; backend {result['backend']}, {result['arch']} at "
          f"{result['image_size']}; load average {m['load'][0]} before, "
          f"{m.get('load_after', ['?'])[0]} after\n", file=out)
    print("| measure | value |\n|---|---|", file=out)
    for count, row in result["rss"].items():
        what = "old read path (all decoded first)" if count == "reference" else f"{count} photos"
        print(f"| peak RSS, predict over {what} of {photo_size[0]}x{photo_size[1]}, batch "
              f"{result['rss_batch_size']} | "
              f"{row['rss'] / 2**20:,.0f} MiB ({row['seconds']:.1f} s) |", file=out)
    if "rss_ratio" in result:
        print(f"| RSS(largest) / RSS(smallest) | {result['rss_ratio']:.3f} (target <= 1.15) |", file=out)
    names = {"ceiling": "model.predict on decoded arrays (ceiling)", "predict": "predict, rows to CSV (pipeline)",
             "pydataset": "model.predict on the PyDataset (Keras workers)", "threads_1": "predict, 1 worker",
             "threads_4": "predict, 4 workers", "sequential": "no read-ahead (decode, then run)"}
    for key, rate in result["throughput"].items():
        print(f"| images/s of {image_shape[0]}x{image_shape[1]} JPEGs, batch {result['batch_size']}, "
              f"{names.get(key, key)} | {rate['best']:.1f} "
              f"(median {rate['median']:.1f}) |", file=out)
    if "throughput_ratio" in result:
        print(f"| predict / ceiling | {result['throughput_ratio']:.3f} (target >= 0.85) |", file=out)
