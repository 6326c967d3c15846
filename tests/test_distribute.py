"""Data-parallel training (keras_densenet.training.distribute) on the engines Keras supports.

The device count is fixed when JAX / TensorFlow initialise, so the
multi-device tests run a script in a subprocess with virtual CPU devices:
8 or 2 on JAX (``XLA_FLAGS=--xla_force_host_platform_device_count``), 2 on
TensorFlow (``tf.config.set_logical_device_configuration``).
They run in the suite of the backend they test; every backend runs the
in-process ``--distribute`` test on its real local devices.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_densenet import cli
from keras_densenet.models import densenet
from keras_densenet.training import distribute
from keras_densenet.training.batches import shardable_batches, trim_to_multiple
from keras_densenet.training.config import TrainConfig, validate
from tests.helpers import BACKEND, SCRIPTS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: float32 round-off between a sharded and an unsharded step.
TOLERANCE = 1e-5

#: The child process of the multi-device tests.
CHILD = SCRIPTS / "distribute_child.py"
#: The limit of the tests that train (pytest-timeout; the default is 300 s):
#: 85-145 s each on a 2-core machine loaded 5x over. A child process gets
#: a little less, so that a hung child fails with its own output.
TRAIN_TIMEOUT_S = 600
CHILD_TIMEOUT_S = TRAIN_TIMEOUT_S - 60

only_jax = pytest.mark.backends("jax", reason="keras.distribution.DataParallel: JAX backend")
only_tf = pytest.mark.backends("tensorflow", reason="tf.distribute.MirroredStrategy: TensorFlow backend")
trains = pytest.mark.timeout(TRAIN_TIMEOUT_S)


def _run(case: str, devices: int, output=None) -> dict:
    """Runs `case` of tests/scripts/distribute_child.py on `devices` virtual
    CPU devices of this suite's backend; returns the JSON object it prints last."""
    env = dict(
        os.environ,
        KERAS_BACKEND=BACKEND,
        PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
        TF_CPP_MIN_LOG_LEVEL="3",
        JAX_PLATFORMS="cpu",  # virtual devices are CPU devices, also on GPU hosts
        CUDA_VISIBLE_DEVICES="",  # TensorFlow: the logical CPUs are the local devices
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
    )
    argv = [case, str(devices)] + ([str(output)] if output is not None else [])
    proc = subprocess.run(
        [sys.executable, str(CHILD), *argv],
        env=env, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- JAX: keras.distribution.DataParallel ---------------------------------


@only_jax
@trains
def test_jax_step_on_8_devices_equals_one_device_and_shards_the_batch():
    out = _run("jax_step", devices=8)
    assert out["devices"] == 8 and out["engine"] == distribute.JAX_ENGINE
    assert out["bn"] == distribute.BN_GLOBAL
    # The batch is one array split in 8 slices of 2 images; weights replicated.
    assert out["batch_devices"] == 8 and out["shard_shape"] == [2, 16, 16, 3]
    assert out["weight_devices"] == 8
    assert out["moved"] > 1e-3  # the step changed the weights
    # Same loss and updated weights (BN moving statistics included) as one
    # device: BN statistics are those of the global batch.
    assert abs(out["loss_8"] - out["loss_1"]) < TOLERANCE
    assert out["diff_8"] < TOLERANCE
    assert abs(out["loss_me"] - out["loss_1"]) < TOLERANCE
    assert out["diff_me"] < TOLERANCE


@only_jax
@trains
def test_jax_cli_distribute_shards_every_batch(tmp_path):
    out = _run("jax_cli", devices=2, output=tmp_path)
    assert out["code"] == 0
    assert "data parallel on 2 device(s) (jax, keras.distribution.DataParallel)" in out["stdout"]
    assert "global batch 8 = 4 per device x 2" in out["stdout"]
    images = [s for s in out["shapes"] if len(s[0]) == 4]
    assert images, "the trainer never sharded a batch"
    for shape, num_devices, shard in images:
        # Every batch, the last one and validation included, splits evenly.
        assert num_devices == 2 and shard[0] * 2 == shape[0] and shape[0] <= 8
    assert out["weight_devices"] == 1  # the saved model loads as a plain model


# --- TensorFlow: tf.distribute.MirroredStrategy -----------------------------


@only_tf
@trains
def test_tf_batch_norm_is_per_replica_unless_synchronized():
    out = _run("tf_batch_norm", devices=2)
    assert out["devices"] == 2 and out["engine"] == "tf.distribute.MirroredStrategy"
    for memory_efficient in (False, True):
        per_replica = out["results"][f"{memory_efficient}_False"]
        synced = out["results"][f"{memory_efficient}_True"]
        # Per replica: each replica normalizes its own 8 images, and the
        # moving statistics come from replica 0's slice, exactly as one
        # device trained on that slice alone; so the step is not the
        # single-device step (the batch really was split).
        assert per_replica["stats_vs_shard"] < TOLERANCE
        assert per_replica["stats_vs_1"] > 1e-2
        assert abs(per_replica["loss"] - out["loss_1"]) > 1e-3
        # Synchronized: global-batch statistics, the single-device step.
        assert abs(synced["loss"] - out["loss_1"]) < TOLERANCE
        assert synced["diff_1"] < TOLERANCE


@only_tf
@trains
def test_tf_train_distribute_sync_bn_splits_batches_and_saves_portable_bn(tmp_path):
    out = _run("tf_train_sync_bn", devices=2, output=tmp_path)
    assert out["num_devices"] == 2
    assert out["replicas"] and set(out["replicas"]) == {2}  # each batch becomes 2 per-replica values
    assert out["synchronized"] and all(out["synchronized"]) and set(out["in_sync"]) == {2}
    # lr 0.002 scaled by sqrt(2) (the log records the schedule's first value)
    assert "0.0028284" in out["log"]
    # Saved with per-replica BN: the file loads on JAX and PyTorch too.
    assert out["saved_sync"] == 0 and out["saved_unsync"] > 0


# --- every backend ----------------------------------------------------------


@trains
def test_cli_distribute_on_the_local_devices(tmp_path, capsys):
    code = cli.main(["train", "--distribute", "--depth", "10", "--growth-rate", "4", "--limit", "60",
                     "--epochs", "1", "--batch-size", "8", "--output", str(tmp_path)])
    assert code == 0
    stdout = capsys.readouterr().out
    plan = distribute.data_parallel()
    n = plan.num_devices
    if BACKEND == "torch":
        # Honest status: no Keras engine for PyTorch, one process, one device.
        assert plan.handle is None and n == 1
        assert "no engine on the torch backend" in stdout and "1 device" in stdout
    else:
        engine = {"jax": distribute.JAX_ENGINE, "tensorflow": distribute.TF_ENGINE}[BACKEND]
        assert f"data parallel on {n} device(s) ({BACKEND}, {engine})" in stdout
        assert f"global batch {8 * n} = 8 per device x {n}" in stdout
    model = keras.saving.load_model(tmp_path / "model.keras")
    assert model.output.shape == (None, 10)


def test_scale_batch_and_lr_rules():
    assert distribute.scale_batch_and_lr(32, 0.1, 8, "linear") == (256, pytest.approx(0.8))
    assert distribute.scale_batch_and_lr(32, 0.1, 4, "sqrt") == (128, pytest.approx(0.2))
    assert distribute.scale_batch_and_lr(32, 0.1, 8, "none") == (256, pytest.approx(0.1))
    assert distribute.scale_batch_and_lr(32, 0.1, 1) == (32, pytest.approx(0.1))
    with pytest.raises(ValueError, match="lr_scaling.*'sqrt', 'linear', 'none'"):
        distribute.scale_batch_and_lr(32, 0.1, 2, "cubic")


def test_batches_are_cut_to_a_multiple_of_the_devices():
    x, y = trim_to_multiple(4, np.zeros((10, 2)), np.arange(10))
    assert len(x) == len(y) == 8
    assert trim_to_multiple(1, np.zeros(3))[0].shape == (3,)
    tf = pytest.importorskip("tensorflow")  # tf.data pipelines (image folders)
    ds = tf.data.Dataset.from_tensor_slices((np.arange(11), np.arange(11))).batch(4)
    sizes = [len(xb) for xb, _ in shardable_batches(ds, 2)]
    assert sizes == [4, 4, 2]  # 4, 4, 3 -> 2; an empty batch would be dropped
    assert [len(b) for b, _ in shardable_batches(ds.rebatch(1), 2)] == []


def test_invalid_distribute_options():
    with pytest.raises(ValueError, match="`sync_bn` applies with `distribute`"):
        validate(TrainConfig(sync_bn=True))
    with pytest.raises(ValueError, match="lr_scaling"):
        validate(TrainConfig(distribute=True, lr_scaling="cubic"))
    with pytest.raises(ValueError, match="engine"):
        distribute.from_engine(object())


def test_cli_sync_bn_without_distribute_is_one_line_exit_2(tmp_path, capsys):
    assert cli.main(["train", "--sync-bn", "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    # In the CLI's words: the library's `sync_bn` and `distribute` are options here.
    assert len(err) == 1 and "`--sync-bn` applies with `--distribute`" in err[0]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--distribute", "--lr-scaling", "cubic"])
    assert exit_info.value.code == 2


def test_synchronized_bn_is_tensorflow_only_and_keeps_names_and_weights():
    model = densenet.DenseNet((2, 2), growth_rate=4, input_shape=(16, 16, 3), classes=3,
                            memory_efficient=True)
    names = [w.path for w in model.weights]
    # stem, 2 per dense layer (inside EfficientDenseLayer) x 4, transition, head
    assert len(distribute.batch_norm_layers(model)) == 11
    if BACKEND != "tensorflow":
        with pytest.raises(ValueError, match="TensorFlow backend"):
            distribute.set_synchronized_batch_norm(model)
        return
    weights = model.get_weights()
    assert distribute.set_synchronized_batch_norm(model) == 11
    assert all(layer.synchronized for layer in distribute.batch_norm_layers(model))
    assert [w.path for w in model.weights] == names
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights(), strict=True))
    assert distribute.set_synchronized_batch_norm(model, False) == 11
    assert '"synchronized": true' not in json.dumps(model.get_config())
