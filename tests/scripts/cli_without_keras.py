"""Child process of tests/test_cli.py
(test_bad_arguments_are_answered_before_keras_is_imported) and
tests/test_cli_commands.py
(test_bad_bench_options_are_answered_before_keras_is_imported): runs the
``keras-densenet`` command with argv and exits with its status, after
checking that keras was never imported (an AssertionError, exit 1, if it
was). Prints what the command prints.
"""

import sys

from keras_densenet.cli import main

if __name__ == "__main__":
    rc = main(sys.argv[1:])
    assert "keras" not in sys.modules, "keras was imported"
    sys.exit(rc)
