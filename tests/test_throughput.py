"""`bench throughput` (keras_densenet/benchmarks/throughput.py): a tiny run's
JSON is complete and self-consistent. This checks the bookkeeping (keys,
medians, ratios, which candidates run where), not speed: speed figures come
from running the command itself (README)."""

import io
import json
import math

import numpy as np
import pytest

from keras_densenet import cli
from keras_densenet.benchmarks import bench, throughput
from keras_densenet.core.registry import ArchConfig
from tests.helpers import BACKEND

TINY = ArchConfig(blocks=(1, 2), growth_rate=4, num_init_features=8)
ROUNDS = 2

try:
    import torch  # noqa: F401

    HAS_TORCH = True
except ImportError:
    HAS_TORCH = False


@pytest.fixture(scope="module")
def result():
    return throughput.measure(TINY, image_size=32, batch_size=2, rounds=ROUNDS, iters=1)


def test_every_candidate_timed_and_ratios_consistent(result):
    expected = {"ours"}
    if BACKEND == "torch":
        expected |= {"ours_channels_first", "ours_fused_bn", "ours_channels_first_fused_bn"}
    if HAS_TORCH:
        expected |= {"native"}
    assert set(result["inference"]) == expected
    assert set(result["training"]) == expected | {"ours_memory_efficient"} | (
        {"native_memory_efficient"} if HAS_TORCH else set()) | (
        {"ours_memory_efficient_fused_bn"} if BACKEND == "torch" else set())
    for mode in throughput.MODES:
        ours = result[mode]["ours"]["images_per_s"]
        for name, r in result[mode].items():
            assert len(r["rounds"]) == ROUNDS
            assert r["min"] <= r["images_per_s"] <= r["max"]
            assert r["images_per_s"] == pytest.approx(float(np.median(r["rounds"])))
            assert result["ratios"][mode][name] == pytest.approx(r["images_per_s"] / ours)
        assert result["ratios"][mode]["ours"] == pytest.approx(1.0)
    if HAS_TORCH:
        assert result["native_source"] in ("torchvision", "keras_densenet.benchmarks.torch_densenet")
    assert result["machine"]["backend"] == BACKEND and result["config"]["batch_size"] == 2


def test_training_memory_where_the_backend_reports_it(result):
    memory = result["memory_mb_per_image"]
    assert set(memory) == set(result["training"])
    if BACKEND == "jax":  # XLA's temporary buffers, on any device
        assert memory["ours"] > 0 and memory["ours_memory_efficient"] > 0
        assert all(math.isfinite(memory[n]) for n in memory if not n.startswith("native"))
    elif not result["machine"].get("platform") == "gpu":
        assert memory["ours"] is None  # CPU: no peak-memory counter


def test_json_and_table(result, tmp_path):
    path = tmp_path / "tp.json"
    bench.write_json({"throughput": {BACKEND: result}}, str(path))
    assert json.loads(path.read_text())["throughput"][BACKEND]["ratios"] == json.loads(json.dumps(result["ratios"]))
    out = io.StringIO()
    bench.print_throughput(result, out)
    table = out.getvalue()
    assert "| ours | " in table and "training MB/image" in table
    for name in result["training"]:
        assert f"| {name} |" in table


@pytest.mark.parametrize("argv", [
    ["throughput", "--rounds", "0"],
    ["throughput", "--batch", "-1"],
    ["throughput", "--precision", "float8"],
    ["throughput", "--variant", "densenet7"],
])
def test_bad_throughput_options_exit_2(argv, capsys):
    assert cli.main(["bench", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("keras-densenet bench throughput: error:")
