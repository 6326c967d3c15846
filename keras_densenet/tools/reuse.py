"""Feature reuse: Figure 5 of the DenseNet paper, from a model's weights.

How strongly each dense layer's first convolution weighs each earlier
source of its block (the block input and every earlier layer's output):
what ``keras-densenet reuse`` computes, draws and writes.

* `feature_reuse`: the matrices, one per dense block (JSON-ready).
* `plot_feature_reuse`: the heatmaps, one panel per block (PNG).
* `write_feature_reuse`: both files into a directory.
* `load_for_reuse`: the model the command analyses (a ``.keras`` file or a
  registered variant with its weights).

Example:

>>> import keras_densenet
>>> from keras_densenet.tools import reuse
>>> matrices = reuse.feature_reuse(keras_densenet.DenseNetBC(40, 12))
>>> [b["name"] for b in matrices["blocks"]], len(matrices["blocks"][0]["matrix"])
(['conv2', 'conv3', 'conv4'], 7)
"""

from __future__ import annotations

import json
import os
from typing import Optional

import keras
import numpy as np

from keras_densenet.core import extras, registry
from keras_densenet.core.files import atomic_write
from keras_densenet.models import densenet, saved
from keras_densenet.tools.connectivity import dense_blocks, in_channels


def _mean_abs(layer, start: int, stop: int) -> float:
    kernel = keras.ops.convert_to_numpy(layer.kernel)
    # Conv (h, w, in, out) and Dense (in, out) kernels: inputs on axis -2.
    return float(np.mean(np.abs(np.take(kernel, range(start, stop), axis=-2))))


def feature_reuse(model: keras.Model) -> dict:
    """Figure 5 of the DenseNet paper: how strongly each layer reads each source.

    For each dense block, ``matrix[source][target]`` is the mean absolute
    weight of the target's first convolution (1x1 bottleneck conv, or 3x3
    conv without bottleneck, or the Dense classifier) over the input
    channels that come from the source, or ``None`` where the target does
    not read that source. Sources (rows): 0 is the block input, ``i`` dense
    layer ``i``. Targets (columns): dense layers 1..L, then the transition
    after the block, or the classifier after the last block when the model
    has one.

    Args:
        model: a DenseNet built by this package, with weights (standard or
            memory-efficient graph, possibly nested in a larger model).

    Returns:
        ``{"model": name, "blocks": [{"name": "conv2", "sources": [...],
        "targets": [...], "matrix": [[...], ...]}, ...]}`` (JSON-ready).

    Raises:
        ValueError: `model` is not a DenseNet of this package.

    Example:

    >>> import keras_densenet
    >>> reuse = feature_reuse(keras_densenet.DenseNetBC(40, 12))
    >>> [len(b["matrix"]) for b in reuse["blocks"]]  # sources: input + 6 layers
    [7, 7, 7]
    """
    blocks = []
    for block in dense_blocks(model):
        slices = block.slices()
        targets = list(block.first_convs)
        labels = [f"layer {i}" for i in range(1, block.num_layers + 1)]
        if block.transition is not None:
            targets.append(block.transition)
            labels.append("transition")
        elif block.classifier is not None:
            targets.append(block.classifier)
            labels.append("classifier")
        matrix = [[None] * len(targets) for _ in slices]
        for column, target in enumerate(targets):
            read = in_channels(target)  # a prefix of the concatenation
            for row, (start, stop) in enumerate(slices):
                if stop <= read:
                    matrix[row][column] = _mean_abs(target, start, stop)
        blocks.append({
            "name": block.name,
            "sources": ["input"] + [f"layer {i}" for i in range(1, block.num_layers + 1)],
            "targets": labels,
            "matrix": matrix,
        })
    return {"model": model.name, "blocks": blocks}


def plot_feature_reuse(reuse: dict, path, title: Optional[str] = None, normalize: bool = False) -> str:
    """Draws `feature_reuse`'s result as heatmaps, one panel per dense block.

    Rows are sources (block input at the top), columns targets; cells a
    target does not read are blank. Each panel has its own colour bar (mean
    absolute weight). The PNG is written to a temporary file and renamed.

    Args:
        reuse: what `feature_reuse` returns.
        path: the PNG to write.
        title: the figure title (default: names the model).
        normalize: divide each column by its largest cell, so 1 marks the
            source each target weighs most. Raw columns differ in scale
            because initializers scale a kernel by its fan-in, which grows
            with the layer's position in the block; normalized columns show
            how each target spreads its weight over its sources.

    Returns:
        `path`.

    Example::

        reuse = feature_reuse(model)
        plot_feature_reuse(reuse, "reuse.png")
    """
    matplotlib = extras.import_from("train", "matplotlib", "the feature-reuse heatmap")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    blocks = reuse["blocks"]
    fig, axes = plt.subplots(1, len(blocks), figsize=(4.2 * len(blocks), 4.0), squeeze=False)
    for ax, block in zip(axes[0], blocks, strict=True):
        values = np.array([[np.nan if v is None else v for v in row] for row in block["matrix"]], float)
        if normalize:
            peak = np.nanmax(values, axis=0)
            values = values / np.where(peak > 0, peak, 1.0)
        # Normalized: a fixed 0..1 scale, so uniform reading looks uniform.
        limits = dict(vmin=0.0, vmax=1.0) if normalize else {}
        image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", aspect="auto",
                          interpolation="nearest", **limits)
        n_src, n_tgt = values.shape
        ax.set_xticks(range(n_tgt))
        ax.set_xticklabels([t.replace("layer ", "") if t.startswith("layer") else t[:5] for t in block["targets"]],
                           fontsize=7, rotation=90 if n_tgt > 16 else 0)
        ax.set_yticks(range(n_src))
        ax.set_yticklabels(["in"] + [str(i) for i in range(1, n_src)], fontsize=7)
        ax.set_xlabel("target layer (reads)")
        ax.set_ylabel("source layer (is read)")
        ax.set_title(f"dense block {block['name']}")
        label = "mean |weight| / column max" if normalize else "mean |weight|"
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label=label)
    fig.suptitle(title or f"feature reuse: {reuse.get('model', '')}")
    fig.tight_layout()
    path = os.fspath(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=90))
    plt.close(fig)
    return path


def write_feature_reuse(model: keras.Model, out, normalize: bool = False) -> tuple:
    """Writes ``reuse.json`` and ``reuse.png`` for `model` into directory `out`
    (`normalize`: see `plot_feature_reuse`; the JSON is always raw).

    Returns:
        The two paths.
    """
    reuse = feature_reuse(model)
    out = os.fspath(out)
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise ValueError(f"`out` directory {out!r} cannot be created: {e.strerror or e}") from None
    json_path = os.path.join(out, "reuse.json")

    def write_json(tmp):
        with open(tmp, "w") as f:
            json.dump(reuse, f, indent=1)

    atomic_write(json_path, write_json)
    png_path = plot_feature_reuse(reuse, os.path.join(out, "reuse.png"), normalize=normalize)
    return json_path, png_path


def load_for_reuse(model: str, weights: Optional[str] = None) -> keras.Model:
    """The model ``keras-densenet reuse`` analyses.

    Args:
        model: a ``.keras`` file (loaded with safe mode on) or a registered
            variant name.
        weights: with a variant name: a weight-set name or file; ``None``
            means the variant's default weights, ``"none"`` random ones.

    Raises:
        ValueError: the file is not a loadable model, the name is unknown,
            or `weights` is given with a file.
    """
    spec = os.fspath(model)
    if spec.endswith(".keras") or os.path.exists(spec):
        if weights is not None:
            raise ValueError(f"`weights` applies to variant names only, not to the file {spec!r}")
        return saved.load_keras_model(spec)
    key = spec.lower().replace("-", "_")
    if key not in registry.VARIANTS:
        raise ValueError(
            f"`model` {spec!r} is neither a .keras file nor a registered variant "
            f"({', '.join(registry.VARIANTS)})"
        )
    variant = registry.VARIANTS[key]
    if weights is None:
        weights = variant.default_weights
    elif str(weights).lower() == "none":
        weights = None
    return densenet.build(key, weights=weights)
