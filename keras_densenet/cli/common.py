"""What every ``keras-densenet`` command shares: the ``--backend`` option,
the parser that re-spells library errors in the CLI's words, the one-line
error, and choosing the Keras backend before keras is imported.

Example::

    from keras_densenet.cli import common

    parser = common.Parser(prog="keras-densenet")
    sub = parser.add_subparsers(dest="command", parser_class=common.Parser)
    p = common.command_parser(sub, "table", help="the registered variants")
    p.add_argument("--models", metavar="A,B")
    p.in_cli_words("`models` must name a variant")  # '`--models` must name a variant'
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Optional

# Keras-free modules only: keras (hence its backend) is imported by the
# commands, after the arguments are checked and the backend is chosen.
from keras_densenet.core import backends, extras, registry

#: The registered variants, as the commands' help lists them.
VARIANTS = ", ".join(registry.VARIANTS)
#: What a command answers with one line and exit code 2: bad input.
BAD_INPUT = (ValueError, FileNotFoundError, NotADirectoryError, PermissionError, extras.MissingExtraError)


def add_backend_option(parser: argparse.ArgumentParser, default) -> None:
    """Adds ``--backend`` to `parser` with `default`."""
    parser.add_argument(
        "--backend",
        choices=backends.BACKENDS,
        default=default,
        help="Keras backend (default: $KERAS_BACKEND, ~/.keras/keras.json, else the first "
        f"installed of {', '.join(backends.BACKENDS)})",
    )


def _command_options() -> argparse.ArgumentParser:
    """The options every command takes after its name too."""
    parser = argparse.ArgumentParser(add_help=False)
    # After the command it must not reset a value given before it: SUPPRESS.
    add_backend_option(parser, argparse.SUPPRESS)
    return parser


class Parser(argparse.ArgumentParser):
    """An ArgumentParser that remembers how its options are spelled, so that
    library errors, which name function arguments (`` `model_path` ``), reach
    the user in the CLI's words (``--model``)."""

    def __init__(self, *args, **kwargs):
        self.spelling: dict = {}  # before super(), which adds --help
        super().__init__(*args, **kwargs)

    def add_argument(self, *args, **kwargs):
        action = super().add_argument(*args, **kwargs)
        if action.option_strings:
            self.spelling[action.dest] = action.option_strings[-1]
        elif isinstance(action.metavar, str):
            self.spelling[action.dest] = action.metavar
        return action

    def in_cli_words(self, message: str) -> str:
        """`message` with every known argument name as the CLI spells it."""
        def spell(match):
            return match[0].replace(match[1], self.spelling.get(match[1], match[1]))

        message = re.sub(r"`(\w+)`", spell, message)
        return re.sub(r"Received: (\w+)=", spell, message)


def command_parser(sub, name: str, **kwargs) -> Parser:
    """A command's parser, added to the sub-parsers `sub`, with the options
    every command shares (``--backend``).

    The namespace it parses names the parser (``cli_parser``), whose words
    and ``prog`` its errors use; a command sets its ``func`` and, to answer
    bad options before keras is imported, its ``check`` (a sub-command
    keeps its command's).
    """
    kwargs["parents"] = [*kwargs.get("parents", ()), _command_options()]
    parser = sub.add_parser(name, **kwargs)
    parser.set_defaults(cli_parser=parser)
    return parser


#: How ``--weights`` spells random initialisation (any case).
NO_WEIGHTS = "none"


def weights_value(text: str) -> Optional[str]:
    """An option's ``--weights`` value: ``none`` (any case) is ``None``,
    random initial weights; anything else (a weight-set name, a file) as
    given. Used as the option's ``type``.

    Example:

    >>> weights_value("None"), weights_value("imagenet")
    (None, 'imagenet')
    """
    return None if text.strip().lower() == NO_WEIGHTS else text


def add_weights_option(parser: argparse.ArgumentParser, default, about: str, default_means: str = "none") -> None:
    """Adds ``--weights NAME|PATH|none`` to `parser`: `about`, then what
    the default (`default_means`) and ``none`` mean. A `default` of
    ``argparse.SUPPRESS`` leaves ``weights`` out of the namespace when the
    option is not given (to tell it from ``none``)."""
    parser.add_argument("--weights", type=weights_value, default=default, metavar="NAME|PATH|none",
                        help=f"{about} (default: {default_means}; none: random initial weights)")


def add_image_inputs(parser: argparse.ArgumentParser, dest: str, metavar: str) -> None:
    """Adds the positional image inputs of the commands that read image
    files (``predict``, ``features``): files, directories, glob patterns."""
    parser.add_argument(dest, nargs="+", metavar=metavar,
                        help="image files, directories (searched recursively) or glob patterns, in sorted order")


def add_batching_options(parser: argparse.ArgumentParser, batch_size: int) -> None:
    """Adds ``--batch-size`` (default `batch_size`) and ``--workers``, how
    the image inputs of `add_image_inputs` stream through the model."""
    parser.add_argument("--batch-size", type=int, default=batch_size, help="images per batch (default %(default)s)")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="threads decoding the next images while the model runs (default: one per core, "
                             "at most 4)")


def check_batching_options(args: argparse.Namespace) -> None:
    """Answers what `add_batching_options` parsed that argparse cannot check
    (ValueError); the library checks the rest."""
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be an integer >= 1. Received: {args.workers}")


def csv(text: str) -> list:
    """The items of a comma-separated option, stripped, empty ones left out."""
    return [t.strip() for t in text.split(",") if t.strip()]


def error(parser: Optional[Parser], error: BaseException, prog: str = "keras-densenet") -> int:
    """Prints `error` as one line on stderr, in `parser`'s words; returns 2."""
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if parser is not None:
        message = parser.in_cli_words(message)
        prog = parser.prog
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 2


def keras_backend_mismatch() -> Optional[str]:
    """The backend keras was imported with, if it differs from $KERAS_BACKEND."""
    keras = sys.modules.get("keras")
    wanted = os.environ.get("KERAS_BACKEND")
    if keras is None or wanted is None:
        return None  # keras not imported yet: it will read $KERAS_BACKEND
    current = keras.backend.backend()
    return current if current != wanted else None


def use_backend(backend: str, note: Optional[str]) -> int:
    """Sets $KERAS_BACKEND to `backend` before keras is imported; returns 0,
    or 2 (with one line on stderr) when keras already runs on another one.

    `note`: what `backends.choose` said about its choice, printed unless
    keras is already imported.
    """
    os.environ["KERAS_BACKEND"] = backend
    if backend == "tensorflow" and "tensorflow" not in sys.modules:
        onednn_note = backends.enable_onednn()
        if onednn_note is not None:
            print(f"keras-densenet: {onednn_note}", file=sys.stderr)
    current = keras_backend_mismatch()
    if current is not None:
        # Only when called in-process after keras was imported: the console
        # script imports nothing of keras before this point.
        print(
            f"keras-densenet: error: --backend {backend} cannot apply: "
            f"keras is already running on {current} in this process",
            file=sys.stderr,
        )
        return 2
    if note is not None and "keras" not in sys.modules:
        print(f"keras-densenet: {note}", file=sys.stderr)
    return 0
