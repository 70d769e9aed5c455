"""The Dask task runner of a study, built from `execution.dask`.

```python
>>> runner = study_task_runner(DaskSettings(cluster_class="distributed.LocalCluster",
...     cluster_kwargs={"n_workers": 1}, adapt={"minimum": 1, "maximum": 4}))
>>> with runner:
...     runner.client.scheduler_info()["workers"]
```
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import dask.config
from distributed import LocalCluster
from distributed.deploy import Cluster
from prefect_dask import DaskTaskRunner

from flows.lifeline import LifelinePlugin
from simstudy.allocation import Allocation, current_allocation
from simstudy.spec.readiness import import_cluster_class
from simstudy.spec.study import MIN_WORKER_MEMORY_BYTES, DaskSettings

DEFAULT_THREADS_PER_WORKER = 1

# distributed runs its own cluster tests with these two settings. At its defaults every
# worker samples its thread's stack every 10 ms for the dashboard's profile (a model in a
# child process shows up there as one pipe read) and every server checks its event loop
# every 20 ms: together ~0.1 of a core on an idle 2-worker cluster, measured, and that
# core is taken from the models on a small machine. A 500 ms tick still reports an event
# loop blocked for longer than `distributed.admin.tick.limit` (3 s).
QUIET_CLUSTER_CONFIG: dict[str, Any] = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "500ms",
    # A task whose worker died is not rerun by the scheduler (at its default it reruns
    # the whole batch up to 3 times, unseen by the flow): the orchestrator reruns only the
    # replicates without a result, and counts every execution.
    "distributed.scheduler.allowed-failures": 0,
    # Every connection keeps its last N messages for debugging, a scheduler its last N
    # transitions and events; at 1,000 the messages held every task's arguments: a set's
    # statistics, a run's outputs. Measured on a long-lived scheduler, 20 x 200-replicate
    # studies of 365-point series: +29 MiB a study, and in the flow process the client
    # kept its last 1,000 submissions.
    "distributed.admin.low-level-log-length": 10,
    # An aggregation gets its set's batch statistics as values, by design (no task waits
    # on others), and a long series makes them large: 69 MiB for 4 replicates of a
    # 1,000,000-point series. The warning's advice (load the data with Dask) does not apply.
    "distributed.admin.large-graph-warning-threshold": "100GB",
}


def quiet_cluster_config() -> dict[str, Any]:
    """Return the quiet settings that the user's Dask configuration does not set."""
    stock = dask.config.merge(*dask.config.defaults)
    # Set in a YAML file or a DASK_ variable (even to the default), or with dask.config.set.
    user = dask.config.collect()
    return {
        key: value
        for key, value in QUIET_CLUSTER_CONFIG.items()
        if dask.config.get(key, None, config=user) is None
        and dask.config.get(key) == dask.config.get(key, config=stock)
    }


DASHBOARD_ADDRESS = "127.0.0.1:0"
"""The scheduler's HTTP address (the dashboard's too, with bokeh): any free loopback port.
It serves HTTP whatever the dashboard setting, at 8787 by default: taken by any other
cluster on the machine, a UserWarning in the user's run."""


def quiet_local_cluster(**kwargs: Any) -> LocalCluster:
    """Return a LocalCluster that uses `quiet_cluster_config` and dies with this process."""
    # Servers read these when they are built, and nannies hand their config to the
    # worker processes they (re)start, so setting them around construction is enough.
    kwargs.setdefault("plugins", (LifelinePlugin(os.getpid()),))
    with dask.config.set(quiet_cluster_config()):
        return LocalCluster(**kwargs)


def quiet_cluster_class(path: str) -> Callable[..., Cluster]:
    """Return a builder of the cluster class at `path` that uses `quiet_cluster_config`."""
    cluster_class = import_cluster_class(path)
    local = issubclass(cluster_class, LocalCluster)

    def build(**kwargs: Any) -> Cluster:
        # What starts in this process (a LocalCluster, or the scheduler dask-jobqueue runs
        # here) reads the settings at construction; `allowed-failures: 0` keeps the
        # scheduler from rerunning a lost batch unseen by the flow.
        if local:
            kwargs.setdefault("plugins", (LifelinePlugin(os.getpid()),))
            kwargs.setdefault("dashboard_address", DASHBOARD_ADDRESS)
        with dask.config.set(quiet_cluster_config()):
            cluster: Cluster = cluster_class(**kwargs)
        return cluster

    # prefect-dask logs the builder's qualified name: show the class's.
    build.__module__, build.__qualname__ = cluster_class.__module__, cluster_class.__qualname__
    return build


def local_cluster_kwargs(
    settings: DaskSettings, allocation: Allocation | None = None
) -> dict[str, Any]:
    """Return LocalCluster arguments: worker processes on loopback only, sized by default
    to what this process may use (a Slurm job's allocation, a cgroup's limits), not the node."""
    allocation = allocation or current_allocation()
    threads = settings.threads_per_worker or DEFAULT_THREADS_PER_WORKER
    default_workers = max(1, allocation.cpus // threads)
    workers = settings.adapt.minimum if settings.adapt else settings.n_workers
    kwargs: dict[str, Any] = {
        "n_workers": workers or default_workers,
        "threads_per_worker": threads,
        "processes": True,
        "host": "127.0.0.1",
        "dashboard_address": DASHBOARD_ADDRESS,
    }
    if settings.memory_limit:
        kwargs["memory_limit"] = settings.memory_limit
    elif allocation.source != "machine":
        # Dask's default shares the node's memory (or the cgroup's) among the workers;
        # a Slurm job's memory is known only from its environment.
        largest = settings.adapt.maximum if settings.adapt else kwargs["n_workers"]
        kwargs["memory_limit"] = max(MIN_WORKER_MEMORY_BYTES, allocation.memory_bytes // largest)
    return kwargs


def local_cluster_description(settings: DaskSettings) -> str | None:
    """Return how the local cluster is sized and why (None: not a local cluster)."""
    if settings.address or settings.cluster_class:
        return None
    allocation = current_allocation()
    kwargs = local_cluster_kwargs(settings, allocation)
    workers = (
        f"{settings.adapt.minimum}-{settings.adapt.maximum} workers"
        if settings.adapt
        else f"{kwargs['n_workers']} worker(s)"
    )
    memory = kwargs.get("memory_limit", "Dask's default")
    if isinstance(memory, int):
        memory = f"{memory / 2**30:.1f} GiB"
    return (
        f"local cluster: {workers} x {kwargs['threads_per_worker']} thread(s), memory limit "
        f"{memory} each; this process may use {allocation.describe()}"
    )


@contextmanager
def started_task_runner(
    settings: DaskSettings, logger: logging.Logger | logging.LoggerAdapter[Any] | None = None
) -> Iterator[DaskTaskRunner]:
    """Enter the study's task runner; its client (and any cluster it starts) get the quiet
    settings, so the flow process's own connections keep short message logs too."""
    described = local_cluster_description(settings)
    if described and logger is not None:
        logger.info(described)
    with dask.config.set(quiet_cluster_config()), study_task_runner(settings) as runner:
        runner.client  # noqa: B018 (created now, while the settings apply)
        yield runner


def reachable_threads(
    runner: DaskTaskRunner, settings: DaskSettings, joined: int, per_worker: int
) -> int:
    """Return the worker threads the cluster may reach, not only those that joined first.

    An adaptive cluster grows only when the scheduler holds more work than its workers can
    take; a study that submits for the first worker alone keeps it at its minimum (measured:
    a calibration on SLURMCluster, adapt 1-2, never had a second job). Workers a started
    cluster asked for (jobs still pending) count too.
    """
    cluster = getattr(runner, "_cluster", None)
    requested = len(getattr(cluster, "requested", None) or ())
    planned = max(settings.adapt.maximum if settings.adapt else 0, requested)
    return max(joined, planned * per_worker)


def study_task_runner(settings: DaskSettings) -> DaskTaskRunner:
    """Return a DaskTaskRunner on the study's scheduler address or on a cluster it starts."""
    if settings.address:
        return DaskTaskRunner(address=settings.address)
    adapt = settings.adapt.model_dump() if settings.adapt else None
    if settings.cluster_class:
        return DaskTaskRunner(
            cluster_class=quiet_cluster_class(settings.cluster_class),
            cluster_kwargs=dict(settings.cluster_kwargs),
            adapt_kwargs=adapt,
        )
    return DaskTaskRunner(
        cluster_class=quiet_local_cluster,
        cluster_kwargs=local_cluster_kwargs(settings),
        adapt_kwargs=adapt,
    )
