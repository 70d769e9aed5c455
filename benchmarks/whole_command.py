"""Whole commands: `simstudy run` against a plain dask.distributed script (not a test).

    python -m benchmarks.whole_command [--sets 1000] [--replicates 4] [--repeat 2]

Both run the same study (`sets` x `replicates` of benchmarks.burn's model with no CPU
burn, one aggregation per set) as a fresh command in a subprocess, one after the other on
this machine, and both are timed from the command's start to its exit:

- plain dask: `python -m benchmarks.whole_command --plain`: the interpreter, imports, a
  LocalCluster of 2 single-threaded worker processes, one task per replicate and one
  aggregation per set receiving its futures (`benchmarks.driver.run_plain_dask`), and
  the cluster's shut-down; it writes nothing.
- simstudy: `simstudy run STUDY --no-progress` with the process runner and its own
  temporary Prefect API (no PREFECT_API_URL), as the README's first command: validation,
  the API, the cluster and preflight, the study, the result files, ranking and report.

Prints one row per run and the ratio simstudy / plain Dask of their medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
WORKERS = 2


def plain(sets: int, replicates: int) -> None:
    """The plain Dask command itself (run with --plain)."""
    from distributed import Client, LocalCluster

    from benchmarks.driver import run_plain_dask

    with (
        LocalCluster(
            n_workers=WORKERS,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,  # fmt: skip
        Client(cluster) as client,
    ):
        run_plain_dask(client, sets, replicates, cost_ms=0.0)


def timed(command: list[str], environment: dict[str, str]) -> float:
    """Return the wall seconds of a command that must succeed (its output is discarded)."""
    started = time.monotonic()
    subprocess.run(command, cwd=REPO, env=environment, check=True, timeout=900,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", type=int, default=1000)
    parser.add_argument("--replicates", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--plain", action="store_true", help="run the plain Dask command")
    args = parser.parse_args()
    if args.plain:
        plain(args.sets, args.replicates)
        return
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    environment.pop("PREFECT_API_URL", None)
    times: dict[str, list[float]] = {"plain dask": [], "simstudy": []}
    with tempfile.TemporaryDirectory(prefix="simstudy-whole-") as name:
        study = Path(name) / "study.yaml"
        study.write_text(yaml.safe_dump({
            "name": "whole", "model": "benchmarks.burn:simulate", "fixed": {"cost_ms": 0.0},
            "parameters": {"grid": {"set": list(range(args.sets))}},
            "replicates": args.replicates, "seed": 1,
            "execution": {"runner": "process", "dask": {"n_workers": WORKERS}},
            "output": str(Path(name) / "out"),
        }))  # fmt: skip
        size = ["--sets", str(args.sets), "--replicates", str(args.replicates)]
        plain_command = [sys.executable, "-m", "benchmarks.whole_command", "--plain", *size]
        simstudy_command = [sys.executable, "-m", "flows.cli", "run", str(study),
                            "--no-progress", "--fresh", "--overwrite"]  # fmt: skip
        print(f"| run | {args.sets} x {args.replicates}: plain dask | simstudy |")
        print("| --- | --- | --- |")
        for run in range(args.repeat):
            times["plain dask"].append(timed(plain_command, environment))
            times["simstudy"].append(timed(simstudy_command, environment))
            print(
                f"| {run + 1} | {times['plain dask'][-1]:.1f} s | {times['simstudy'][-1]:.1f} s |"
            )
    ratio = statistics.median(times["simstudy"]) / statistics.median(times["plain dask"])
    print(f"median ratio simstudy / plain dask (whole commands): {ratio:.2f}")


if __name__ == "__main__":
    main()
