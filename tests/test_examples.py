"""Every script in examples/ runs with --smoke on the current backend."""

import os
import pathlib
import runpy
import subprocess
import sys

import keras
import pytest

EXAMPLES = sorted((pathlib.Path(__file__).parent.parent / "examples").glob("*.py"))


#: What an example prints when it works, where that is not "accuracy".
EXPECTED = {
    "dense_connectivity": "6-layer dense block: 21 direct connections",
    "dense_mlp": "R^2",
}
#: Figures the learning examples save (in their working directory).
FIGURES = {
    "dense_connectivity": ("dense_connectivity.png",),
    "densenet_vs_resnet": ("densenet_vs_resnet.png",),
    "feature_reuse_digits": ("reuse_digits.png", "reuse_digits.json"),
}
#: The example run as a command in a fresh interpreter too: the cheapest
#: (a graph and a figure, nothing trained; the same on every backend).
AS_COMMAND = "dense_connectivity"


def test_examples_exist():
    assert len(EXAMPLES) >= 5 and AS_COMMAND in [p.stem for p in EXAMPLES]


def _check_outputs(script, stdout, directory):
    assert EXPECTED.get(script.stem, "accuracy") in stdout
    for figure in FIGURES.get(script.stem, ()):
        assert (directory / figure).stat().st_size > 0


#: Up to 170 s for an example on a 2-core machine loaded 5x over (fine_tuning,
#: densenet_vs_resnet on JAX), against the default limit of 300 s.
@pytest.mark.timeout(600)
@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.stem)
def test_example_smoke(script, tmp_path, monkeypatch, capsys):
    """``python SCRIPT --smoke``, run in this process: the script as
    ``__main__`` with its own argv, in an empty working directory. Keras and
    the backend are already imported (a fresh interpreter per example spent
    4-7 s importing them); the fixtures reset Keras' global state after it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(script), "--smoke"])
    runpy.run_path(str(script), run_name="__main__")  # raises if the script fails
    _check_outputs(script, capsys.readouterr().out, tmp_path)


@pytest.mark.one_backend("torch", "tensorflow", "jax",
                         reason=f"{AS_COMMAND} trains nothing (the same on every backend): one fresh interpreter")
def test_an_example_runs_as_a_command(tmp_path):
    script = next(p for p in EXAMPLES if p.stem == AS_COMMAND)
    env = {**os.environ, "KERAS_BACKEND": keras.backend.backend(), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [sys.executable, str(script), "--smoke"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    _check_outputs(script, proc.stdout, tmp_path)
