"""Every script in examples/ runs with --smoke on the current backend."""

import os
import pathlib
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


def test_examples_exist():
    assert len(EXAMPLES) >= 5


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.stem)
def test_example_smoke(script, tmp_path):
    env = {**os.environ, "KERAS_BACKEND": keras.backend.backend(), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [sys.executable, str(script), "--smoke"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert EXPECTED.get(script.stem, "accuracy") in proc.stdout
    for figure in FIGURES.get(script.stem, ()):
        assert (tmp_path / figure).stat().st_size > 0
