"""Resuming an interrupted run: the per-epoch backups, and a job's agreement on them.

`LocalBackupAndRestore` (Keras' `BackupAndRestore`, saving atomically)
keeps the last completed epoch of each `fit` phase (weights, optimizer
state, epoch) in ``backup/<phase>``, or ``backup/process-N/<phase>`` for
each process of a multi-process job. Running the same command again
continues from there: `resume_state` says what the interrupted run left
(and drops ``log.csv`` rows of epochs the backup does not hold yet),
`agree_on_backups` makes a job's processes continue from the same epoch,
and `remove_backup` drops a finished run's backup.

Example:

>>> from keras_densenet.training.backups import resume_state
>>> state = resume_state("/nonexistent/run", "/nonexistent/run/log.csv")
>>> state.backup_dir, state.resuming, state.previous, state.best_so_far
('/nonexistent/run/backup', False, [], None)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
from typing import Optional

import keras

from keras_densenet.core.files import atomic_path, recover_in, remove_whole
from keras_densenet.training.config import BACKUP_DIR, TrainConfig
from keras_densenet.training.multiprocess import gather_from_processes, local_section
from keras_densenet.training.outputs import read_log, truncate_log
from keras_densenet.training.schedule import FitPhase, fit_phases

#: BackupAndRestore's files, and the suffix of its copies of the epoch
#: before (``double_checkpoint=True``) that `agree_on_backups` can fall back to.
_BACKUP_FILES = ("latest.weights.h5", "training_metadata.json")
_PREVIOUS = ".bkp"


@dataclasses.dataclass
class ResumeState:
    """What an interrupted earlier run left in the output directory.

    Attributes:
        backup_dir: where `BackupAndRestore` keeps the last completed epoch.
        resuming: that backup exists: this run continues it.
        previous: the rows of ``log.csv`` written so far (``[]`` if fresh).
        best_so_far: the best validation accuracy so far (that of the saved
            model), or ``None``.
    """

    backup_dir: str
    resuming: bool
    previous: list
    best_so_far: Optional[float]


def resume_state(output: str, log_path: str, process_id=None) -> ResumeState:
    """Reads what an interrupted run in `output` left to continue from.

    Args:
        output: the output directory.
        log_path: its ``log.csv``.
        process_id: in a multi-process job, this process: every process
            keeps its own backup in ``backup/process-N``.
    """
    backup_dir = os.path.join(output, BACKUP_DIR)
    if process_id is not None:
        backup_dir = os.path.join(backup_dir, f"process-{process_id}")
    # What a killed run left half-replaced (a backup renamed aside, the
    # temporary files of a save) is restored or removed before it is read.
    for folder in (output, os.path.join(output, BACKUP_DIR), backup_dir):
        recover_in(folder)
    resuming = os.path.isdir(backup_dir)
    if resuming and process_id in (None, 0) and len(read_log(log_path)) > backup_epochs(backup_dir):
        # Killed after logging an epoch but before its backup: that epoch
        # runs again, so its row goes (every epoch once in log.csv).
        truncate_log(log_path, backup_epochs(backup_dir))
    previous = read_log(log_path) if resuming else []
    best_so_far = max((row.get("val_accuracy", -1.0) for row in previous), default=None)
    return ResumeState(backup_dir, resuming, previous, best_so_far)


class LocalBackupAndRestore(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` whose per-epoch saves are atomic and run in
    `multiprocess.local_section`.

    Keras writes its backup files in place: a kill while saving would leave
    a half-written ``latest.weights.h5`` that the next run cannot load. Here
    each epoch's backup (`save_backup`) is a new directory put in place of
    the old one by `files.atomic_path`, so a kill at any moment leaves the
    previous complete backup or the new one. Restoring is Keras' own. Each
    process of a job keeps its own backup (on its own disk, in a multi-host
    job); restoring stays under the distribution, which every process joins
    at the start of `fit`. Saves once per epoch (``save_freq="epoch"``).

    Example:

    >>> callback = LocalBackupAndRestore("/tmp/run/backup/train")  # doctest: +SKIP
    >>> model.fit(x, y, epochs=3, callbacks=[callback])  # doctest: +SKIP
    """

    def on_epoch_end(self, epoch, logs=None):
        if self.save_freq != "epoch":  # saving by batches: Keras' own, in place
            raise ValueError(f"LocalBackupAndRestore saves once per epoch, not save_freq={self.save_freq!r}")
        with local_section():
            save_backup(self.model, self.backup_dir, epoch + 1, keep_previous=self.double_checkpoint)


def save_backup(model, backup_dir: str, epochs: int, keep_previous: bool = False) -> None:
    """Writes `model`'s weights (with the optimizer state) after `epochs`
    completed epochs as the backup in `backup_dir`, atomically.

    The files are Keras' ``BackupAndRestore`` ones (``latest.weights.h5``,
    ``training_metadata.json``), written into a temporary directory that
    `files.atomic_path` flushes and renames in place of `backup_dir`. With
    `keep_previous`, the files of the backup replaced are kept beside them
    (``*.bkp``; hard links, as those files are never written again).
    """
    os.makedirs(os.path.dirname(os.path.abspath(backup_dir)), exist_ok=True)
    with atomic_path(backup_dir) as tmp:
        os.mkdir(tmp)
        if keep_previous:
            for name in _BACKUP_FILES:
                old = os.path.join(backup_dir, name)
                if os.path.exists(old):
                    _link_or_copy(old, os.path.join(tmp, name + _PREVIOUS))
        model.save_weights(os.path.join(tmp, _BACKUP_FILES[0]))
        with open(os.path.join(tmp, _BACKUP_FILES[1]), "w") as f:
            json.dump({"epoch": epochs, "batch": 0}, f)


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:  # file systems without hard links
        shutil.copyfile(source, target)


def phase_backup(backup_dir: str, phase: FitPhase, num_processes: int = 1) -> LocalBackupAndRestore:
    """The backup callback of one `fit` phase, in its own folder.

    One backup per phase: the saved optimizer state matches the trainable
    weights of the phase that wrote it. In a multi-process job it keeps the
    epoch before too, which `agree_on_backups` may have to fall back to.
    """
    return LocalBackupAndRestore(
        os.path.join(backup_dir, phase.name), delete_checkpoint=False, double_checkpoint=num_processes > 1
    )


def backup_epochs(backup_dir: str) -> int:
    """The epochs completed by the run whose backup is `backup_dir` (that of
    its latest phase, in ``backup_dir/<phase>``, or ``backup_dir`` itself);
    0 without a backup.

    Example:

    >>> backup_epochs("/nonexistent/backup")
    0
    """
    folders = [backup_dir]
    if os.path.isdir(backup_dir):
        folders += [os.path.join(backup_dir, name) for name in sorted(os.listdir(backup_dir))]
    return max(_backup_epoch(folder) for folder in folders)


def _backup_epoch(phase_dir: str, suffix: str = "") -> int:
    """The epoch a phase's backup resumes from (0: no backup)."""
    path = os.path.join(phase_dir, "training_metadata.json" + suffix)
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return int(json.load(f)["epoch"])


def agree_on_backups(plan, config: TrainConfig, output: str, resume: ResumeState, log_path: str) -> ResumeState:
    """Makes every process of a job resume from the same epoch.

    A process lost between two epochs' backups leaves the others one epoch
    ahead; those fall back to their backup of the epoch before (kept by
    `phase_backup`), and process 0 drops that epoch's row from ``log.csv``.
    A collective: every process of the `distribute.DataParallelPlan`'s job
    calls it before `fit`.

    Returns:
        The `ResumeState` to continue from (`resume` if nothing changed).

    Raises:
        ValueError: the backups differ by more than one epoch, or in phase.
    """
    remaining = fit_phases(config, resume.backup_dir)
    phase_dir = os.path.join(resume.backup_dir, remaining[0].name)
    here = _backup_epoch(phase_dir)  # epochs completed, counted from the run's start
    phases = gather_from_processes(len(remaining), plan)
    epochs = gather_from_processes(here, plan)
    if len(set(phases)) == 1 and len(set(epochs)) == 1:
        return resume
    if len(set(phases)) > 1 or max(epochs) - min(epochs) > 1:
        found = ", ".join(f"process {p}: {e} epochs" for p, e in enumerate(epochs))
        raise ValueError(
            f"the processes' backups do not agree ({found}, phases {phases}); remove "
            f"{BACKUP_DIR}/ in every process's output directory to start over"
        )
    target = min(epochs)
    if here > target:  # one epoch ahead: back to the epoch before
        if _backup_epoch(phase_dir, _PREVIOUS) != target:
            raise ValueError(f"backup {phase_dir!r} has no copy of epoch {target} to fall back to")
        with atomic_path(phase_dir) as tmp:  # both files of the epoch before, or neither
            os.mkdir(tmp)
            for name in _BACKUP_FILES:
                _link_or_copy(os.path.join(phase_dir, name + _PREVIOUS), os.path.join(tmp, name))
    if plan.is_writer and os.path.exists(log_path):
        truncate_log(log_path, target)
    return resume_state(output, log_path, plan.process_id)


def remove_backup(backup_dir: str) -> None:
    """Removes this process's backup (whole or not at all, should the
    process be killed meanwhile), and ``backup/`` once no process has one
    left."""
    remove_whole(backup_dir)
    parent = os.path.dirname(backup_dir)
    if os.path.basename(parent) == BACKUP_DIR:  # backup/process-N
        with contextlib.suppress(OSError):  # another process's backup is still there
            os.rmdir(parent)
