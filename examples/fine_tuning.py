"""Fine-tuning with model.fit: new head on a frozen backbone, then unfreeze.

The Keras transfer-learning recipe: (1) freeze the pretrained DenseNet and
train only a new classifier; (2) unfreeze everything and continue with a
10x lower learning rate. The backbone is called with ``training=False`` so
its BatchNormalization layers keep their ImageNet statistics in both phases.

Run:
    python examples/fine_tuning.py                 # DenseNet-121, ImageNet weights
    python examples/fine_tuning.py --smoke         # tiny DenseNet-BC, offline, seconds
"""

import argparse

import keras

import keras_densenet
from keras_densenet.data import datasets as data


def build(backbone, num_classes, size):
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    # ImageNet mean/std inside the model: it takes raw [0, 255] pixels.
    x = keras.layers.Normalization(mean=[0.485, 0.456, 0.406],
                                   variance=[0.229**2, 0.224**2, 0.225**2])(x)
    x = backbone(x, training=False)
    x = keras.layers.Dropout(0.2)(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="imagenet", help="imagenet or a notop weights file")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--head-epochs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5, help="epochs after unfreezing")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--smoke", action="store_true", help="tiny offline run")
    args = parser.parse_args(argv)

    size = 32 if args.smoke else args.image_size
    ds = data.load_digits_dataset(size, channels=3, limit=60 if args.smoke else None)
    if args.smoke:  # a stand-in backbone: random weights, tiny, no download
        backbone = keras_densenet.DenseNetBC(10, 4, include_top=False, pooling="avg",
                                             input_shape=(size, size, 3))
        args.head_epochs = args.epochs = 1
    else:
        backbone = keras_densenet.DenseNet121(include_top=False, weights=args.weights,
                                              input_shape=(size, size, 3), pooling="avg")
    model = build(backbone, len(ds.class_names), size)
    fit = dict(x=ds.x_train, y=ds.y_train, batch_size=32,
               validation_data=(ds.x_val, ds.y_val), verbose=2)

    backbone.trainable = False
    model.compile(keras.optimizers.Adam(args.lr), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    head = model.fit(epochs=args.head_epochs, **fit)
    print(f"phase 1 (frozen backbone): val accuracy {head.history['val_accuracy'][-1]:.4f}")

    backbone.trainable = True  # recompile so the change takes effect
    model.compile(keras.optimizers.Adam(args.lr / 10), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    full = model.fit(initial_epoch=args.head_epochs, epochs=args.head_epochs + args.epochs, **fit)
    print(f"phase 2 (all layers): validation accuracy {full.history['val_accuracy'][-1]:.4f}")


if __name__ == "__main__":
    main()
