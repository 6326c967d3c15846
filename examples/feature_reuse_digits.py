"""Feature reuse after training: Figure 5 of the DenseNet paper on the digits.

Trains a DenseNet-BC (depth 40, k=12: 3 dense blocks of 6 bottleneck layers)
on the embedded handwritten digits, then draws, for each dense block, the
mean absolute weight that each layer's first convolution (and the transition
or classifier after the block) gives to each earlier source: the block input
(top row) and every earlier dense layer (`keras_densenet.tools.reuse`).

How to read it: a column is one reader (target), a row one source; blank
cells are sources a target cannot read. Each column is divided by its
largest cell (``--raw`` plots the raw means), because He initialization
scales a kernel by its fan-in, which grows along the block: within a column,
initialization gives every source the same expected weight, so what the
colours show is what training changed. A column without dark cells means the
layer keeps reading all its sources, the block input and the first layers'
maps included: features are reused, not relearned. The script prints, per
block, the weakest source of the deepest layer relative to its strongest, and
how much the transition (or classifier) weighs the newest maps against the
older ones.

Run:
    python examples/feature_reuse_digits.py                 # depth 40, 10 epochs
    python examples/feature_reuse_digits.py --smoke         # seconds
    keras-densenet reuse densenet_run/model.keras --out reuse/   # any trained model
"""

import argparse
import json
import math
import os

import keras
import numpy as np

import keras_densenet
from keras_densenet.data import datasets as data
from keras_densenet.tools.reuse import feature_reuse, plot_feature_reuse


def summarize(reuse):
    """One line per block: how the deepest layer and the last reader spread their weight."""
    lines = []
    for block in reuse["blocks"]:
        m = np.array([[np.nan if v is None else v for v in row] for row in block["matrix"]], float)
        m = m / np.nanmax(m, axis=0)  # each target relative to its strongest source
        num_layers = len(block["sources"]) - 1
        deepest = m[:, num_layers - 1]  # the last dense layer reads sources 0..L-1
        line = (f"{block['name']}: the deepest layer gives its weakest source {np.nanmin(deepest):.2f} "
                f"and the block input {deepest[0]:.2f} of its strongest source's weight")
        if len(block["targets"]) > num_layers:
            last = m[:, -1]
            newest = max(1, num_layers // 3)
            ratio = np.nanmean(last[-newest:]) / np.nanmean(last[:-newest])
            line += (f"; the {block['targets'][-1]} weighs the newest {newest} layer(s) "
                     f"{ratio:.2f}x as much as the older sources")
        lines.append(line)
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=40)
    parser.add_argument("--growth-rate", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--output", default="reuse_digits.png", help="heatmap file (a .json is written beside it)")
    parser.add_argument("--raw", action="store_true", help="plot raw means, not column-normalized")
    parser.add_argument("--smoke", action="store_true", help="depth 10, k=4, 100 images, 1 epoch")
    args = parser.parse_args(argv)
    if args.smoke:
        args.depth, args.growth_rate, args.epochs = 10, 4, 1

    keras.utils.set_random_seed(0)
    ds = data.load_digits_dataset(32, limit=100 if args.smoke else None)
    inputs = keras.Input(ds.x_train.shape[1:])
    x = keras.layers.Rescaling(1 / 255)(inputs)
    outputs = keras_densenet.DenseNetBC(args.depth, args.growth_rate, input_tensor=x,
                                        classes=10, bn_momentum=0.9).output
    model = keras.Model(inputs, outputs, name=f"densenet_bc_{args.depth}_k{args.growth_rate}")
    model.compile(keras.optimizers.AdamW(2e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    cosine = keras.callbacks.LearningRateScheduler(
        lambda e: 2e-3 * 0.5 * (1 + math.cos(math.pi * e / args.epochs)))
    train = data.augmented_batches(ds.x_train, ds.y_train, 32, max_shift=2, seed=0)
    history = model.fit(train, validation_data=(ds.x_val, ds.y_val), epochs=args.epochs,
                        callbacks=[cosine], verbose=0)
    print(f"DenseNet-BC depth {args.depth}, k={args.growth_rate}: {model.count_params():,} parameters, "
          f"final validation accuracy {history.history['val_accuracy'][-1]:.4f}")

    reuse = feature_reuse(model)
    plot_feature_reuse(
        reuse, args.output,
        title=f"feature reuse, DenseNet-BC-{args.depth} (k={args.growth_rate}) trained on the digits",
        normalize=not args.raw)
    json_path = os.path.splitext(args.output)[0] + ".json"
    with open(json_path, "w") as f:
        json.dump(reuse, f, indent=1)
    for line in summarize(reuse):
        print(line)
    print(f"heatmap: {os.path.abspath(args.output)}; numbers: {os.path.abspath(json_path)}")


if __name__ == "__main__":
    main()
