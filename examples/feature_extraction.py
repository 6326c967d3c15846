"""Feature extraction: a frozen DenseNet-121 backbone plus a small classifier.

DenseNet121(include_top=False, pooling="avg") turns each image into a
1024-dimensional feature vector once; only a small Dense classifier is
trained on those vectors. Here on the embedded handwritten digits (gray
scans repeated to RGB and upsampled), so it runs offline apart from the
ImageNet weights download.

Run:
    python examples/feature_extraction.py                    # ImageNet weights
    python examples/feature_extraction.py --weights my.weights.h5
    python examples/feature_extraction.py --smoke            # seconds, offline
"""

import argparse

import keras
import numpy as np

import keras_densenet
from keras_densenet.data import datasets as data


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="imagenet",
                        help="imagenet, a notop weights file, or none")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--smoke", action="store_true",
                        help="tiny offline run (random weights, 60 images, 1 epoch)")
    args = parser.parse_args(argv)
    weights = None if args.smoke or args.weights.lower() == "none" else args.weights
    size = 32 if args.smoke else args.image_size

    ds = data.load_digits_dataset(size, channels=3, limit=60 if args.smoke else None)
    backbone = keras_densenet.DenseNet121(
        include_top=False, weights=weights, input_shape=(size, size, 3), pooling="avg"
    )
    # ImageNet preprocessing (scale, then mean/std), as the weights expect.
    def features(x):
        return backbone.predict(keras_densenet.preprocess_input(x), batch_size=64, verbose=0)

    f_train, f_val = features(ds.x_train), features(ds.x_val)
    print(f"features: {f_train.shape[1]} per image, {len(f_train)} training images")

    classifier = keras.Sequential(
        [
            keras.Input(f_train.shape[1:]),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(len(ds.class_names), activation="softmax"),
        ]
    )
    classifier.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    classifier.fit(f_train, ds.y_train, epochs=1 if args.smoke else args.epochs,
                   batch_size=32, verbose=0)
    _, accuracy = classifier.evaluate(f_val, ds.y_val, verbose=0)
    print(f"validation accuracy: {accuracy:.4f}")
    predicted = np.argmax(classifier.predict(f_val[:5], verbose=0), axis=-1)
    print("first predictions:", [ds.class_names[i] for i in predicted])


if __name__ == "__main__":
    main()
