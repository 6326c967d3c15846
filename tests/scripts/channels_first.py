"""Child process of tests/test_models.py (test_channels_first_on_every_cpu),
on $KERAS_BACKEND, with the test's $TF_ENABLE_ONEDNN_OPTS: a channels_first
DenseNet gives channels_last's outputs (the same weights), its multiscale
features have the channel counts of each block, and it trains one step
(TensorFlow's CPU has no NCHW convolution backprop at all without oneDNN).
Prints nothing; exits non-zero on a failed check.
"""

import keras
import numpy as np

import keras_densenet as kd


def predict(model, x):
    # JAX's eager mode compiles every operation per shape: one compiled predict is cheaper there.
    if keras.backend.backend() == "jax":
        return model.predict(x, verbose=0)
    return keras.ops.convert_to_numpy(model(x))


def main():
    kw = dict(blocks=(2, 3), growth_rate=4, num_init_features=8, include_top=False, pooling=None)
    last = kd.DenseNet(**kw, input_shape=(32, 32, 3))
    first = kd.DenseNet(**kw, input_shape=(3, 32, 32), data_format="channels_first")
    first.set_weights(last.get_weights())
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    out = predict(first, x.transpose(0, 3, 1, 2))
    np.testing.assert_allclose(out, predict(last, x).transpose(0, 3, 1, 2), atol=1e-4)
    features = kd.multiscale_features(first)
    assert [tuple(f.shape)[1] for f in features.outputs] == [16, 20], features.output_shape
    first.compile("sgd", "mse")
    first.fit(x.transpose(0, 3, 1, 2), np.zeros((2,) + first.output_shape[1:]), verbose=0)


if __name__ == "__main__":
    main()
