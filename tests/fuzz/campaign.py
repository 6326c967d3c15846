"""The full fuzzing campaign: every loader, its crafted hostile files and
``--examples`` seeded mutations of its valid files, with a table of what
happened.

Run from the repository root::

    python tests/fuzz/campaign.py --examples 10000                 # every loader
    python tests/fuzz/campaign.py --examples 500 --targets keras    # one, by name
    python tests/fuzz/campaign.py --list

Each loader runs in its own worker process, so that a crash in a native
library (HDF5, ONNX Runtime) is counted as a failure of the input it
happened on and the campaign goes on. The table gives, per loader, the
inputs tried, how they ended (a valid result, the documented ValueError),
the failures (any other exception, a hang, memory growth, a write outside
the case's directory, code run) and the rate. Failures are listed with the
mutation that reproduces them (``--seed`` and the case number). Exit code:
0 without failures, 1 with.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

ALL_TARGETS = ("weights.h5", "legacy.h5", "keras-weights", "keras", "safetensors", "pth", "convert", "class_names",
               "images", "onnx", "environment")


def cases(target, examples: int, seed: int):
    """``(case name, input)`` pairs: the hostile files, then `examples`
    mutations drawn from a `random.Random` seeded by `seed` and the name."""
    from tests.fuzz import mutations as mut

    for name, data in sorted(target.hostile.items()):
        yield f"hostile: {name}", data
    rng = random.Random(seed * 1_000_003 + zlib.crc32(target.name.encode()))
    for i in range(examples):
        which = rng.randrange(len(target.seeds))
        ops = mut.random_ops(rng)
        if target.members and rng.random() < 0.5:
            member = rng.choice(target.members)
            yield f"#{i} seed {which} member {member} ops {ops}", mut.mutate_member(target.seeds[which], member, ops)
        else:
            yield f"#{i} seed {which} ops {ops}", mut.mutate(target.seeds[which], ops)


def random_environment(rng: random.Random) -> dict:
    """A mapping of Keras' three job variables (some missing, odd values)."""
    from keras_densenet.core import cluster

    def text():
        pools = ["0", "1", "2", "3", "-1", " 2 ", "2.0", "1_000", "٣", "9" * rng.randint(1, 5000), "", "0x10",
                 "host:1", "[::1]:80", "a:99999", "h:0", "192.0.2.1:1234,192.0.2.2:1234", ":" * rng.randint(1, 9),
                 "x" * rng.randint(1, 100_000) + ":1", ",".join(["h:1"] * rng.randint(1, 2000)), "\x00", "é:1"]
        value = rng.choice(pools)
        if rng.random() < 0.3:
            value = "".join(rng.choice(value + "0123456789:,[]. -_") for _ in range(rng.randint(0, 40)))
        return value

    env = {}
    for name in cluster.JOB_VARIABLES:
        if rng.random() < 0.85:
            env[name] = text() if rng.random() < 0.95 else rng.choice([2, None, b"1", 1.5])
    return env


def _worker(args) -> None:
    """Runs one loader's cases from ``--start``, appending one JSON line per
    input to ``--results`` and writing the case number to ``--progress``
    first (so that the parent knows which input a crash happened on)."""
    from tests.fuzz import harness, targets

    workdir = tempfile.mkdtemp(prefix=f"kd-fuzz-{args.worker}-", dir=args.workdir)
    marker = os.path.join(args.workdir, "MARKER")
    if args.worker == "environment":
        target = targets.environment_target()
        rng = random.Random(args.seed)
        envs = (random_environment(rng) for _ in range(args.examples))
        inputs = ((f"#{i} {env!r:.300}", env) for i, env in enumerate(envs))
    else:
        target = targets.make_targets(os.path.join(workdir, "seeds"), marker, [args.worker])[args.worker]
        harness.warm_up(target, workdir, marker)
        inputs = cases(target, args.examples, args.seed)
    with open(args.results, "a") as out:
        for i, (name, data) in enumerate(inputs):
            if i < args.start:
                continue
            with open(args.progress, "w") as f:
                f.write(f"{i}\t{name}")
            outcome = harness.run_case(target, data, workdir, marker, name)
            out.write(json.dumps({"i": i, "case": name, "result": outcome.result, "failure": outcome.failure,
                                  "seconds": outcome.seconds, "message": outcome.message[:300]}) + "\n")
            out.flush()


def _watch(proc, progress: str, hang_seconds: float) -> bool:
    """Waits for worker `proc`; kills it when its progress file has not
    changed for `hang_seconds` (native code looping with the GIL held
    cannot be interrupted from inside). Returns whether it was killed."""
    while proc.poll() is None:
        time.sleep(1)
        changed = os.path.getmtime(progress) if os.path.exists(progress) else None
        if changed is not None and time.time() - changed > hang_seconds:
            proc.kill()
            proc.wait()
            return True
    return False


def _run_target(name: str, args, scratch: str) -> list:
    """Runs `name`'s worker until all its inputs are done, restarting it
    after a crash; returns the outcomes (a crash is one, on its input)."""
    results, progress = os.path.join(scratch, f"{name}.jsonl"), os.path.join(scratch, f"{name}.progress")
    start, crashes = 0, []
    while True:
        command = [sys.executable, __file__, "--worker", name, "--examples", str(args.examples), "--seed",
                   str(args.seed), "--start", str(start), "--results", results, "--progress", progress,
                   "--workdir", scratch]
        with open(os.path.join(scratch, f"{name}.stderr"), "w+") as err:
            proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
            hung = _watch(proc, progress, args.hang_seconds)
            err.seek(0)
            tail = err.read().strip().splitlines()[-1:]
        if proc.returncode == 0:
            break
        if not os.path.exists(progress):  # the seeds themselves failed
            raise SystemExit(f"{name}: worker failed before its first input: {tail}")
        index, _, case = open(progress).read().partition("\t")
        failure = f"no answer after {args.hang_seconds} s (killed)" if hung else f"the process died: {tail}"
        crashes.append({"i": int(index), "case": case, "result": "hang" if hung else f"crash ({proc.returncode})",
                        "failure": failure, "seconds": 0.0, "message": ""})
        start = int(index) + 1
        os.remove(progress)
    with open(results) as f:
        return [json.loads(line) for line in f] + crashes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=1000, help="mutations per loader (default 1000)")
    parser.add_argument("--targets", default=",".join(ALL_TARGETS), help="comma-separated loaders (default all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hang-seconds", type=float, default=120,
                        help="an input without an answer for this long is a hang (default %(default)s)")
    parser.add_argument("--list", action="store_true", help="list the loaders and exit")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--results", help=argparse.SUPPRESS)
    parser.add_argument("--progress", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(ALL_TARGETS))
        return 0
    if args.worker:
        _worker(args)
        return 0
    names = [n.strip() for n in args.targets.split(",") if n.strip()]
    unknown = sorted(set(names) - set(ALL_TARGETS))
    if unknown:
        parser.error(f"unknown loaders {unknown}; --list shows them")
    rows, failures = [], []
    with tempfile.TemporaryDirectory(prefix="kd-fuzz-") as scratch:
        for name in names:
            start = time.perf_counter()
            outcomes = _run_target(name, args, scratch)
            seconds = time.perf_counter() - start
            counts = collections.Counter(o["result"] if o["failure"] is None else "failure" for o in outcomes)
            bad = [o for o in outcomes if o["failure"]]
            kinds = collections.Counter(f"{o['result']}: {o['failure'][:90]}" for o in bad)
            rows.append((name, len(outcomes), counts["valid"], counts["ValueError"], len(bad), len(kinds),
                         len(outcomes) / seconds))
            failures += [(name, kind, n, next(o["case"] for o in bad if f"{o['result']}: {o['failure'][:90]}"
                                              == kind)) for kind, n in kinds.most_common()]
            print(f"{name}: {len(outcomes)} inputs, {len(bad)} failures, {seconds:.0f} s", file=sys.stderr)
    print(f"{'loader':<14} {'inputs':>7} {'valid':>7} {'ValueError':>10} {'failures':>8} {'kinds':>5} {'inputs/s':>8}")
    for name, n, valid, value_error, bad, kinds, rate in rows:
        print(f"{name:<14} {n:>7} {valid:>7} {value_error:>10} {bad:>8} {kinds:>5} {rate:>8.1f}")
    for name, kind, n, case in failures:
        print(f"\n{name}: {n} x {kind}\n  first: {case[:400]}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
