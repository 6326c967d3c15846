"""Child process of tests/test_files.py
(test_a_writer_killed_at_any_step_leaves_a_complete_copy_that_recover_restores):
replaces directory PATH with a SavedModel-like directory holding TEXT
through `files.atomic_write`, and dies (``os._exit(9)``, no clean-up, as
SIGKILL) at its STEP-th call of os.rename, os.replace, os.fsync or
shutil.rmtree. Exit 0: it finished before that step.

Usage: python crashing_writer.py PATH TEXT STEP
"""

import os
import shutil
import sys

from keras_densenet.core import files


def dying(real, calls, step):
    def call(*args, **kwargs):
        calls[0] += 1
        if calls[0] == step:
            os._exit(9)
        return real(*args, **kwargs)
    return call


def write_dir(tmp, text):
    os.makedirs(os.path.join(tmp, "variables"))
    for name in ("saved_model.pb", os.path.join("variables", "data")):
        with open(os.path.join(tmp, name), "w") as f:
            f.write(text)


def main(path, text, step):
    calls = [0]
    for module, name in ((os, "rename"), (os, "replace"), (os, "fsync"), (shutil, "rmtree")):
        setattr(module, name, dying(getattr(module, name), calls, step))
    files.atomic_write(path, lambda tmp: write_dir(tmp, text))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
