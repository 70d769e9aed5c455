"""simstudy against plain dask.distributed on the same local cluster (not a test).

    python -m benchmarks.overhead [--sets 20] [--replicates 200] [--costs 0 50] [--workers 2]

For each model cost, runs the same study (sets x replicates of a model burning a fixed
CPU time) with plain dask.distributed (one task per replicate, one aggregation per
parameter set receiving its futures) and with simstudy (process runner, and thread
runner), on a fresh, identical LocalCluster per run: the quiet one `simstudy run` starts
(`--stock-dask-config` for distributed's defaults). Cluster start and a tiny warm-up study
of each system on its cluster (one 2-replicate set per worker, repeated until every worker
has run one of its tasks) are not timed; the warm-up's wall time is printed. Prints wall
time, the ideal (replicates x cost / worker threads), per-replicate overhead against the
ideal, the ratio to the plain Dask run of the same repetition, and the peak resident
memory of this process and all its children.
"""

from __future__ import annotations

import argparse
import contextlib
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import psutil
from distributed import Client, LocalCluster, get_task_stream

from benchmarks.burn import simulate
from simstudy.spec import Study

MODEL = "benchmarks.burn:simulate"
SYSTEMS = ("plain dask", "simstudy process", "simstudy thread")
WARM_UP_COST_MS = 100.0
"""Replicate cost of the warm-up study: long enough that Dask spreads its tasks over workers."""
WARM_UP_ATTEMPTS = 5


def process_role(process: psutil.Process) -> str:
    """Return what a process of the benchmark does, from its command line."""
    command = " ".join(process.cmdline())
    if "simstudy.runners._child" in command:
        return "model process"
    if "spawn_main" in command:
        return "dask worker"
    if "uvicorn" in command:
        return "prefect api"
    return "flow+scheduler"


class CpuMeter:
    """CPU-seconds used during one run, by process role (this process and descendants)."""

    def __init__(self) -> None:
        self._start = self._read()
        self._idle_start = self._machine_idle()

    @staticmethod
    def _machine_idle() -> float:
        times = psutil.cpu_times()
        return float(times.idle + getattr(times, "iowait", 0.0))

    @staticmethod
    def _read() -> dict[int, tuple[str, float]]:
        me = psutil.Process()
        seen = {}
        for process in [me, *me.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                seen[process.pid] = (process_role(process), times.user + times.system)
        return seen

    def used(self) -> dict[str, float]:
        """Return CPU-seconds by role since the meter was made (live processes only)."""
        by_role: dict[str, float] = {}
        for pid, (role, cpu) in self._read().items():
            before = self._start.get(pid, (role, 0.0))[1]
            by_role[role] = by_role.get(role, 0.0) + cpu - before
        by_role["idle"] = self._machine_idle() - self._idle_start
        return by_role


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


class PeakMemory:
    """Sample the RSS of this process and its descendants; keep the peak."""

    def __init__(self, interval: float = 0.25):
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for process in [me, *me.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    total += process.memory_info().rss
            self.peak = max(self.peak, total)
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def aggregate(*outputs: dict[str, float]) -> dict[str, float]:
    """Plain-Dask aggregation: mean and std of one output."""
    values = np.array([o["draw"] for o in outputs])
    return {"mean": float(values.mean()), "std": float(values.std(ddof=1))}


def run_plain_dask(client: Client, sets: int, replicates: int, cost_ms: float) -> None:
    """One task per replicate, one aggregation per set receiving the futures."""
    aggregates = []
    for s in range(sets):
        futures = [
            client.submit(simulate, {"cost_ms": cost_ms, "set": s}, r, pure=False)
            for r in range(replicates)
        ]
        aggregates.append(client.submit(aggregate, *futures, pure=False))
    client.gather(aggregates)


def run_simstudy(
    address: str,
    sets: int,
    replicates: int,
    cost_ms: float,
    runner: str,
    batch_size: int | str = "auto",
) -> None:
    """The same study through the simulation-study flow."""
    from flows.study import simulation_study

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = Study.model_validate(
            {
                "name": f"bench-{runner}",
                "model": MODEL,
                "fixed": {"cost_ms": cost_ms},
                "parameters": {"grid": {"set": list(range(sets))}},
                "replicates": replicates,
                "seed": 1,
                "execution": {
                    "runner": runner,
                    "timeout_seconds": 60,
                    "batch_size": batch_size,
                    "dask": {"address": address},
                },
                "output": f"/tmp/simstudy-bench/{runner}-{sets}x{replicates}-{cost_ms:g}",
            }
        )
    state = simulation_study(study=study, overwrite=True, return_state=True)
    assert state.is_completed(), state.message


@dataclass
class Measurement:
    """Figures of one run."""

    wall: float
    peak_rss: int
    cpu: dict[str, float]
    busy: dict[str, float]
    warm_up: float = 0.0


def measure(client: Client, action: Callable[[], Any]) -> Measurement:
    """Run `action` and return its wall time, peak memory, CPU by role and worker busy time."""
    with PeakMemory() as memory, get_task_stream(client) as stream:
        meter = CpuMeter()
        started = time.time()
        action()
        ended = time.time()
        cpu = meter.used()
    return Measurement(ended - started, memory.peak, cpu, worker_busy(stream.data, started, ended))


def main() -> None:
    """Run the comparison and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sets", type=int, default=20)
    parser.add_argument("--replicates", type=int, default=200)
    parser.add_argument("--costs", type=float, nargs="+", default=[0.0, 50.0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS, help="what to run"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs of each system and cost")
    parser.add_argument("--batch-size", default="auto", help="simstudy's execution.batch_size")
    parser.add_argument(
        "--stock-dask-config",
        action="store_true",
        help="clusters at distributed's defaults instead of simstudy's quiet local cluster",
    )
    args = parser.parse_args()

    from flows.api import prefect_api
    from flows.cluster import quiet_local_cluster

    new_cluster = LocalCluster if args.stock_dask_config else quiet_local_cluster

    n = args.sets * args.replicates
    rows: list[tuple[float, str, Measurement, float, float]] = []
    with prefect_api() as api:
        config = "stock" if args.stock_dask_config else "quiet"
        print(
            f"Prefect API {api}; {n} replicates per run, {args.workers} workers x 1 thread, "
            f"{config} Dask config"
        )
        for cost in args.costs:
            ideal = n * cost / 1000.0 / args.workers
            plain_wall = None
            for _ in range(args.repeat):
                for label in args.systems:
                    m = run_once(
                        new_cluster,
                        label,
                        args.workers,
                        args.sets,
                        args.replicates,
                        cost,
                        args.batch_size,
                    )
                    if label == "plain dask":
                        plain_wall = m.wall
                    rows.append((cost, label, m, ideal, plain_wall or float("nan")))
                    print(f"  cost {cost:g} ms, {label}: {m.wall:.1f} s", flush=True)
    print_tables(rows, n, args.workers)


def run_once(
    new_cluster: Callable[..., LocalCluster],
    label: str,
    workers: int,
    sets: int,
    replicates: int,
    cost: float,
    batch_size: str,
) -> Measurement:
    """Run one system once on a fresh, identical cluster, warmed up untimed first."""
    with (
        new_cluster(
            n_workers=workers, threads_per_worker=1, host="127.0.0.1", dashboard_address=None
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        if label == "plain dask":
            run: Callable[..., None] = partial(run_plain_dask, client)
        else:
            runner = label.split()[1]
            size = batch_size if batch_size == "auto" else int(batch_size)
            run = partial(run_simstudy, cluster.scheduler_address, runner=runner, batch_size=size)
        warm_up = warm_up_every_worker(client, run, workers)
        measurement = measure(client, partial(run, sets, replicates, cost))
        measurement.warm_up = warm_up
        return measurement


def warm_up_every_worker(client: Client, run: Callable[..., None], workers: int) -> float:
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


def print_tables(
    rows: list[tuple[float, str, Measurement, float, float]], n: int, workers: int
) -> None:
    """Print the wall-time table and the where-did-the-time-go table."""
    print()
    print(
        "| cost/replicate | system | wall s | ideal s | overhead ms/replicate | "
        "vs ideal | vs plain dask | peak RSS MiB | warm-up s (untimed) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for cost, label, m, ideal, plain_wall in rows:
        overhead_ms = (m.wall - ideal) * workers / n * 1000.0
        vs_ideal = f"{m.wall / ideal:.3f}" if ideal else "-"
        print(
            f"| {cost:g} ms | {label} | {m.wall:.1f} | {ideal:.1f} | {overhead_ms:.2f} | "
            f"{vs_ideal} | {m.wall / plain_wall:.2f} | {m.peak_rss / 2**20:.0f} | "
            f"{m.warm_up:.1f} |"
        )
    print()
    print("Where the time went (CPU-seconds by process; worker-thread seconds from Dask):")
    print()
    roles = ("model process", "dask worker", "flow+scheduler", "prefect api", "idle")
    print(
        "| cost/replicate | system | "
        + " | ".join(f"CPU {r}" for r in roles)
        + " (machine) | tasks running | idle before first | idle after last |"
    )
    print("| --- | --- | " + " | ".join("---" for _ in roles) + " | --- | --- | --- |")
    for cost, label, m, _, _ in rows:
        cpu = " | ".join(f"{m.cpu.get(r, 0.0):.1f}" for r in roles)
        busy = m.busy
        print(
            f"| {cost:g} ms | {label} | {cpu} | "
            f"{busy['busy']:.1f} | {busy['head']:.1f} | {busy['tail']:.1f} |"
        )


if __name__ == "__main__":
    main()
