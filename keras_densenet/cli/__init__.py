"""The ``keras-densenet`` command line: a thin layer over the library.

One module per command (`train`, `segment`, `predict`, `features`, `export`,
`table`, `bench`, `convert`, `reuse`), each with the function that adds its parser
and the ones that check and run it; `common` holds what they share. Bad
input (a `ValueError`, a missing file) becomes one line on stderr and exit
code 2, without a traceback.

Example::

    keras-densenet table
    keras-densenet train --epochs 3
    keras-densenet bench runtimes --variant densenet121 --size 224
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from keras_densenet.cli import bench, common, convert, export, features, predict, reuse, segment, table, train
from keras_densenet.core import backends, extras
from keras_densenet.deployment import export as export_lib

#: The commands, in the order `--help` lists them.
COMMANDS = (train, segment, predict, features, export, table, bench, convert, reuse)


def build_parser() -> common.Parser:
    """The parser of every command; ``parser.subcommands``: name -> parser."""
    parser = common.Parser(
        prog="keras-densenet",
        description="DenseNet for Keras 3: train, segment, predict, features, convert, export, table, bench, reuse.",
    )
    common.add_backend_option(parser, None)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=common.Parser)
    for command in COMMANDS:
        command.add_parser(sub)
    parser.subcommands = dict(sub.choices)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the CLI; returns the exit code (0 ok, 2 bad input, 1 an exported artifact that failed its check)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)  # argparse exits 2 on bad usage
    parser = args.cli_parser  # the command's own (a bench measure's): its words and name
    try:
        # Before keras is imported: bad arguments are answered at once, and
        # the backend is still free to choose.
        check = getattr(args, "check", None)
        if check is not None:
            check(args)
        backend, note = backends.choose(args.backend)
    except (ValueError, extras.MissingExtraError) as e:
        return common.error(parser, e)
    if common.use_backend(backend, note):
        return 2
    try:
        return args.func(args) or 0
    except common.BAD_INPUT as e:
        return common.error(parser, e)
    except export_lib.ExportCheckError as e:  # the input was fine; the artifact was not
        common.error(None, e, parser.prog)
        return 1
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
