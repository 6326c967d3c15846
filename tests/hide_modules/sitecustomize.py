"""Makes the packages named in $KD_HIDE_MODULES (comma-separated) look not
installed: tests run the CLI as on a machine with, say, JAX but no
TensorFlow. Put this directory on PYTHONPATH to use it.

As for a package that is not installed: ``importlib.util.find_spec`` returns
``None`` (probes such as torch._dynamo's for optional packages go on), and
``import`` raises ModuleNotFoundError.
"""

import importlib.abc
import importlib.machinery
import os
import sys

_HIDDEN = {name for name in os.environ.get("KD_HIDE_MODULES", "").split(",") if name}


def _hidden(fullname: str) -> bool:
    return fullname.split(".")[0] in _HIDDEN


class _Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if not _hidden(fullname):
            return None  # the other finders decide
        # A spec whose loader fails: `import` raises ModuleNotFoundError...
        return importlib.machinery.ModuleSpec(fullname, _Refuse())


class _Refuse(importlib.abc.Loader):
    def create_module(self, spec):
        raise ModuleNotFoundError(f"No module named {spec.name!r}", name=spec.name)

    def exec_module(self, module):  # never reached
        raise ModuleNotFoundError(f"No module named {module.__name__!r}", name=module.__name__)


def _find_spec_without_hidden(original):
    def find_spec(name, package=None):
        # ...while find_spec answers None, as for a package not installed.
        resolved = importlib.util.resolve_name(name, package) if name.startswith(".") else name
        if _hidden(resolved):
            return None
        return original(name, package)

    return find_spec


if _HIDDEN:
    import importlib.util

    sys.meta_path.insert(0, _Hide())
    importlib.util.find_spec = _find_spec_without_hidden(importlib.util.find_spec)
    for name in list(sys.modules):  # nothing hidden may stay imported
        if _hidden(name):
            del sys.modules[name]
