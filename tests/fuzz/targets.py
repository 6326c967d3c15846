"""The loaders under fuzzing, each with its valid seed files and crafted
hostile files.

A `Target` reads one input file (``load(path, out_dir)``); `environment`
targets read a mapping instead. `make_targets` builds the seeds in a work
directory: the Keras ones from a tiny DenseNet (`tests.helpers.TINY_CIFAR`),
the PyTorch ones from the tiny reference DenseNet (`TORCH_TINY_ARCH`).
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import marshal
import os
from typing import Any, Callable, Optional

import numpy as np

from tests.fuzz import mutations as mut


@dataclasses.dataclass
class Target:
    """One loader under fuzzing.

    Attributes:
        name: short name (test ids, the campaign's table).
        filename: the input's file name (its ending selects the format).
        load: ``(path, out_dir) -> result``; raises the documented
            `ValueError` for a bad file.
        seeds: valid files.
        hostile: crafted files, ``{case name: bytes}``.
        member: for zip formats, the member that structure-aware mutations
            change (re-zipped with correct CRCs).
        uses_keras: builds or loads a Keras model (slow; one backend only).
        check_result: raises AssertionError for an invalid result.
    """

    name: str
    filename: str
    load: Callable[[str, str], Any]
    seeds: list
    hostile: dict = dataclasses.field(default_factory=dict)
    members: tuple = ()
    uses_keras: bool = False
    check_result: Optional[Callable[[Any], None]] = None


def _edit_h5(seed: bytes, workdir: str, edit) -> bytes:
    """`seed` (an HDF5 file) after ``edit(h5py.File)`` in read-write mode."""
    import h5py

    path = os.path.join(workdir, "edit.h5")
    with open(path, "wb") as f:
        f.write(seed)
    with h5py.File(path, "r+") as f:
        edit(f)
    with open(path, "rb") as f:
        data = f.read()
    os.remove(path)
    return data


def _first_dataset(f, prefix=""):
    import h5py

    found = []
    f.visititems(lambda n, o: found.append(n) if isinstance(o, h5py.Dataset) and n.startswith(prefix) else None)
    return sorted(found)[0]


def _replace_dataset(name_of, make):
    """An HDF5 edit that replaces the first weight dataset with ``make(f, name, old)``."""
    def edit(f):
        name = name_of(f)
        old = f[name]
        shape, dtype = old.shape, old.dtype
        del f[name]
        make(f, name, shape, dtype)
    return edit


def h5_hostile(seed: bytes, workdir: str, name_of, seed_path: str) -> dict:
    """Crafted HDF5 files: wrong dtypes and shapes, a huge declared shape,
    links (external, soft loop), extra and missing arrays."""
    import h5py

    cases = {
        "string dataset": lambda f, n, s, d: f.create_dataset(n, shape=s, dtype=h5py.string_dtype()),
        "compound dataset": lambda f, n, s, d: f.create_dataset(n, shape=s, dtype=[("a", "f4"), ("b", "i4")]),
        "complex dataset": lambda f, n, s, d: f.create_dataset(n, data=np.zeros(s, "complex64")),
        "wrong shape": lambda f, n, s, d: f.create_dataset(n, data=np.zeros((5,), d)),
        "scalar": lambda f, n, s, d: f.create_dataset(n, data=np.float32(1)),
        "huge declared shape": lambda f, n, s, d: f.create_dataset(n, shape=(1 << 40,), dtype="f4", chunks=(1024,)),
        "huge shape, same count": lambda f, n, s, d: f.create_dataset(n, shape=(1 << 20, 1 << 20), dtype="f4",
                                                                      chunks=(64, 64)),
        "external link to a non-HDF5 file": lambda f, n, s, d: f.__setitem__(n, h5py.ExternalLink("/etc/hostname",
                                                                                                  "/x")),
        "external link to itself": lambda f, n, s, d: f.__setitem__(n, h5py.ExternalLink(seed_path, "/" + n)),
        "soft link loop": lambda f, n, s, d: f.__setitem__(n, h5py.SoftLink("/" + n)),
        "group instead of array": lambda f, n, s, d: f.create_group(n),
        "missing array": lambda f, n, s, d: None,
    }
    out = {name: _edit_h5(seed, workdir, _replace_dataset(name_of, make)) for name, make in cases.items()}
    out["extra array"] = _edit_h5(seed, workdir, lambda f: f.create_dataset(name_of(f) + "_extra", data=[1.0]))
    out["empty file"] = b""
    out["not HDF5"] = b"\x89HDF\r\n\x1a\n" + bytes(64)
    return out


def _legacy_hostile(seed: bytes, workdir: str) -> dict:
    import h5py

    def names(value):
        return lambda f: f.attrs.__setitem__("layer_names", value)

    def weight_names(value):
        return lambda f: f["conv1_conv"].attrs.__setitem__("weight_names", value)

    return {
        "layer_names ints": _edit_h5(seed, workdir, names(np.arange(5))),
        "layer_names scalar": _edit_h5(seed, workdir, names("conv1_conv")),
        "layer_names root": _edit_h5(seed, workdir, names(np.array([b"/", b".."]))),
        "weight_names group": _edit_h5(seed, workdir, weight_names(np.array([b"conv1_conv"]))),
        "weight_names missing": _edit_h5(seed, workdir, weight_names(np.array([b"nope/kernel"]))),
        "weight_names floats": _edit_h5(seed, workdir, weight_names(np.zeros(3))),
        "model_weights wrapper": _edit_h5(seed, workdir, lambda f: f.create_group("model_weights").attrs.__setitem__(
            "layer_names", np.array([b"x"]))),
        **{f"legacy {k}": v for k, v in h5_hostile(seed, workdir, lambda f: _first_dataset(f, "conv1_conv"),
                                                   os.path.join(workdir, "seed.h5")).items()},
        "string layer names dtype": _edit_h5(seed, workdir, names(np.array(["a"] * 3, dtype=h5py.string_dtype()))),
    }


def _keras_config_cases(seed: bytes, marker: str) -> dict:
    """`.keras` archives whose configuration tries to run or fetch something."""
    config = json.loads(dict(mut.zip_members(seed))["config.json"])

    def with_layer_edit(edit):
        c = json.loads(json.dumps(config))
        edit(next(layer for layer in c["config"]["layers"] if layer["class_name"] == "Conv2D"))
        return mut.replace_member(seed, "config.json", json.dumps(c).encode())

    code = compile(f"lambda x: (__import__('os').system('touch {marker}'), x)[1]", "<fuzz>", "eval")
    lambda_fn = {"class_name": "__lambda__", "config": {
        "code": base64.b64encode(marshal.dumps(code.co_consts[0])).decode(), "defaults": None, "closure": None}}

    def lambda_layer(layer):
        layer.update(module="keras.layers", class_name="Lambda", registered_name=None)
        layer["config"] = {"name": layer["config"]["name"], "function": lambda_fn, "arguments": {}}

    def function(module, name):
        return lambda layer: layer["config"].__setitem__(
            "kernel_initializer", {"module": module, "class_name": "function", "config": name, "registered_name": None})

    return {
        "lambda layer": with_layer_edit(lambda_layer),
        "module os.system": with_layer_edit(lambda layer: layer.update(module="os", class_name="system",
                                                                       registered_name=None)),
        "function get_file": with_layer_edit(function("keras.utils", "get_file")),
        "function enable_unsafe_deserialization": with_layer_edit(
            function("keras.config", "enable_unsafe_deserialization")),
        "function os.system": with_layer_edit(function("os", "system")),
        "huge filters": with_layer_edit(lambda layer: layer["config"].__setitem__("filters", 10 ** 12)),
        "negative filters": with_layer_edit(lambda layer: layer["config"].__setitem__("filters", -3)),
        "config deep nesting": mut.replace_member(seed, "config.json", b"[" * 100_000 + b"]" * 100_000),
        "config not json": mut.replace_member(seed, "config.json", b"\xff\xfe not json"),
        "config bomb": mut.zip_with_bomb(mut.zip_members(seed), "config.json", 128 << 20),
    }


def keras_targets(workdir: str, marker: str) -> dict:
    """The loaders that need a Keras model: `.weights.h5`, legacy `.h5` and
    `.keras` weights (`weights.loading.load_file`), `.keras` models
    (`models.saved.load_keras_model`)."""
    import keras

    import keras_densenet
    from keras_densenet.models import saved
    from keras_densenet.weights import loading
    from tests.helpers import TINY_CIFAR, save_legacy_h5

    keras.utils.clear_session(free_memory=False)  # the same layer names every time: the same bytes
    keras.utils.set_random_seed(0)
    model = keras_densenet.DenseNet(**TINY_CIFAR, weights=None)
    paths = {k: os.path.join(workdir, f"seed{k}") for k in (".weights.h5", ".h5", ".keras")}
    model.save_weights(paths[".weights.h5"])
    save_legacy_h5(model, paths[".h5"])
    model.save(paths[".keras"])
    seeds = {k: open(p, "rb").read() for k, p in paths.items()}

    def load_into_model(path, out_dir):
        loading.load_file(model, path)

    def var_name(f):
        return _first_dataset(f, "layers/")

    zips = mut.hostile_zips(seeds[".keras"], "model.weights.h5", os.path.join(workdir, "outside"))
    zips["weights bomb"] = mut.zip_with_bomb(mut.zip_members(seeds[".keras"]), "model.weights.h5", 128 << 20)
    return {
        "weights.h5": Target("weights.h5", "model.weights.h5", load_into_model, [seeds[".weights.h5"]],
                             h5_hostile(seeds[".weights.h5"], workdir, var_name, paths[".weights.h5"]),
                             uses_keras=True),
        "legacy.h5": Target("legacy.h5", "model.h5", load_into_model, [seeds[".h5"]],
                            _legacy_hostile(seeds[".h5"], workdir), uses_keras=True),
        "keras-weights": Target("keras-weights", "weights.keras", load_into_model, [seeds[".keras"]], zips,
                                members=("model.weights.h5",), uses_keras=True),
        "keras": Target("keras", "model.keras", lambda path, out: saved.load_keras_model(path), [seeds[".keras"]],
                        {**zips, **_keras_config_cases(seeds[".keras"], marker)},
                        members=("config.json", "model.weights.h5"), uses_keras=True),
    }


def _safetensors(header, data: bytes = b"") -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return len(raw).to_bytes(8, "little") + raw + data


def _safetensors_hostile(seed: bytes) -> dict:
    n = int.from_bytes(seed[:8], "little")
    header, data = json.loads(seed[8:8 + n]), seed[8 + n:]
    key = next(k for k in header if k != "__metadata__")

    def edit(**change):
        h = json.loads(json.dumps(header))
        h[key].update(change)
        return _safetensors(h, data)

    return {
        "header length 2^63": (1 << 63).to_bytes(8, "little") + seed[8:],
        "header length past the end": (len(seed)).to_bytes(8, "little") + seed[8:],
        "dtype bf16": edit(dtype="BF16"),
        "dtype f8": edit(dtype="F8_E4M3"),
        "dtype unknown": edit(dtype="Q4"),
        "shape huge": edit(shape=[1 << 40]),
        "shape zero": edit(shape=[0, 1 << 40]),
        "shape negative": edit(shape=[-1]),
        "offsets past the end": edit(data_offsets=[0, 1 << 40]),
        "offsets reversed": edit(data_offsets=[8, 0]),
        "header deep nesting": _safetensors(b"[" * 100_000 + b"]" * 100_000),
        "header not utf8": _safetensors(b"{\xff\xfe}"),
        "huge block number": _safetensors({"features.denseblock" + "1" * 5000 + ".denselayer1.norm1.weight": {
            "dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, bytes(4)),
        "no tensors": _safetensors({"__metadata__": {"a": "b"}}),
    }


def _torch_hostile(seed: bytes, state: dict, workdir: str, marker: str) -> dict:
    import torch

    def saved(obj, **kwargs):
        out = io.BytesIO()
        torch.save(obj, out, **kwargs)
        return out.getvalue()

    members = mut.zip_members(seed)
    pkl = next(n for n, _ in members if n.endswith("data.pkl"))
    first = next(iter(state))
    system = mut.pickle_calling_system(marker)
    return {
        **{f"pickle calling os.system, protocol {p}": mut.torch_zip_with_pickle(seed, mut.pickle_calling_system(
            marker, p)) for p in (0, 2, 4, 5)},
        "raw pickle calling os.system": system,
        "legacy format with os.system": b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19." + system,
        "legacy format": saved(state, _use_new_zipfile_serialization=False),
        "non-string keys": saved({1: torch.zeros(3)}),
        "list": saved([torch.zeros(3)]),
        "string": saved("state"),
        "nested dict": saved({"model": {"state_dict": state}}),
        "quantized tensor": saved({first: torch.quantize_per_tensor(torch.zeros(3), 0.1, 0, torch.qint8)}),
        "sparse tensor": saved({first: torch.zeros(3, 3).to_sparse()}),
        "complex tensor": saved({first: torch.zeros(3, dtype=torch.complex64)}),
        "bool tensor": saved({**state, first: torch.zeros(state[first].shape, dtype=torch.bool)}),
        "0-d tensors": saved({k: torch.tensor(1.0) for k in state}),
        "zero-size huge shape": saved({**state, "features.denseblock1.denselayer1.conv2.weight":
                                       torch.zeros(1 << 30, 0, 3, 3)}),
        "growth 0": saved({**state, "features.denseblock1.denselayer1.conv2.weight": torch.zeros(0, 4, 3, 3)}),
        "huge block number": saved({**state, "features.denseblock" + "1" * 5000 + ".denselayer1.norm1.weight":
                                    torch.zeros(1)}),
        **mut.hostile_zips(seed, pkl, os.path.join(workdir, "outside")),
        "data bomb": mut.zip_with_bomb(members, next(n for n, _ in members if "/data/" in n), 128 << 20),
    }


def checkpoint_targets(workdir: str, marker: str) -> dict:
    """PyTorch state dicts: `.safetensors` and `.pth` through
    `weights.checkpoints.read_state_dict` plus the keras-free half of the
    converter (`detect_arch`, `state_to_table`), and `.pth` through the
    whole `tools.convert.convert_checkpoint`."""
    import torch
    from safetensors.numpy import save as save_safetensors

    from keras_densenet.tools.convert import convert_checkpoint
    from keras_densenet.weights import checkpoints
    from tests import torch_reference
    from tests.helpers import TORCH_TINY_ARCH, torch_kwargs

    state = torch_reference.random_densenet(seed=1, num_classes=3, **torch_kwargs(TORCH_TINY_ARCH)).state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    pth = buffer.getvalue()
    safetensors = save_safetensors({k: v.numpy() for k, v in state.items()})

    def read(path, out_dir):
        found = checkpoints.read_state_dict(path)
        arch = checkpoints.detect_arch(found, path)
        return arch, checkpoints.state_to_table(found, path)

    def convert(path, out_dir):
        return convert_checkpoint(path, os.path.join(out_dir, "converted.keras"), arch=TORCH_TINY_ARCH)

    torch_cases = _torch_hostile(pth, state, workdir, marker)
    return {
        "safetensors": Target("safetensors", "model.safetensors", read, [safetensors], _safetensors_hostile(
            safetensors)),
        "pth": Target("pth", "model.pth", read, [pth], torch_cases, members=(
            next(n for n, _ in mut.zip_members(pth) if n.endswith("data.pkl")),)),
        "convert": Target("convert", "model.pth", convert, [pth], torch_cases, uses_keras=True),
    }


def images() -> dict:
    """Small valid images: PNG (RGB, grayscale), JPEG, GIF, BMP, TIFF."""
    from PIL import Image

    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (16, 12, 3), dtype="uint8"))
    out = {}
    for fmt, mode in (("PNG", "RGB"), ("JPEG", "RGB"), ("GIF", "P"), ("BMP", "RGB"), ("PNG", "L"), ("TIFF", "RGB")):
        buffer = io.BytesIO()
        rgb.convert(mode).save(buffer, format=fmt)
        out[f"{fmt.lower()}-{mode}"] = buffer.getvalue()
    return out


def png_header_bomb(width: int, height: int) -> bytes:
    """A PNG of `width` x `height` black grayscale pixels, a few hundred kB
    on disk (rows of zeros deflate ~1000 times)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z = zlib.compressobj(9)
    row = bytes(width + 1)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def deployment_targets(workdir: str, marker: str) -> dict:
    """`class_names.json` (`deployment.predict.read_class_names`), image files
    (`deployment.predict.read_images`), ONNX artifacts
    (`deployment.runtimes.open_artifact`)."""
    from keras_densenet.deployment import predict, runtimes

    seeds = images()
    image_hostile = {
        "png 12000x12000 (144 Mpixels)": png_header_bomb(12000, 12000),
        "png declared 100000x100000": mut.mutate(seeds["png-RGB"], [("huge", 16, 1), ("huge", 20, 1)]),
        "png zero size": mut.mutate(seeds["png-RGB"], [("zero", i, 0) for i in range(16, 24)]),
        "zip archive named .png": mut.make_zip([("config.json", b"{}"), ("image.png", seeds["png-RGB"])]),
        "svg": b'<svg xmlns="http://www.w3.org/2000/svg"><image href="file:///etc/passwd"/></svg>',
    }

    def check_names(names):
        assert isinstance(names, list) and all(isinstance(n, str) for n in names), names

    def check_images(arrays):
        assert len(arrays) == 1 and arrays[0].ndim == 3 and arrays[0].shape[2] == 3, [a.shape for a in arrays]

    return {
        "class_names": Target("class_names", "class_names.json", lambda p, o: predict.read_class_names(p),
                              [json.dumps(["cat", "dog", "emu"]).encode()], mut.json_variants(["cat", "dog"]),
                              check_result=check_names),
        "images": Target("images", "image.png", lambda p, o: predict.read_images([p], 3), list(seeds.values()),
                         image_hostile, check_result=check_images),
        "onnx": Target("onnx", "model.onnx", lambda p, o: runtimes.open_artifact(p), [tiny_onnx()],
                       _onnx_hostile(tiny_onnx())),
    }


def tiny_onnx(external: Optional[dict] = None) -> bytes:
    """A small image classifier in ONNX (NHWC 8x8x3 in, 4 classes out)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((3, 3, 3, 3)).astype("float32"), "W")
    d = numpy_helper.from_array(rng.standard_normal((3, 4)).astype("float32"), "D")
    if external:
        d.ClearField("raw_data")
        d.data_location = TensorProto.EXTERNAL
        for k, v in external.items():
            d.external_data.add(key=k, value=v)
    nodes = [
        helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["xt", "W"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("MatMul", ["f", "D"], ["m"]),
        helper.make_node("Softmax", ["m"], ["y"], axis=1),
    ]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 8, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], [w, d])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _onnx_hostile(seed: bytes) -> dict:
    return {
        "external data ../": tiny_onnx({"location": "../../../etc/hostname"}),
        "external data absolute": tiny_onnx({"location": "/etc/hostname"}),
        "external data /dev/zero huge": tiny_onnx({"location": "/dev/zero", "length": str(1 << 40)}),
        "external data huge offset": tiny_onnx({"location": "model.onnx", "offset": str(1 << 62)}),
        "zip archive": mut.make_zip([("model.onnx", seed)]),
        "empty": b"",
    }


def environment_target():
    """`core.cluster.job_from_environment`, fed mappings (see
    `test_fuzz.environments`)."""
    from keras_densenet.core import cluster

    def check_job(job):
        if job is None:
            return
        assert 0 <= job.process_id < job.num_processes, job
        assert job.addresses and all(isinstance(a, str) and a for a in job.addresses), job
        assert len(job.addresses) in (1, job.num_processes), job
        assert all(0 < int(a.rpartition(":")[2]) < 65536 for a in job.addresses), job

    return cluster.job_from_environment, check_job


def make_targets(workdir: str, marker: str, names=None) -> dict:
    """The targets named in `names` (default: all), seeds built in `workdir`.
    `marker`: the file a hostile input would create if its code ran."""
    os.makedirs(workdir, exist_ok=True)
    builders = (keras_targets, checkpoint_targets, deployment_targets)
    wanted = {
        keras_targets: {"weights.h5", "legacy.h5", "keras-weights", "keras"},
        checkpoint_targets: {"safetensors", "pth", "convert"},
        deployment_targets: {"class_names", "images", "onnx"},
    }
    out = {}
    for build in builders:
        if names is None or wanted[build] & set(names):
            out.update(build(workdir, marker))
    return {k: v for k, v in out.items() if names is None or k in names}
