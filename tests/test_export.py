"""`keras-densenet export` (keras_densenet/deployment/: export.py, writers.py,
quantize.py) and `predict` on its artifacts: each format written from the
JAX-trained digits model, checked in its own runtime, served by `predict`
with the `.keras` model's top-1; int8 within a point; failed checks leave
nothing; bad input is one line, exit 2. A format whose writer or runtime is
not installed is skipped with the reason (CI installs them all)."""

import json
import os
import shutil

import pytest
from PIL import Image

from keras_densenet import cli
from keras_densenet.core import extras
from keras_densenet.deployment import export, quantize, runtimes, writers
from keras_densenet.deployment import predict as deploy
from tests.helpers import BACKEND, BACKENDS

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
    """The backend that writes `fmt` here; skips where none is installed,
    or `fmt`'s runtime is not."""
    try:
        backend = writers.backend_for(fmt, BACKEND)
    except ValueError as e:
        pytest.skip(str(e))
    runtime_extra, module = runtimes.RUNTIMES[fmt]
    if not extras.installed(module.split(".")[0]):
        pytest.skip(f"the {fmt} runtime ({module}) is not installed: [{runtime_extra}] extra")
    return backend


def _self_writers(fmt: str, among=BACKENDS) -> list:
    """The installed backends of `among` that write `fmt` themselves."""
    found = []
    for backend in among:
        try:
            if extras.installed(backend) and writers.backend_for(fmt, backend) == backend:
                found.append(backend)
        except ValueError:  # nothing installed writes fmt
            pass
    return found


def _written_here(fmt: str, why: str, *also: str):
    """Marks a test to run in the suite of each backend that writes `fmt`
    itself (and of `also`). Where none is installed, every suite runs it and
    `_writer_or_skip` skips it, naming what to install."""
    suites = _self_writers(fmt)
    if not suites:
        return pytest.mark.backends(*BACKENDS)
    return pytest.mark.backends(*suites, *[b for b in also if b not in suites], reason=why)


def _checked_once(fmt: str, what: str):
    """Marks `what`, a check after the writer (the same whichever backend
    wrote the `fmt` artifact), to run in one suite: the first of
    `CHECK_SUITES` that writes `fmt` itself, else any that does."""
    return pytest.mark.one_backend(
        *_self_writers(fmt, CHECK_SUITES), *_self_writers(fmt),
        reason=f"{what} does not depend on the backend that wrote the {fmt} artifact "
               "(each writer's float export is checked by its round trip)")


def _round_trip_suites(fmt: str):
    if fmt == FALLBACK_FORMAT:
        return _written_here(fmt, f"each backend that writes {fmt} checks its round trip, and the {FALLBACK_SUITE} "
                                  "suite the child-process fallback", FALLBACK_SUITE)
    return _written_here(fmt, f"each backend that writes {fmt} checks its round trip")


def _int8_suites(fmt: str):
    if fmt == "openvino":  # NNCF quantizes the float .xml, whichever backend wrote it
        return _checked_once(fmt, "NNCF's int8 quantization of the float .xml")
    # LiteRT quantizes in its writer's converter.
    return _written_here(fmt, f"{fmt} int8 runs in the suite of the backend that writes it (the child-process "
                              "fallback is checked by the float exports)")


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
    return writers.resize_size(keras.saving.load_model(path / "model.keras"))[0]


@pytest.fixture(scope="module")
def keras_top1(run_dir):
    path, pngs = run_dir
    return [rows[0][1] for rows in deploy.predict(pngs, model_path=str(path / "model.keras"), top=1)]


def _cli(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


#: The limit of an export (pytest-timeout; the default is 300 s): the digits
#: model's fixtures, the export and its checks took up to 140 s on a 2-core
#: machine loaded 5x over.
EXPORT_TIMEOUT_S = 600


@pytest.mark.timeout(EXPORT_TIMEOUT_S)
@pytest.mark.parametrize("fmt", [pytest.param(fmt, marks=_round_trip_suites(fmt)) for fmt in writers.FORMATS])
def test_each_format_is_checked_in_its_runtime_and_predicts_like_keras(fmt, run_dir, keras_top1, trained_size,
                                                                       tmp_path, capsys):
    backend = _writer_or_skip(fmt)
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


@pytest.mark.timeout(EXPORT_TIMEOUT_S)
@pytest.mark.parametrize("fmt", [pytest.param(fmt, marks=_int8_suites(fmt)) for fmt in quantize.QUANTIZABLE])
def test_int8_keeps_top1_within_a_point_at_a_fraction_of_the_size(fmt, run_dir, tmp_path):
    _writer_or_skip(fmt)
    if fmt == "openvino" and not extras.installed("nncf"):
        pytest.skip("OpenVINO int8 needs NNCF: [openvino] extra")
    path, _ = run_dir
    out = tmp_path / ("q" + runtimes.SUFFIXES[fmt])
    report = export.export(path / "model.keras", fmt, out, quantize="int8", samples=100)
    assert report.heldout == 360  # the digits' 20% held-out split, as in training
    assert report.float_accuracy - report.accuracy <= export.MAX_DROP / 100
    # On a model this small OpenVINO's .xml (the graph as text) outweighs
    # the int8 weights; LiteRT's flatbuffer is mostly weights.
    assert report.bytes == writers.artifact_bytes(str(out)) < (0.5 if fmt == "litert" else 0.9) * report.float_bytes
    assert report.quantize == "int8" and "int8:" in "\n".join(report.lines())


@_checked_once("onnx", "the float check")
def test_a_float_artifact_off_predict_fails_and_leaves_nothing(run_dir, tmp_path, capsys, monkeypatch):
    _writer_or_skip("onnx")
    monkeypatch.setattr(export, "FLOAT_TOLERANCE", -1.0)  # any difference, even 0, is too much
    path, _ = run_dir
    out = tmp_path / "model.onnx"
    code, _, err = _cli(capsys, "export", path / "model.keras", "--format", "onnx", out)
    assert code == 1
    assert len(err.strip().splitlines()) == 1 and "differs from predict" in err and "nothing was written" in err
    assert os.listdir(tmp_path) == []


@_checked_once("openvino", "the int8 accuracy check")
def test_an_int8_artifact_beyond_max_drop_fails_and_leaves_nothing(run_dir, tmp_path, capsys):
    fmt = "openvino"
    _writer_or_skip(fmt)
    if not extras.installed("nncf"):
        pytest.skip("OpenVINO int8 needs NNCF: [openvino] extra")
    path, _ = run_dir
    out = tmp_path / ("q" + runtimes.SUFFIXES[fmt])
    code, _, err = _cli(capsys, "export", path / "model.keras", "--format", fmt, out, "--quantize", "int8",
                        "--calibration-samples", "20", "--max-drop", "-1")
    assert code == 1 and "more than max_drop=-1" in err
    assert os.listdir(tmp_path) == []


def test_jax_writes_onnx_and_savedmodel_only_as_a_last_resort(monkeypatch):
    real = extras.installed
    monkeypatch.setattr(extras, "installed", lambda m: True)
    assert writers.backend_for("onnx", "jax") == "tensorflow" == writers.backend_for("savedmodel", "jax")
    assert writers.backend_for("onnx", "torch") == "torch"
    monkeypatch.setattr(extras, "installed", lambda m: m not in {"tensorflow", "torch"} and real(m))
    assert writers.backend_for("onnx", "jax") == "jax"  # when nothing else can


def test_no_installed_writer_names_the_backend_and_extra(monkeypatch):
    hidden = {"tensorflow", "litert_torch"}
    real = extras.installed
    monkeypatch.setattr(extras, "installed", lambda m: m not in hidden and real(m))
    message = r"litert needs the tensorflow backend .*pip install .*keras-densenet\[tensorflow\]"
    with pytest.raises(ValueError, match=message):
        writers.backend_for("litert", "jax")


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


@pytest.mark.one_backend(*CHECK_SUITES, reason="reading --class-names does not depend on the backend")
def test_predict_takes_class_names_from_a_given_file(run_dir, tmp_path, capsys):
    path, pngs = run_dir
    names = tmp_path / "names.json"
    names.write_text(json.dumps([f"digit {i}" for i in range(10)]))
    code, out, err = _cli(capsys, "predict", pngs[0], "--model", path / "model.keras", "--class-names", names,
                          "--top", "1")
    assert code == 0, err
    assert out.splitlines()[1].split("digit ")[1].strip().isdigit()


@_written_here("onnx", "the failure is raised in the writing process")
def test_an_exporter_failure_is_one_line_exit_1_and_leaves_nothing(run_dir, tmp_path, capsys, monkeypatch):
    _writer_or_skip("onnx")

    def broken(*args, **kwargs):
        raise RuntimeError("Unsupported operation: simulated")

    monkeypatch.setattr(export, "write_artifact", broken)  # the name export_here calls
    path, _ = run_dir
    code, _, err = _cli(capsys, "export", path / "model.keras", "--format", "onnx", tmp_path / "m.onnx")
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "Keras could not write onnx" in err and "simulated" in err and "nothing was written" in err
    assert os.listdir(tmp_path) == []
