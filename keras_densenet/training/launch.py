"""Starting a training process's data parallelism, and stopping it at once
when its multi-process job loses a process.

Both import keras (through `training.distribute` and
`training.multiprocess`) when called, not when this module is imported: the
command line chooses the backend first.

Example::

    from keras_densenet.training import launch
    from keras_densenet.training.config import TrainConfig
    from keras_densenet.training.train import train

    config = TrainConfig(distribute=True)
    plan = launch.start_data_parallel(config, cpu_devices=2)  # JAX: 2 CPU devices
    with launch.stop_on_lost_process(plan, "my-trainer"):
        train(config, distribution=plan)
"""

from __future__ import annotations

import contextlib
from typing import Optional

from keras_densenet.core import checks, cluster


def start_data_parallel(config, cpu_devices: Optional[int] = None,
                        connect_timeout: float = cluster.DEFAULT_CONNECT_TIMEOUT_S,
                        gloo_address: Optional[str] = None):
    """The data-parallel plan of `config.distribute` (``None`` without it).

    First joins the multi-process job that Keras' ``KERAS_DISTRIBUTION_*``
    variables describe, if any, before anything uses a device.

    Args:
        config: a `TrainConfig`.
        cpu_devices: JAX only: split this process's CPU into that many
            devices (``None``: as it is).
        connect_timeout: several processes: seconds to wait for the job.
        gloo_address: several processes on CPUs: the address or interface
            of this host where gloo's collectives listen
            (`multiprocess.initialize_job`; default: the environment's
            ``KERAS_DENSENET_GLOO_ADDRESS``, else the address of the route
            to the coordinator).

    Returns:
        A `distribute.DataParallelPlan`, or ``None``.

    Raises:
        ValueError: `cpu_devices` on another backend than JAX, or not a
            positive integer; a `gloo_address` that is no address or
            interface of this host.
    """
    if not config.distribute:
        return None
    import keras

    from keras_densenet.training import distribute, multiprocess

    if cpu_devices is not None:
        checks.integer("cpu_devices", cpu_devices)
        if keras.backend.backend() != "jax":
            raise ValueError(f"`cpu_devices` applies to the jax backend only, not {keras.backend.backend()}")
    job = cluster.job_from_environment()
    if job is not None:
        multiprocess.initialize_job(job, connect_timeout, cpu_devices, gloo_address)
    else:
        multiprocess.set_cpu_devices(cpu_devices)
    return distribute.data_parallel(sync_bn=config.sync_bn)


@contextlib.contextmanager
def stop_on_lost_process(plan, prefix: str):
    """Within: a multi-process job that loses a process ends this process
    at once with exit code 1 and one line on stderr,
    ``PREFIX: error: lost process N ...``, and the job's other processes
    with theirs (`watchdog`).

    A process that was killed shows as an error of the next collective; one
    that went silent (its host down, its link cut), to the job's
    `watchdog.JobMonitor` while this process waits in a collective. JAX's
    exit handler would wait for the lost process: `os._exit` skips it.
    Other errors, and every error without a multi-process `plan`, pass. On
    a normal end, the others stop watching this process.
    """
    from keras_densenet.training import watchdog

    monitor = watchdog.current() if plan is not None and plan.num_processes > 1 else None
    if monitor is not None:
        monitor.prefix, monitor.formed = prefix, True
    try:
        yield
    except Exception as e:  # noqa: BLE001 -- JAX raises its runtime errors as several types
        if plan is None:
            raise
        from keras_densenet.training import multiprocess

        cause = multiprocess.lost_process_cause(e, plan)
        if cause is None:
            raise
        line = watchdog.lost_line(plan.num_processes, plan.process_id, cause=cause)
        lost = 1 - plan.process_id if plan.num_processes == 2 else None  # of two, the other one
        watchdog.stop_job(line, cause, watchdog.LOST, lost, prefix=prefix)
    if monitor is not None:
        monitor.finish()
