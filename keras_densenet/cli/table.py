"""``keras-densenet table``: every registered variant and keras.applications'
ResNets, with facts counted from the built graphs.

Example::

    keras-densenet table --format markdown --models densenet121,resnet50
"""

from __future__ import annotations

from keras_densenet.cli import common


def add_parser(sub) -> None:
    """Adds ``table`` to the sub-parsers `sub`."""
    p = common.command_parser(
        sub,
        "table",
        help="the registered variants and ResNets: depth, parameters, MACs, memory, connections",
        description="Every registered variant plus keras.applications' ResNet-50/101/152, "
        "with facts counted from the built graphs (keras_densenet.tools.table): depth, "
        "parameters, multiply-accumulates, training activation memory per image "
        "(standard and memory-efficient), direct connections and channels per dense block.",
    )
    p.add_argument("--format", default="text", choices=("text", "json", "markdown"),
                   help="text (default), json (one object per model) or markdown")
    p.add_argument("--models", metavar="A,B", help="comma-separated subset (default: all)")
    p.set_defaults(func=run)


def run(args) -> int:
    """Prints the table, then (not in JSON) the keras version and backend."""
    from keras_densenet.tools import table as table_lib

    rows = table_lib.table(common.csv(args.models) if args.models else None)
    print(table_lib.format_table(rows, args.format))
    if args.format != "json":  # keep the JSON parseable
        import keras

        print(f"keras {keras.__version__}, backend: {keras.backend.backend()}")
    return 0
