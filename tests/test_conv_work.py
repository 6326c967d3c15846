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

from tests.helpers import BACKEND, one_backend

COUNTER = pathlib.Path(__file__).resolve().parent / "conv_work"

SCRIPT = """
import jax, jax.numpy as jnp, torch
x, k = jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 4))
conv = lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
step = jax.jit(jax.grad(lambda x, k: jnp.sum(conv(x, k) ** 2), argnums=(0, 1)))
for _ in range(3):
    step(x, k)                   # 3 calls x (forward + 2 gradients)
conv(x, k)                       # eager: 1 forward
inner = jax.jit(conv)
jax.jit(lambda x, k: inner(x, k) + inner(x, k))(x, k)   # one nested function, called twice
torch.nn.Conv2d(3, 4, 3, padding=1)(torch.ones(2, 3, 8, 8))
"""


def test_counts_jitted_calls_eager_convolutions_and_torch(tmp_path):
    runner = one_backend("jax")
    if BACKEND != runner:
        pytest.skip(f"backend-independent: runs in the {runner} suite")
    pytest.importorskip("jax")
    pytest.importorskip("torch")
    env = dict(os.environ, KD_CONV_WORK=str(tmp_path), PYTHONPATH=str(COUNTER),
               PYTEST_CURRENT_TEST="tests/x.py::test_a (call)")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (tally,) = tmp_path.glob("*.json")
    rows = {row["engine"]: row for row in json.loads(tally.read_text())["rows"]}
    forward = 2 * 8 * 8 * 4 * (3 * 3 * 3)  # output elements x window x input channels
    assert rows["jax"]["macs"] == 3 * 3 * forward + forward + 2 * forward
    assert rows["torch"]["macs"] == forward
    assert {row["test"] for row in rows.values()} == {"tests/x.py::test_a"}
    assert "jax-uncounted-calls" not in rows
