"""Keras fit under tf.distribute.MultiWorkerMirroredStrategy (tests/test_multiprocess.py):
one worker of the job that TF_CONFIG describes."""

import keras
import numpy as np
import tensorflow as tf

strategy = tf.distribute.MultiWorkerMirroredStrategy()
with strategy.scope():
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy")
rng = np.random.default_rng(0)
data = tf.data.Dataset.from_tensor_slices((rng.normal(size=(32, 8, 8, 1)).astype("float32"),
                                           rng.integers(0, 3, 32))).batch(8)
print("loss", model.fit(data, epochs=1, verbose=0).history["loss"][0])
