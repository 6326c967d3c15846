"""The HDF5 checks that run before a weights file of unknown origin is read
(`keras_densenet.core.hdf5`): the raw heap walk and the child-process probe."""

import subprocess
import sys

import h5py
import numpy as np
import pytest

from keras_densenet.core.hdf5 import check_heaps, probe
from tests.helpers import SCRIPTS

pytestmark = [
    pytest.mark.one_backend("jax", "torch", "tensorflow", reason="keras-free HDF5 checks"),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the probe runs on Linux only"),
]


@pytest.fixture
def weights_file(tmp_path):
    path = tmp_path / "w.h5"
    with h5py.File(path, "w") as f:
        f.attrs["note"] = "a variable-length string lives in the global heap"
        f.create_dataset("layers/dense/vars/0", data=np.arange(12, dtype="float32").reshape(3, 4))
    return path


def test_a_sound_file_passes_both_checks(weights_file):
    check_heaps(weights_file.read_bytes(), weights_file)
    probe(weights_file)


def test_a_heap_object_of_size_zero_is_refused(weights_file):
    data = bytearray(weights_file.read_bytes())
    at = data.find(b"GCOL\x01\x00\x00\x00")
    assert at >= 0, "h5py stored the string attribute outside a global heap"
    data[at + 16 + 8:at + 16 + 16] = bytes(8)  # the first object's size
    with pytest.raises(ValueError, match="w.h5.*damaged HDF5 global heap"):
        check_heaps(bytes(data), weights_file)


def test_a_truncated_file_is_refused_by_the_probe(weights_file):
    data = weights_file.read_bytes()
    weights_file.write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match="w.h5.*not a readable weights file"):
        probe(weights_file)


def test_the_probe_keeps_under_a_finite_hard_cpu_limit(weights_file):
    # A soft limit above the hard one is refused by setrlimit: the probe would
    # then fail every file on a machine with a hard CPU limit.
    done = subprocess.run([sys.executable, str(SCRIPTS / "probe_under_cpu_limit.py"), str(weights_file)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
