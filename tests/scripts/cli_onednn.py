"""Child process of tests/test_cli.py
(test_cli_turns_onednn_on_for_tensorflow_only_when_unset): runs the
``keras-densenet`` command with argv, then prints
``onednn=<$TF_ENABLE_ONEDNN_OPTS as the command left it, or unset>`` and
exits with the command's status.
"""

import os
import sys

from keras_densenet.cli import main

if __name__ == "__main__":
    rc = main(sys.argv[1:])
    print("onednn=" + os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset"))
    sys.exit(rc)
