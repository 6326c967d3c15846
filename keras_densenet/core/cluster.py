"""A multi-process job as Keras describes it, and each process's share of the data.

Keras' own variables describe the job, the same in every process but the
last one (`keras.distribution.initialize` reads them):

====================================  =========================================
``KERAS_DISTRIBUTION_JOB_ADDRESSES``  ``host:port`` of process 0 (the
                                      coordinator), or every process's
                                      address, comma-separated
``KERAS_DISTRIBUTION_NUM_PROCESSES``  how many processes the job has
``KERAS_DISTRIBUTION_PROCESS_ID``     this process, ``0`` to ``NUM - 1``
====================================  =========================================

This module is keras-free, so the CLI checks the variables before anything
starts. Sharding: every process trains on its own, disjoint share of each
split; the shares have equal sizes (every process must run the same steps,
or the collectives of the last step would wait forever), so fewer than
``num_processes * local_devices`` images of a split are left out of an
epoch.

Example:

>>> job = job_from_environment({"KERAS_DISTRIBUTION_JOB_ADDRESSES": "192.0.2.1:1234",
...                             "KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
...                             "KERAS_DISTRIBUTION_PROCESS_ID": "1"})
>>> job.describe()
'process 1 of 2 (coordinator 192.0.2.1:1234)'
>>> shard_indices(10, num_processes=2, process_id=1, seed=0, multiple=2)
array([6, 7, 5, 0])
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Mapping, Optional

import numpy as np

#: Keras' variables, in the order `keras.distribution.initialize` takes them.
JOB_ADDRESSES = "KERAS_DISTRIBUTION_JOB_ADDRESSES"
NUM_PROCESSES = "KERAS_DISTRIBUTION_NUM_PROCESSES"
PROCESS_ID = "KERAS_DISTRIBUTION_PROCESS_ID"
JOB_VARIABLES = (JOB_ADDRESSES, NUM_PROCESSES, PROCESS_ID)
#: How long a process waits for the whole job to connect before it gives up
#: (JAX's own default is 300 s); `train --connect-timeout` changes it.
DEFAULT_CONNECT_TIMEOUT_S = 120
_ADDRESS = re.compile(r"^\[?[A-Za-z0-9_.:-]+?\]?:(?P<port>\d{1,5})$")
#: Process counts and ids: ASCII digits, at most this many (int() would
#: also take "1_000", " 2 ", Arabic-Indic digits and thousands of digits).
_MAX_DIGITS = 6


@dataclasses.dataclass(frozen=True)
class MultiProcessJob:
    """One process of a multi-process job.

    Attributes:
        addresses: the job's addresses; the first is the coordinator's.
        num_processes: processes in the job.
        process_id: this process (0 is the coordinator, and the one that
            writes the outputs).
    """

    addresses: tuple
    num_processes: int
    process_id: int

    @property
    def coordinator(self) -> str:
        return self.addresses[0]

    @property
    def is_writer(self) -> bool:
        return self.process_id == 0

    def describe(self) -> str:
        return f"process {self.process_id} of {self.num_processes} (coordinator {self.coordinator})"


def _integer(name: str, text: str, minimum: int) -> int:
    digits = text.strip()
    if not (digits.isascii() and digits.isdigit() and len(digits) <= _MAX_DIGITS) or int(digits) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum} (at most {_MAX_DIGITS} digits). "
                         f"Received: {name}={text[:100]!r}")
    return int(digits)


def _valid_address(address: str) -> bool:
    match = _ADDRESS.match(address)
    return match is not None and 0 < int(match["port"]) < 65536


def job_from_environment(environ: Optional[Mapping[str, str]] = None) -> Optional[MultiProcessJob]:
    """The job Keras' three variables describe, or ``None`` when none is set.

    Args:
        environ: the environment (default: ``os.environ``).

    Returns:
        A `MultiProcessJob`, or ``None`` (no variable set: one process).

    Raises:
        ValueError: some variables set but not all, or a value that is not
            allowed; the message names the variable.

    Example:

    >>> job_from_environment({}) is None
    True
    >>> job_from_environment({NUM_PROCESSES: "2"})
    Traceback (most recent call last):
    ...
    ValueError: a multi-process job needs all of ...; missing: KERAS_DISTRIBUTION_JOB_ADDRESSES, KERAS_DISTR...
    """
    environ = os.environ if environ is None else environ
    present = [name for name in JOB_VARIABLES if environ.get(name, "") != ""]
    if not present:
        return None
    odd = [name for name in present if not isinstance(environ[name], str)]
    if odd:
        raise ValueError(f"{odd[0]} must be a string (an environment variable's value). "
                         f"Received: {odd[0]}={environ[odd[0]]!r:.100}")
    missing = [name for name in JOB_VARIABLES if name not in present]
    if missing:
        raise ValueError(
            f"a multi-process job needs all of {', '.join(JOB_VARIABLES)}; missing: {', '.join(missing)}"
        )
    num_processes = _integer(NUM_PROCESSES, environ[NUM_PROCESSES], 1)
    process_id = _integer(PROCESS_ID, environ[PROCESS_ID], 0)
    if process_id >= num_processes:
        raise ValueError(
            f"{PROCESS_ID} must be below {NUM_PROCESSES}={num_processes} (0 to {num_processes - 1}). "
            f"Received: {PROCESS_ID}={process_id}"
        )
    addresses = tuple(a.strip() for a in environ[JOB_ADDRESSES].split(","))
    bad = [a for a in addresses if not _valid_address(a)]
    if bad:
        raise ValueError(
            f"{JOB_ADDRESSES} must be host:port (port 1 to 65535), or one host:port per process separated by "
            f"commas. Received: {JOB_ADDRESSES}={environ[JOB_ADDRESSES][:200]!r}"
        )
    if len(addresses) > 1 and len(addresses) != num_processes:
        raise ValueError(
            f"{JOB_ADDRESSES} lists {len(addresses)} addresses but {NUM_PROCESSES}={num_processes}: "
            "give the coordinator's address alone, or one per process"
        )
    return MultiProcessJob(addresses, num_processes, process_id)


def shard_indices(n: int, num_processes: int, process_id: int, seed: int, multiple: int = 1) -> np.ndarray:
    """The indices of `n` samples that process `process_id` trains on.

    A permutation given by `seed` (the same in every process) is cut to a
    multiple of ``num_processes * multiple`` and dealt out round-robin: the
    shares are disjoint, equal in size (a multiple of `multiple`, the local
    device count), the same every epoch, and together they hold every
    sample but fewer than ``num_processes * multiple``.

    Args:
        n: samples in the split.
        num_processes: processes in the job.
        process_id: this process.
        seed: seed of the permutation.
        multiple: every share's size is a multiple of this.

    Returns:
        An int array of indices into the split.

    Raises:
        ValueError: a split too small for one sample per device.

    Example:

    >>> shares = [shard_indices(11, 3, p, seed=1) for p in range(3)]
    >>> sorted(np.concatenate(shares).tolist()) == sorted(set(np.concatenate(shares).tolist()))
    True
    >>> [len(s) for s in shares]
    [3, 3, 3]
    """
    group = num_processes * multiple
    if n < group:
        raise ValueError(
            f"a split of {n} samples cannot give each of {group} devices ({num_processes} processes x "
            f"{multiple}) one sample: use more data or fewer devices"
        )
    order = np.random.default_rng(seed).permutation(n)[: n // group * group]
    return order[process_id::num_processes]


def share_size(n: int, num_processes: int, multiple: int = 1) -> int:
    """How many of `n` samples each process gets (`shard_indices`' length).

    Example:

    >>> share_size(1437, 2, 2)
    718
    """
    return n // (num_processes * multiple) * multiple
