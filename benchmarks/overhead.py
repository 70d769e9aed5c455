"""simstudy against plain dask.distributed on the same local cluster (not a test).

    python -m benchmarks.overhead [--sets 20] [--replicates 200] [--costs 0 50] [--workers 2]

For each model cost, runs the same study (sets x replicates of a model burning a fixed
CPU time) with plain dask.distributed (one task per replicate, one aggregation per
parameter set receiving its futures) and with simstudy (process runner, and thread
runner), on a fresh, identical LocalCluster per run. Prints wall time, the ideal
(replicates x cost / worker threads), per-replicate overhead against the ideal, the ratio
to plain Dask, and the peak resident memory of this process and all its children.
"""

from __future__ import annotations

import argparse
import contextlib
import threading
import time
import warnings
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import psutil
from distributed import Client, LocalCluster

from benchmarks.burn import simulate
from simstudy.spec import Study

MODEL = "benchmarks.burn:simulate"
SYSTEMS = ("plain dask", "simstudy process", "simstudy thread")


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


def run_simstudy(address: str, sets: int, replicates: int, cost_ms: float, runner: str) -> None:
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
                    "dask": {"address": address},
                },
                "output": f"/tmp/simstudy-bench/{runner}-{cost_ms:g}",
            }
        )
    state = simulation_study(study=study, overwrite=True, return_state=True)
    assert state.is_completed(), state.message


def measure(action: Callable[[], Any]) -> tuple[float, int]:
    """Return wall seconds and peak RSS bytes of one run."""
    with PeakMemory() as memory:
        started = time.perf_counter()
        action()
        wall = time.perf_counter() - started
    return wall, memory.peak


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
    args = parser.parse_args()

    from flows.api import prefect_api

    n = args.sets * args.replicates
    rows = []
    with prefect_api() as api:
        print(f"Prefect API {api}; {n} replicates per run, {args.workers} workers x 1 thread")
        for cost in args.costs:
            ideal = n * cost / 1000.0 / args.workers
            plain_wall = None
            for label in args.systems:
                # A fresh, identical cluster per run; its start-up is not timed.
                with (
                    LocalCluster(
                        n_workers=args.workers,
                        threads_per_worker=1,
                        host="127.0.0.1",
                        dashboard_address=None,
                    ) as cluster,
                    Client(cluster, set_as_default=False) as client,
                ):
                    if label == "plain dask":
                        action = partial(run_plain_dask, client, args.sets, args.replicates, cost)
                    else:
                        runner = label.split()[1]
                        action = partial(
                            run_simstudy,
                            cluster.scheduler_address, args.sets, args.replicates, cost, runner,
                        )  # fmt: skip
                    wall, peak = measure(action)
                plain_wall = plain_wall or (wall if label == "plain dask" else None)
                overhead_ms = (wall - ideal) * args.workers / n * 1000.0
                ratio = wall / plain_wall if plain_wall else float("nan")
                rows.append((cost, label, wall, ideal, overhead_ms, ratio, peak))
                print(f"  cost {cost:g} ms, {label}: {wall:.1f} s", flush=True)

    print()
    print(
        "| cost/replicate | system | wall s | ideal s | overhead ms/replicate | "
        "vs ideal | vs plain dask | peak RSS MiB |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for cost, label, wall, ideal, overhead_ms, ratio, peak in rows:
        vs_ideal = f"{wall / ideal:.3f}" if ideal else "-"
        print(
            f"| {cost:g} ms | {label} | {wall:.1f} | {ideal:.1f} | {overhead_ms:.2f} | "
            f"{vs_ideal} | {ratio:.2f} | {peak / 2**20:.0f} |"
        )


if __name__ == "__main__":
    main()
