"""Makes the packages named in $KD_HIDE_MODULES (comma-separated) look not
installed: tests run the CLI as on a machine with, say, JAX but no
TensorFlow. Put this directory on PYTHONPATH to use it."""

import importlib.abc
import os
import sys

_HIDDEN = {name for name in os.environ.get("KD_HIDE_MODULES", "").split(",") if name}


class _Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in _HIDDEN:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


if _HIDDEN:
    sys.meta_path.insert(0, _Hide())
