"""Reading HDF5 files of unknown origin (weights files a user passes) without
handing control to a damaged one.

HDF5 is a C library: on some damaged files it loops forever or allocates
gigabytes (a variable-length string declaring a length of 4 GB), holding
Python's GIL meanwhile, so no timeout or signal inside the process can stop
it. Two checks run before this package, or Keras, reads such a file:

- `check_heaps`: the global heaps (where variable-length data lives) are
  walked in the raw bytes; a heap object of size 0, which makes HDF5 1.14's
  heap decoder loop forever, or one past its heap's end is refused;
- `probe`: a short-lived child process opens the file with h5py and reads
  every attribute and every array, under a memory cap and a time limit; a
  file it cannot read that way is refused. Reading is deterministic: what
  the child read within its limits, this process reads within them too.

Both raise the `ValueError` of `keras_densenet.core.files.file_error`,
naming the file. Keras-free, like the rest of `core`.

Example:

>>> check_heaps(b"not an HDF5 file", "w.h5")  # no heap: nothing to refuse
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Optional

from keras_densenet.core.files import file_error

#: The probe may use this much memory beyond what reading the file needs
#: (its arrays, once): a damaged size asks for gigabytes.
PROBE_MEMORY_SLACK = 512 << 20
#: The probe's limit on CPU time (after its imports): an allowance plus a
#: reading rate. A file on which HDF5 loops burns CPU and is stopped after
#: it (SIGXCPU), in about 3 s on an idle machine; CPU time, unlike the wall
#: clock, does not run while a busy machine starves the probe, so a sound
#: file (10 MB take well under a CPU second) is never refused for the
#: machine's load.
PROBE_CPU_SECONDS, PROBE_BYTES_PER_CPU_SECOND = 3, 20 << 20
#: The wall-clock bound behind it, for a probe that never gets the CPU.
PROBE_WALL_SECONDS = 300
_GCOL = b"GCOL\x01\x00\x00\x00"


def check_heaps(data, path) -> None:
    """Refuses an HDF5 file whose global heap would make the HDF5 library
    loop forever: a heap object of size 0, or one past its collection's end.
    HDF5 1.14's heap decoder steps by the object's size, so size 0 never
    advances.

    Args:
        data: the file's bytes (bytes or an `mmap.mmap`).
        path: the file, named in errors.

    Raises:
        ValueError: naming the file.
    """
    at = data.find(_GCOL)
    while at >= 0:
        size = int.from_bytes(data[at + 8:at + 16], "little")
        p = 16  # the collection's header; then objects: index, refcount, reserved, size, data
        while p + 16 <= size and at + p + 16 <= len(data):
            index = int.from_bytes(data[at + p:at + p + 2], "little")
            length = int.from_bytes(data[at + p + 8:at + p + 16], "little")
            need = 16 + (length + 7) // 8 * 8 if index else length  # index 0: the free space
            if need == 0 or p + need > size:
                raise file_error(path, f"a damaged HDF5 global heap (at byte {at}): not a readable weights file")
            p += need
        at = data.find(_GCOL, at + 1)


#: The probe: reads every attribute and array of the file (or of a member of
#: a zip archive), following soft and external links as a reader would.
_PROBE = r"""
import io, resource, sys, zipfile
import h5py
path, member, budget, cpu = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
with open("/proc/self/statm") as f:
    used = int(f.read().split()[0]) * resource.getpagesize()
def limit(kind, soft):
    hard = resource.getrlimit(kind)[1]  # a soft limit may not pass a finite hard one
    resource.setrlimit(kind, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))
limit(resource.RLIMIT_AS, used + budget)
spent = resource.getrusage(resource.RUSAGE_SELF)
limit(resource.RLIMIT_CPU, int(spent.ru_utime + spent.ru_stime) + 1 + cpu)
source = io.BytesIO(zipfile.ZipFile(path).read(member)) if member else path

def read(obj):
    for key in obj.attrs:
        obj.attrs[key]
    if isinstance(obj, h5py.Dataset):
        obj[()]

def follow(name, link):
    if not isinstance(link, h5py.HardLink):
        try:
            target = f[name]
        except (KeyError, OSError, RuntimeError, ValueError):
            return  # a dangling link: the reader's error, not a hazard
        read(target)

with h5py.File(source, "r") as f:
    read(f)
    f.visititems(lambda name, obj: read(obj))
    if hasattr(f, "visititems_links"):  # h5py >= 3.11
        f.visititems_links(follow)
"""


def probe(path, member: Optional[str] = None, size: Optional[int] = None) -> None:
    """Reads HDF5 file `path` (or member `member` of the zip archive `path`)
    whole in a child process with a memory cap and a time limit.

    Args:
        path: the file.
        member: the HDF5 member of a zip archive (a ``.keras`` file's
            ``model.weights.h5``), or ``None``.
        size: the bytes to read (default: the file's size).

    Raises:
        ValueError: naming the file: the probe failed, ran out of memory or
            time, or died.
    """
    path = os.fspath(path)
    if not sys.platform.startswith("linux"):
        return  # the memory cap reads /proc; elsewhere the in-process checks alone apply
    size = os.path.getsize(path) if size is None else size
    cpu = PROBE_CPU_SECONDS + size // PROBE_BYTES_PER_CPU_SECOND
    command = [sys.executable, "-c", _PROBE, path, member or "", str(PROBE_MEMORY_SLACK + 3 * size), str(cpu)]
    looping = (f"HDF5 could not read it within {cpu} s of CPU time (a damaged file that makes the HDF5 library "
               "loop): not a readable weights file")
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=PROBE_WALL_SECONDS + cpu,
                              env={**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"})
    except subprocess.TimeoutExpired:
        raise file_error(path, looping) from None
    if proc.returncode == -signal.SIGXCPU:
        raise file_error(path, looping)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        last = lines[-1] if lines else f"the reader died (exit {proc.returncode})"
        if "MemoryError" in last or "memory allocation failed" in last:
            last = f"reading it needs far more memory than its {size} bytes"
        raise file_error(path, f"not a readable weights file (truncated or corrupted?): {last[:300]}")
