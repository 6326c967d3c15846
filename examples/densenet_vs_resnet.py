"""DenseNet vs ResNet on one small task: parameters, MACs, training memory, accuracy.

Two networks of about the same size, trained the same way on the embedded
handwritten digits (32x32): a DenseNet-BC (depth 22, k=12: 3 blocks of 3
bottleneck layers) and a CIFAR-style ResNet-8 (He et al.: 3 stages of one
basic residual block, 16/32/64 filters). Parameters, multiply-accumulates and
training activation memory per image are counted from the two Keras graphs
(`keras_densenet.tools.counts`); accuracy and time come from training them. The
script then prints the same facts for the ImageNet models the paper compares
(DenseNet-121/169/201 vs ResNet-50/101), and saves a bar chart.

What to look for: parameters alone do not decide compute or memory. Here,
at about equal parameters, the DenseNet-BC needs more MACs and far more
training memory than the ResNet: its first block works at the full 32x32
resolution, where every concatenation and its BN/ReLU outputs are kept for
the backward pass, while the ResNet halves the resolution twice. The paper's
efficiency claim is about accuracy per parameter and per MAC at ImageNet
scale: see the ImageNet rows, DenseNet-201 (4.3 GMACs, 20M parameters)
against ResNet-101 (7.6 GMACs, 44.7M parameters) at similar top-1.

Run:
    python examples/densenet_vs_resnet.py                   # 10 epochs each
    python examples/densenet_vs_resnet.py --smoke           # seconds
"""

import argparse
import math
import os
import time

import keras
from keras import layers

import keras_densenet
from keras_densenet.data import datasets as data
from keras_densenet.tools import counts, table


def resnet_cifar(input_shape, classes, blocks_per_stage=1, widths=(16, 32, 64)):
    """He et al.'s CIFAR ResNet (6n+2 layers; n=1: ResNet-8), projection
    shortcuts where the shape changes."""
    inputs = keras.Input(input_shape)
    x = layers.Rescaling(1 / 255)(inputs)
    x = layers.Conv2D(widths[0], 3, padding="same", use_bias=False)(x)
    x = layers.ReLU()(layers.BatchNormalization(momentum=0.9)(x))
    for stage, width in enumerate(widths):
        for i in range(blocks_per_stage):
            strides = 2 if stage > 0 and i == 0 else 1
            shortcut = x
            if strides != 1 or x.shape[-1] != width:
                shortcut = layers.Conv2D(width, 1, strides=strides, use_bias=False)(x)
                shortcut = layers.BatchNormalization(momentum=0.9)(shortcut)
            y = layers.Conv2D(width, 3, strides=strides, padding="same", use_bias=False)(x)
            y = layers.ReLU()(layers.BatchNormalization(momentum=0.9)(y))
            y = layers.Conv2D(width, 3, padding="same", use_bias=False)(y)
            y = layers.BatchNormalization(momentum=0.9)(y)
            x = layers.ReLU()(layers.Add()([shortcut, y]))
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name=f"resnet_{6 * blocks_per_stage + 2}")


def densenet_bc(input_shape, classes, depth):
    inputs = keras.Input(input_shape)
    x = layers.Rescaling(1 / 255)(inputs)
    outputs = keras_densenet.DenseNetBC(depth, 12, input_tensor=x, classes=classes, bn_momentum=0.9).output
    return keras.Model(inputs, outputs, name=f"densenet_bc_{depth}_k12")


def train(model, ds, epochs):
    keras.utils.set_random_seed(0)
    model.compile(keras.optimizers.AdamW(2e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    cosine = keras.callbacks.LearningRateScheduler(lambda e: 2e-3 * 0.5 * (1 + math.cos(math.pi * e / epochs)))
    batches = data.augmented_batches(ds.x_train, ds.y_train, 32, max_shift=2, seed=0)
    start = time.perf_counter()
    history = model.fit(batches, validation_data=(ds.x_val, ds.y_val), epochs=epochs,
                        callbacks=[cosine], verbose=0)
    return max(history.history["val_accuracy"]), (time.perf_counter() - start) / epochs


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [("params", "parameters (K)", 1e3), ("macs", "MACs per image (M)", 1e6),
               ("memory", "training activations (MB/image)", 1e6), ("accuracy", "best val. accuracy", 1)]
    fig, axes = plt.subplots(1, len(metrics), figsize=(13, 3.4))
    names = [r["name"] for r in rows]
    for ax, (key, label, scale) in zip(axes, metrics, strict=True):
        ax.bar(names, [r[key] / scale for r in rows], color=["tab:green", "tab:blue"])
        ax.set_title(label, fontsize=10)
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle("DenseNet vs ResNet on the digits (32x32)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--depth", type=int, default=22, help="DenseNet-BC depth (6n+4)")
    parser.add_argument("--output", default="densenet_vs_resnet.png")
    parser.add_argument("--smoke", action="store_true", help="100 images, 1 epoch, depth 10")
    args = parser.parse_args(argv)
    if args.smoke:
        args.epochs, args.depth = 1, 10

    # --smoke: 16x16 (the digits are 8x8 scans), a quarter of the convolutions.
    ds = data.load_digits_dataset(16 if args.smoke else 32, limit=100 if args.smoke else None)
    shape = ds.x_train.shape[1:]
    rows = []
    for model in (densenet_bc(shape, 10, args.depth), resnet_cifar(shape, 10)):
        accuracy, seconds = train(model, ds, args.epochs)
        rows.append(dict(name=model.name, params=model.count_params(), depth=counts.weighted_depth(model),
                         macs=counts.count_macs(model), memory=counts.activation_bytes(model),
                         accuracy=accuracy, seconds=seconds))
    print(f"{'model':20} {'depth':>5} {'params':>8} {'MACs/img':>9} {'train MB/img':>12} "
          f"{'s/epoch':>7} {'val accuracy':>12}")
    for r in rows:
        print(f"{r['name']:20} {r['depth']:>5} {r['params']:>8,} {r['macs'] / 1e6:>8.1f}M "
              f"{r['memory'] / 1e6:>12.2f} {r['seconds']:>7.1f} {r['accuracy']:>12.4f}")
    plot(rows, args.output)
    print(f"plot: {os.path.abspath(args.output)}")

    print("\nImageNet models (224x224, counted from the graphs; top-1 as published):")
    names = ["densenet121", "densenet169", "densenet201", "resnet50", "resnet101"]
    if args.smoke:
        names = ["densenet121", "resnet50"]
    print(table.format_table(table.table(names), "text"))


if __name__ == "__main__":
    main()
