"""The Dask task runner of a study, built from `execution.dask`."""

from __future__ import annotations

import importlib.util
from typing import Any

from prefect_dask import DaskTaskRunner

from simstudy.spec import DaskSettings

DEFAULT_WORKERS = 2
DEFAULT_THREADS_PER_WORKER = 1


def local_cluster_kwargs(settings: DaskSettings) -> dict[str, Any]:
    """Return LocalCluster arguments: worker processes on loopback only."""
    kwargs: dict[str, Any] = {
        "n_workers": settings.n_workers or DEFAULT_WORKERS,
        "threads_per_worker": settings.threads_per_worker or DEFAULT_THREADS_PER_WORKER,
        "processes": True,
        "host": "127.0.0.1",
        # The dashboard needs bokeh; without it distributed only warns, so ask for it
        # only when it can work.
        "dashboard_address": "127.0.0.1:0" if importlib.util.find_spec("bokeh") else None,
    }
    if settings.memory_limit:
        kwargs["memory_limit"] = settings.memory_limit
    return kwargs


def study_task_runner(settings: DaskSettings) -> DaskTaskRunner:
    """Return a DaskTaskRunner on the study's scheduler address or on a new local cluster."""
    if settings.address:
        return DaskTaskRunner(address=settings.address)
    return DaskTaskRunner(cluster_kwargs=local_cluster_kwargs(settings))
