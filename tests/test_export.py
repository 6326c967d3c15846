"""`keras-densenet export` (keras_densenet/deployment/export.py) and `predict`
on its artifacts: each format written from the JAX-trained digits model,
checked in its own runtime, served by `predict` with the `.keras` model's
top-1; int8 within a point; failed checks leave nothing; bad input is one
line, exit 2. A format whose writer or runtime is not installed is skipped
with the reason (CI installs them all)."""

import json
import os
import shutil

import pytest
from PIL import Image

from keras_densenet import cli
from keras_densenet.core import extras
from keras_densenet.deployment import export, runtimes
from keras_densenet.deployment import predict as deploy
from tests.helpers import BACKEND, one_backend

DIGITS_RUN = os.path.join(os.path.dirname(__file__), "data", "digits_run")
#: Validation digits served as 8x8 PNG scans, as a user's files would be.
SERVED = 24
#: Each format's round trip runs in the suite of every backend that writes
#: it itself (TensorFlow: savedmodel, onnx, litert, openvino; torch: onnx,
#: openvino, torch), so each writer is checked once. Where the active backend
#: cannot write a format, `export` reruns under one that can in a child
#: process: the JAX suite (which writes none of them while TensorFlow is
#: installed) checks that fallback on one format.
FALLBACK_SUITE, FALLBACK_FORMAT = "jax", "onnx"
#: The suite of the checks that run after the writer, the same whichever
#: backend wrote the artifact (int8 accuracy and size, the failed checks):
#: the first of these that writes the format itself.
CHECK_SUITES = ("torch", "tensorflow")


def _writer_or_skip(fmt: str) -> str:
    try:
        backend = export.backend_for(fmt, BACKEND)
    except ValueError as e:
        pytest.skip(str(e))
    runtime_extra, module = runtimes.RUNTIMES[fmt]
    if not extras.installed(module.split(".")[0]):
        pytest.skip(f"the {fmt} runtime ({module}) is not installed: [{runtime_extra}] extra")
    return backend


def _round_trip_or_skip(fmt: str) -> str:
    backend = _writer_or_skip(fmt)
    if backend != BACKEND and (BACKEND, fmt) != (FALLBACK_SUITE, FALLBACK_FORMAT):
        pytest.skip(f"{fmt} is written by {backend} here: its round trip runs in the {backend} suite; the "
                    f"child-process fallback is checked by the {FALLBACK_SUITE} suite's [{FALLBACK_FORMAT}]")
    return backend


def _check_suite_or_skip(fmt: str, what: str) -> None:
    """Skips unless this is the one suite that runs `what` for `fmt`: the
    first of `CHECK_SUITES` whose backend writes `fmt` itself."""
    suite = one_backend(*[b for b in CHECK_SUITES if extras.installed(b) and export.backend_for(fmt, b) == b])
    if BACKEND != suite:
        pytest.skip(f"{what} does not depend on the backend that wrote the {fmt} artifact: it runs in the {suite} "
                    "suite (each writer's float export is checked by its round trip)")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A copy of the digits run (model + class names) and PNG scans of its
    held-out digits."""
    path = tmp_path_factory.mktemp("run")
    for name in ("model.keras", "class_names.json"):
        shutil.copy(os.path.join(DIGITS_RUN, name), path / name)
    from sklearn.datasets import load_digits

    digits = load_digits()
    pngs = []
    for i in range(SERVED):
        png = path / f"digit{i}.png"
        Image.fromarray((digits.images[-1 - i] * 255 / 16).astype("uint8")).save(png)
        pngs.append(str(png))
    return path, pngs


@pytest.fixture(scope="module")
def trained_size(run_dir):
    """The side the digits run was trained at, from its `Resizing` layer."""
    import keras

    path, _ = run_dir
    return export.resize_size(keras.saving.load_model(path / "model.keras"))[0]


@pytest.fixture(scope="module")
def keras_top1(run_dir):
    path, pngs = run_dir
    return [rows[0][1] for rows in deploy.predict(pngs, model_path=str(path / "model.keras"), top=1)]


def _cli(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("fmt", export.FORMATS)
def test_each_format_is_checked_in_its_runtime_and_predicts_like_keras(fmt, run_dir, keras_top1, trained_size,
                                                                       tmp_path, capsys):
    backend = _round_trip_or_skip(fmt)
    path, pngs = run_dir
    out = tmp_path / ("model" + runtimes.SUFFIXES[fmt])
    code, stdout, err = _cli(capsys, "export", path / "model.keras", "--format", fmt, out)
    assert code == 0, err
    assert os.path.exists(out) and runtimes.artifact_format(out) == fmt
    assert f"written by the {backend} backend" in stdout
    if backend != BACKEND:  # the fallback says so in one line
        assert f"the {BACKEND} backend" in stdout and f": exporting with the {backend} backend" in stdout
    diff = float(stdout.split("largest difference to predict ")[1].split()[0])
    assert diff <= export.FLOAT_TOLERANCE
    if backend != "jax":  # JAX's artifacts take the training size only
        # The Resizing layer travels in the artifact: checked at two sizes.
        s = trained_size
        assert f"at {s}x{s}, {s + 7}x{s + 7}:" in stdout
    assert [p for p in os.listdir(tmp_path) if p.startswith(".")] == []  # no staging left
    # Class names come from the class_names.json copied beside the artifact.
    trust = ["--trust-pickle"] if fmt == "torch" else []  # ours: torch.export.load unpickles
    code, served, err = _cli(capsys, "predict", *pngs, "--model", out, "--top", "1", *trust)
    assert code == 0, err
    lines = served.splitlines()
    assert [lines[2 * i + 1].split()[-1] for i in range(SERVED)] == keras_top1


@pytest.mark.parametrize("fmt", export.QUANTIZABLE)
def test_int8_keeps_top1_within_a_point_at_a_fraction_of_the_size(fmt, run_dir, tmp_path):
    backend = _writer_or_skip(fmt)
    if backend != BACKEND:
        pytest.skip(f"{fmt} is written by {backend}: its int8 path runs in that backend's suite "
                    "(the child-process fallback is checked by the float exports)")
    # LiteRT quantizes in its writer's converter; NNCF quantizes the float .xml.
    if fmt == "openvino":
        _check_suite_or_skip(fmt, "NNCF's int8 quantization of the float .xml")
    if fmt == "openvino" and not extras.installed("nncf"):
        pytest.skip("OpenVINO int8 needs NNCF: [openvino] extra")
    path, _ = run_dir
    out = tmp_path / ("q" + runtimes.SUFFIXES[fmt])
    report = export.export(path / "model.keras", fmt, out, quantize="int8", samples=100)
    assert report.heldout == 360  # the digits' 20% held-out split, as in training
    assert report.float_accuracy - report.accuracy <= export.MAX_DROP / 100
    # On a model this small OpenVINO's .xml (the graph as text) outweighs
    # the int8 weights; LiteRT's flatbuffer is mostly weights.
    assert report.bytes == export.artifact_bytes(str(out)) < (0.5 if fmt == "litert" else 0.9) * report.float_bytes
    assert report.quantize == "int8" and "int8:" in "\n".join(report.lines())


def test_a_float_artifact_off_predict_fails_and_leaves_nothing(run_dir, tmp_path, capsys, monkeypatch):
    _writer_or_skip("onnx")
    if export.backend_for("onnx", BACKEND) != BACKEND:
        pytest.skip("the check runs in the writing process")
    _check_suite_or_skip("onnx", "the float check")
    monkeypatch.setattr(export, "FLOAT_TOLERANCE", -1.0)  # any difference, even 0, is too much
    path, _ = run_dir
    out = tmp_path / "model.onnx"
    code, _, err = _cli(capsys, "export", path / "model.keras", "--format", "onnx", out)
    assert code == 1
    assert len(err.strip().splitlines()) == 1 and "differs from predict" in err and "nothing was written" in err
    assert os.listdir(tmp_path) == []


def test_an_int8_artifact_beyond_max_drop_fails_and_leaves_nothing(run_dir, tmp_path, capsys):
    fmt = "openvino"
    if export.backend_for(fmt, BACKEND) != BACKEND or not extras.installed("nncf"):
        pytest.skip(f"{fmt} int8 is not written by {BACKEND}")
    _writer_or_skip(fmt)
    _check_suite_or_skip(fmt, "the int8 accuracy check")
    path, _ = run_dir
    out = tmp_path / ("q" + runtimes.SUFFIXES[fmt])
    code, _, err = _cli(capsys, "export", path / "model.keras", "--format", fmt, out, "--quantize", "int8",
                        "--calibration-samples", "20", "--max-drop", "-1")
    assert code == 1 and "more than max_drop=-1" in err
    assert os.listdir(tmp_path) == []


def test_jax_writes_onnx_and_savedmodel_only_as_a_last_resort(monkeypatch):
    real = extras.installed
    monkeypatch.setattr(extras, "installed", lambda m: True)
    assert export.backend_for("onnx", "jax") == "tensorflow" == export.backend_for("savedmodel", "jax")
    assert export.backend_for("onnx", "torch") == "torch"
    monkeypatch.setattr(extras, "installed", lambda m: m not in {"tensorflow", "torch"} and real(m))
    assert export.backend_for("onnx", "jax") == "jax"  # when nothing else can


def test_no_installed_writer_names_the_backend_and_extra(monkeypatch):
    hidden = {"tensorflow", "litert_torch"}
    real = extras.installed
    monkeypatch.setattr(extras, "installed", lambda m: m not in hidden and real(m))
    with pytest.raises(ValueError, match=r'litert needs the tensorflow backend .*pip install .*keras-densenet\[tensorflow\]'):
        export.backend_for("litert", "jax")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--format", "litert", "{tmp}/m.onnx"], "a litert artifact is a .tflite file"),
        (["--format", "onnx", "{tmp}/m.onnx", "--quantize", "int8"], "int8 is for litert and openvino, not onnx"),
        (["--format", "onnx", "{tmp}/m.onnx", "--data", "{tmp}"], "--data goes with --quantize"),
        (["--format", "onnx", "{tmp}/missing/m.onnx"], "is not a writable directory"),
    ],
    ids=["suffix", "quantize onnx", "data without quantize", "unwritable"],
)
def test_bad_export_arguments_are_one_line_exit_2(argv, message, run_dir, tmp_path, capsys):
    path, _ = run_dir
    code, _, err = _cli(capsys, "export", path / "model.keras", *[a.format(tmp=tmp_path) for a in argv])
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_predict_names_a_bad_artifact_or_class_names_file(run_dir, tmp_path, capsys):
    path, pngs = run_dir
    fake = tmp_path / "fake.onnx"
    fake.write_bytes(b"not onnx")
    bad_names = tmp_path / "names.json"
    bad_names.write_text(json.dumps({"0": "zero"}))
    for argv, message in [
        (["--model", fake], "is not a readable onnx model"),
        (["--model", tmp_path / "m.bin"], "expected .keras, .tflite, .xml, .onnx, .pt2 or a SavedModel"),
        (["--model", path / "model.keras", "--class-names", bad_names], "must hold a JSON list of strings"),
        (["--model", tmp_path / "m.pt2"], "torch.export.load unpickles (that can run code): pass"),
    ]:
        if argv[1] == fake and not extras.installed("onnxruntime"):
            continue
        (tmp_path / "m.bin").write_bytes(b"")
        (tmp_path / "m.pt2").write_bytes(b"")
        code, _, err = _cli(capsys, "predict", pngs[0], *argv)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.skipif(BACKEND != one_backend(*CHECK_SUITES), reason="reading --class-names does not depend on the "
                    f"backend: runs in the {one_backend(*CHECK_SUITES)} suite")
def test_predict_takes_class_names_from_a_given_file(run_dir, tmp_path, capsys):
    path, pngs = run_dir
    names = tmp_path / "names.json"
    names.write_text(json.dumps([f"digit {i}" for i in range(10)]))
    code, out, err = _cli(capsys, "predict", pngs[0], "--model", path / "model.keras", "--class-names", names,
                          "--top", "1")
    assert code == 0, err
    assert out.splitlines()[1].split("digit ")[1].strip().isdigit()


def test_an_exporter_failure_is_one_line_exit_1_and_leaves_nothing(run_dir, tmp_path, capsys, monkeypatch):
    _writer_or_skip("onnx")
    if export.backend_for("onnx", BACKEND) != BACKEND:
        pytest.skip("the failure is raised in the writing process")

    def broken(*args, **kwargs):
        raise RuntimeError("Unsupported operation: simulated")

    monkeypatch.setattr(export, "write_artifact", broken)
    path, _ = run_dir
    code, _, err = _cli(capsys, "export", path / "model.keras", "--format", "onnx", tmp_path / "m.onnx")
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "Keras could not write onnx" in err and "simulated" in err and "nothing was written" in err
    assert os.listdir(tmp_path) == []
