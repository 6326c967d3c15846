"""A training job of several processes (JAX): joining it, and working in it.

`initialize_job` joins this process to the job that Keras'
``KERAS_DISTRIBUTION_*`` variables describe (`core.cluster`), with gloo's
collectives at an address the other processes reach (`addresses`). A job
that does not form ends every process with one line on stderr; once it
formed, the job's `watchdog.JobMonitor` sees a process that went silent.
Afterwards `distribute.data_parallel` spans every process's devices. In the
job, `local_section` is for what one process does alone (writing a file),
`gather_from_processes` collects one number from every process, and
`lost_process_message` names a process that went away
(docs/several-hosts.md).

TensorFlow's multi-worker strategy fails under Keras 3
(`TF_MULTI_WORKER_REPORT`), so `refuse_tf_multi_worker` turns down a
``TF_CONFIG`` with several workers before anything connects.

Example:

>>> from keras_densenet.training import multiprocess
>>> multiprocess.tf_config_workers({"TF_CONFIG": '{"cluster": {"worker": ["a:1", "b:2"]}}'})
2
>>> multiprocess.tf_config_workers({})
1

Joining a job, as the CLI does::

    job = cluster.job_from_environment()
    if job is not None:
        multiprocess.initialize_job(job)
    plan = distribute.data_parallel()
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import json
import os
import re
import sys
import tempfile
import threading
from typing import Optional

import keras
import numpy as np

from keras_densenet.core import checks, cluster, internals
from keras_densenet.training import addresses, watchdog

#: The upstream report of Keras 3 failing under MultiWorkerMirroredStrategy.
TF_MULTI_WORKER_REPORT = "https://github.com/keras-team/keras/issues/20585"
#: Where TensorFlow reads a multi-worker job from.
TF_CONFIG = "TF_CONFIG"


def tf_config_workers(environ=None) -> int:
    """Workers in ``TF_CONFIG``'s cluster (1 when unset).

    Raises:
        ValueError: ``TF_CONFIG`` is not a JSON object.
    """
    text = (os.environ if environ is None else environ).get(TF_CONFIG, "")
    try:
        cluster_spec = json.loads(text).get("cluster", {}) if text else {}
    except (ValueError, AttributeError):
        raise ValueError(f"{TF_CONFIG} is not a JSON object: {text[:80]!r}") from None
    return sum(len(cluster_spec.get(kind, [])) for kind in ("chief", "worker")) or 1


def refuse_tf_multi_worker() -> None:
    """Raises a ValueError when ``TF_CONFIG`` names several workers.

    Keras 3's `fit` fails under `tf.distribute.MultiWorkerMirroredStrategy`
    (tests/test_multiprocess.py keeps the failure as an expected one), so
    say so before connecting."""
    workers = tf_config_workers()
    if workers > 1:
        raise ValueError(
            f"{TF_CONFIG} describes {workers} workers, but Keras 3's model.fit fails under "
            "tf.distribute.MultiWorkerMirroredStrategy (\"Attempt to convert a value (PerReplica...) "
            f"with an unsupported type\", {TF_MULTI_WORKER_REPORT}); train several processes on the "
            "jax backend with Keras' KERAS_DISTRIBUTION_* variables instead"
        )


#: Whether `initialize_job` joined a job in this process.
_JOINED = [False]
#: gloo's lines of a connection it will retry: noise once the job formed.
_GLOO_RETRY = re.compile(rb"^.*gloo.*willRetry=1.*\n?", re.MULTILINE)


class _Forming:
    """A job on its way to form: what its one line says if it does not."""

    def __init__(self, job: cluster.MultiProcessJob, timeout_s: float, endpoint):
        self.job, self.timeout_s, self.endpoint = job, timeout_s, endpoint
        self.monitor = None  # once every process reached the coordinator
        self.error_fd = 2

    def line(self, cause: str) -> str:
        job = self.job
        if self.monitor is None:
            advice = (f"check that {job.coordinator} is reachable from every process, that process 0 runs, and "
                      f"that every process has the same {cluster.NUM_PROCESSES}={job.num_processes}")
        else:
            where = self.endpoint.describe() if self.endpoint is not None else "gloo's own choice"
            advice = (f"every process reached the coordinator, but the collectives did not connect. Each "
                      f"process's collectives listen at an address that the others must reach, here {where}: "
                      f"name one in every process with {addresses.GLOO_ADDRESS} or train --gloo-address "
                      "(an address or interface of its host)")
        # "within 120 s", or what went wrong
        cause = cause if cause.startswith("within ") else f"({cause})"
        return f"{job.describe()} could not form the job {cause}: {advice}"

    def give_up(self) -> None:
        # Runs in a timer thread while the main thread blocks in JAX: nothing
        # can be unwound from here, and JAX cannot connect twice.
        self.stop(f"within {self.timeout_s:g} s")

    def stop(self, cause: str) -> None:
        """Ends this process in one line (and, once it reached the
        coordinator, tells the others, which end in theirs)."""
        if self.monitor is not None:
            told = f"not formed {cause}" if cause.startswith("within ") else cause  # what the others print
            self.monitor.stop(None, told, line=self.line(cause), code=watchdog.NOT_FORMED, kind="form")
        watchdog.exit_once(self.line(cause), watchdog.NOT_FORMED, error_fd=self.error_fd)


def _cause(error: BaseException) -> str:
    """An error of JAX's runtime in a few words (its first line, no source locations)."""
    lines = str(error).strip().splitlines()
    text = re.sub(r"\[[\w./-]+:\d+\] ", "", lines[0]) if lines else ""
    return (text or type(error).__name__)[:240]


def _gloo_endpoint(job: cluster.MultiProcessJob, gloo_address):
    """Where gloo listens (``None``: the collectives are not gloo's)."""
    import jax

    try:
        implementation = jax.config.jax_cpu_collectives_implementation
    except AttributeError:  # an older JAX's config
        implementation = os.environ.get("JAX_CPU_COLLECTIVES_IMPLEMENTATION", "gloo")
    if implementation != "gloo":
        return None
    endpoint = addresses.gloo_endpoint(job.coordinator, gloo_address)
    if endpoint.hostname is None and endpoint.interface is None:
        return endpoint
    if not internals.use_gloo_address(endpoint.hostname, endpoint.interface):
        return dataclasses.replace(endpoint, hostname=None, interface=None,
                                   source=f"this JAX cannot be told {endpoint.describe()}: gloo's own choice")
    return endpoint


def initialize_job(job: cluster.MultiProcessJob, connect_timeout_s: float = cluster.DEFAULT_CONNECT_TIMEOUT_S,
                   cpu_devices=None, gloo_address: Optional[str] = None,
                   silence_timeout_s: float = watchdog.DEFAULT_SILENCE_S) -> None:
    """Joins this process to a multi-process JAX job, before any device is used.

    Does what `keras.distribution.initialize` does (`jax.distributed.initialize`,
    then Keras' agreement on a random seed, the first collective), and
    between the two starts the job's `watchdog.JobMonitor`. On CPUs, JAX's
    collectives across processes need an implementation: gloo, unless
    ``JAX_CPU_COLLECTIVES_IMPLEMENTATION`` says otherwise; it listens at
    `addresses.gloo_endpoint`. Afterwards `distribute.data_parallel` spans
    every process's devices.

    A job that cannot form (a process missing, a wrong process count, an
    unreachable coordinator, collectives that cannot connect) ends every
    process that reached the coordinator, and every process that waited
    `connect_timeout_s`, with one line on stderr and exit status 2: JAX can
    neither cancel nor retry the connection. Once formed, a process silent
    for `silence_timeout_s` ends the others with exit status 1
    (`watchdog`).

    Args:
        job: this process's job (`cluster.job_from_environment`).
        connect_timeout_s: seconds to wait for the job to form.
        cpu_devices: split this process's CPU into that many JAX devices
            (``jax_num_cpu_devices``), to try the job without accelerators.
        gloo_address: an address or network interface of this host that
            the other processes reach, for gloo's collectives (default:
            ``KERAS_DENSENET_GLOO_ADDRESS``, else the local address of the
            route to the coordinator).
        silence_timeout_s: seconds without a sign of life from another
            process after which it is lost (JAX's own heartbeat gives up
            after 100 s, and aborts).

    Raises:
        ValueError: not on the JAX backend, or a `gloo_address` that is no
            address or interface of this host.

    Example::

        job = cluster.job_from_environment()
        if job is not None:
            initialize_job(job)
        plan = distribute.data_parallel()
    """
    if keras.backend.backend() != "jax":
        raise ValueError(
            f"several processes ({cluster.NUM_PROCESSES}={job.num_processes}) train on the jax backend only; "
            f"Keras' {keras.backend.backend()} backend has no multi-process engine"
            + (f" that works ({TF_MULTI_WORKER_REPORT})" if keras.backend.backend() == "tensorflow" else "")
        )
    checks.positive("silence_timeout_s", silence_timeout_s)
    import jax

    set_cpu_devices(cpu_devices)
    if "JAX_CPU_COLLECTIVES_IMPLEMENTATION" not in os.environ:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    forming = _Forming(job, connect_timeout_s, _gloo_endpoint(job, gloo_address))
    runtime_error = getattr(jax.errors, "JaxRuntimeError", RuntimeError)
    timer = threading.Timer(connect_timeout_s, forming.give_up)
    timer.daemon = True
    with _output_held(forming):
        timer.start()
        try:
            jax.distributed.initialize(job.coordinator, job.num_processes, job.process_id)
            forming.monitor = _start_monitor(job, silence_timeout_s, forming)
            internals.initialize_keras_rng()  # the first collective: gloo connects
        except runtime_error as e:
            forming.stop(_cause(e))
        finally:
            timer.cancel()
    if forming.monitor is not None:
        forming.monitor.formed = True
        atexit.register(forming.monitor.finish)  # runs before JAX's exit handler, which waits for every process
    _JOINED[0] = True


def _start_monitor(job: cluster.MultiProcessJob, silence_s: float, forming: _Forming):
    monitor = watchdog.JobMonitor(internals.distributed_client(), job.num_processes, job.process_id, silence_s,
                                  not_formed_line=forming.line)
    monitor.error_fd = forming.error_fd
    try:
        return monitor.start()
    except Exception as e:  # noqa: BLE001 -- a JAX whose store lacks a call: run unwatched
        os.write(forming.error_fd, (
            f"keras-densenet: warning: cannot watch the job's processes ({_cause(e)}): a host that vanishes "
            "is noticed by JAX's heartbeat only\n").encode())
        return None


@contextlib.contextmanager
def _output_held(forming: _Forming):
    """File descriptors 1 and 2 go to a file inside, replayed on stderr
    afterwards without gloo's retries: gloo prints while the job forms, and
    a job that cannot form ends in one line (on `forming.error_fd`, which
    still reaches stderr)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 1)
        os.dup2(held.fileno(), 2)
        forming.error_fd = saved[1]
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            forming.error_fd = 2
            if forming.monitor is not None:
                forming.monitor.error_fd = 2
            os.close(saved[0])
            os.close(saved[1])
            held.seek(0)
            text = _GLOO_RETRY.sub(b"", held.read())
            if text:
                os.write(2, text)


def jax_job_started() -> bool:
    """Whether this process has joined a multi-process JAX job already."""
    import jax

    # jax.distributed.is_initialized is recent; before it, what we started
    is_initialized = getattr(jax.distributed, "is_initialized", None)
    return bool(is_initialized()) if is_initialized is not None else _JOINED[0]


def set_cpu_devices(count) -> None:
    """JAX: this process's CPU as `count` devices (before any device is
    used; ``None`` leaves JAX's default, one)."""
    if count is None:
        return
    import jax

    checks.integer("cpu_devices", count)
    jax.config.update("jax_num_cpu_devices", int(count))


@contextlib.contextmanager
def local_section():
    """No distribution inside: for what one process does alone, such as
    writing a file. Keras' saving builds reference objects whose variables
    a distribution would place with a collective that every process must
    join (process 0 saving alone would wait forever)."""
    current = keras.distribution.distribution()
    keras.distribution.set_distribution(None)
    try:
        yield
    finally:
        keras.distribution.set_distribution(current)


def gather_from_processes(value: int, plan) -> list:
    """Every process's `value`, in process order.

    A collective: every process of the `distribute.DataParallelPlan`'s job
    must call it; ``[value]`` in a one-process job.
    """
    if plan.num_processes == 1:
        return [int(value)]
    from jax.experimental import multihost_utils

    return [int(v) for v in np.asarray(multihost_utils.process_allgather(np.int32(value)))]


#: Error texts of a collective whose peer process went away (gloo's TCP
#: pair, or the coordination service's heartbeat).
_LOST_PEER = ("Connection closed by peer", "Connection reset by peer", "heartbeat", "Gloo", "unhealthy")
#: The parts of such an error worth one line.
_CAUSES = (r"Gloo [\w-]+ failed", r"Connection (closed|reset) by peer( \S+)?", r"Task \d+ heartbeat timeout")


def lost_process_cause(error: BaseException, plan) -> Optional[str]:
    """What in `error` shows that another process of the job went away,
    in a few words; ``None`` when it does not (or there is no job).

    Args:
        error: what `train` raised.
        plan: the `distribute.DataParallelPlan` it trained with, or ``None``.
    """
    if plan is None or plan.num_processes == 1:
        return None
    text = str(error)
    if not any(marker in text for marker in _LOST_PEER):
        return None
    # e.g. "Gloo all-reduce failed: [.../pair.cc:547] Connection closed by peer [127.0.0.1]:22722"
    found = [m.group(0) for m in (re.search(cause, text) for cause in _CAUSES) if m] or [text.strip()[:160]]
    return "; ".join(found)


def lost_process_message(error: BaseException, plan) -> Optional[str]:
    """One line naming the lost process, when `error` is a collective that
    failed because another process of the job went away; else ``None``.

    Args:
        error: what `train` raised.
        plan: the `distribute.DataParallelPlan` it trained with, or ``None``.
    """
    cause = lost_process_cause(error, plan)
    return None if cause is None else watchdog.lost_line(plan.num_processes, plan.process_id, cause=cause)
