"""Child process of tests/test_models.py (test_keras_file_round_trip_in_fresh_process):
loads ``DIR/m.keras`` in safe mode in a process that never built the model,
and checks that it predicts ``DIR/y.npy`` exactly from ``DIR/x.npy``.
Exits non-zero otherwise.
"""

import sys

import keras
import numpy as np


def main(directory: str) -> None:
    model = keras.saving.load_model(f"{directory}/m.keras", safe_mode=True)
    predicted = model.predict(np.load(f"{directory}/x.npy"), verbose=0)
    np.testing.assert_array_equal(predicted, np.load(f"{directory}/y.npy"))


if __name__ == "__main__":
    main(sys.argv[1])
