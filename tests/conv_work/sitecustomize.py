"""Counts the convolution work a Python process does, when asked.

Python imports ``sitecustomize`` at start-up from ``sys.path`` (in virtual
environments too), so with this folder on ``PYTHONPATH`` and
``KD_CONV_WORK`` naming a directory, every process the test suite starts
(pytest-xdist workers, CLI and example subprocesses) counts the
multiply-accumulates (MACs) of the convolutions it runs and writes them
to ``KD_CONV_WORK/<pid>.json`` as it goes, keyed by the test that ran them
(``PYTEST_CURRENT_TEST``, which child processes inherit). ``report.py``
adds the files up.

What is counted:

- JAX: every call of a ``jax.jit`` function (Keras' train, test and predict
  steps) adds the MACs of the convolutions in its lowered StableHLO, forward
  and backward, through the functions it calls, once per call (a loop body
  would count once: Keras' steps have none); eager
  ``jax.lax.conv_general_dilated`` calls add their own.
- PyTorch: ``torch.nn.functional.conv2d`` calls (the reference module, the
  torch backend's convolutions).

TensorFlow's kernels are not counted, nor the child processes that put
``tests/hide_modules`` (its own ``sitecustomize``) first on ``PYTHONPATH``.
Without ``KD_CONV_WORK`` this module does nothing. It is a measuring aid for
``docs/development.md``, not part of the package.

Example:
    KD_CONV_WORK=/tmp/work PYTHONPATH=$PWD/tests/conv_work \
        KERAS_BACKEND=jax python -m pytest -q -n 2 tests
    python tests/conv_work/report.py /tmp/work
"""

import collections
import functools
import importlib.abc
import importlib.machinery
import json
import math
import os
import re
import sys

_OUT_DIR = os.environ.get("KD_CONV_WORK")
# MACs per (test, engine); the test is the one running when the work ran.
_TALLY = collections.defaultdict(float)
_CONV_LINE = re.compile(
    r"stablehlo\.convolution.*?dim_numbers = \[([^\]]*)\]x\[([^\]]*)\]->\[([^\]]*)\]"
    r".*?:\s*\((tensor<[^>]*>),\s*(tensor<[^>]*>)\)\s*->\s*(tensor<[^>]*>)")
_NAME = r'@("[^"]+"|[\w.$-]+)'  # @main, @_pad_0, @"<lambda>"
_FUNCTION = re.compile(r"func\.func \w* *" + _NAME)
_CALL = re.compile(r"\bcall " + _NAME + r"\(")


def _current_test():
    test = os.environ.get("PYTEST_CURRENT_TEST", "")
    return test.rsplit(" (", 1)[0] or " ".join(sys.argv[:3])


def _add(engine, macs):
    if macs:
        _TALLY[(_current_test(), engine)] += macs
        # Written at once, not at exit: pytest-xdist workers may end before
        # exit handlers run. A small JSON file per training step is cheap.
        _write()


def _dims(tensor_type):
    # "tensor<32x12x12x64xf32>" -> [32, 12, 12, 64]
    return [int(d) for d in tensor_type[7:-1].split("x")[:-1]]


def _line_macs(line):
    match = _CONV_LINE.search(line)
    if not match:
        return 0
    rhs_spec = [d.strip() for d in match.group(2).split(",")]
    rhs, out = _dims(match.group(5)), _dims(match.group(6))
    window = math.prod(size for size, d in zip(rhs, rhs_spec, strict=True) if d not in ("i", "o"))
    return math.prod(out) * window * rhs[rhs_spec.index("i")]


def hlo_conv_macs(text):
    """MACs of the convolutions in StableHLO text, from ``@main`` through
    every function call: each output element sums over the kernel's window
    and its input features. (A loop body counts once.)"""
    own, calls, function = collections.Counter(), collections.defaultdict(list), "main"
    for line in text.splitlines():
        if "func.func" in line:
            function = _FUNCTION.search(line).group(1)
        own[function] += _line_macs(line)
        calls[function] += _CALL.findall(line)

    @functools.lru_cache(maxsize=None)
    def total(name):
        return own[name] + sum(total(callee) for callee in calls[name])

    return total("main")


class _CountedCompiled:
    def __init__(self, compiled, macs):
        self._compiled, self._macs = compiled, macs

    def __call__(self, *args, **kwargs):
        _add("jax", self._macs)
        return self._compiled(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._compiled, name)


class _CountedLowered:
    def __init__(self, lowered):
        self._lowered = lowered

    def compile(self, *args, **kwargs):
        macs = hlo_conv_macs(self._lowered.as_text())
        return _CountedCompiled(self._lowered.compile(*args, **kwargs), macs)

    def __getattr__(self, name):
        return getattr(self._lowered, name)


class _CountedJit:
    """A ``jax.jit`` function that adds its convolutions' MACs per call."""

    def __init__(self, jitted):
        self._jitted = jitted
        self._macs = {}

    def __call__(self, *args, **kwargs):
        import jax

        leaves, treedef = jax.tree_util.tree_flatten((args, kwargs))
        if any(isinstance(x, jax.core.Tracer) for x in leaves):
            return self._jitted(*args, **kwargs)  # inside another program: counted there
        key = treedef, tuple(
            (tuple(x.shape), str(x.dtype)) if hasattr(x, "shape") and hasattr(x, "dtype")
            else (x if isinstance(x, (int, float, str, bool, type(None))) else type(x))
            for x in leaves)
        try:
            if key not in self._macs:
                # Lowered before the call: the call may donate its buffers.
                self._macs[key] = hlo_conv_macs(
                    self._jitted.lower(*args, **kwargs).as_text())
            _add("jax", self._macs[key])
        except Exception:  # a function lower() refuses still runs, uncounted
            _add("jax-uncounted-calls", 1)
        return self._jitted(*args, **kwargs)

    def lower(self, *args, **kwargs):
        return _CountedLowered(self._jitted.lower(*args, **kwargs))

    def __get__(self, obj, objtype=None):
        return self if obj is None else (lambda *a, **k: self(obj, *a, **k))

    def __getattr__(self, name):
        return getattr(self._jitted, name)


def _patch_jax(jax):
    real_jit, real_conv = jax.jit, jax.lax.conv_general_dilated

    def jit(fun=None, *args, **kwargs):
        if fun is None:
            return lambda f: _CountedJit(real_jit(f, *args, **kwargs))
        return _CountedJit(real_jit(fun, *args, **kwargs))

    def conv_general_dilated(lhs, rhs, window_strides, padding, *args, **kwargs):
        out = real_conv(lhs, rhs, window_strides, padding, *args, **kwargs)
        if not isinstance(out, jax.core.Tracer):  # traced ones: counted by jit
            numbers = kwargs.get("dimension_numbers", args[2] if len(args) > 2 else None)
            # rhs_spec: the kernel's (output features, input features, *window)
            spec = jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, numbers).rhs_spec
            _add("jax", math.prod(out.shape) * math.prod(rhs.shape[d] for d in spec[1:]))
        return out

    jax.jit, jax.lax.conv_general_dilated = jit, conv_general_dilated


def _patch_torch_functional(functional):
    real_conv2d = functional.conv2d

    def conv2d(input, weight, *args, **kwargs):
        out = real_conv2d(input, weight, *args, **kwargs)
        # weight: (out, in / groups, kh, kw)
        _add("torch", out.numel() * math.prod(weight.shape[1:]))
        return out

    functional.conv2d = conv2d


class _PatchAfterImport(importlib.abc.MetaPathFinder):
    """Patches a module right after it is first imported."""

    PATCHES = {"jax": _patch_jax, "torch.nn.functional": _patch_torch_functional}

    def find_spec(self, name, path, target=None):
        if name not in self.PATCHES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        exec_module, patch = spec.loader.exec_module, self.PATCHES[name]

        def exec_and_patch(module):
            exec_module(module)
            patch(module)

        spec.loader.exec_module = exec_and_patch
        return spec


def _write():
    rows = [{"test": test, "engine": engine, "macs": macs}
            for (test, engine), macs in _TALLY.items()]
    path = os.path.join(_OUT_DIR, f"{os.getpid()}.json")
    with open(path + ".tmp", "w") as f:
        json.dump({"argv": sys.argv, "rows": rows}, f)
    os.replace(path + ".tmp", path)


if _OUT_DIR:
    os.makedirs(_OUT_DIR, exist_ok=True)
    sys.meta_path.insert(0, _PatchAfterImport())
    # A forked child counts only its own work, in its own file.
    os.register_at_fork(after_in_child=_TALLY.clear)
