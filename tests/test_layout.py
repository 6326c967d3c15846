"""The package's layout: subpackages by layer, imports that run one way
(the CLI on top, keras-free facts at the bottom), no cycles, and no
``__init__`` that imports keras (the CLI chooses the backend first)."""

import ast
import pathlib
import subprocess
import sys

from tests.helpers import SCRIPTS

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "keras_densenet"

#: Each subpackage's layer, from the bottom. A module imports from its own
#: subpackage or from lower layers only (``layers`` and ``weights`` are
#: independent of each other, and so are ``models`` and ``data``,
#: ``training`` and ``deployment``, and ``tools`` and ``hub``). ``hub``
#: writes presets from the models and weights; only the CLI imports it.
LAYERS = {
    "core": 0, "layers": 1, "weights": 1, "models": 2, "data": 2, "training": 3, "deployment": 3,
    "tools": 4, "hub": 4, "benchmarks": 5, "cli": 6, "__main__": 7,
}


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: pathlib.Path) -> set:
    """The keras_densenet modules `path` imports, at any depth of the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("keras_densenet")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("keras_densenet"):
            for alias in node.names:  # `from keras_densenet.core import registry` names a module
                candidate = f"{node.module}.{alias.name}"
                is_module = (PACKAGE.parent / candidate.replace(".", "/")).with_suffix(".py").exists()
                found.add(candidate if is_module else node.module)
    return found


def _graph() -> dict:
    return {_module_name(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def _layer(module: str):
    parts = module.split(".")
    return None if len(parts) < 2 else LAYERS[parts[1]]


def test_every_subpackage_has_a_layer():
    subpackages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    top_modules = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    assert subpackages | top_modules == set(LAYERS)


def test_imports_never_go_upward_or_sideways():
    graph = _graph()
    # The parser sees the imports (a lazy one inside a function included).
    assert "keras_densenet.layers.blocks" in graph["keras_densenet.models.densenet"]
    assert "keras_densenet.training.train" in graph["keras_densenet.cli.train"]
    offenders = []
    for module, imported in graph.items():
        for target in imported:
            if _layer(target) is None:  # the package's lazy top-level names
                continue
            same_package = target.split(".")[1] == module.split(".")[1] if _layer(module) is not None else False
            if not same_package and _layer(module) is not None and _layer(target) >= _layer(module):
                offenders.append(f"{module} -> {target}")
    assert offenders == []


def test_only_the_cli_imports_hub():
    """The builders load presets through ``weights``; ``hub`` (writing
    presets) sits on top, for the CLI alone."""
    graph = _graph()
    importers = sorted(module for module, imported in graph.items()
                       if any(t.startswith("keras_densenet.hub") for t in imported)
                       and not module.startswith(("keras_densenet.hub", "keras_densenet.cli")))
    assert importers == []
    assert "keras_densenet.hub.convert" in graph["keras_densenet.cli.convert"]


def test_no_import_cycles():
    graph = _graph()
    state = {}

    def visit(module, path):
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                raise AssertionError(" -> ".join(path + [module, target]))
            if target in graph and target not in state:
                visit(target, path + [module])
        state[module] = "done"

    for module in graph:
        if module not in state:
            visit(module, [])


def test_subpackage_inits_do_not_import_keras():
    names = sorted(_module_name(p) for p in PACKAGE.rglob("__init__.py"))
    out = subprocess.run([sys.executable, str(SCRIPTS / "import_modules.py"), *names], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
