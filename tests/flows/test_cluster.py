"""The study's local Dask cluster: quiet housekeeping, the user's Dask config respected."""

from __future__ import annotations

import contextlib
import socket
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import dask.config
import pyarrow.parquet as pq
import pytest
from distributed import Client

from flows.cluster import (
    local_cluster_kwargs,
    quiet_cluster_class,
    quiet_cluster_config,
    quiet_local_cluster,
    reachable_threads,
    study_task_runner,
)
from simstudy.allocation import Allocation
from simstudy.spec.study import DaskSettings, Study

PROFILER = "distributed.worker.profile.enabled"
ALLOWED_FAILURES = "distributed.scheduler.allowed-failures"
TICK = "distributed.admin.tick.interval"
LOG_LENGTH = "distributed.admin.low-level-log-length"
LARGE_GRAPH = "distributed.admin.large-graph-warning-threshold"


def test_quiet_config_leaves_what_the_user_set(monkeypatch: pytest.MonkeyPatch) -> None:
    logs = {LOG_LENGTH: 10, LARGE_GRAPH: "100GB"}
    assert quiet_cluster_config() == {PROFILER: False, TICK: "500ms", ALLOWED_FAILURES: 0, **logs}
    with dask.config.set({TICK: "100ms"}):
        assert quiet_cluster_config() == {PROFILER: False, ALLOWED_FAILURES: 0, **logs}
    # Asking for the default explicitly keeps it too.
    monkeypatch.setenv("DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED", "True")
    monkeypatch.setenv("DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES", "3")
    monkeypatch.setenv("DASK_DISTRIBUTED__ADMIN__LOW_LEVEL_LOG_LENGTH", "1000")
    monkeypatch.setenv("DASK_DISTRIBUTED__ADMIN__LARGE_GRAPH_WARNING_THRESHOLD", "10MB")
    assert quiet_cluster_config() == {TICK: "500ms"}


def test_local_studies_get_the_quiet_cluster_and_addresses_are_left_alone() -> None:
    assert study_task_runner(DaskSettings()).cluster_class is quiet_local_cluster
    runner = study_task_runner(DaskSettings(address="tcp://127.0.0.1:8786"))
    assert runner.cluster_class is None


def test_the_local_cluster_is_sized_to_a_slurm_job_s_allocation_not_the_node() -> None:
    job = Allocation(cpus=3, memory_bytes=6 * 2**30, source="slurm")
    kwargs = local_cluster_kwargs(DaskSettings(), job)
    assert (kwargs["n_workers"], kwargs["memory_limit"]) == (3, 2 * 2**30)
    threaded = local_cluster_kwargs(DaskSettings(threads_per_worker=2), job)
    assert (threaded["n_workers"], threaded["memory_limit"]) == (1, 6 * 2**30)
    adaptive = local_cluster_kwargs(DaskSettings(adapt={"minimum": 1, "maximum": 4}), job)
    assert (adaptive["n_workers"], adaptive["memory_limit"]) == (1, 1.5 * 2**30)
    # What the study says wins; on a machine alone, Dask's memory default stays.
    given = local_cluster_kwargs(DaskSettings(n_workers=2, memory_limit="1GiB"), job)
    assert (given["n_workers"], given["memory_limit"]) == (2, "1GiB")
    machine = local_cluster_kwargs(DaskSettings(), Allocation(4, 2**34, "machine"))
    assert machine["n_workers"] == 4 and "memory_limit" not in machine


def test_the_study_submits_for_the_threads_its_cluster_may_reach() -> None:
    class Runner:  # a started DaskTaskRunner's cluster, as far as this reads it
        def __init__(self, requested: int):
            self._cluster = type("Cluster", (), {"requested": set(range(requested))})()

    # An adaptive cluster that started with one 2-thread worker may reach its maximum.
    adaptive = DaskSettings(cluster_class="x.Y", adapt={"minimum": 1, "maximum": 5})
    assert reachable_threads(Runner(1), adaptive, joined=2, per_worker=2) == 10
    # Jobs still pending count; a scheduler at an address has only what joined.
    assert reachable_threads(Runner(4), DaskSettings(cluster_class="x.Y"), 1, 1) == 4
    assert reachable_threads(object(), DaskSettings(address="tcp://127.0.0.1:1"), 3, 1) == 3  # type: ignore[arg-type]


def worker_settings() -> tuple[object, object]:
    return dask.config.get(PROFILER), dask.config.get(TICK)


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.usefixtures("no_leftover_processes")
def test_scheduler_and_worker_processes_run_quiet() -> None:
    with (
        quiet_local_cluster(
            n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address=None
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        assert cluster.scheduler._tick_interval == 0.5
        assert list(client.run(worker_settings).values()) == [(False, "500ms")]
        running = client.run(
            lambda dask_worker: (
                "profile" in dask_worker.periodic_callbacks,
                dask_worker._tick_interval,
            )
        )
        assert list(running.values()) == [(False, 0.5)]
    # Nothing leaks into the Dask config of the process that built the cluster.
    assert (dask.config.get(PROFILER), dask.config.get(TICK)) == (True, "20ms")


def test_a_cluster_class_gets_its_kwargs_adapt_and_the_quiet_config() -> None:
    settings = DaskSettings(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={"n_workers": 1, "dashboard_address": None},
        adapt={"minimum": 1, "maximum": 2},
    )
    runner = study_task_runner(settings)
    assert callable(runner.cluster_class)
    # prefect-dask logs the builder under the class's own name.
    assert runner.cluster_class.__qualname__ == "LocalCluster"
    assert runner.cluster_kwargs == {"n_workers": 1, "dashboard_address": None}
    assert runner.adapt_kwargs == {"minimum": 1, "maximum": 2}
    local = study_task_runner(DaskSettings(adapt={"minimum": 1, "maximum": 3}))
    assert local.cluster_kwargs["n_workers"] == 1 and local.adapt_kwargs["maximum"] == 3


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.usefixtures("no_leftover_processes")
def test_a_local_cluster_class_takes_a_free_dashboard_port_quietly() -> None:
    build = quiet_cluster_class("distributed.LocalCluster")
    with socket.socket() as taken, warnings.catch_warnings(record=True) as caught:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with contextlib.suppress(OSError):  # held by someone else already: as good
            taken.bind(("127.0.0.1", 8787))
            taken.listen()
        warnings.simplefilter("always")
        with build(n_workers=1, host="127.0.0.1") as cluster:
            assert cluster.scheduler_info["workers"]
    assert not [str(w.message) for w in caught if "8787" in str(w.message)
                or "dashboard" in str(w.message).lower()]  # fmt: skip


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.usefixtures("prefect_api_url", "no_leftover_processes")
def test_study_runs_on_a_cluster_class_with_kwargs_and_adaptive_scaling(
    make_study: Callable[..., Study],
) -> None:
    from flows.study import simulation_study

    study = make_study(
        replicates=8,
        fixed={"sleep_s": 0.3},
        execution={
            "batch_size": 2,
            "dask": {
                "cluster_class": "distributed.LocalCluster",
                "cluster_kwargs": {
                    "threads_per_worker": 1,
                    "host": "127.0.0.1",
                    "dashboard_address": None,
                },
                "adapt": {"minimum": 1, "maximum": 2},
            },
        },
    )
    started = time.monotonic()
    state = simulation_study(study=study, return_state=True)
    assert state.is_completed(), state.message
    rows = pq.read_table(Path(study.output_dir) / "replicates.parquet").to_pylist()
    assert sorted((r["param_id"], r["replicate"]) for r in rows) == sorted(
        {(r["param_id"], i) for r in rows for i in range(8)}
    )
    assert len(rows) == 16 and {r["status"] for r in rows} == {"ok"}
    workers = {r["worker"] for r in rows}
    print(
        f"cluster class with adapt: {time.monotonic() - started:.1f} s, "
        f"{len(workers)} workers ran replicates"
    )
