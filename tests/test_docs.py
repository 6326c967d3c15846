"""The examples in the docstrings of the modules that need no model build
run as written (the others' examples build models: the tests cover them)."""

import doctest
import importlib

import pytest

QUICK_MODULES = [
    "core.arch", "core.backends", "core.checks", "core.cluster", "core.extras", "core.fc_arch", "core.files",
    "core.internals", "core.pretrained", "core.registry",
    "weights.checkpoints", "weights.hub_names", "weights.presets", "data.listing", "data.images", "data.progress",
    "training.config", "data.canvases", "deployment.runtimes", "deployment.export",
    "deployment.writers", "deployment.quantize", "training.schedule", "training.batches",
    "training.addresses",
    "layers.losses",
]


@pytest.mark.parametrize("name", QUICK_MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(f"keras_densenet.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"keras_densenet.{name} has no examples"
    assert result.failed == 0
