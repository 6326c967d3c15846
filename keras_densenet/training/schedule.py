"""The learning rate of every epoch: a run's `fit` phases and the cosine decay in each.

From scratch, a run is one phase. Fine-tuning pretrained weights is two:
first the new head alone (backbone frozen) at the peak learning rate, then
everything at a tenth of it. Within a phase the rate decays from its peak to
0 on a cosine, per epoch, so a resumed phase continues where it was.

Example:

>>> from keras_densenet.training.config import TrainConfig
>>> from keras_densenet.training.schedule import cosine_schedule, fit_phases
>>> [(p.name, p.start, p.stop, p.lr) for p in fit_phases(TrainConfig(weights="imagenet", epochs=6, lr=0.01))]
[('head', 0, 2, 0.01), ('all', 2, 6, 0.001)]
>>> cosine_schedule(0.1, 0, 4)(2)
0.05
"""

from __future__ import annotations

import collections
import math
import os
from typing import Optional

from keras_densenet.training.config import TrainConfig

#: One `model.fit` call of `train`: its name (also its backup's folder), its
#: epochs ``[start, stop)``, peak learning rate and whether the backbone learns.
FitPhase = collections.namedtuple("FitPhase", "name start stop lr backbone_trainable")


def cosine_schedule(lr: float, start: int, stop: int):
    """The learning rate of each epoch: `lr` decayed to 0 over ``[start, stop)`` on a cosine.

    Returns:
        ``schedule(epoch, current_lr=None) -> float``, as
        `keras.callbacks.LearningRateScheduler` calls it.
    """

    def schedule(epoch, _current_lr=None):
        t = (epoch - start) / max(1, stop - start)
        return float(lr * 0.5 * (1 + math.cos(math.pi * t)))

    return schedule


def fit_phases(config: TrainConfig, backup_dir: Optional[str] = None) -> list:
    """The `FitPhase` list of `config` still to run.

    Args:
        config: the options; with `config.weights`, the frozen-backbone
            phase lasts `config.head_epochs` (default: a third of the
            epochs, at least 1).
        backup_dir: the run's backups (`backups.resume_state`): once the
            last phase has a backup, the frozen phase finished before an
            interruption and is left out.

    Returns:
        The phases, in order.
    """
    pretrained = config.weights is not None
    head_epochs = 0
    if pretrained:
        head_epochs = config.head_epochs or max(1, config.epochs // 3)
    phases = []
    if head_epochs:
        phases.append(FitPhase("head", 0, head_epochs, config.lr, False))
    phases.append(FitPhase("all", head_epochs, config.epochs, config.lr / 10 if pretrained else config.lr, True))
    if backup_dir is not None and os.path.isdir(os.path.join(backup_dir, phases[-1].name)):
        phases = phases[-1:]
    return phases
