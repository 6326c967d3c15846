"""Pretrained weights: loading by path and by name, download + cache + hash,
and the PyTorch converter's exact parity with an independent reference."""

import dataclasses
import hashlib
import os
import re

import h5py
import keras
import numpy as np
import pytest

import keras_densenet
from keras_densenet import cli
from keras_densenet.core import registry
from keras_densenet.core.registry import WeightsSpec
from keras_densenet.layers import initialization
from keras_densenet.tools.convert import convert_checkpoint
from keras_densenet.weights import loading as weights_lib
from tests.helpers import (
    TORCH_TINY_ARCH,
    images,
    run,
    save_legacy_h5,
    torch_kwargs,
)

TORCH_VARIANTS = [
    name for name, v in registry.VARIANTS.items()
    if any(w.source == "torchvision" for w in v.weights.values())
]
# A tiny torchvision-style DenseNet: 2 blocks, k=8, 16 stem channels.
TINY = torch_kwargs(TORCH_TINY_ARCH)


@pytest.fixture
def tr():
    pytest.importorskip("torch")
    from tests import torch_reference

    return torch_reference


def _tiny_keras(**kw):
    kw.setdefault("input_shape", (32, 32, 3))
    return keras_densenet.DenseNet(**TORCH_TINY_ARCH.builder_kwargs(), classes=kw.pop("classes", 10), **kw)


def _save_pth(state, path):
    import torch

    torch.save(state, path)
    return str(path)


def _garble(chunk):
    # Headers (HDF5, safetensors) sit at the start, zip directories (.keras,
    # .pth) at the end: garble both.
    return bytes(b ^ 0x5A for b in chunk)


#: The variant whose converted logits are compared with PyTorch's, at
#: ImageNet's 224x224. The others differ only in block counts and widths:
#: their converted weights are compared with the checkpoint's tensors, every
#: one, through torchvision's module names (no forward pass).
FULL_SIZE_PARITY = "densenet121"
#: torchvision's DenseNet modules -> keras.applications' layer names.
_DENSE_LAYER_PARTS = {"norm1": "0_bn", "conv1": "1_conv", "norm2": "1_bn", "conv2": "2_conv"}
_OTHER_MODULES = {"features.conv0": "conv1_conv", "features.norm0": "conv1_bn", "features.norm5": "bn",
                  "classifier": "predictions"}


def _keras_layer_of(module: str) -> str:
    dense = re.fullmatch(r"features\.denseblock(\d+)\.denselayer(\d+)\.(\w+)", module)
    if dense:
        return f"conv{int(dense[1]) + 1}_block{dense[2]}_{_DENSE_LAYER_PARTS[dense[3]]}"
    transition = re.fullmatch(r"features\.transition(\d+)\.(norm|conv)", module)
    if transition:
        return f"pool{int(transition[1]) + 1}_{'bn' if transition[2] == 'norm' else 'conv'}"
    return _OTHER_MODULES[module]


def _assert_weights_are_the_checkpoints(model, ref):
    """Every weighted layer of `model` holds its PyTorch module's tensors, in
    Keras' layouts (conv HWIO, dense IO, BN gamma, beta, mean, variance)."""
    import torch

    weighted = (torch.nn.Conv2d, torch.nn.BatchNorm2d, torch.nn.Linear)
    modules = [(n, m) for n, m in ref.named_modules() if isinstance(m, weighted)]
    assert len(modules) == len([layer for layer in model.layers if layer.weights])
    for module_name, module in modules:
        if isinstance(module, torch.nn.Conv2d):
            expected = [module.weight.permute(2, 3, 1, 0)]
        elif isinstance(module, torch.nn.Linear):
            expected = [module.weight.T, module.bias]
        else:
            expected = [module.weight, module.bias, module.running_mean, module.running_var]
        actual = model.get_layer(_keras_layer_of(module_name)).get_weights()
        assert len(actual) == len(expected), module_name
        for a, e in zip(actual, expected, strict=True):
            np.testing.assert_array_equal(a, e.detach().numpy(), err_msg=module_name)


@pytest.mark.parametrize("name", TORCH_VARIANTS)
def test_converter_parity_with_pytorch(tr, tmp_path, name):
    arch = registry.get_variant(name).arch
    ref = tr.random_densenet(seed=1, growth_rate=arch.growth_rate, block_config=arch.blocks,
                             num_init_features=arch.num_init_features)
    src = _save_pth(ref.state_dict(), tmp_path / f"{name}.pth")
    model = convert_checkpoint(src, tmp_path / "out.weights.h5", classifier_activation=None)
    assert model.name == name  # detected from the shapes alone
    assert os.path.isfile(tmp_path / "out.weights.h5")
    assert model.count_params() == registry.get_variant(name).num_params
    if name != FULL_SIZE_PARITY:
        _assert_weights_are_the_checkpoints(model, ref)
        return
    size = model.input_shape[1]
    assert size == 224
    x = np.random.default_rng(0).normal(size=(1, size, size, 3)).astype("float32")
    diff = np.abs(run(model, x) - tr.logits(ref, x)).max()
    print(f"parity {name} {keras.backend.backend()}: max abs logit diff {diff:.1e}")  # README numbers
    assert diff <= 1e-4, diff


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_weights_path_pth_and_legacy_keys(tr, tmp_path, data_format):
    ref = tr.random_densenet(seed=2, num_classes=5, **TINY)
    x = images(2, 32, seed=3) / 255.0
    expected = tr.logits(ref, x)
    for i, state in enumerate([ref.state_dict(), tr.legacy_state_dict(ref)]):
        src = _save_pth(state, tmp_path / f"tiny{i}.pth")
        model = _tiny_keras(weights=src, classes=5, classifier_activation=None, data_format=data_format,
                            input_shape=(32, 32, 3) if data_format == "channels_last" else (3, 32, 32))
        xin = x if data_format == "channels_last" else x.transpose(0, 3, 1, 2)
        np.testing.assert_allclose(run(model, xin), expected, atol=1e-4)


def test_weights_path_of_other_architecture_fails(tr, tmp_path):
    bigger = tr.random_densenet(**{**TINY, "block_config": (2, 4)})
    src = _save_pth(bigger.state_dict(), tmp_path / "bigger.pth")
    with pytest.raises(ValueError, match=r"bigger\.pth.*denseblock2\.denselayer4.*another architecture"):
        _tiny_keras(weights=src, include_top=False)


def test_custom_arch_safetensors_to_keras_file(tr, tmp_path):
    from safetensors.torch import save_file

    ref = tr.random_densenet(seed=4, num_classes=3, **TINY)
    src = str(tmp_path / "tiny.safetensors")
    save_file(ref.state_dict(), src)
    with pytest.raises(ValueError, match=r"tiny\.safetensors.*blocks=\(2, 3\), growth_rate=8"):
        convert_checkpoint(src, tmp_path / "auto.keras")  # matches no registered variant
    assert not (tmp_path / "auto.keras").exists()
    convert_checkpoint(src, tmp_path / "tiny.keras", arch=TORCH_TINY_ARCH, classifier_activation=None)
    loaded = keras.saving.load_model(tmp_path / "tiny.keras")  # safe_mode on
    x = images(2, 32, seed=5) / 255.0
    np.testing.assert_allclose(run(loaded, x), tr.logits(ref, x), atol=1e-4)
    assert loaded.get_layer("conv1_bn").epsilon == registry.TORCH_BN_EPSILON


@pytest.mark.parametrize(
    "edit, message",
    [
        ("missing", r"missing key\(s\): features\.norm5\.running_var"),
        ("unexpected", r"unexpected key\(s\).*features\.extra\.weight"),
        ("shape", r"features\.conv0\.weight: expected shape \(16, 3, 7, 7\), got \(16, 3, 5, 5\)"),
    ],
)
def test_converter_names_bad_keys_and_writes_nothing(tr, tmp_path, edit, message):
    import torch

    state = tr.random_densenet(**TINY).state_dict()
    if edit == "missing":
        del state["features.norm5.running_var"]
    elif edit == "unexpected":
        state["features.extra.weight"] = torch.zeros(3)
    else:
        state["features.conv0.weight"] = torch.zeros(16, 3, 5, 5)
    src = _save_pth(state, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"bad\.pth.*" + message):
        convert_checkpoint(src, tmp_path / "out.keras", arch=TORCH_TINY_ARCH)
    assert os.listdir(tmp_path) == ["bad.pth"]  # no output, no temp file


def test_densenet169_checkpoint_into_densenet121_fails(tr, tmp_path):
    ref = tr.random_densenet(block_config=registry.get_variant("densenet169").arch.blocks)
    src = _save_pth(ref.state_dict(), tmp_path / "d169.pth")
    with pytest.raises(ValueError, match=r"d169\.pth.*blocks=\(6, 12, 32, 32\).*\(densenet169\), not densenet121"):
        convert_checkpoint(src, tmp_path / "out.keras", arch="densenet121")
    assert not (tmp_path / "out.keras").exists()


@pytest.mark.parametrize("suffix", [".pth", ".safetensors", ".weights.h5", ".h5", ".keras"])
@pytest.mark.parametrize("damage", ["empty", "truncated", "corrupted"])
def test_bad_weight_files(tmp_path, suffix, damage):
    good = tmp_path / f"good{suffix}"
    model = _tiny_keras()
    if suffix == ".pth":
        pytest.importorskip("torch")
        import torch

        torch.save({"features.conv0.weight": torch.zeros(16, 3, 7, 7)}, good)
    elif suffix == ".safetensors":
        from safetensors.numpy import save_file

        save_file({"features.conv0.weight": np.zeros((16, 3, 7, 7), "float32")}, str(good))
    elif suffix == ".h5":
        save_legacy_h5(model, good)
    elif suffix == ".keras":
        model.save(good)
    else:
        model.save_weights(good)
    data = good.read_bytes()
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes({"empty": b"", "truncated": data[: len(data) // 2],
                     "corrupted": _garble(data[:64]) + data[64:-64] + _garble(data[-64:])}[damage])
    with pytest.raises(ValueError, match=r"bad" + suffix.replace(".", r"\.")):
        _tiny_keras(weights=str(bad))


#: keras.applications' legacy `.h5` file is read with h5py and loaded layer
#: by layer: the same on every backend (the tiny legacy files below load on
#: each). A full DenseNet-121 loads in one suite.
@pytest.mark.one_backend("torch", "tensorflow", "jax",
                         reason="a backend-independent file format: the full-size legacy .h5 loads in one suite")
def test_legacy_h5_from_keras_applications(tmp_path):
    with initialization.fast_variables(active=True):  # values: any; faster on JAX
        reference = keras.applications.DenseNet121(weights=None, input_shape=(32, 32, 3))
    path = tmp_path / "kapps.h5"
    save_legacy_h5(reference, path)
    ours = keras_densenet.DenseNet121(weights=str(path), input_shape=(32, 32, 3))
    x = keras_densenet.preprocess_input(images(2, 32))
    np.testing.assert_allclose(run(ours, x), run(reference, x), atol=1e-6)


def test_legacy_h5_with_other_layer_names_loads_by_order(tmp_path):
    source = _tiny_keras()
    path = tmp_path / "renamed.h5"
    save_legacy_h5(source, path)
    with h5py.File(path, "r+") as f:
        names = [n.decode() if isinstance(n, bytes) else n for n in f.attrs["layer_names"]]
        for n in names:  # e.g. Keras 2's `conv1/conv` vs our `conv1_conv`
            f.move(n, f"old/{n}")
        f.attrs["layer_names"] = [f"old/{n}".encode() for n in names]
    x = images(2, 32)
    np.testing.assert_allclose(run(_tiny_keras(weights=str(path)), x), run(source, x), atol=1e-6)
    notop = _tiny_keras(weights=str(path), include_top=False)  # the file's classifier is left out
    np.testing.assert_array_equal(notop.get_layer("bn").get_weights()[3], source.get_layer("bn").get_weights()[3])


def test_keras3_files_round_trip_and_never_load_partially(tmp_path):
    source = _tiny_keras()
    x = images(2, 32)
    for name in ("w.weights.h5", "m.keras"):
        path = tmp_path / name
        source.save_weights(path) if name.endswith(".weights.h5") else source.save(path)
        np.testing.assert_allclose(run(_tiny_keras(weights=str(path)), x), run(source, x), atol=1e-6)
        with pytest.raises(ValueError, match=name.replace(".", r"\.") + ".*does not fit"):
            _tiny_keras(weights=str(path), include_top=False)  # the file has a classifier
    other = keras_densenet.DenseNet((2, 4), 8, bn_size=2, num_init_features=16, input_shape=(32, 32, 3), classes=10)
    other.save_weights(tmp_path / "other.weights.h5")
    with pytest.raises(ValueError, match=r"other\.weights\.h5.*does not fit"):
        _tiny_keras(weights=str(tmp_path / "other.weights.h5"))


@pytest.fixture
def tiny_variant(monkeypatch):
    """Registers a tiny variant whose weight specs the test fills in."""
    def register(**specs):
        variant = registry.Variant("tiny_test", TORCH_TINY_ARCH, specs)
        monkeypatch.setitem(registry.VARIANTS, "tiny_test", variant)
        return variant
    return register


def _file_spec(path, source, file_hash, **kw):
    return WeightsSpec(source=source, url=path.as_uri(), file_hash=file_hash, input_size=32, **kw)


def test_torchvision_download_verifies_converts_and_caches(tr, tmp_path, keras_home, tiny_variant):
    ref = tr.random_densenet(seed=6, num_classes=1000, **TINY)
    staging = tmp_path / "tmp.pth"
    _save_pth(ref.state_dict(), staging)
    sha = hashlib.sha256(staging.read_bytes()).hexdigest()
    src = tmp_path / f"tiny-{sha[:8]}.pth"
    staging.rename(src)
    tiny_variant(torchvision=_file_spec(src, "torchvision", sha[:8]))
    x = images(1, 32) / 255.0
    first = keras_densenet.build("tiny_test", weights="torchvision", classifier_activation=None)
    np.testing.assert_allclose(run(first, x), tr.logits(ref, x), atol=1e-4)
    assert first.get_layer("bn").epsilon == registry.TORCH_BN_EPSILON
    cached = keras_home / "models" / f"tiny-{sha[:8]}{weights_lib.CONVERTED_SUFFIX}"
    assert cached.is_file()
    # The second load needs neither the download nor the conversion.
    src.unlink()
    (keras_home / "models" / src.name).unlink()
    second = keras_densenet.build("tiny_test", weights="torchvision", classifier_activation=None)
    np.testing.assert_allclose(run(second, x), run(first, x), atol=1e-6)
    notop = keras_densenet.build("tiny_test", weights="torchvision", include_top=False, input_shape=(32, 32, 3))
    np.testing.assert_array_equal(notop.get_layer("bn").get_weights()[0], first.get_layer("bn").get_weights()[0])


def test_download_hash_mismatch_deletes_file(tmp_path, keras_home, tiny_variant):
    src = tmp_path / "tiny-deadbeef.pth"
    src.write_bytes(b"not what was published")
    tiny_variant(torchvision=_file_spec(src, "torchvision", "deadbeef"))
    actual = hashlib.sha256(src.read_bytes()).hexdigest()
    with pytest.raises(ValueError, match=rf"tiny-deadbeef\.pth.*expected deadbeef.*got {actual}"):
        keras_densenet.build("tiny_test", weights="torchvision")
    assert not (keras_home / "models" / src.name).exists()


def test_keras_md5_download_with_and_without_top(tmp_path, keras_home, tiny_variant):
    source = _tiny_keras(classes=1000)
    paths = {}
    for top in (True, False):
        model = source if top else keras.Model(source.input, source.get_layer("relu").output)
        paths[top] = tmp_path / f"tiny{'' if top else '_notop'}.h5"
        save_legacy_h5(model, paths[top])
    md5 = {top: hashlib.md5(p.read_bytes()).hexdigest() for top, p in paths.items()}
    tiny_variant(imagenet=_file_spec(paths[True], "keras", md5[True], notop_url=paths[False].as_uri(),
                                     notop_file_hash=md5[False], hash_algorithm="md5",
                                     bn_epsilon=registry.KERAS_BN_EPSILON))
    x = images(2, 32)
    full = keras_densenet.build("tiny_test", weights="imagenet")
    np.testing.assert_allclose(run(full, x), run(source, x), atol=1e-6)
    keras_densenet.build("tiny_test", weights="imagenet", include_top=False, input_shape=(32, 32, 3))
    assert (keras_home / "models" / "tiny_notop.h5").is_file()


def test_offline_imagenet_names_url(tmp_path, keras_home, tiny_variant):
    # Offline, as a download that cannot be fetched (a file:// URL to nothing).
    real = registry.get_variant("densenet121").weights["imagenet"]
    unreachable = (tmp_path / "offline" / real.url.rsplit("/", 1)[-1]).as_uri()
    tiny_variant(imagenet=dataclasses.replace(real, url=unreachable, input_size=32))
    with pytest.raises(ValueError, match=re.escape(unreachable) + ".*weights=None"):
        keras_densenet.build("tiny_test", weights="imagenet")


def test_cli_convert(tr, tmp_path, capsys, tiny_variant):
    ref = tr.random_densenet(seed=7, **TINY)
    src = _save_pth(ref.state_dict(), tmp_path / "tiny.pth")
    assert cli.main(["convert", src, str(tmp_path / "out.keras")]) == 2  # matches no variant
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "tiny.pth" in err and "blocks=(2, 3)" in err
    tiny_variant()  # now the detected architecture is a registered variant
    assert cli.main(["convert", src, str(tmp_path / "ok.keras")]) == 0
    assert "tiny_test" in capsys.readouterr().out
    x = images(1, 32) / 255.0
    probs = run(keras.saving.load_model(tmp_path / "ok.keras"), x)
    np.testing.assert_allclose(probs, keras.ops.convert_to_numpy(keras.ops.softmax(tr.logits(ref, x))), atol=1e-5)
    (tmp_path / "empty.pth").write_bytes(b"")
    assert cli.main(["convert", str(tmp_path / "empty.pth"), str(tmp_path / "out.keras")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "empty.pth" in err and "empty" in err
    assert not (tmp_path / "out.keras").exists()


def test_readme_weights_table_is_generated_from_registry():
    """docs/weights.md (linked from the README) holds the current table."""
    page = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "weights.md")
    with open(page, encoding="utf8") as f:
        assert weights_lib.sources_markdown() in f.read()


def test_torch_checkpoint_into_memory_efficient_model(tmp_path, tr):
    """weights=PATH of a PyTorch file into a memory-efficient model: PyTorch's
    epsilon and the reference logits, through the standard-graph twin."""
    from safetensors.torch import save_file

    ref = tr.random_densenet(seed=5, num_classes=4, **TINY)
    src = tmp_path / "tiny.safetensors"
    save_file(ref.state_dict(), src)
    model = _tiny_keras(weights=str(src), classes=4, classifier_activation=None,
                        memory_efficient=True)
    assert model.get_layer("conv2_block1").epsilon == registry.TORCH_BN_EPSILON
    x = images(1, 32) / 255.0
    np.testing.assert_allclose(run(model, x), tr.logits(ref, x), atol=1e-4)
