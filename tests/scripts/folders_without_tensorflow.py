"""Child process of tests/test_images.py (test_folders_need_no_tensorflow),
run with TensorFlow hidden (tests/hide_modules) on $KERAS_BACKEND: an image
folder read through the library's PyDatasets and fitted on, then the
commands a JAX- or PyTorch-only install runs on folders: ``train --data``,
``predict --output`` and ``features``. Exits non-zero (an AssertionError)
if one fails or TensorFlow was imported; prints ``fitted`` with the class
names, then ``commands ok``.

Usage: python folders_without_tensorflow.py FOLDER WORKDIR
"""

import json
import os
import sys

import keras

from keras_densenet import cli
from keras_densenet.data import folders


def fit_through_the_library(folder):
    train, val, names, _ = folders.folder_batches(folder, 8, 2, validation_split=0.25)
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy")
    model.fit(train, validation_data=val, epochs=1, verbose=0)
    print("fitted", names, flush=True)


def run_the_commands(folder, work):
    run = os.path.join(work, "run")
    code = cli.main(["train", "--data", folder, "--output", run, "--depth", "10", "--growth-rate", "4",
                     "--batch-size", "4", "--epochs", "1", "--image-size", "8"])
    assert code == 0, f"train: exit {code}"
    model = os.path.join(run, "model.keras")
    rows = os.path.join(work, "rows.jsonl")
    code = cli.main(["predict", folder, "--model", model, "--output", rows, "--batch-size", "4"])
    assert code == 0, f"predict: exit {code}"
    with open(rows) as f:
        assert len([json.loads(line) for line in f]) == 8
    feats = os.path.join(work, "feats.npy")
    code = cli.main(["features", folder, "--model", model, "--output", feats, "--batch-size", "4"])
    assert code == 0, f"features: exit {code}"
    print("commands ok", flush=True)


if __name__ == "__main__":
    folder, work = sys.argv[1:3]
    fit_through_the_library(folder)
    run_the_commands(folder, work)
    assert not [k for k in sys.modules if k.split(".")[0] == "tensorflow"], "tensorflow was imported"
