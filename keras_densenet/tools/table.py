"""Table 1 of the DenseNet paper, counted: what ``keras-densenet table`` prints.

One row per model, every registered DenseNet variant and keras.applications'
ResNet-50/101/152 (the paper's comparison): depth, parameters, MACs and
training activation memory (`tools.counts`), connections and channels per
dense block (`tools.connectivity`), and the published ImageNet top-1 of each
weight set. Models are built with `shape_only()`, which creates no weight
values, so the whole table takes seconds on every backend.

Example:

>>> from keras_densenet.tools import table
>>> rows = table.table(["densenet121", "resnet50"])
>>> [(r["name"], r["depth"], round(r["macs"] / 1e9, 2)) for r in rows]
[('densenet121', 121, 2.83), ('resnet50', 50, 3.86)]
>>> print(table.format_table(rows, "markdown").splitlines()[2])  # doctest: +ELLIPSIS
| densenet121 | 121 | 8.06M | 7.98M | 2.834 | 224x224 | 129.3 | 27.3 | 21/78/300/136 | ...
"""

from __future__ import annotations

import json
import math
from typing import Optional, Sequence

import keras

from keras_densenet.core import registry
from keras_densenet.layers.initialization import shape_only
from keras_densenet.models import densenet
from keras_densenet.tools.connectivity import dense_blocks
from keras_densenet.tools.counts import activation_bytes, count_macs, weighted_depth

#: keras.applications' ResNets, the paper's comparison (name -> builder name).
RESNETS = {"resnet50": "ResNet50", "resnet101": "ResNet101", "resnet152": "ResNet152"}
#: Output formats of `format_table`.
TABLE_FORMATS = ("text", "json", "markdown")
MB = 1e6


# --- the models of the table -----------------------------------------------------


def model_names() -> list:
    """Every model `table` describes: the registered variants, then the ResNets."""
    return list(registry.VARIANTS) + list(RESNETS)


def build_model(name: str, memory_efficient: bool = False) -> keras.Model:
    """A registered variant or keras.applications' ResNet, random weights, with
    its classifier (1000 classes; 10 for CIFAR variants) at its default size.

    Raises:
        ValueError: an unknown name (the message lists the known ones), or
            `memory_efficient` for a ResNet.
    """
    key = str(name).lower().replace("-", "_")
    if key in RESNETS:
        if memory_efficient:
            raise ValueError(f"`memory_efficient` applies to DenseNets only. Received: name={name!r}")
        return getattr(keras.applications, RESNETS[key])(weights=None)
    if key not in registry.VARIANTS:
        raise ValueError(f"Unknown model {name!r}. Known: {', '.join(model_names())}.")
    return densenet.build(key, memory_efficient=memory_efficient)


# --- the rows ------------------------------------------------------------------------


def model_facts(name: str) -> dict:
    """One row of `table`: every fact about model `name`, from its graphs.

    Keys: ``name``, ``depth``, ``params``, ``trainable_params``, ``macs``,
    ``input_size``, ``activation_bytes`` (standard graph, per image),
    ``activation_bytes_memory_efficient`` (``None`` for ResNets),
    ``connections_per_block``, ``channels_per_block`` (empty for ResNets),
    ``weights`` and ``top1`` (published ImageNet top-1 per weight set).
    """
    with shape_only():
        model = build_model(name)
        is_densenet = name in registry.VARIANTS
        efficient = build_model(name, memory_efficient=True) if is_densenet else None
    blocks = dense_blocks(model) if is_densenet else []
    variant = registry.VARIANTS.get(name)
    return {
        "name": name,
        "depth": weighted_depth(model),
        "params": int(model.count_params()),
        "trainable_params": int(sum(math.prod(v.shape) for v in model.trainable_weights)),
        "macs": count_macs(model),
        "input_size": int(model.input_shape[1]),
        "activation_bytes": activation_bytes(model),
        "activation_bytes_memory_efficient": activation_bytes(efficient) if efficient is not None else None,
        "connections_per_block": [b.connections for b in blocks],
        "channels_per_block": [b.output_channels for b in blocks],
        "weights": sorted(variant.weights) if variant else ["imagenet"],
        "top1": {n: w.top1 for n, w in variant.weights.items() if w.top1} if variant else {},
    }


def table(names: Optional[Sequence[str]] = None) -> list:
    """`model_facts` for each model (default: `model_names()`).

    Raises:
        ValueError: an unknown name; the message lists the known ones.
    """
    names = model_names() if names is None else [str(n).lower().replace("-", "_") for n in names]
    for n in names:
        if n not in model_names():
            raise ValueError(f"Unknown model {n!r}. Known: {', '.join(model_names())}.")
    return [model_facts(n) for n in names]


# --- printing ------------------------------------------------------------------------

_COLUMNS = (
    ("model", lambda r: r["name"]),
    ("depth", lambda r: str(r["depth"])),
    ("params", lambda r: f"{r['params'] / 1e6:.2f}M"),
    ("trainable", lambda r: f"{r['trainable_params'] / 1e6:.2f}M"),
    ("GMACs", lambda r: f"{r['macs'] / 1e9:.3f}"),
    ("input", lambda r: f"{r['input_size']}x{r['input_size']}"),
    ("train act. MB/img", lambda r: f"{r['activation_bytes'] / MB:.1f}"),
    ("mem-eff MB/img", lambda r: "-" if r["activation_bytes_memory_efficient"] is None
     else f"{r['activation_bytes_memory_efficient'] / MB:.1f}"),
    ("connections/block", lambda r: "/".join(map(str, r["connections_per_block"])) or "-"),
    ("channels/block", lambda r: "/".join(map(str, r["channels_per_block"])) or "-"),
    ("top-1 (%)", lambda r: ", ".join(f"{n} {v}" for n, v in r["top1"].items()) or "-"),
)

TABLE_NOTES = (
    "depth: weighted layers (convs + classifier) on the longest path, as the papers count.",
    "params: with the classifier (1000 classes; 10 for CIFAR variants); trainable: without BN moving statistics.",
    "GMACs: multiply-accumulates of convs and Dense layers, one image at the given input size.",
    "train act.: activations kept for the backward pass per image (MB = 1e6 bytes), standard "
    "and memory-efficient graphs; see keras_densenet.tools.counts.activation_bytes.",
    "connections: L(L+1)/2 per dense block; channels: k0 + k*L after each block.",
)


def format_table(rows: Sequence[dict], fmt: str = "text") -> str:
    """`table` rows as ``"text"`` (aligned columns), ``"markdown"`` or ``"json"``.

    Raises:
        ValueError: an unknown `fmt`.
    """
    if fmt not in TABLE_FORMATS:
        raise ValueError(f"`format` must be one of {', '.join(TABLE_FORMATS)}. Received: {fmt!r}")
    if fmt == "json":
        return json.dumps(list(rows), indent=1)
    cells = [[f(r) for _, f in _COLUMNS] for r in rows]
    heads = [h for h, _ in _COLUMNS]
    if fmt == "markdown":
        rule = "|" + "|".join("---" if i == 0 else "---:" for i in range(len(heads))) + "|"
        lines = ["| " + " | ".join(heads) + " |", rule] + ["| " + " | ".join(c) + " |" for c in cells]
        return "\n".join(lines + [""] + [f"- {n}" for n in TABLE_NOTES])
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(heads)]

    def aligned(row):  # the model name left, the figures right
        pairs = enumerate(zip(row, widths, strict=True))
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in pairs)

    lines = [aligned(heads)] + [aligned(row) for row in cells]
    return "\n".join(lines + [""] + list(TABLE_NOTES))
