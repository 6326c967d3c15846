"""A DenseNet-style MLP for tabular data vs a plain MLP of equal parameter count.

The dense idea applied to Dense layers (d2l.ai's DenseNet exercise 5): layer
l sees the concatenation of the input features and every earlier layer's
output, ``h_l = relu(W_l [x, h_1, ..., h_(l-1)])``, and the regression head
reads all of them. Each layer adds only ``k`` units (the growth rate), so the
network stays narrow; the plain MLP gets the width that gives it (about) the
same number of parameters.

Data: scikit-learn's bundled diabetes regression set (442 patients, 10
standardized features, disease progression after one year; no download),
the closest bundled stand-in for the housing-price task of the exercise.
Both models are trained identically on repeated random 80/20 splits (AdamW,
early stopping on a fifth of the training split); the script reports test
RMSE and R^2 (mean and spread over the splits).

Run:
    python examples/dense_mlp.py                  # 5 splits, up to 300 epochs
    python examples/dense_mlp.py --layers 6 --growth-rate 8
    python examples/dense_mlp.py --smoke          # 1 split, 3 epochs
"""

import argparse

import keras
import numpy as np
from keras import layers


def dense_mlp(features, num_layers, growth_rate):
    """Dense connectivity for MLPs: every layer reads all earlier outputs."""
    inputs = keras.Input((features,))
    outputs = [inputs]
    for i in range(num_layers):
        x = outputs[0] if len(outputs) == 1 else layers.Concatenate(name=f"dense{i + 1}_concat")(outputs)
        outputs.append(layers.Dense(growth_rate, activation="relu", name=f"dense{i + 1}")(x))
    x = layers.Concatenate(name="head_concat")(outputs)
    return keras.Model(inputs, layers.Dense(1, name="head")(x), name="dense_mlp")


def plain_mlp(features, num_layers, width):
    inputs = keras.Input((features,))
    x = inputs
    for i in range(num_layers):
        x = layers.Dense(width, activation="relu", name=f"dense{i + 1}")(x)
    return keras.Model(inputs, layers.Dense(1, name="head")(x), name="plain_mlp")


def plain_params(features, num_layers, width):
    return (features + 1) * width + (num_layers - 1) * (width + 1) * width + width + 1


def matched_width(features, num_layers, params):
    """The plain MLP width whose parameter count is closest to `params`."""
    return min(range(1, 1024), key=lambda w: abs(plain_params(features, num_layers, w) - params))


def fit_and_score(model, split, epochs, seed):
    x_train, y_train, x_test, y_test, y_scale = split
    keras.utils.set_random_seed(seed)
    model.compile(keras.optimizers.AdamW(1e-3, weight_decay=1e-2), "mse")
    # 442 patients overfit quickly: stop on a held-out fifth of the training split.
    stop = keras.callbacks.EarlyStopping(patience=20, restore_best_weights=True)
    model.fit(x_train, y_train, epochs=epochs, batch_size=32, validation_split=0.2,
              callbacks=[stop], verbose=0)
    pred = np.asarray(model.predict(x_test, verbose=0))[:, 0]
    rmse = float(np.sqrt(np.mean((pred - y_test) ** 2))) * y_scale
    r2 = 1 - float(np.sum((pred - y_test) ** 2) / np.sum((y_test - y_test.mean()) ** 2))
    return rmse, r2


def splits(count, seed=0):
    from sklearn.datasets import load_diabetes
    from sklearn.model_selection import train_test_split

    x, y = load_diabetes(return_X_y=True)
    for i in range(count):
        x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, random_state=seed + i)
        # Standardize with the training split's statistics only.
        mean, std = x_tr.mean(0), x_tr.std(0)
        y_mean, y_std = y_tr.mean(), y_tr.std()
        yield ((x_tr - mean) / std, (y_tr - y_mean) / y_std, (x_te - mean) / std,
               (y_te - y_mean) / y_std, float(y_std))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--growth-rate", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=300, help="at most (early stopping)")
    parser.add_argument("--splits", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="1 split, 3 epochs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.splits, args.epochs = 1, 3

    features = 10
    dense_params = dense_mlp(features, args.layers, args.growth_rate).count_params()
    width = matched_width(features, args.layers, dense_params)
    print(f"dense MLP: {args.layers} layers, growth rate {args.growth_rate}, "
          f"{dense_params:,} parameters; plain MLP: {args.layers} layers of {width} units, "
          f"{plain_params(features, args.layers, width):,} parameters")
    scores = {"dense_mlp": [], "plain_mlp": []}
    for i, split in enumerate(splits(args.splits)):
        for name, build in (("dense_mlp", lambda: dense_mlp(features, args.layers, args.growth_rate)),
                            ("plain_mlp", lambda: plain_mlp(features, args.layers, width))):
            model = build()
            scores[name].append(fit_and_score(model, split, args.epochs, seed=i))
    print(f"\ntest scores on the diabetes data ({args.splits} random 80/20 splits, {args.epochs} epochs):")
    print(f"{'model':10} {'params':>7} {'RMSE':>14} {'R^2':>14}")
    for name, rows in scores.items():
        rmse, r2 = np.array(rows).T
        params = dense_params if name == "dense_mlp" else plain_params(features, args.layers, width)
        print(f"{name:10} {params:>7,} {rmse.mean():>7.2f} ± {rmse.std():<5.2f} {r2.mean():>7.3f} ± {r2.std():<5.3f}")


if __name__ == "__main__":
    main()
