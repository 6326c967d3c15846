"""``keras-densenet bench``: a sub-command per measure of
`keras_densenet.benchmarks.bench` (`bench_measures`); bare ``bench`` runs
the default measures (activations, time, rss). The flat options of earlier
versions still work, with a note naming the new spelling (`bench_flat`).

Example::

    keras-densenet bench
    keras-densenet bench runtimes --variant densenet121 --size 224
    keras-densenet bench time --backends jax,torch --batch 64
    keras-densenet --backend jax bench volume
"""

from __future__ import annotations

import dataclasses
import re
import sys

from keras_densenet.benchmarks import bench as bench_lib
from keras_densenet.cli import bench_flat, bench_measures, common

_FIELDS = tuple(f.name for f in dataclasses.fields(bench_lib.BenchOptions))


def add_parser(sub) -> None:
    """Adds ``bench`` and its measures' sub-commands to the sub-parsers `sub`."""
    p = common.command_parser(
        sub,
        "bench",
        help="memory-efficient vs standard: activation memory, step time, peak RSS; "
        "throughput against keras.applications and native PyTorch; the trainer's step time; "
        "CPU inference by runtime",
        description="Benchmarks, a sub-command per measure (MEASURE --help: its options). Without one: "
        f"{', '.join(bench_lib.DEFAULT_MEASURES)} with their defaults.",
        epilog="The flat options of earlier versions (--measure, --time-size, --runtimes-variant, ...) still work; "
        "a note on stderr names the sub-command spelling.",
    )
    bench_flat.add_options(p)
    measures = p.add_subparsers(dest="bench_measure", metavar="MEASURE", parser_class=common.Parser)
    bench_measures.add_parsers(measures)
    bench_measures.add_volume_parser(measures)  # its own options, check and run
    p.set_defaults(func=run, check=check)


def options(args) -> bench_lib.BenchOptions:
    """The `BenchOptions` of `args` (the options' dests are its field names)."""
    values = {k: v for k, v in vars(args).items() if k in _FIELDS}
    for name in bench_measures.LIST_FIELDS:
        if isinstance(values[name], str):
            values[name] = common.csv(values[name])
    # Integers become ints; anything else goes on as text, for BenchOptions
    # to reject by name.
    values["step_sizes"] = [int(s) if re.fullmatch(r"[+-]?\d+", str(s)) else s for s in values["step_sizes"]]
    return bench_lib.BenchOptions(**values)


def measures(args) -> tuple:
    """The measures `args` asks for: its sub-command's, else ``--measure``'s."""
    if args.bench_measure is None:
        return bench_lib.measures(common.csv(args.measure))
    if args.measure != bench_flat.DEFAULT_MEASURE:
        raise ValueError(f"--measure and a measure sub-command exclude each other: "
                         f"`keras-densenet bench {args.bench_measure}` runs {args.bench_measure} alone")
    return (args.bench_measure,)


def check(args) -> None:
    """Answers bad options before keras is imported (ValueError)."""
    measures(args)
    options(args)


def run(args) -> int:
    """Runs the measures, printing their tables (and a note for flat options)."""
    if args.bench_measure is None:
        note = bench_flat.new_spelling(args, args.cli_parser)
        if note is not None:
            print(f"{args.cli_parser.prog}: note: {note}", file=sys.stderr)
    bench_lib.run(measures(args), options(args), json_path=args.json_path)
    return 0
