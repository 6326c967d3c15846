"""The ``keras-densenet`` command line: a thin layer over the library.

Every subcommand parses its arguments here and calls one library function.
Bad input (a `ValueError`, a missing file) becomes one line on stderr and
exit code 2, without a traceback.

Example::

    keras-densenet table
    keras-densenet train --epochs 3
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence


class UsageError(ValueError):
    """Bad command-line input: reported on one line, exit code 2."""


def _backend_from_argv(argv: Sequence[str]) -> None:
    # The backend is fixed when keras is imported, so `--backend` must be
    # applied before any library import.
    for i, arg in enumerate(argv):
        if arg == "--backend" and i + 1 < len(argv):
            os.environ["KERAS_BACKEND"] = argv[i + 1]
        elif arg.startswith("--backend="):
            os.environ["KERAS_BACKEND"] = arg.split("=", 1)[1]


# --- table -----------------------------------------------------------------


def _add_table(sub) -> None:
    p = sub.add_parser("table", help="list the registered variants and their weights")
    p.set_defaults(func=_run_table)


def _run_table(args) -> int:
    from keras_densenet import registry

    print(f"{'variant':22} {'blocks':16} {'k':>3} {'weights':24} top-1")
    for v in registry.VARIANTS.values():
        top1 = ", ".join(f"{n} {w.top1}" for n, w in v.weights.items() if w.top1) or "-"
        print(
            f"{v.name:22} {str(v.arch.blocks):16} {v.arch.growth_rate:>3} "
            f"{','.join(v.weights) or '-':24} {top1}"
        )
    return 0


_SUBCOMMANDS = [_add_table]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keras-densenet",
        description="DenseNet for Keras 3: train, predict, convert, export, table, bench.",
    )
    parser.add_argument(
        "--backend",
        choices=("tensorflow", "jax", "torch"),
        help="Keras backend (default: $KERAS_BACKEND or tensorflow)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in _SUBCOMMANDS:
        add(sub)
    return parser




def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the CLI; returns the exit code (0 ok, 2 bad input)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    _backend_from_argv(argv)
    args = build_parser().parse_args(argv)  # argparse exits 2 on bad usage
    try:
        return args.func(args) or 0
    except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as e:
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"keras-densenet {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"keras-densenet {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
