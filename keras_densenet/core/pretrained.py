"""The published pretrained weights: one `WeightsSpec` per file, as data.

`WEIGHTS` lists, for each variant that has them, its weight sets by the name
``weights=`` takes. Each file is spelled once: a name that means the same
file as another (DenseNet-161's ``"imagenet"`` is torchvision's checkpoint,
the only one published) is an alias in `ALIASES`, and `weight_sets` maps
both names to the one spec. The registry attaches these to its variants.

Example:

>>> spec = weight_sets("densenet121")["torchvision"]
>>> spec.url.rsplit("/", 1)[-1], spec.file_hash
('densenet121-a639ec97.pth', 'a639ec97')
>>> weight_sets("densenet161")["imagenet"] is weight_sets("densenet161")["torchvision"]
True
"""

from __future__ import annotations

import dataclasses
from typing import Optional

#: BatchNormalization epsilon of keras.applications' DenseNet graphs and files.
KERAS_BN_EPSILON = 1.001e-5
#: BatchNormalization epsilon of PyTorch (torchvision, timm) checkpoints.
TORCH_BN_EPSILON = 1e-5
#: The weight set a named builder loads by default (keras.applications' name).
DEFAULT_WEIGHTS = "imagenet"


@dataclasses.dataclass(frozen=True)
class WeightsSpec:
    """Where a set of pretrained weights comes from and how to use it.

    Attributes:
        source: who published the file: ``"keras"`` (keras.applications
            `.h5`), ``"torchvision"`` (`.pth` state dict) or ``"timm"``
            (`.safetensors` state dict). Torch formats are converted on load.
        url: download address of the file with the classifier.
        file_hash: its hash (``hash_algorithm``); for torchvision this is the
            sha256 prefix carried in the file name.
        notop_url: a separate file without the classifier, if published.
        notop_file_hash: its hash.
        hash_algorithm: ``"md5"`` or ``"sha256"``.
        bn_epsilon: the BatchNormalization epsilon the weights were trained
            with; the model is built with it so outputs match the source.
        preprocessing: `keras.applications.imagenet_utils` mode of the
            expected input (``"torch"``: scale to [0, 1], then ImageNet
            mean/std).
        input_size: the evaluation resolution of the published accuracy.
        classes: number of classes of the classifier.
        top1: published ImageNet top-1 accuracy (%).
        top5: published ImageNet top-5 accuracy (%).
    """

    source: str
    url: str
    file_hash: str
    notop_url: Optional[str] = None
    notop_file_hash: Optional[str] = None
    hash_algorithm: str = "sha256"
    bn_epsilon: float = TORCH_BN_EPSILON
    preprocessing: str = "torch"
    input_size: int = 224
    classes: int = 1000
    top1: Optional[float] = None
    top5: Optional[float] = None


_KERAS_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/densenet/"
_TORCHVISION_BASE = "https://download.pytorch.org/models/"


def _keras(depth: int, top_hash: str, notop_hash: str, top1: float, top5: float) -> WeightsSpec:
    """keras.applications' files of DenseNet-`depth`: with and without the top."""
    stem = f"{_KERAS_BASE}densenet{depth}_weights_tf_dim_ordering_tf_kernels"
    return WeightsSpec(
        source="keras",
        url=f"{stem}.h5",
        file_hash=top_hash,
        notop_url=f"{stem}_notop.h5",
        notop_file_hash=notop_hash,
        hash_algorithm="md5",
        bn_epsilon=KERAS_BN_EPSILON,
        top1=top1,
        top5=top5,
    )


def _torchvision(file_name: str, top1: float, top5: float) -> WeightsSpec:
    """torchvision's checkpoint `file_name` (one file: `include_top=False` drops the classifier)."""
    # torchvision names its files `<arch>-<first 8 hex digits of sha256>.pth`.
    return WeightsSpec(
        source="torchvision",
        url=f"{_TORCHVISION_BASE}{file_name}",
        file_hash=file_name.rsplit("-", 1)[1].split(".")[0],
        hash_algorithm="sha256",
        bn_epsilon=TORCH_BN_EPSILON,
        top1=top1,
        top5=top5,
    )


#: Published weight sets by variant, then by name; accuracies are the
#: publishers' own (keras.applications' docs, torchvision's model cards).
WEIGHTS: dict[str, dict[str, WeightsSpec]] = {
    "densenet121": {
        "imagenet": _keras(121, "9d60b8095a5708f2dcce2bca79d332c7", "30ee3e1110167f948a6b9946edeeb738", 75.0, 92.3),
        "torchvision": _torchvision("densenet121-a639ec97.pth", 74.434, 91.972),
    },
    "densenet161": {
        # keras.applications has no DenseNet-161: torchvision's is the only file.
        "torchvision": _torchvision("densenet161-8d451a50.pth", 77.138, 93.560),
    },
    "densenet169": {
        "imagenet": _keras(169, "d699b8f76981ab1b30698df4c175e90b", "b8c4d4c20dd625c148057b9ff1c1176b", 76.2, 93.2),
        "torchvision": _torchvision("densenet169-b2777c0a.pth", 75.600, 92.806),
    },
    "densenet201": {
        "imagenet": _keras(201, "1ceb130c1ea1b78c3bf6114dbdfd8807", "c13680b51ded0fb44dff2d8f86ac8bb1", 77.3, 93.6),
        "torchvision": _torchvision("densenet201-c1103571.pth", 76.896, 93.370),
    },
}

#: Other names of a weight set, by variant: alias -> the name in `WEIGHTS`.
#: ``weights="imagenet"`` is every named builder's default, so DenseNet-161
#: answers it with its only ImageNet weights.
ALIASES: dict[str, dict[str, str]] = {
    "densenet161": {"imagenet": "torchvision"},
}


def weight_sets(variant_name: str) -> dict[str, WeightsSpec]:
    """Every name ``weights=`` accepts for `variant_name`, aliases included,
    with its spec (an alias maps to the very spec of the set it names);
    ``{}`` for a variant without published weights.

    Example:

    >>> sorted(weight_sets("densenet161"))
    ['imagenet', 'torchvision']
    >>> weight_sets("densenet264")
    {}
    """
    sets = WEIGHTS.get(variant_name, {})
    aliases = {alias: sets[target] for alias, target in ALIASES.get(variant_name, {}).items()}
    # Aliases first: "imagenet" leads every variant's list, as in the docs table.
    return {**aliases, **sets}
