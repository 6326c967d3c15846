"""The connections of a 6-layer dense block: the tutorials' first exercise.

Builds a real dense block with `keras_densenet.layers.blocks.dense_block` (6 layers,
growth rate 12, 24 input channels), reads its connections back from the
Keras graph (`keras_densenet.tools.connectivity.dense_blocks`: which channel slices of
the concatenation each layer's first convolution reads, checked against the
kernel shapes) and draws them: layer l reads the block input x0 and every
earlier layer's output, so L layers have L(L+1)/2 = 21 direct connections
where a plain chain of 6 layers has 6.

Run:
    python examples/dense_connectivity.py                   # 6 layers
    python examples/dense_connectivity.py --layers 12       # 78 connections
    python examples/dense_connectivity.py --smoke
"""

import argparse
import os

import keras

from keras_densenet.layers import blocks
from keras_densenet.tools import connectivity


def dense_block_model(num_layers, growth_rate, in_channels):
    inputs = keras.Input((8, 8, in_channels))
    outputs = blocks.dense_block(inputs, num_layers, growth_rate, "conv2", blocks.LayerOptions())
    return keras.Model(inputs, outputs, name=f"dense_block_{num_layers}")


def draw(block, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch

    n = block.num_layers
    fig, (arcs, grid) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [1.6, 1]})
    colors = plt.cm.viridis([i / max(1, n) for i in range(n + 1)])
    for target in range(1, n + 1):
        for source in block.sources_of(target):
            # An arc above the line from the source's output to the layer reading it.
            arcs.add_patch(FancyArrowPatch((source, 0), (target, 0), connectionstyle="arc3,rad=-0.45",
                                           arrowstyle="-|>", mutation_scale=10, lw=1.2,
                                           color=colors[source], alpha=0.85))
    widths = [block.input_channels] + list(block.growth)
    for i in range(n + 1):
        arcs.add_patch(plt.Circle((i, 0), 0.18, color=colors[i], zorder=3))
        arcs.annotate("x0" if i == 0 else f"H{i}", (i, 0), ha="center", va="center", color="white",
                      fontsize=8, zorder=4)
        arcs.annotate(f"+{widths[i]} ch", (i, -0.35), ha="center", fontsize=7)
    arcs.set_xlim(-0.6, n + 0.6)
    arcs.set_ylim(-0.6, 0.32 * n + 0.6)
    arcs.set_aspect("equal")
    arcs.axis("off")
    arcs.set_title(f"{n}-layer dense block: {block.connections} direct connections "
                   f"(L(L+1)/2 = {n * (n + 1) // 2})")

    matrix = [[1.0 if s in block.sources_of(t) else 0.0 for t in range(1, n + 1)] for s in range(n)]
    grid.imshow(matrix, cmap="Greens", vmin=0, vmax=1.3)
    grid.set_xticks(range(n))
    grid.set_xticklabels([f"H{t}" for t in range(1, n + 1)])
    grid.set_yticks(range(n))
    grid.set_yticklabels(["x0"] + [f"H{s}" for s in range(1, n)])
    grid.set_xlabel("layer (reads)")
    grid.set_ylabel("output of (is read)")
    grid.set_title("who reads whom")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--growth-rate", type=int, default=12)
    parser.add_argument("--in-channels", type=int, default=24)
    parser.add_argument("--output", default="dense_connectivity.png")
    parser.add_argument("--smoke", action="store_true", help="the default 6-layer block (it is fast)")
    args = parser.parse_args(argv)

    model = dense_block_model(args.layers, args.growth_rate, args.in_channels)
    (block,) = connectivity.dense_blocks(model)
    print(f"{block.num_layers}-layer dense block: {block.connections} direct connections "
          f"(a plain chain has {block.num_layers})")
    print("layer  reads                        input channels")
    for layer, conv in enumerate(block.first_convs, start=1):
        sources = ", ".join("x0" if s == 0 else f"H{s}" for s in block.sources_of(layer))
        print(f"H{layer:<5} {sources:28} {conv.kernel.shape[-2]}")
    print(f"channels after the block: {block.input_channels} + {args.layers} x {args.growth_rate} "
          f"= {block.output_channels}")
    draw(block, args.output)
    print(f"figure: {os.path.abspath(args.output)}")


if __name__ == "__main__":
    main()
