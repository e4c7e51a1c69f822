"""Dask workers as batch jobs (Slurm, PBS, SGE, LSF, HTCondor...), through dask-jobqueue:
``runner.dask: {jobqueue: slurm, cores: 8, memory: 16GB, ...}``.

The runner starts a dask-jobqueue cluster (its scheduler runs in the runner's process) and
keeps ``jobs`` batch jobs, each one Dask worker, or grows and shrinks them with ``adapt``;
meow_async's jobs run on those workers as they run on any Dask worker. Closing the cluster
cancels its batch jobs. Needs ``pip install 'meow-async[dask]'``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ..exceptions import ConfigError
from ..model.config import JOBQUEUE_KEYS, JOBQUEUES

__all__ = ["start_jobqueue"]

logger = logging.getLogger("meow_async.conductors")


async def start_jobqueue(settings: Mapping[str, Any]) -> Any:
    """Start the batch system's cluster and its first batch jobs; returns the cluster."""
    system = str(settings["jobqueue"])
    try:
        import dask_jobqueue
    except ImportError as e:
        raise ConfigError(
            f"jobqueue: {system} needs dask-jobqueue ({e}): pip install 'meow-async[dask]'",
            where="runner",
            field="dask.jobqueue",
            value=system,
        ) from None
    cls = getattr(dask_jobqueue, JOBQUEUES[system])
    options = {k: settings[k] for k in JOBQUEUE_KEYS if k in settings}
    try:
        cluster = await cls(asynchronous=True, **options)
    except Exception as e:  # e.g. sbatch missing or refusing: say what and where
        raise ConfigError(
            f"could not start the {system} cluster: {e}",
            where="runner",
            field="dask",
            value=system,
        ) from None
    if "adapt" in settings:
        cluster.adapt(**settings["adapt"])
        how = "adaptive, {minimum_jobs}-{maximum_jobs} batch jobs".format(
            minimum_jobs=settings["adapt"].get("minimum_jobs", 0),
            maximum_jobs=settings["adapt"].get("maximum_jobs", "any"),
        )
    else:
        cluster.scale(jobs=int(settings.get("jobs", 1)))
        how = f"{settings.get('jobs', 1)} batch job(s)"
    logger.info(
        "Dask %s cluster started: %s of %s core(s) and %s each, scheduler %s",
        system,
        how,
        settings["cores"],
        settings["memory"],
        cluster.scheduler_address,
    )
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("batch job script:\n%s", cluster.job_script())
    return cluster
