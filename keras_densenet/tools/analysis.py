"""Facts about DenseNets computed from real Keras graphs, for learning and analysis.

What the paper and the tutorials state about DenseNet (depth, parameters,
compute, memory, L(L+1)/2 connections, k0 + k*L channels, feature reuse),
counted here from built models rather than copied from tables:

* `weighted_depth`: the depth as the papers count it: the most weighted
  layers (convolutions and the classifier) on any path from input to output
  (DenseNet-121: 121; ResNet-50: 50, its projection shortcuts lie on shorter
  paths).
* `count_macs`: multiply-accumulates of one image's forward pass.
* `activation_bytes`: bytes of the activations a training step keeps for its
  backward pass, per image.
* `dense_blocks`: the dense blocks of a model, read from its layer names and
  kernel shapes: layers, sources per layer, direct connections, channels.
* `feature_reuse`: Figure 5 of the DenseNet paper, how strongly each layer's
  first convolution weighs each earlier source; `plot_feature_reuse` draws it.
* `table`: all of the above for every registered variant and
  keras.applications' ResNet-50/101/152 (``keras-densenet table``).

Models for counting are built with `shape_only()`, which creates no weight
values, so even DenseNet-264 takes about a second on every backend.

Example:

>>> from keras_densenet.tools import analysis
>>> with analysis.shape_only():
...     model = analysis.build_model("densenet121")
>>> analysis.weighted_depth(model), round(analysis.count_macs(model) / 1e9, 2)
(121, 2.83)
>>> [b.connections for b in analysis.dense_blocks(model)]
[21, 78, 300, 136]
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from typing import Optional, Sequence

import keras
import numpy as np
from keras import layers

from keras_densenet.core import extras, registry
from keras_densenet.core.files import atomic_write
from keras_densenet.layers.efficient import EfficientDenseLayer
from keras_densenet.layers.initialization import shape_only  # noqa: F401  (re-exported)
from keras_densenet.models import densenet
from keras_densenet.models import saved

#: keras.applications' ResNets, the paper's comparison (name -> builder name).
RESNETS = {"resnet50": "ResNet50", "resnet101": "ResNet101", "resnet152": "ResNet152"}
#: Output formats of `format_table`.
TABLE_FORMATS = ("text", "json", "markdown")
MB = 1e6

_FIRST_CONV = re.compile(r"^conv(\d+)_block(\d+)_([12])_conv$")
_EFFICIENT = re.compile(r"^conv(\d+)_block(\d+)$")

# How a layer's backward pass uses its tensors (see `activation_bytes`).
_KEEPS_NOTHING = (
    layers.InputLayer, layers.Concatenate, layers.Add, layers.ZeroPadding2D,
    layers.AveragePooling2D, layers.GlobalAveragePooling2D, layers.Flatten,
    layers.Reshape, layers.Rescaling, layers.Normalization, layers.Resizing,
)
_KEEPS_OUTPUT = (layers.Activation, layers.ReLU, layers.Softmax, layers.Dropout)
_WEIGHTED = (layers.Conv1D, layers.Conv2D, layers.Conv3D, layers.DepthwiseConv2D, layers.Dense)


# --- building models for counting ---------------------------------------------


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


# --- walking the graph ----------------------------------------------------------


def _nodes(model: keras.Model) -> list:
    """The model's graph nodes, inputs first (each with its `operation`)."""
    by_depth = model._nodes_by_depth  # Keras' own map of the functional graph
    return [n for depth in sorted(by_depth, reverse=True) for n in by_depth[depth]]


def _static_shape(tensor, layer) -> tuple:
    shape = tuple(tensor.shape[1:])
    if any(d is None for d in shape):
        raise ValueError(
            f"`model` needs a static input shape to count; layer {layer.name!r} has "
            f"shape {tuple(tensor.shape)}. Build it with e.g. input_shape=(224, 224, 3)."
        )
    return shape


def _size(tensor, layer) -> int:
    return math.prod(_static_shape(tensor, layer))


def _spatial(tensor, layer, channels: int) -> int:
    """Positions per image of a conv output (all elements / channels)."""
    return _size(tensor, layer) // channels


def _check_model(model) -> None:
    if not isinstance(model, keras.Model) or not hasattr(model, "_nodes_by_depth"):
        raise ValueError(
            "`model` must be a functional keras.Model (as this package and "
            f"keras.applications build). Received: {type(model).__name__}"
        )


def weighted_depth(model: keras.Model) -> int:
    """Depth as the papers count it: the most weighted layers on one path.

    Weighted layers are convolutions and Dense layers; a memory-efficient
    dense layer counts as its 2 (or 1, without bottleneck) convolutions and a
    nested model as its own weighted depth. DenseNet-121 gives 121 (stem conv
    + 58 dense layers x 2 + 3 transitions + classifier), DenseNet-BC-100 100,
    ResNet-50 50.

    Example:

    >>> with shape_only():
    ...     weighted_depth(build_model("densenet_bc_100_k12"))
    100
    """
    _check_model(model)
    depth: dict = {}
    for node in _nodes(model):
        op = node.operation
        if isinstance(op, keras.Model):
            own = weighted_depth(op)
        elif isinstance(op, EfficientDenseLayer):
            own = 2 if op.bottleneck else 1
        else:
            own = 1 if isinstance(op, _WEIGHTED) else 0
        start = max((depth.get(id(t), 0) for t in node.input_tensors), default=0)
        for t in node.output_tensors:
            depth[id(t)] = start + own
    return max(depth.get(id(t), 0) for t in model.outputs)


def count_macs(model: keras.Model) -> int:
    """Multiply-accumulates of one image's forward pass (static input shape).

    Counts `Conv1D`/`Conv2D`/`Conv3D`/`DepthwiseConv2D` layers (output
    positions x kernel size; grouped and depthwise kernels hold only the
    inputs each output reads) and `Dense` layers (inputs x units), including
    those inside memory-efficient dense layers and nested models; other
    layer types (e.g. transposed or separable convolutions) count 0. Bias additions, BatchNormalization, ReLU,
    pooling and concatenation are left out, as in torchvision's "GFLOPS"
    column, which counts the same multiply-accumulates.

    Example:

    >>> with shape_only():
    ...     count_macs(build_model("resnet50")) / 1e9  # doctest: +ELLIPSIS
    3.85...
    """
    _check_model(model)
    total = 0
    for node in _nodes(model):
        op = node.operation
        if isinstance(op, keras.Model):
            total += count_macs(op)
        elif isinstance(op, EfficientDenseLayer):
            out = node.output_tensors[0]
            positions = _spatial(out, op, op.growth_rate)
            convs = ([op.conv1] if op.bottleneck else []) + [op.conv2]
            total += sum(positions * math.prod(c.kernel.shape) for c in convs)
        elif isinstance(op, layers.Dense):
            out = node.output_tensors[0]
            total += _spatial(out, op, op.units) * math.prod(op.kernel.shape)
        elif isinstance(op, _WEIGHTED):
            out = node.output_tensors[0]
            axis = -1 if op.data_format == "channels_last" else 1
            total += _spatial(out, op, out.shape[axis]) * math.prod(op.kernel.shape)
    return total


def _kept(node) -> list:
    """The tensors a layer's backward pass keeps (see `activation_bytes`)."""
    op = node.operation
    if isinstance(op, _KEEPS_NOTHING):
        return []
    if isinstance(op, layers.Dropout):
        return list(node.output_tensors) if op.rate > 0 else []
    if isinstance(op, _KEEPS_OUTPUT):
        return list(node.output_tensors)
    if isinstance(op, EfficientDenseLayer):
        # Recomputed in the backward pass: only its inputs (earlier maps,
        # shared with the other layers) and, with dropout, the mask.
        return list(node.input_tensors) + (list(node.output_tensors) if op.drop_rate > 0 else [])
    # Conv, Dense, BatchNormalization, max pooling and unknown layers keep
    # their input.
    return list(node.input_tensors)


def activation_bytes(model: keras.Model) -> int:
    """Bytes of activations one training step keeps for its backward pass, per image.

    A model of what reverse-mode differentiation must keep, read from the
    graph, so it is the same on every backend and deterministic:

    * convolutions, Dense and BatchNormalization layers keep their input,
      ReLU/activation layers their output, max pooling its input, dropout
      its mask (counted at the output's size and dtype);
    * concatenation, addition, padding, average pooling, rescaling keep
      nothing (their backward pass only routes or scales gradients);
    * a memory-efficient dense layer (`EfficientDenseLayer`) is recomputed
      in the backward pass and keeps only its inputs, the earlier feature
      maps, which the block keeps anyway;
    * each tensor counts once however many layers keep it (a ReLU output
      feeding a conv), at its dtype's size;
    * not counted: the input batch, weights, gradients, optimizer state and
      BatchNormalization's per-channel statistics.

    This is the standard implementation's ideal. Real backends differ a
    little: on TensorFlow and PyTorch the memory-efficient layer also keeps
    its 4k-channel bottleneck output (see `keras_densenet.layers.efficient`), and
    ``keras-densenet bench --measure activations`` measures what JAX keeps.

    Example:

    >>> with shape_only():
    ...     standard = activation_bytes(build_model("densenet121"))
    ...     efficient = activation_bytes(build_model("densenet121", memory_efficient=True))
    >>> round(standard / 1e6), round(efficient / 1e6)
    (129, 27)
    """
    _check_model(model)
    inputs = {id(t) for t in model.inputs}
    kept: dict = {}
    extra = 0
    for node in _nodes(model):
        op = node.operation
        if isinstance(op, keras.Model):
            extra += activation_bytes(op)
            continue
        for t in _kept(node):
            if id(t) not in inputs:
                kept[id(t)] = _size(t, op) * np.dtype(keras.backend.standardize_dtype(t.dtype)).itemsize
    return extra + sum(kept.values())


# --- dense blocks ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DenseBlockInfo:
    """One dense block, read from a model.

    Attributes:
        name: the block's name prefix, ``"conv2"`` for the first.
        input_channels: ``k0``, channels of the block input.
        growth: channels each dense layer adds (``k``), one per layer.
        first_convs: each dense layer's first convolution (the 1x1
            bottleneck conv, or the 3x3 conv without bottleneck).
        transition: the 1x1 conv of the transition after the block, if any.
        classifier: the Dense classifier after the last block, if any.
    """

    name: str
    input_channels: int
    growth: tuple
    first_convs: tuple
    transition: Optional[object] = None
    classifier: Optional[object] = None

    @property
    def num_layers(self) -> int:
        """``L``, dense layers in the block."""
        return len(self.growth)

    @property
    def output_channels(self) -> int:
        """``k0 + k * L``: channels after the block."""
        return self.input_channels + sum(self.growth)

    @property
    def connections(self) -> int:
        """Direct connections: layer ``l`` reads ``l`` sources, L(L+1)/2 in all."""
        return sum(len(self.sources_of(i)) for i in range(1, self.num_layers + 1))

    def slices(self) -> list:
        """Channel range ``(start, stop)`` of each source: 0 is the block input,
        ``i`` dense layer ``i``, in concatenation order."""
        bounds = np.cumsum((0, self.input_channels) + self.growth)
        return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]

    def sources_of(self, layer: int) -> list:
        """The sources dense layer `layer` (1-based) reads: 0 .. layer-1."""
        return list(range(layer))


def _all_layers(model) -> dict:
    """Layers by name, including those of nested models (outer names first)."""
    found, stack = {}, [model]
    while stack:
        current = stack.pop(0)
        for layer in current.layers:
            found.setdefault(layer.name, layer)
            if isinstance(layer, keras.Model):
                stack.append(layer)
    return found


def _in_channels(layer) -> int:
    return int(layer.kernel.shape[-2])


def dense_blocks(model: keras.Model) -> list:
    """The dense blocks of a DenseNet built by this package (standard or
    memory-efficient graph, possibly nested in a larger model).

    Layer names are keras.applications' (``conv{s}_block{i}_1_conv``...):
    dense layer ``i`` of block ``s`` reads ``[x0, y1, ..., y(i-1)]`` in that
    concatenation order, which is checked against every kernel's input
    channels.

    Raises:
        ValueError: `model` has no dense blocks, or its kernels do not fit the
            dense connectivity pattern.

    Example:

    >>> import keras_densenet
    >>> model = keras_densenet.DenseNet((2, 3), 4, num_init_features=6,
    ...                                 input_shape=(16, 16, 3), classes=3)
    >>> [(b.name, b.input_channels, b.output_channels) for b in dense_blocks(model)]
    [('conv2', 6, 14), ('conv3', 7, 19)]
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"`model` must be a keras.Model. Received: {type(model).__name__}")
    by_name = _all_layers(model)
    first: dict = {}  # (stage, index) -> (first conv, its 3x3 conv)
    for name, layer in by_name.items():
        match = _EFFICIENT.match(name)
        if match and isinstance(layer, EfficientDenseLayer):
            convs = (layer.conv1 if layer.bottleneck else layer.conv2, layer.conv2)
            first[int(match.group(1)), int(match.group(2))] = convs
    for name, layer in by_name.items():
        match = _FIRST_CONV.match(name)
        if not match or not isinstance(layer, layers.Conv2D):
            continue
        stage, index, which = int(match.group(1)), int(match.group(2)), match.group(3)
        prefix = f"conv{stage}_block{index}"
        # The 1x1 bottleneck conv comes first; without it the 3x3 conv does.
        if which == "1" or f"{prefix}_1_conv" not in by_name:
            last = by_name.get(f"{prefix}_2_conv")
            if isinstance(last, layers.Conv2D):
                first[stage, index] = (layer, last)
    if not first:
        raise ValueError(
            f"`model` {model.name!r} is not a DenseNet built by keras_densenet: it has no "
            "dense layers (named 'conv<stage>_block<i>_1_conv' / '_2_conv')."
        )
    stages = sorted({s for s, _ in first})
    result = []
    for s in stages:
        count = max(i for t, i in first if t == s)
        if any((s, i) not in first for i in range(1, count + 1)):
            raise ValueError(f"`model` {model.name!r}: dense block conv{s} has missing layers.")
        convs = [first[s, i] for i in range(1, count + 1)]
        k0 = _in_channels(convs[0][0])
        growth = tuple(int(c[1].kernel.shape[-1]) for c in convs)
        for i, (conv, _) in enumerate(convs):
            expected = k0 + sum(growth[:i])
            if _in_channels(conv) != expected:
                raise ValueError(
                    f"`model` {model.name!r}: {conv.name} reads {_in_channels(conv)} channels, "
                    f"not the {expected} of dense connectivity; not a DenseNet of this package."
                )
        block = DenseBlockInfo(f"conv{s}", k0, growth, tuple(c[0] for c in convs))
        transition = by_name.get(f"pool{s}_conv")
        classifier = by_name.get("predictions")
        if transition is not None and _in_channels(transition) == block.output_channels:
            block = dataclasses.replace(block, transition=transition)
        elif (
            s == stages[-1]
            and isinstance(classifier, layers.Dense)
            and _in_channels(classifier) == block.output_channels
        ):
            block = dataclasses.replace(block, classifier=classifier)
        result.append(block)
    return result


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
            read = _in_channels(target)  # a prefix of the concatenation
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
    for ax, block in zip(axes[0], blocks):
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


# --- the table ----------------------------------------------------------------------


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
    "and memory-efficient graphs; see keras_densenet.tools.analysis.activation_bytes.",
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
        lines = ["| " + " | ".join(heads) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(heads))) + "|"]
        lines += ["| " + " | ".join(c) + " |" for c in cells]
        return "\n".join(lines + [""] + [f"- {n}" for n in TABLE_NOTES])
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(heads)]
    lines = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(heads, widths)))]
    lines += ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in cells]
    return "\n".join(lines + [""] + list(TABLE_NOTES))
