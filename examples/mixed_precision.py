"""Mixed-precision training: bfloat16 or float16 compute, float32 weights.

One global Keras dtype policy makes every layer compute in 16 bits while
keeping its variables in float32. The DenseNet classifier (`predictions`)
is always float32, so the softmax is stable. With float16, `compile` wraps
the optimizer in a LossScaleOptimizer automatically. Speedups need hardware
with fast 16-bit math (recent GPUs, TPUs); on CPUs this mostly shows the API.

Run:
    python examples/mixed_precision.py --policy mixed_bfloat16
    python examples/mixed_precision.py --policy mixed_float16 --epochs 8
    python examples/mixed_precision.py --smoke
"""

import argparse

import keras
import numpy as np

import keras_densenet
from keras_densenet.data import datasets as data


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="mixed_bfloat16",
                        choices=["mixed_bfloat16", "mixed_float16"])
    parser.add_argument("--depth", type=int, default=22)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--smoke", action="store_true", help="tiny run, seconds")
    args = parser.parse_args(argv)
    if args.smoke:
        args.depth, args.epochs = 10, 1

    keras.config.set_dtype_policy(args.policy)
    size = 16 if args.smoke else 32  # --smoke: a quarter of the convolutions
    ds = data.load_digits_dataset(size, limit=60 if args.smoke else None)
    inputs = keras.Input((size, size, 1))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    model = keras.Model(inputs, keras_densenet.DenseNetBC(
        args.depth, 12, input_tensor=x, classes=10, bn_momentum=0.9).output)
    conv = model.get_layer("conv1_conv")
    print(f"policy {args.policy}: conv compute {conv.compute_dtype}, "
          f"variables {conv.variable_dtype}; predictions "
          f"{model.get_layer('predictions').compute_dtype}")
    model.compile(keras.optimizers.AdamW(2e-3), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    print(f"optimizer: {type(model.optimizer).__name__}")
    history = model.fit(ds.x_train, ds.y_train, batch_size=32, epochs=args.epochs,
                        validation_data=(ds.x_val, ds.y_val), verbose=2)
    probs = model.predict(ds.x_val[:4], verbose=0)
    assert probs.dtype == np.float32
    print(f"validation accuracy: {history.history['val_accuracy'][-1]:.4f}")


if __name__ == "__main__":
    main()
