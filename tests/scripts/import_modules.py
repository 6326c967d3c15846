"""Child process of tests/test_layout.py
(test_subpackage_inits_do_not_import_keras): imports every module named in
argv, in a fresh interpreter, and prints, as a Python list on one line, the
sorted names of the keras modules that importing them loaded (``[]`` when
none did).
"""

import importlib
import sys


def main(names):
    for name in names:
        importlib.import_module(name)
    print(sorted(m for m in sys.modules if m.split(".")[0] == "keras"))


if __name__ == "__main__":
    main(sys.argv[1:])
