"""CIFAR-10 with the paper's DenseNet-BC recipe.

Huang et al. train DenseNet-BC (L=100, k=12: 4.51% error with augmentation)
with SGD, Nesterov momentum 0.9, batch 64, weight decay 1e-4, 300 epochs,
learning rate 0.1 divided by 10 at 50% and 75% of training, and random
crops (4-pixel padding) plus horizontal flips. This script follows it
(weight decay is AdamW-style decoupled here). The data comes from
keras.datasets.cifar10 when the download works, else (or with --offline /
--smoke) from the embedded handwritten digits.

Run:
    python examples/cifar10_densenet_bc.py --epochs 300          # the paper's run (GPU)
    python examples/cifar10_densenet_bc.py --depth 40 --epochs 20
    python examples/cifar10_densenet_bc.py --smoke
"""

import argparse

import keras
import numpy as np

import keras_densenet
from keras_densenet.data import datasets as data


def load(offline, smoke):
    if not offline:
        try:
            (x_train, y_train), (x_val, y_val) = keras.datasets.cifar10.load_data()
            names = ["airplane", "automobile", "bird", "cat", "deer",
                     "dog", "frog", "horse", "ship", "truck"]
            return (x_train.astype("float32"), y_train.ravel(), x_val.astype("float32"),
                    y_val.ravel(), names, True)
        except Exception as e:  # offline: fall back to the bundled digits
            print(f"CIFAR-10 download failed ({type(e).__name__}); using the digits")
    ds = data.load_digits_dataset(32, channels=3, limit=60 if smoke else None)
    return ds.x_train, ds.y_train, ds.x_val, ds.y_val, ds.class_names, False


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--growth-rate", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--offline", action="store_true", help="use the embedded digits")
    parser.add_argument("--smoke", action="store_true", help="tiny offline run")
    args = parser.parse_args(argv)
    if args.smoke:
        args.depth, args.growth_rate, args.epochs, args.offline = 10, 4, 1, True

    x_train, y_train, x_val, y_val, names, is_cifar = load(args.offline, args.smoke)
    # Per-channel standardization, inside the model so it takes raw pixels.
    norm = keras.layers.Normalization()
    norm.adapt(x_train[:5000])
    inputs = keras.Input((32, 32, 3))
    outputs = keras_densenet.DenseNetBC(
        args.depth, args.growth_rate, input_tensor=norm(inputs), classes=len(names),
        bn_momentum=0.9,
    ).output
    model = keras.Model(inputs, outputs, name=f"densenet_bc_{args.depth}_k{args.growth_rate}")
    steps = int(np.ceil(len(x_train) / args.batch_size))
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay(
        [steps * args.epochs // 2, steps * args.epochs * 3 // 4], [0.1, 0.01, 0.001]
    )
    model.compile(
        keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True, weight_decay=1e-4),
        "sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    print(f"{model.name}: {model.count_params():,} parameters, "
          f"{'CIFAR-10' if is_cifar else 'digits'}, {len(x_train)} training images")
    # The paper's augmentation: random crops from 4-pixel zero padding (a shift
    # of up to 4 pixels) and, for CIFAR (not digits), horizontal flips.
    train_batches = data.augmented_batches(x_train, y_train, args.batch_size, max_shift=4,
                                           seed=0, flip=is_cifar)
    history = model.fit(train_batches,
                        validation_data=(x_val, y_val), epochs=args.epochs, verbose=2)
    print(f"validation accuracy: {history.history['val_accuracy'][-1]:.4f}")


if __name__ == "__main__":
    main()
