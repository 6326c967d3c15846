"""Fuzzing every loader with hostile and damaged files (tests/fuzz/).

Each input must end in a valid result or in the documented ValueError
naming the file: never another exception, never more than 10 s, never 1 GB
more memory, never a write outside the case's temporary directory, never
code run from the file (`tests/fuzz/harness.py`).

What runs here is a seeded slice (hypothesis, derandomized): every crafted
hostile file, every regression case, and a few dozen mutations per loader.
``KD_FUZZ_EXAMPLES=N`` raises the mutations per loader to N, and
``KD_FUZZ_SEED=S`` draws other ones; the full campaign, with a table, is
``python tests/fuzz/campaign.py --examples 10000``. The loaders that build
Keras models run in one suite, the others in another (the ``one_backend``
marker): none depends on the backend.
"""

import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from tests.fuzz import harness
from tests.fuzz import mutations as mut
from tests.fuzz import targets as tg
from tests.helpers import BACKEND

#: The suites of the loaders that build Keras models, and of the others:
#: none depends on the backend, so each runs in one suite only.
KERAS_PREFERENCE = ("torch", "tensorflow", "jax")
FILE_PREFERENCE = ("tensorflow", "torch", "jax")
#: Mutations per loader in the CI slice (about a minute in all).
SLICE = {"weights.h5": 15, "legacy.h5": 15, "keras-weights": 10, "keras": 8, "convert": 6,
         "safetensors": 40, "pth": 40, "class_names": 30, "images": 30, "onnx": 40}
KERAS_TARGETS = ("weights.h5", "legacy.h5", "keras-weights", "keras", "convert")
EXAMPLES = int(os.environ.get("KD_FUZZ_EXAMPLES", "0"))
SEED = os.environ.get("KD_FUZZ_SEED")


def _suite_mark(name: str):
    """The marker that runs loader `name`'s tests in one suite."""
    preference = KERAS_PREFERENCE if name in KERAS_TARGETS else FILE_PREFERENCE
    return pytest.mark.one_backend(*preference, reason=f"fuzzing {name} does not depend on the backend")


def _params(names) -> list:
    return [pytest.param(name, marks=_suite_mark(name)) for name in names]


def _needs(name: str) -> None:
    for module in {"pth": ["torch"], "convert": ["torch"], "safetensors": ["torch", "safetensors"],
                   "onnx": ["onnx", "onnxruntime"], "images": ["PIL"]}.get(name, []):
        pytest.importorskip(module, reason=f"fuzzing {name} needs {module}")


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("fuzz"))


@pytest.fixture(scope="module")
def marker(fuzz_dir):
    return os.path.join(fuzz_dir, "MARKER")


_TARGETS: dict = {}


@pytest.fixture
def target(request, fuzz_dir, marker):
    """The target named by the test's `name` parameter, built and warmed up
    once per module (seeds are small files; the Keras ones need a model)."""
    name = request.getfixturevalue("name")
    _needs(name)
    if name not in _TARGETS:
        built = tg.make_targets(os.path.join(fuzz_dir, "seeds"), marker, [name])[name]
        harness.warm_up(built, fuzz_dir, marker)
        _TARGETS[name] = built
    return _TARGETS[name]


def _settings(examples: int):
    wrap = settings(max_examples=EXAMPLES or examples, derandomize=SEED is None, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck), print_blob=True)
    return (lambda f: wrap(seed(int(SEED))(f))) if SEED is not None else wrap


@pytest.mark.parametrize("name", _params(sorted(SLICE)))
def test_mutated_files_end_in_a_result_or_the_documented_error(name, target, fuzz_dir, marker):
    members = st.sampled_from((None, *target.members))

    @_settings(SLICE[name])
    @given(which=st.integers(0, len(target.seeds) - 1), member=members, ops=mut.ops_strategy())
    def check(which, member, ops):
        data = mut.mutate_member(target.seeds[which], member, ops) if member else mut.mutate(target.seeds[which], ops)
        outcome = harness.run_case(target, data, fuzz_dir, marker, f"seed {which} member {member} ops {ops}")
        assert outcome.failure is None, outcome.describe()

    check()


@_suite_mark("class_names")
def test_any_json_value_as_class_names(fuzz_dir, marker):
    """`read_class_names` on any JSON document: a list of strings, or the
    ValueError naming the file."""
    from keras_densenet.deployment import predict

    target = tg.Target("class_names", "class_names.json", lambda p, o: predict.read_class_names(p), [])

    @_settings(40)
    @given(document=mut.json_value_strategy())
    def check(document):
        outcome = harness.run_case(target, document, fuzz_dir, marker, repr(document)[:200])
        assert outcome.failure is None, outcome.describe()

    check()


@pytest.mark.parametrize("name", _params(sorted({*SLICE} - {"convert"})))
def test_crafted_hostile_files_are_refused_or_read_safely(name, target, fuzz_dir, marker):
    failures = []
    for case, data in sorted(target.hostile.items()):
        outcome = harness.run_case(target, data, fuzz_dir, marker, case)
        if outcome.failure:
            failures.append(outcome.describe())
    assert failures == []


def _at(signature: bytes, offset: int, kind: str = "zero", occurrence: int = 0):
    """Damage at a named HDF5 structure (a signature such as b"TREE"), so
    the case stays the same when the writer moves things around."""
    return lambda data: mut.mutate(data, [(kind, mut.find(data, signature, occurrence) + offset, 1)])


def _heap_loop(data: bytes) -> bytes:
    """The first object of the first global heap made a free-space object
    of size 0: HDF5 1.14 decodes that heap forever."""
    at = mut.find(data, b"GCOL")
    return mut.mutate(data, [("zero", at + 16 + k, 0) for k in (0, 1, *range(8, 16))])


def _in_member(make):
    return lambda data: mut.replace_member(data, "model.weights.h5", make(dict(mut.zip_members(data))[
        "model.weights.h5"]))


def _hostile(case: str):
    """Crafted file `case` of the target (tests/fuzz/targets.py)."""
    def make(data, target):
        return target.hostile[case]
    make.needs_target = True
    return make


def _campaign_case(index: int, seed: int = 0):
    """Mutation number `index` of the campaign's seeded sequence (see
    tests/fuzz/campaign.py: "#index seed s ops [...]")."""
    def make(data, target):
        from tests.fuzz import campaign

        generated = [d for name, d in campaign.cases(target, index + 1, seed) if name.startswith("#")]
        return generated[index]
    make.needs_target = True
    return make


#: Inputs that escaped as other exceptions (or hung) before the loaders
#: were fixed, as seeded cases: (loader, what, make(seed bytes) -> input).
#: HDF5 damage at named structures: h5py's RuntimeError, KeyError, OSError
#: and TypeError ("Object visitation failed (addr overflow...)", "Unable to
#: get group info", "unable to offset into local heap data block"...).
REGRESSIONS = [
    ("weights.h5", "B-tree signature zeroed", _at(b"TREE", 1)),
    ("weights.h5", "second B-tree signature zeroed", _at(b"TREE", 1, occurrence=1)),
    ("weights.h5", "local heap signature zeroed", _at(b"HEAP", 0)),
    ("weights.h5", "local heap free list zeroed", _at(b"HEAP", 24)),
    ("weights.h5", "local heap data address huge", _at(b"HEAP", 32, "huge")),
    ("weights.h5", "symbol table node signature flipped", _at(b"SNOD", 2, "flip")),
    ("weights.h5", "symbol table entry address huge", _at(b"SNOD", 8, "huge")),
    ("weights.h5", "B-tree child address huge", _at(b"TREE", 40, "huge")),
    ("weights.h5", "campaign #2 (RuntimeError)", _campaign_case(2)),
    ("weights.h5", "campaign #33 (KeyError)", _campaign_case(33)),
    ("weights.h5", "campaign #149 (ValueError without the file)", _campaign_case(149)),
    ("legacy.h5", "B-tree signature zeroed", _at(b"TREE", 1)),
    ("legacy.h5", "local heap signature zeroed", _at(b"HEAP", 0)),
    ("legacy.h5", "symbol table node signature flipped", _at(b"SNOD", 2, "flip")),
    ("legacy.h5", "B-tree child address huge", _at(b"TREE", 40, "huge")),
    ("legacy.h5", "global heap signature zeroed", _at(b"GCOL", 0)),
    ("legacy.h5", "global heap object of size 0 (HDF5 loops forever)", _heap_loop),
    ("legacy.h5", "campaign #15 (OSError)", _campaign_case(15)),
    # HDF5 loops on it: the probe's 30 s limit once made it take 30 s.
    ("legacy.h5", "campaign #367 (refused within 10 s)", _campaign_case(367)),
    ("keras-weights", "B-tree signature zeroed", _in_member(_at(b"TREE", 1))),
    ("keras", "global heap object of size 0 (HDF5 loops forever)", _in_member(_heap_loop)),
    # 10**12 filters: Keras tried to allocate them (11 s on a busy machine).
    ("keras", "huge filters", _hostile("huge filters")),
    # json's RecursionError once escaped read_class_names.
    ("class_names", "deep nesting", _hostile("deep nesting")),
    ("class_names", "deep object", _hostile("deep object")),
    # Decompression bombs: Pillow only warns below 179 Mpixels, and such a
    # file of a few hundred kB once decoded to 1.5 to 2 GB of float32.
    ("images", "png 12000x12000 (144 Mpixels)", _hostile("png 12000x12000 (144 Mpixels)")),
    ("images", "campaign #7219 (a damaged TIFF declaring 12x8388608)", _campaign_case(7219)),
]


@pytest.mark.parametrize("name, what", [pytest.param(n, w, marks=_suite_mark(n)) for n, w, _ in REGRESSIONS])
def test_regression_cases(name, what, target, fuzz_dir, marker):
    make = next(m for n, w, m in REGRESSIONS if (n, w) == (name, what))
    data = make(target.seeds[0], target) if getattr(make, "needs_target", False) else make(target.seeds[0])
    if "loops forever" in what:  # checked first: if the check were gone, the load would never return
        from keras_densenet.core.hdf5 import check_heaps

        inner = dict(mut.zip_members(data))["model.weights.h5"] if name == "keras" else data
        with pytest.raises(ValueError, match="global heap"):
            check_heaps(inner, "x.h5")
    outcome = harness.run_case(target, data, fuzz_dir, marker, what)
    assert outcome.failure is None and outcome.result == "ValueError", outcome.describe()


@_suite_mark("environment")
def test_job_variables_end_in_a_job_or_the_documented_error(fuzz_dir, marker):
    """`job_from_environment`: any mapping gives ``None``, a consistent job,
    or a ValueError naming the variable."""
    from tests.fuzz.campaign import random_environment

    target = tg.environment_target()
    fixed = [
        {"KERAS_DISTRIBUTION_JOB_ADDRESSES": "a:99999", "KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
         "KERAS_DISTRIBUTION_PROCESS_ID": "0"},  # port out of range: once accepted
        {"KERAS_DISTRIBUTION_JOB_ADDRESSES": "h:1", "KERAS_DISTRIBUTION_NUM_PROCESSES": 2,
         "KERAS_DISTRIBUTION_PROCESS_ID": 1.5},  # not strings: once read as process 1
        {"KERAS_DISTRIBUTION_JOB_ADDRESSES": "h:1", "KERAS_DISTRIBUTION_NUM_PROCESSES": "1_000",
         "KERAS_DISTRIBUTION_PROCESS_ID": "٣"},  # int() takes both
        {"KERAS_DISTRIBUTION_JOB_ADDRESSES": "h:1", "KERAS_DISTRIBUTION_NUM_PROCESSES": "9" * 5000,
         "KERAS_DISTRIBUTION_PROCESS_ID": "0"},
    ]
    for env in fixed:
        outcome = harness.run_case(target, env, fuzz_dir, marker, repr(env)[:200])
        assert outcome.failure is None and outcome.result == "ValueError", outcome.describe()

    @_settings(300)
    @given(rng=st.randoms(use_true_random=False))
    def check(rng):
        env = random_environment(rng)
        outcome = harness.run_case(target, env, fuzz_dir, marker, repr(env)[:300])
        assert outcome.failure is None, outcome.describe()

    check()


def _cli(*argv):
    env = {**os.environ, "KERAS_BACKEND": BACKEND, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "keras_densenet", *map(str, argv)], env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.parametrize("name, case, command", [
    pytest.param(name, case, command, marks=_suite_mark(name)) for name, case, command in (
        ("keras", "lambda layer", "predict"),
        ("keras", "global heap object of size 0 (HDF5 loops forever)", "predict"),
        ("convert", "pickle calling os.system, protocol 2", "convert"),
    )
])
def test_the_cli_refuses_hostile_files_in_one_line(name, case, command, target, tmp_path, marker):
    """A handful through the command line: one line on stderr naming the
    file, exit 2, nothing written, no code run."""
    regression = {(n, w): m for n, w, m in REGRESSIONS}.get((name, case))
    data = regression(target.seeds[0]) if regression else target.hostile[case]
    src = tmp_path / target.filename
    src.write_bytes(data)
    if command == "predict":
        image = tmp_path / "image.png"
        image.write_bytes(tg.images()["png-RGB"])
        proc = _cli("predict", image, "--model", src)
    else:
        proc = _cli("convert", src, tmp_path / "out.keras")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and src.name in lines[0], proc.stderr[-2000:]
    assert not os.path.exists(marker) and not (tmp_path / "out.keras").exists()


@_suite_mark("onnx")
def test_a_pt2_archive_is_refused_without_trust_pickle(fuzz_dir, marker):
    """`torch.export.load` unpickles parts of a ``.pt2``: without
    ``trust_pickle`` (``--trust-pickle``) it is refused before anything is
    read, so its pickle never runs."""
    from keras_densenet.deployment import runtimes

    pt2 = mut.make_zip([("archive/data.pkl", mut.pickle_calling_system(marker))])
    target = tg.Target("pt2", "model.pt2", lambda p, o: runtimes.open_artifact(p), [pt2])
    outcome = harness.run_case(target, pt2, fuzz_dir, marker, "pickle calling os.system in a .pt2")
    assert outcome.failure is None and outcome.result == "ValueError", outcome.describe()
    assert "trust_pickle" in outcome.message and not os.path.exists(marker)


@_suite_mark("weights.h5")
def test_a_failed_load_leaves_the_model_as_it_was(tmp_path):
    """All or nothing: a `.weights.h5` whose arrays have the model's shapes
    but sit in the wrong layers makes Keras fail half-way through; the
    model keeps every weight it had."""
    import h5py
    import keras
    import numpy as np

    import keras_densenet
    from keras_densenet.weights import loading
    from tests.helpers import TINY_CIFAR

    keras.utils.set_random_seed(1)
    path = str(tmp_path / "swapped.weights.h5")
    keras_densenet.DenseNet(**TINY_CIFAR, weights=None).save_weights(path)
    with h5py.File(path, "r+") as f:
        names = sorted(n for n in (f"layers/{k}/vars/0" for k in f["layers"]) if n in f)
        first, last = names[0], next(n for n in reversed(names) if f[n].shape != f[names[0]].shape)
        a, b = f[first][()], f[last][()]
        del f[first], f[last]
        f[first], f[last] = b, a  # each where the other belongs
    model = keras_densenet.DenseNet(**TINY_CIFAR, weights=None)
    before = [keras.ops.convert_to_numpy(v) for v in model.weights]
    with pytest.raises(ValueError, match="swapped.weights.h5"):
        loading.load_file(model, path)
    for old, v in zip(before, model.weights, strict=True):
        np.testing.assert_array_equal(old, keras.ops.convert_to_numpy(v))
