"""Child process of tests/test_models.py
(test_import_keras_densenet_registers_layers_in_any_order): imports the
modules named in argv[1] in that order (``keras_densenet,keras`` or
``keras,keras_densenet``), then loads the ``.keras`` file argv[2] in safe
mode: `import keras_densenet` must register its layers whichever comes
first. Prints nothing; exits non-zero if the file does not load.
"""

import importlib
import sys


def main(order: str, path: str) -> None:
    for name in order.split(","):
        importlib.import_module(name)
    sys.modules["keras"].saving.load_model(path, safe_mode=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
