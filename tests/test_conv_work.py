"""The suite's convolution-work counter (tests/conv_work/) counts what a
process runs: jitted JAX steps once per call (forward and backward, through
nested functions), eager JAX convolutions and PyTorch's conv2d, each under
the test that ran it."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from tests.helpers import SCRIPTS

COUNTER = pathlib.Path(__file__).resolve().parent / "conv_work"


@pytest.mark.one_backend("jax", reason="backend-independent")
def test_counts_jitted_calls_eager_convolutions_and_torch(tmp_path):
    pytest.importorskip("jax")
    pytest.importorskip("torch")
    env = dict(os.environ, KD_CONV_WORK=str(tmp_path), PYTHONPATH=str(COUNTER),
               PYTEST_CURRENT_TEST="tests/x.py::test_a (call)")
    proc = subprocess.run([sys.executable, str(SCRIPTS / "conv_work_child.py")], env=env, capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (tally,) = tmp_path.glob("*.json")
    rows = {row["engine"]: row for row in json.loads(tally.read_text())["rows"]}
    forward = 2 * 8 * 8 * 4 * (3 * 3 * 3)  # output elements x window x input channels
    assert rows["jax"]["macs"] == 3 * 3 * forward + forward + 2 * forward
    assert rows["torch"]["macs"] == forward
    assert {row["test"] for row in rows.values()} == {"tests/x.py::test_a"}
    assert "jax-uncounted-calls" not in rows
