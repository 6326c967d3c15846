"""Growth-rate ablation: validation accuracy vs parameters for k = 8, 12, 24, 32.

The exercise the DenseNet tutorials set (e.g. d2l.ai): how does the growth
rate k, the feature maps each layer adds, trade accuracy for size? Every
model is a DenseNet-BC of the same depth trained the same way on the
embedded handwritten digits; the script prints a table and saves a plot.

Run:
    python examples/growth_rate_ablation.py                      # depth 22, 6 epochs each
    python examples/growth_rate_ablation.py --depth 40 --epochs 10
    python examples/growth_rate_ablation.py --smoke              # k = 8, 12; seconds
"""

import argparse
import math
import os

import keras

import keras_densenet
from keras_densenet.data import datasets as data


def train_one(k, args, ds):
    keras.utils.set_random_seed(0)
    inputs = keras.Input(ds.x_train.shape[1:])
    x = keras.layers.Rescaling(1 / 255)(inputs)
    outputs = keras_densenet.DenseNetBC(args.depth, k, input_tensor=x, classes=10,
                                        bn_momentum=0.9).output
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.AdamW(2e-3), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    cosine = keras.callbacks.LearningRateScheduler(
        lambda e: 2e-3 * 0.5 * (1 + math.cos(math.pi * e / args.epochs)))
    train = data.augmented_batches(ds.x_train, ds.y_train, 32, max_shift=2, seed=0)
    history = model.fit(train, validation_data=(ds.x_val, ds.y_val), epochs=args.epochs,
                        callbacks=[cosine], verbose=0)
    return model.count_params(), max(history.history["val_accuracy"])


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    params = [p / 1e3 for _, p, _ in results]
    ax.plot(params, [a for _, _, a in results], marker="o")
    for k, p, a in results:
        ax.annotate(f"k={k}", (p / 1e3, a), textcoords="offset points", xytext=(5, -12))
    ax.set_xscale("log")
    ax.set_xlabel("parameters (thousands)")
    ax.set_ylabel("best validation accuracy")
    ax.set_title("DenseNet-BC growth rate on the digits")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--growth-rates", type=int, nargs="+", default=[8, 12, 24, 32])
    parser.add_argument("--depth", type=int, default=22)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--output", default="growth_rate_ablation.png", help="plot file")
    parser.add_argument("--smoke", action="store_true", help="k = 8, 12, depth 10, 1 epoch")
    args = parser.parse_args(argv)
    if args.smoke:
        args.growth_rates, args.depth, args.epochs = [8, 12], 10, 1

    # --smoke: 16x16 (the digits are 8x8 scans), a quarter of the convolutions.
    ds = data.load_digits_dataset(16 if args.smoke else 32, limit=100 if args.smoke else None)
    results = []
    print(f"{'k':>3} {'params':>10} {'val accuracy':>12}")
    for k in args.growth_rates:
        params, accuracy = train_one(k, args, ds)
        results.append((k, params, accuracy))
        print(f"{k:>3} {params:>10,} {accuracy:>12.4f}", flush=True)
    plot(results, args.output)
    print(f"plot: {os.path.abspath(args.output)}")


if __name__ == "__main__":
    main()
