"""The files a training run leaves in its output directory, each written atomically.

- ``model.keras``: the best model so far (`AtomicModelCheckpoint`),
- ``log.csv``: one row per epoch (`keras.callbacks.CSVLogger`; `read_log`
  reads it back, `truncate_log` drops epochs a job's processes went back
  on; processes that keep no log collect the rows with `EpochRows`),
- ``learning_curve.png``: training vs validation metrics
  (`plot_learning_curve`),
- ``class_names.json``: the label names, in output order
  (`write_class_names`).

Used by `train` and `segment` alike.

Example:

>>> import json, os, tempfile
>>> from keras_densenet.training.outputs import read_log, write_class_names
>>> folder = tempfile.mkdtemp()
>>> write_class_names(os.path.join(folder, "class_names.json"), ["cat", "dog"])
>>> with open(os.path.join(folder, "class_names.json")) as f:
...     json.load(f)
['cat', 'dog']
>>> read_log(os.path.join(folder, "log.csv"))  # no epoch logged yet
[]
"""

from __future__ import annotations

import csv
import json
import math
import os
from typing import Sequence

import keras

from keras_densenet.core import extras
from keras_densenet.core.files import atomic_path, atomic_write
from keras_densenet.training.multiprocess import local_section


class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """`ModelCheckpoint` that saves to a temporary file, then renames it.

    An interruption while saving leaves the previous best model intact.
    """

    def __init__(self, filepath: str, **kwargs):
        super().__init__(filepath, **kwargs)
        self.final_path = self.filepath

    def on_epoch_end(self, epoch, logs=None):
        # Keras writes `self.filepath` only when the monitored value improved;
        # in a multi-process job only process 0 has this callback.
        with atomic_path(self.final_path) as tmp, local_section():
            self.filepath = tmp
            try:
                super().on_epoch_end(epoch, logs)
            finally:
                self.filepath = self.final_path


class EpochRows(keras.callbacks.Callback):
    """The epochs' logs as ``log.csv`` rows, for processes that keep no log."""

    def __init__(self):
        super().__init__()
        self.rows = []

    def on_epoch_end(self, epoch, logs=None):
        self.rows.append({"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items()}})


def read_log(path: str) -> list:
    """The rows of a CSVLogger file as dicts of floats (``[]`` if absent)."""
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return [
            {k: (int(v) if k == "epoch" else float(v)) for k, v in row.items() if v != ""}
            for row in csv.DictReader(f)
        ]


def truncate_log(path: str, epochs: int) -> None:
    """Keeps the first `epochs` rows of a CSVLogger file (atomically)."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))

    def write(tmp):
        with open(tmp, "w", newline="") as f:
            csv.writer(f).writerows(rows[: epochs + 1])  # the header, then one row per epoch

    atomic_write(path, write)


def plot_learning_curve(history: Sequence[dict], path: str, metrics: Sequence[str] = ("loss", "accuracy")) -> str:
    """Saves `metrics` (training vs validation) per epoch as a PNG.

    Args:
        history: rows of ``log.csv`` (keys ``epoch``, and each metric with
            and without the ``val_`` prefix).
        path: the PNG to write (atomically).
        metrics: one panel each.

    Returns:
        `path`.
    """
    matplotlib = extras.import_from("train", "matplotlib", "plotting the training curves")
    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] + 1 for row in history]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4))
    for ax, metric in zip(axes, metrics, strict=True):
        for prefix, label in (("", "training"), ("val_", "validation")):
            values = [row.get(prefix + metric, math.nan) for row in history]
            ax.plot(epochs, values, marker="o", label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle("keras-densenet training")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
    return path


def write_class_names(path: str, class_names: Sequence[str]) -> None:
    """Writes the label names, in output order, as JSON (atomically)."""
    def write_names(tmp):
        with open(tmp, "w") as f:
            json.dump(list(class_names), f, indent=1)

    atomic_write(path, write_names)
