"""A job's agreement on its backups (`training.backups.agree_on_backups`),
process by process: the collective that gathers every process's epoch is
replaced by the other processes' answers, so one test process plays one
process of a 2-process job."""

import json
import os
import types

import keras
import numpy as np
import pytest

from keras_densenet.training import backups
from keras_densenet.training.config import TrainConfig

pytestmark = pytest.mark.one_backend("jax", "torch", "tensorflow", reason="files and a tiny model's weights")
EPOCHS = 4


def _model(value: float) -> keras.Model:
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.set_weights([np.full(w.shape, value, w.dtype) for w in model.get_weights()])
    return model


def _process(output, process_id: int, epochs_done: int) -> str:
    """Process `process_id`'s backups after `epochs_done` epochs (the
    weights of epoch e are all e), and the log.csv it wrote."""
    phase_dir = os.path.join(output, "backup", f"process-{process_id}", "all")
    for epoch in range(1, epochs_done + 1):
        backups.save_backup(_model(float(epoch)), phase_dir, epoch, keep_previous=True)
    if process_id == 0:
        with open(os.path.join(output, "log.csv"), "w") as f:
            f.write("epoch,accuracy,loss\n" + "".join(f"{e},0.{e},1.{e}\n" for e in range(epochs_done)))
    return phase_dir


def _agree(monkeypatch, output, process_id: int, epochs: list):
    answers = iter([[1, 1], epochs])  # the phases left, then the epochs done, of both processes
    monkeypatch.setattr(backups, "gather_from_processes", lambda value, plan: next(answers))
    plan = types.SimpleNamespace(num_processes=2, process_id=process_id, is_writer=process_id == 0)
    log_path = os.path.join(output, "log.csv")
    resume = backups.resume_state(str(output), log_path, process_id)
    return resume, backups.agree_on_backups(plan, TrainConfig(epochs=EPOCHS), str(output), resume, log_path)


def _backup_weights(phase_dir) -> float:
    model = _model(0.0)
    model.load_weights(os.path.join(phase_dir, "latest.weights.h5"))
    return float(model.get_weights()[0].flat[0])


def test_the_process_one_epoch_ahead_falls_back_and_drops_that_epochs_row(tmp_path, monkeypatch):
    phase_dir = _process(tmp_path, 0, 3)  # process 1 was lost before its third backup
    before, after = _agree(monkeypatch, tmp_path, 0, [3, 2])
    assert after is not before and after.resuming
    with open(os.path.join(phase_dir, "training_metadata.json")) as f:
        assert json.load(f)["epoch"] == 2
    assert _backup_weights(phase_dir) == 2.0  # the weights of epoch 2, not 3
    assert [row["epoch"] for row in after.previous] == [0, 1]
    assert backups.backup_epochs(phase_dir) == 2


def test_processes_that_agree_resume_as_they_are(tmp_path, monkeypatch):
    phase_dir = _process(tmp_path, 0, 2)
    before, after = _agree(monkeypatch, tmp_path, 0, [2, 2])
    assert after is before and _backup_weights(phase_dir) == 2.0


def test_the_process_behind_keeps_its_backup(tmp_path, monkeypatch):
    phase_dir = _process(tmp_path, 1, 2)
    _, after = _agree(monkeypatch, tmp_path, 1, [3, 2])
    assert backups.backup_epochs(phase_dir) == 2 and _backup_weights(phase_dir) == 2.0
    assert not os.path.exists(tmp_path / "log.csv")  # only process 0 writes it


def test_backups_more_than_an_epoch_apart_are_refused_naming_the_folder(tmp_path, monkeypatch):
    _process(tmp_path, 0, 3)
    with pytest.raises(ValueError, match=r"process 0: 3 epochs, process 1: 1 epochs.*remove backup/"):
        _agree(monkeypatch, tmp_path, 0, [3, 1])


def test_a_backup_without_the_epoch_before_is_refused(tmp_path, monkeypatch):
    phase_dir = _process(tmp_path, 0, 1)
    backups.save_backup(_model(3.0), phase_dir, 3)  # no copy of epoch 2 kept
    with pytest.raises(ValueError, match="has no copy of epoch 2 to fall back to"):
        _agree(monkeypatch, tmp_path, 0, [3, 2])
    assert backups.backup_epochs(phase_dir) == 3  # left as it was
