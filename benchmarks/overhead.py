"""simstudy against plain dask.distributed on the same local cluster (not a test).

    python -m benchmarks.overhead [--sets 20] [--replicates 200] [--costs 0 50] [--workers 2]
                                  [--series N]

For each model cost, runs the same study (sets x replicates of a model burning a fixed
CPU time; with `--series N` each replicate also returns an N-point series of Poisson
draws) with plain dask.distributed (one task per replicate, one aggregation per
parameter set receiving its futures, mean and std per point of the series) and with
simstudy (process runner, and thread runner). Each run is a fresh process
(`benchmarks.driver`) holding the flow (or the plain Dask client) and the scheduler of a
fresh, identical LocalCluster, as `simstudy run` does: the quiet cluster `simstudy run`
starts (`--stock-dask-config` for distributed's defaults). One Prefect API serves every
run. Cluster start and a tiny warm-up study of each system on its cluster (one
2-replicate set per worker, repeated until every worker has run one of its tasks) are not
timed; the warm-up's wall time is printed. Prints wall time, the ideal (replicates x cost
/ worker threads), the overhead per replicate ((wall - ideal) / replicates, and the same
times the worker threads), the ratio to the plain Dask run of the same repetition, the
peak resident memory of the flow process (its own `ru_maxrss`, over its whole life) and
of the whole process tree during the timed study (flow process, Dask workers, model
processes, Prefect API: the sum sampled every 0.2 s), and the Prefect task runs of the
simstudy flow run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import IO, Any

import psutil

SYSTEMS = ("plain dask", "simstudy process", "simstudy thread")
DRIVER_LOG_DIR = "/tmp/simstudy-bench"
DRIVER_TIMEOUT_SECONDS = 120.0
"""How long a finished driver may take to stop its cluster and exit."""


def process_role(process: psutil.Process) -> str:
    """Return what a process of the benchmark does, from its command line."""
    command = " ".join(process.cmdline())
    if "simstudy.run.runners._child" in command:
        return "model process"
    if "spawn_main" in command:
        return "dask worker"
    if "uvicorn" in command:
        return "prefect api"
    return "flow+scheduler"


class TreeMeter:
    """Sample this process's descendants: peak summed RSS, and CPU-seconds by role.

    This process itself is left out: it only starts and meters the runs, and a
    `simstudy run` has no such process. CPU is sampled, not read once at the end: a study
    stops its model processes when it ends, and a model process killed with its
    supervisor is reaped by init, so its CPU reaches no process left to read (at most one
    interval of it is lost).
    """

    def __init__(self, interval: float = 0.2):
        self.interval = interval
        self.peak = 0
        self.cpu: dict[str, float] = {}
        self._roles: dict[int, str] = {}
        self._start: dict[tuple[int, str], float] = {}
        self._last: dict[tuple[int, str], float] = {}
        self._idle_start = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample_until_stopped, daemon=True)

    @staticmethod
    def _machine_idle() -> float:
        times = psutil.cpu_times()
        return float(times.idle + getattr(times, "iowait", 0.0))

    def _sample(self) -> tuple[int, dict[tuple[int, str], float]]:
        """Return the summed RSS and the CPU-seconds by (pid, role) of the descendants."""
        total = 0
        cpu = {}
        for process in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                with process.oneshot():
                    if process.pid not in self._roles:
                        self._roles[process.pid] = process_role(process)
                    total += process.memory_info().rss
                    times = process.cpu_times()
                cpu[(process.pid, self._roles[process.pid])] = times.user + times.system
        return total, cpu

    def _sample_until_stopped(self) -> None:
        while not self._stop.wait(self.interval):
            total, cpu = self._sample()
            self.peak = max(self.peak, total)
            self._last.update(cpu)

    def __enter__(self) -> TreeMeter:
        total, self._start = self._sample()
        self.peak = total
        self._idle_start = self._machine_idle()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        total, cpu = self._sample()
        self.peak = max(self.peak, total)
        self._last.update(cpu)
        for key, seconds in self._last.items():
            role = key[1]
            self.cpu[role] = self.cpu.get(role, 0.0) + seconds - self._start.get(key, 0.0)
        self.cpu["idle"] = self._machine_idle() - self._idle_start


@dataclass
class Measurement:
    """Figures of one run."""

    wall: float
    peak_rss: int
    cpu: dict[str, float]
    busy: dict[str, float]
    warm_up: float = 0.0
    flow_peak_rss: int = 0
    task_runs: int | None = None


def main() -> None:
    """Run the comparison and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sets", type=int, default=20)
    parser.add_argument("--replicates", type=int, default=200)
    parser.add_argument("--costs", type=float, nargs="+", default=[0.0, 50.0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--series",
        type=int,
        default=0,
        help="points of a series output of every replicate (Poisson draws; 0: none)",
    )
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
    if args.series < 0:
        parser.error(f"--series: {args.series} points; give 0 (no series) or more")

    from flows.api import prefect_api

    n = args.sets * args.replicates
    rows: list[tuple[float, str, Measurement, float, float]] = []
    with prefect_api() as api:
        config = "stock" if args.stock_dask_config else "quiet"
        series = f", a {args.series}-point series each" if args.series else ""
        print(
            f"Prefect API {api}; {n} replicates per run{series}, {args.workers} workers x 1 "
            f"thread, {config} Dask config"
        )
        for cost in args.costs:
            ideal = n * cost / 1000.0 / args.workers
            plain_wall = None
            for _ in range(args.repeat):
                for label in args.systems:
                    m = run_once(
                        {
                            "system": label,
                            "workers": args.workers,
                            "sets": args.sets,
                            "replicates": args.replicates,
                            "cost_ms": cost,
                            "batch_size": args.batch_size,
                            "series": args.series,
                            "stock_dask_config": args.stock_dask_config,
                        }
                    )
                    if label == "plain dask":
                        plain_wall = m.wall
                    rows.append((cost, label, m, ideal, plain_wall or float("nan")))
                    print(f"  cost {cost:g} ms, {label}: {m.wall:.1f} s", flush=True)
    print_tables(rows, n, args.workers)


def run_once(config: dict[str, Any]) -> Measurement:
    """Run one system once in a fresh driver process; meter it during its timed study."""
    os.makedirs(DRIVER_LOG_DIR, exist_ok=True)
    log_path = os.path.join(DRIVER_LOG_DIR, f"driver-{config['system'].replace(' ', '-')}.log")
    go_read, go_write = os.pipe()
    report_read, report_write = os.pipe()
    with open(log_path, "wb") as log:
        driver = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.driver",
                "--go-fd",
                str(go_read),
                "--report-fd",
                str(report_write),
                json.dumps(config),
            ],
            pass_fds=(go_read, report_write),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    os.close(go_read)
    os.close(report_write)
    try:
        with os.fdopen(go_write, "w") as go, os.fdopen(report_read, "r") as report:
            warm_up = read_report(report, driver, log_path)["warm_up"]
            with TreeMeter() as meter:
                go.write("go\n")
                go.flush()
                timed = read_report(report, driver, log_path)
            final = read_report(report, driver, log_path)
        driver.wait(DRIVER_TIMEOUT_SECONDS)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    return Measurement(
        wall=timed["ended"] - timed["started"],
        peak_rss=meter.peak,
        cpu=meter.cpu,
        busy=timed["busy"],
        warm_up=warm_up,
        flow_peak_rss=final["flow_peak_rss"],
        task_runs=final["task_runs"],
    )


def read_report(report: IO[str], driver: subprocess.Popen[bytes], log_path: str) -> Any:
    """Return the driver's next message, or raise with the end of its log if it ended."""
    line = report.readline()
    if line:
        return json.loads(line)
    code = driver.wait()
    with open(log_path, errors="replace") as log:
        tail = log.read()[-3000:]
    raise RuntimeError(f"driver exited with code {code}; {log_path} ends:\n{tail}")


def print_tables(
    rows: list[tuple[float, str, Measurement, float, float]], n: int, workers: int
) -> None:
    """Print the wall-time table and the where-did-the-time-go table."""
    print()
    print(
        "| cost/replicate | system | wall s | ideal s | overhead ms/replicate | "
        "x worker threads | vs ideal | vs plain dask | flow process peak RSS MiB | "
        "tree peak RSS MiB | task runs | warm-up s (untimed) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for cost, label, m, ideal, plain_wall in rows:
        overhead_ms = (m.wall - ideal) / n * 1000.0
        vs_ideal = f"{m.wall / ideal:.3f}" if ideal else "-"
        task_runs = "-" if m.task_runs is None else f"{m.task_runs:,}"
        vs_plain = "-" if math.isnan(plain_wall) else f"{m.wall / plain_wall:.2f}"
        print(
            f"| {cost:g} ms | {label} | {m.wall:.1f} | {ideal:.1f} | {overhead_ms:.3f} | "
            f"{overhead_ms * workers:.2f} | {vs_ideal} | {vs_plain} | "
            f"{m.flow_peak_rss / 2**20:.0f} | {m.peak_rss / 2**20:.0f} | {task_runs} | "
            f"{m.warm_up:.1f} |"
        )
    print()
    print(
        "Flow process: the process running the flow (plain dask: the client) and the "
        "scheduler, its own peak over its life; tree: it, the Dask workers, the model "
        "processes and the Prefect API, during the timed study."
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
