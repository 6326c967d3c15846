"""The flat ``keras-densenet bench`` options of earlier versions
(``--measure``, ``--time-size``, ``--runtimes-variant`` ...): they still
work, and a one-line note names each measure's sub-command spelling.

Bare ``bench`` (no measure) runs `bench.DEFAULT_MEASURES` with these
options' values; they are hidden from ``bench --help``, which lists the
sub-commands instead.

Example::

    keras-densenet bench --measure runtimes --runtimes-variant densenet121
    # note: ... use `keras-densenet bench runtimes --variant densenet121`
"""

from __future__ import annotations

import argparse
import shlex
from typing import Optional

from keras_densenet.benchmarks import bench as bench_lib
from keras_densenet.cli import bench_measures, common

#: The flat options that have a measure's sub-command spelling.
_FLAT = (
    ("--variants", str), ("--image-size", int), ("--backends", str), ("--time-variant", str), ("--time-size", int),
    ("--time-batch", int), ("--rss-batch", int), ("--steps", int), ("--throughput-variant", str),
    ("--throughput-size", int), ("--throughput-batch", int), ("--rounds", int), ("--iters", int),
    ("--precision", str), ("--repeats", int), ("--step-sizes", str), ("--step-count", int), ("--onednn", str),
    ("--runtimes-variant", str), ("--runtimes-size", int), ("--runtimes-batch", int), ("--runtimes-threads", int),
    ("--runtimes-candidates", str), ("--runtimes-dir", str),
)
#: ``--measure``'s default: what bare ``bench`` runs.
DEFAULT_MEASURE = ",".join(bench_lib.DEFAULT_MEASURES)


def add_options(p: argparse.ArgumentParser) -> None:
    """Adds ``--measure``, ``--json`` and the flat options to the ``bench`` parser `p`."""
    d = bench_lib.BenchOptions()
    p.add_argument("--measure", default=DEFAULT_MEASURE, help=argparse.SUPPRESS)
    for flag, kind in _FLAT:
        field = flag[2:].replace("-", "_")
        value = getattr(d, field)
        default = ",".join(map(str, value)) if field in bench_measures.LIST_FIELDS else value
        p.add_argument(flag, type=kind, default=default, help=argparse.SUPPRESS)
    p.add_argument("--json", dest="json_path", metavar="FILE",
                   help="also write the results as JSON to FILE ('-': stdout)")


def new_spelling(args, parser: argparse.ArgumentParser) -> Optional[str]:
    """The sub-command spelling of what `args` (parsed by the ``bench``
    parser `parser`, without a measure) asks for, as one line; ``None`` when
    it uses no flat option (bare ``bench``, ``--json`` included).

    Options at their defaults are left out, and so are those no chosen
    measure reads; ``--json`` goes with a single measure only (several
    commands would each write the file).
    """
    fields = [flag[2:].replace("-", "_") for flag, _ in _FLAT]
    changed = {f for f in fields if getattr(args, f) != parser.get_default(f)}
    if args.measure == DEFAULT_MEASURE and not changed:
        return None
    names = bench_lib.measures(common.csv(args.measure))
    commands = []
    for name in names:
        argv = ["keras-densenet", "bench", name]
        for flag, field, _ in bench_measures.MEASURE_OPTIONS[name][1]:
            if field in changed:
                argv += [flag, str(getattr(args, field))]
        if len(names) == 1 and args.json_path is not None:
            argv += ["--json", args.json_path]
        commands.append(f"`{shlex.join(argv)}`")
    return "--measure and the flat bench options are deprecated: use " + " then ".join(commands)
