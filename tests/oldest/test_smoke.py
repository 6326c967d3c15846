"""Smoke test of the core install: what every user does first, on the
oldest Keras and backend the package declares (``.ci/oldest`` runs this file
in a fresh venv with the floors of pyproject.toml; the normal suite skips
this folder, as it checks the same with stronger tests).

It needs only the core install and pytest: no scikit-learn, matplotlib,
Pillow, and no backend but the one under test. Models are tiny, except the
named builders, which are only built (no forward pass)."""

import keras
import numpy as np
import pytest

import keras_densenet as kd
from keras_densenet.core import registry
from keras_densenet.layers import initialization
from keras_densenet.layers.efficient import EfficientDenseLayer
from tests.helpers import TINY, TINY_CIFAR, images, run

#: Smallest input of the ImageNet-stem builders (keras.applications' minimum).
MIN_SIZE = 32


def _named_builders():
    """(variant name, builder name) of every registered variant with a public builder."""
    return [(v.name, v.builder) for v in registry.VARIANTS.values() if v.builder]


@pytest.fixture
def fast_init(monkeypatch):
    """The fast initialisation on every backend (default: JAX only): Keras'
    own initialisers took 6-13 s per named backbone on a busy 2-core torch
    machine, this 1 s; tiny models elsewhere in this file take Keras' path."""
    monkeypatch.setenv(initialization.ENV_SWITCH, "1")


@pytest.mark.parametrize("name, builder", _named_builders())
def test_every_named_builder_builds(fast_init, name, builder):
    variant = registry.get_variant(name)
    # As users build a backbone: every variable made and given its value.
    headless = getattr(kd, builder)(include_top=False, weights=None, input_shape=(MIN_SIZE, MIN_SIZE, 3))
    assert headless.output_shape == (None, 1, 1, variant.arch.num_features)
    stem = keras.ops.convert_to_numpy(headless.get_layer("conv1_conv").kernel)
    assert np.isfinite(stem).all() and stem.std() > 0
    # With the classifier, shapes only (cheaper): the registry's parameter
    # count (keras.applications' for DenseNet-121/169/201) holds at any size.
    with initialization.shape_only():
        model = getattr(kd, builder)(weights=None, input_shape=(MIN_SIZE, MIN_SIZE, 3), classes=variant.classes)
    assert model.count_params() == variant.num_params
    assert model.output_shape == (None, variant.classes)


def test_generic_builders_build_and_run():
    x = images(2, 8) / 255.0
    for model in (kd.DenseNet(**TINY_CIFAR), kd.DenseNetBC(10, 4, input_shape=(8, 8, 3), classes=3)):
        probs = run(model, x)
        assert probs.shape == (2, 3)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    # build() by name: the smallest registered variant, built only.
    variant = registry.get_variant("densenet_bc_100_k12")
    assert kd.build(variant.name).count_params() == variant.num_params


def test_weights_load_from_a_local_file(tmp_path):
    source = kd.DenseNet(**TINY, input_shape=(MIN_SIZE, MIN_SIZE, 3), classes=4)
    path = str(tmp_path / "tiny.weights.h5")
    source.save_weights(path)
    keras.utils.set_random_seed(1)  # another draw, then the file's values
    loaded = kd.DenseNet(**TINY, input_shape=(MIN_SIZE, MIN_SIZE, 3), classes=4, weights=path)
    x = images(2, MIN_SIZE)
    np.testing.assert_allclose(run(loaded, x), run(source, x), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="tiny.weights.h5"):  # another architecture
        kd.DenseNet((2, 2), growth_rate=4, num_init_features=8, classes=4, weights=path)


@pytest.mark.parametrize("memory_efficient", [False, True])
def test_keras_file_round_trip(tmp_path, memory_efficient):
    model = kd.DenseNet(**TINY_CIFAR, memory_efficient=memory_efficient)
    path = str(tmp_path / "tiny.keras")
    model.save(path)
    # No custom_objects: `import keras_densenet` registered the package's layers.
    loaded = keras.saving.load_model(path, safe_mode=True)
    efficient = [layer for layer in loaded.layers if isinstance(layer, EfficientDenseLayer)]
    assert len(efficient) == (sum(TINY_CIFAR["blocks"]) if memory_efficient else 0)
    x = images(2, 8) / 255.0
    np.testing.assert_allclose(run(loaded, x), run(model, x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("memory_efficient", [False, True])
def test_one_fit_step(memory_efficient):
    model = kd.DenseNet(**TINY_CIFAR, memory_efficient=memory_efficient)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    x, y = images(4, 8) / 255.0, np.array([0, 2, 1, 0])
    before = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    after = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
    assert all(not np.array_equal(a, b) for a, b in zip(before, after, strict=True))  # every weight trained
