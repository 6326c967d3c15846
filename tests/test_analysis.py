"""The paper's analyses (keras_densenet.tools: `counts`, `connectivity`,
`reuse`, `table`) and the `table` / `reuse` commands: facts counted from real
graphs, checked against published figures and hand computations."""

import json
import math

import keras
import numpy as np
import pytest
from keras import layers
from PIL import Image

import keras_densenet
from keras_densenet import cli
from keras_densenet.core import registry
from keras_densenet.layers.initialization import shape_only
from keras_densenet.tools import counts, reuse, table
from tests.helpers import PAPER_DEPTH

# torchvision's model cards: GFLOPS (really GMACs of convs + linear layers at
# 224x224) and parameters (trainable: BN moving statistics are buffers).
TORCHVISION = {
    "densenet121": (2.83e9, 7_978_856),
    "densenet161": (7.73e9, 28_681_000),
    "densenet169": (3.36e9, 14_149_480),
    "densenet201": (4.29e9, 20_013_928),
}
TOLERANCE = 0.03


def resnet50_v15():
    """torchvision's ResNet-50 ("v1.5": the stride sits on the 3x3 conv), the
    model of the published 4.1 GFLOPS; keras.applications' ResNet50 is He et
    al.'s original, stride on the first 1x1 conv (paper: 3.8 GFLOPs)."""
    def conv_bn(x, filters, size, strides=1):
        x = layers.Conv2D(filters, size, strides=strides, padding="same", use_bias=False)(x)
        return layers.BatchNormalization()(x)

    inputs = keras.Input((224, 224, 3))
    x = layers.ReLU()(conv_bn(inputs, 64, 7, 2))
    x = layers.MaxPooling2D(3, 2, padding="same")(x)
    for filters, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for i in range(blocks):
            s = stride if i == 0 else 1
            shortcut = conv_bn(x, 4 * filters, 1, s) if i == 0 else x
            y = layers.ReLU()(conv_bn(x, filters, 1))
            y = layers.ReLU()(conv_bn(y, filters, 3, s))
            x = layers.ReLU()(layers.Add()([shortcut, conv_bn(y, 4 * filters, 1)]))
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(1000)(x))


def trainable(model):
    return sum(math.prod(v.shape) for v in model.trainable_weights)


@pytest.fixture(scope="module")
def published():
    with shape_only():
        built = {name: table.build_model(name) for name in TORCHVISION}
        built["resnet50"] = table.build_model("resnet50")
        built["resnet50_v15"] = resnet50_v15()
    return built


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_densenet_macs_and_params_match_torchvision(published, name):
    macs, params = TORCHVISION[name]
    model = published[name]
    assert abs(counts.count_macs(model) / macs - 1) < TOLERANCE
    assert trainable(model) == params


def test_resnet50_macs_match_published(published):
    # torchvision ResNet-50: 4.1 billion, 25,557,032 parameters.
    assert abs(counts.count_macs(published["resnet50_v15"]) / 4.1e9 - 1) < TOLERANCE
    assert trainable(published["resnet50_v15"]) == 25_557_032
    # keras.applications' ResNet50 is He et al.'s: 3.8 x 10^9 in their Table 1.
    assert abs(counts.count_macs(published["resnet50"]) / 3.8e9 - 1) < TOLERANCE


def test_depth_table_covers_every_model():
    assert set(PAPER_DEPTH) == set(table.model_names())


@pytest.mark.parametrize("name", [n for n in table.model_names() if n not in registry.VARIANTS])
def test_depth_of_the_other_models_from_graph(name):
    """The ResNets of the table; the registered DenseNets are counted in
    tests/test_models.py::test_every_registered_variant."""
    with shape_only():
        model = table.build_model(name)
    assert counts.weighted_depth(model) == PAPER_DEPTH[name]


def test_macs_and_activation_bytes_by_hand():
    inputs = keras.Input((8, 8, 3))
    c = layers.Conv2D(4, 3, padding="same")(inputs)
    g = layers.Conv2D(6, 1, groups=2)(c)  # 2 input channels per group
    b = layers.BatchNormalization()(g)
    r = layers.ReLU()(b)
    x = layers.Concatenate()([r, c])
    x = layers.AveragePooling2D(2)(x)
    x = layers.Flatten()(x)
    model = keras.Model(inputs, layers.Dense(5)(x))
    assert counts.count_macs(model) == 64 * 27 * 4 + 64 * 2 * 6 + 160 * 5
    assert counts.weighted_depth(model) == 3
    f32 = 4
    # g's input c (the first conv reads the input batch: not counted),
    # BN's input g, ReLU's output r, Dense's input (the flat pooled maps).
    assert counts.activation_bytes(model) == f32 * (64 * 4 + 64 * 6 + 64 * 6 + 160)


def test_memory_efficient_activations_grow_linearly():
    def per_layer_growth(memory_efficient):
        sizes = []
        with shape_only():
            for n in (2, 4, 6, 8):
                model = keras_densenet.DenseNet((n,), 8, stem="cifar", input_shape=(16, 16, 3),
                                                classes=2, memory_efficient=memory_efficient)
                sizes.append(counts.activation_bytes(model))
        return np.diff(sizes)

    standard, efficient = per_layer_growth(False), per_layer_growth(True)
    assert len(set(efficient)) == 1  # a constant amount per dense layer
    assert np.all(np.diff(standard) > 0)  # an increasing amount: quadratic
    assert np.all(efficient < standard)


def test_shape_only_counts_equal_built_model_counts():
    kwargs = dict(blocks=(2, 2), growth_rate=4, num_init_features=8, input_shape=(32, 32, 3), classes=3)
    with shape_only():
        abstract = keras_densenet.DenseNet(**kwargs)
    real = keras_densenet.DenseNet(**kwargs)
    for count in (counts.count_macs, counts.activation_bytes, counts.weighted_depth):
        assert count(abstract) == count(real)
    assert abstract.count_params() == real.count_params()


def test_table_json_from_cli(capsys):
    code = cli.main(["table", "--format", "json", "--models", "densenet_bc_100_k12,resnet50"])
    out, err = capsys.readouterr()
    assert code == 0, err
    rows = json.loads(out)
    assert [r["name"] for r in rows] == ["densenet_bc_100_k12", "resnet50"]
    bc, resnet = rows
    assert bc["trainable_params"] == 769_162 and bc["depth"] == 100
    assert bc["connections_per_block"] == [136] * 3
    assert bc["activation_bytes_memory_efficient"] < bc["activation_bytes"]
    assert resnet["activation_bytes_memory_efficient"] is None
    assert abs(resnet["macs"] / 3.8e9 - 1) < TOLERANCE


def test_table_markdown_and_bad_model(capsys):
    code = cli.main(["table", "--format", "markdown", "--models", "densenet_bc_100_k12"])
    out, _ = capsys.readouterr()
    assert code == 0 and "| densenet_bc_100_k12 | 100 |" in out
    code = cli.main(["table", "--models", "densenet99"])
    _, err = capsys.readouterr()
    assert code == 2 and len(err.strip().splitlines()) == 1 and "resnet50" in err


# --- feature reuse --------------------------------------------------------------

K0, K = 6, 4  # stem channels and growth rate of the tiny model below


def tiny(include_top=True, memory_efficient=False, bottleneck=True):
    return keras_densenet.DenseNet((2, 3), K, num_init_features=K0, bottleneck=bottleneck,
                                   include_top=include_top, input_shape=(16, 16, 3), classes=3,
                                   memory_efficient=memory_efficient)


def _first_convs(model, bottleneck=True):
    conv = "1_conv" if bottleneck else "2_conv"
    names = [f"conv2_block{i}_{conv}" for i in (1, 2)] + ["pool2_conv"]
    names += [f"conv3_block{i}_{conv}" for i in (1, 2, 3)]
    return names + (["predictions"] if "predictions" in [layer.name for layer in model.layers] else [])


def set_known_weights(model, bottleneck=True):
    """Input channel c of every target kernel weighs c + 1 (sign alternating);
    conv3's layer 3 gets zeros from source 1 (its channels 7..10)."""
    for name in _first_convs(model, bottleneck):
        layer = model.get_layer(name)
        kernel = np.ones(layer.kernel.shape, "float32")
        signs = np.where(np.arange(kernel.shape[-1]) % 2, -1.0, 1.0)
        kernel *= (np.arange(kernel.shape[-2]) + 1.0)[:, None] * signs
        if name.startswith("conv3_block3"):
            kernel[..., 7:11, :] = 0.0
        layer.kernel.assign(kernel)


def expected_matrix(k0, layers_in_block, target_extra, zero=None):
    """cell(source j, target t) = mean(c + 1 over j's channels) when t reads j."""
    bounds = np.cumsum([0, k0] + [K] * layers_in_block)
    targets = layers_in_block + target_extra
    matrix = [[None] * targets for _ in range(layers_in_block + 1)]
    for t in range(targets):
        for j in range(layers_in_block + 1):
            if j <= t:  # dense layer t+1 reads sources 0..t; the last column all
                matrix[j][t] = float(np.mean(np.arange(bounds[j], bounds[j + 1]) + 1.0))
    if zero is not None:
        matrix[zero[0]][zero[1]] = 0.0
    return matrix


def assert_matrix(actual, expected):
    assert len(actual) == len(expected)
    for a_row, e_row in zip(actual, expected, strict=True):
        assert [a is None for a in a_row] == [e is None for e in e_row]
        np.testing.assert_allclose([a for a in a_row if a is not None],
                                   [e for e in e_row if e is not None], rtol=1e-6)


@pytest.mark.parametrize("bottleneck", [True, False])
def test_feature_reuse_matrix_values(bottleneck):
    model = tiny(bottleneck=bottleneck)
    set_known_weights(model, bottleneck)
    matrices = reuse.feature_reuse(model)
    first, second = matrices["blocks"]
    assert first["name"] == "conv2" and second["name"] == "conv3"
    assert first["targets"] == ["layer 1", "layer 2", "transition"]
    assert second["targets"] == ["layer 1", "layer 2", "layer 3", "classifier"]
    assert_matrix(first["matrix"], expected_matrix(K0, 2, 1))
    # The transition keeps floor(0.5 * 14) = 7 channels: conv3's input.
    assert_matrix(second["matrix"], expected_matrix(7, 3, 1, zero=(1, 2)))


def test_feature_reuse_memory_efficient_and_headless():
    standard = tiny()
    set_known_weights(standard)
    efficient = tiny(memory_efficient=True)
    efficient.set_weights(standard.get_weights())
    assert reuse.feature_reuse(efficient)["blocks"] == reuse.feature_reuse(standard)["blocks"]
    headless = tiny(include_top=False)
    last = reuse.feature_reuse(headless)["blocks"][-1]
    assert last["targets"] == ["layer 1", "layer 2", "layer 3"]
    assert len(last["matrix"]) == 4


def test_feature_reuse_of_a_trained_classifier():
    from keras_densenet.training.train import TrainConfig, build_classifier

    # `train`'s model: the DenseNet is nested, the classifier is outside it.
    model, _ = build_classifier(TrainConfig(depth=10, growth_rate=4), 3, 1)
    blocks = reuse.feature_reuse(model)["blocks"]
    assert [b["targets"][-1] for b in blocks] == ["transition", "transition", "classifier"]
    # DenseNet-BC-10, k=4: 8 stem channels -> 12 -> 6 -> 10 -> 5 -> 9 read by the classifier.
    kernel = np.abs(keras.ops.convert_to_numpy(model.get_layer("predictions").kernel))
    assert kernel.shape[0] == 9
    column = [row[-1] for row in blocks[-1]["matrix"]]
    np.testing.assert_allclose(column, [kernel[:5].mean(), kernel[5:].mean()], rtol=1e-6)


def test_feature_reuse_rejects_other_models():
    inputs = keras.Input((8, 8, 3))
    other = keras.Model(inputs, layers.Dense(2)(layers.Flatten()(layers.Conv2D(2, 3)(inputs))))
    with pytest.raises(ValueError, match="not a DenseNet built by keras_densenet"):
        reuse.feature_reuse(other)


def test_reuse_cli_writes_heatmap_and_json(capsys, tmp_path):
    model = tiny()
    set_known_weights(model)
    path = tmp_path / "tiny.keras"
    model.save(path)
    out = tmp_path / "reuse"
    code = cli.main(["reuse", str(path), "--out", str(out), "--normalize"])
    _, err = capsys.readouterr()
    assert code == 0, err
    data = json.loads((out / "reuse.json").read_text())
    assert_matrix(data["blocks"][1]["matrix"], expected_matrix(7, 3, 1, zero=(1, 2)))
    with Image.open(out / "reuse.png") as image:
        assert image.format == "PNG" and image.width > 1.5 * image.height  # two panels side by side
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


@pytest.mark.parametrize("case", ["not a densenet", "not a model", "unknown name"])
def test_reuse_cli_bad_input(case, capsys, tmp_path):
    if case == "not a densenet":
        inputs = keras.Input((8, 8, 3))
        target = tmp_path / "cnn.keras"
        keras.Model(inputs, layers.Conv2D(2, 3)(inputs)).save(target)
        expected = "not a DenseNet built by keras_densenet"
    elif case == "not a model":
        target = tmp_path / "fake.keras"
        target.write_text("not a zip")
        expected = "not a loadable Keras model"
    else:
        target, expected = "densenet99", "neither a .keras file nor a registered variant"
    code = cli.main(["reuse", str(target), "--out", str(tmp_path / "out")])
    _, err = capsys.readouterr()
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert expected in err
    assert not (tmp_path / "out" / "reuse.json").exists()
