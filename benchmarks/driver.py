"""One timed run of `benchmarks.overhead`, in a process of its own (not a test).

    python -m benchmarks.driver --go-fd R --report-fd W '{"system": "plain dask", ...}'

Started by `benchmarks.overhead` once per system, cost and repetition, so that the peak
resident memory of the process that runs the flow (or the plain Dask client) is its own
(`ru_maxrss`), not that of a benchmark process that ran every system before it. Like
`simstudy run` on a local cluster, this process holds the flow and the Dask scheduler;
the workers are its children. It starts the cluster, warms it up (untimed), then talks to
the benchmark over two pipes, one JSON object a line:

    driver -> benchmark  {"warm_up": s}
    benchmark -> driver  go                      (the benchmark's meters are running)
    driver -> benchmark  {"started": t, "ended": t, "busy": {...}}   (the timed study)
    driver -> benchmark  {"flow_peak_rss": bytes, "task_runs": n or null}
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import time
import warnings
from collections.abc import Callable
from functools import partial
from typing import Any, TextIO
from uuid import UUID

import numpy as np
from distributed import Client, LocalCluster, get_task_stream

from benchmarks.burn import simulate
from simstudy.spec.study import Study

MODEL = "benchmarks.burn:simulate"
WARM_UP_COST_MS = 100.0
"""Replicate cost of the warm-up study: long enough that Dask spreads its tasks over workers."""
WARM_UP_ATTEMPTS = 5
TASK_RUN_COUNT_SECONDS = 15.0
"""How long to wait for the API's task-run count to settle (task runs arrive as events)."""


def model_params(cost_ms: float, series: int) -> dict[str, Any]:
    """Return the fixed parameters of the benchmark model (no `series` key without one)."""
    return {"cost_ms": cost_ms, **({"series": series} if series else {})}


def aggregate(*outputs: dict[str, Any]) -> dict[str, Any]:
    """Plain-Dask aggregation: mean and std of one output, and per point of the series."""
    values = np.array([o["draw"] for o in outputs])
    result: dict[str, Any] = {"mean": float(values.mean()), "std": float(values.std(ddof=1))}
    if "counts" in outputs[0]:
        series = np.stack([o["counts"] for o in outputs])
        result["counts_mean"] = series.mean(axis=0)
        result["counts_std"] = series.std(axis=0, ddof=1)
    return result


def run_plain_dask(
    client: Client, sets: int, replicates: int, cost_ms: float, series: int = 0
) -> None:
    """One task per replicate, one aggregation per set receiving the futures."""
    aggregates = []
    for s in range(sets):
        params = {**model_params(cost_ms, series), "set": s}
        futures = [client.submit(simulate, params, r, pure=False) for r in range(replicates)]
        aggregates.append(client.submit(aggregate, *futures, pure=False))
    client.gather(aggregates)


def run_simstudy(
    address: str,
    sets: int,
    replicates: int,
    cost_ms: float,
    runner: str,
    batch_size: int | str = "auto",
    series: int = 0,
) -> UUID | None:
    """Run the same study through the simulation-study flow; return its flow run's id."""
    from flows.study import simulation_study

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = Study.model_validate(
            {
                "name": f"bench-{runner}",
                "model": MODEL,
                "fixed": model_params(cost_ms, series),
                "parameters": {"grid": {"set": list(range(sets))}},
                "replicates": replicates,
                "seed": 1,
                "execution": {
                    "runner": runner,
                    "timeout_seconds": 60,
                    "batch_size": batch_size,
                    "dask": {"address": address},
                },
                "output": (
                    f"/tmp/simstudy-bench/{runner}-{sets}x{replicates}-{cost_ms:g}-s{series}"
                ),
            }
        )
    state = simulation_study(study=study, overwrite=True, return_state=True)
    assert state.is_completed(), state.message
    return state.state_details.flow_run_id


def warm_up_every_worker(client: Client, run: Callable[..., Any], workers: int) -> float:
    """Run tiny studies until every worker has run a task of this system; return the wall time.

    So that the timed study finds each system's code imported, and its first task run in
    each worker process done, in this process and on every worker, as every study but a
    cluster's first does. One study of 1 set x 2 replicates left the second worker cold:
    its first batch of the timed study started ~1.4 s after the first worker's.
    """
    started = time.time()
    warmed: set[str] = set()
    for _ in range(WARM_UP_ATTEMPTS):
        with get_task_stream(client) as stream:
            run(workers, 2, WARM_UP_COST_MS)
        warmed.update(task["worker"] for task in stream.data)
        if len(warmed) >= workers:
            return time.time() - started
    raise RuntimeError(f"warm-up reached {len(warmed)} of {workers} workers")


def worker_busy(stream: list[dict[str, Any]], started: float, ended: float) -> dict[str, float]:
    """Return how long Dask tasks ran, and the idle time before the first and after the last."""
    by_worker: dict[str, list[tuple[float, float]]] = {}
    for task in stream:
        for span in task.get("startstops", ()):
            if span["action"] == "compute":
                by_worker.setdefault(task["worker"], []).append((span["start"], span["stop"]))
    spans = [span for worker_spans in by_worker.values() for span in worker_spans]
    return {
        "busy": sum(stop - start for start, stop in spans),
        "head": sum(min(a for a, _ in w) - started for w in by_worker.values()),
        "tail": sum(ended - max(b for _, b in w) for w in by_worker.values()),
    }


def count_task_runs(flow_run_id: UUID) -> int:
    """Return the flow run's task runs in the Prefect API, once the count stops changing.

    Task runs reach the API as events, recorded asynchronously, so the count read just
    after the flow returned can still be short.
    """
    from prefect.client.orchestration import get_client

    body = {"flow_runs": {"id": {"any_": [str(flow_run_id)]}}}
    deadline = time.monotonic() + TASK_RUN_COUNT_SECONDS
    last = -1
    with get_client(sync_client=True) as client:
        while True:
            response = client.request("POST", "/task_runs/count", json=body)
            response.raise_for_status()
            count = int(response.json())
            if count == last or time.monotonic() > deadline:
                return count
            last = count
            time.sleep(1.0)


def send(pipe: TextIO, message: dict[str, Any]) -> None:
    """Write one JSON line to the benchmark."""
    pipe.write(json.dumps(message) + "\n")
    pipe.flush()


def new_cluster(workers: int, stock_dask_config: bool) -> LocalCluster:
    """Return the cluster of one run: the quiet one `simstudy run` starts, or stock."""
    from flows.cluster import quiet_local_cluster

    make = LocalCluster if stock_dask_config else quiet_local_cluster
    return make(n_workers=workers, threads_per_worker=1, host="127.0.0.1", dashboard_address=None)


def no_heartbeats() -> contextlib.AbstractContextManager[Any]:
    """Return the setting flows.api.prefect_api gives a `simstudy run`: no flow heartbeats.

    With heartbeats the flow engine waits up to 1 s for its heartbeat thread at the end of
    every flow run. (Prefect is imported here only: the plain Dask client never needs it.)
    """
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    return temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})


def drive(config: dict[str, Any], go: TextIO, report: TextIO) -> None:
    """Start the cluster, warm up, wait for the go, run the timed study and report."""
    system, workers, series = config["system"], config["workers"], config["series"]
    with (
        no_heartbeats() if system != "plain dask" else contextlib.nullcontext(),
        new_cluster(workers, config["stock_dask_config"]) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        run: Callable[..., Any]
        if system == "plain dask":
            run = partial(run_plain_dask, client, series=series)
        else:
            size = config["batch_size"]
            run = partial(
                run_simstudy,
                cluster.scheduler_address,
                runner=system.split()[1],
                batch_size=size if size == "auto" else int(size),
                series=series,
            )
        send(report, {"warm_up": warm_up_every_worker(client, run, workers)})
        if go.readline().strip() != "go":
            raise SystemExit("benchmark went away before the timed run")
        with get_task_stream(client) as stream:
            started = time.time()
            flow_run_id = run(config["sets"], config["replicates"], config["cost_ms"])
            ended = time.time()
        send(
            report,
            {
                "started": started,
                "ended": ended,
                "busy": worker_busy(stream.data, started, ended),
            },
        )
        task_runs = count_task_runs(flow_run_id) if flow_run_id else None
        # ru_maxrss is in KiB on Linux.
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        send(report, {"flow_peak_rss": peak, "task_runs": task_runs})


def main() -> None:
    """Run one system as the benchmark asks."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--go-fd", type=int, required=True)
    parser.add_argument("--report-fd", type=int, required=True)
    parser.add_argument("config", help="JSON: system, workers, sets, replicates, cost_ms, ...")
    args = parser.parse_args()
    with (
        os.fdopen(args.go_fd, "r") as go,
        os.fdopen(args.report_fd, "w") as report,
    ):
        drive(json.loads(args.config), go, report)


if __name__ == "__main__":
    main()
