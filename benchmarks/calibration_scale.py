"""Calibration at scale: worker utilisation with uneven trials, and the flow's memory.

```
python -m benchmarks.calibration_scale utilisation --trials 96
python -m benchmarks.calibration_scale memory --trials 10000
```

`utilisation` calibrates the benchmark model (`benchmarks/burn.py`) over `cost_ms` from
20 to 200 ms (log-uniform: run time varies 10-fold across the search space) with TPE, 4
replicates a trial, on 2 workers of 1 thread, and prints the share of the search's wall
time x worker threads that replicates spent running the model: the sum of every
replicate's `duration_s` in the part cache over `search_seconds` x threads.

`memory` runs `--trials` trials of one replicate of a free model (random sampler, so
the search itself stays cheap) and samples the flow process's RSS every 0.25 s.

Each runs `simstudy run` as a whole command with its own temporary Prefect API, as the
README's first command does.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import pyarrow.parquet as pq
import yaml

THREADS = 2


def study(trials: int, sampler: str, replicates: int, cost: Any, parallel: int) -> dict[str, Any]:
    """Return a calibration of the benchmark model against one observed `draw`."""
    return {
        "name": "calibration-scale",
        "model": "benchmarks.burn:simulate",
        "fixed": {} if isinstance(cost, dict) else {"cost_ms": cost},
        "parameters": {
            "sample": {
                "bounds": {"x": [0.0, 1.0], **({"cost_ms": cost} if isinstance(cost, dict) else {})}
            }
        },  # fmt: skip
        "calibrate": {
            "sampler": sampler,
            "trials": trials,
            "parallel": parallel,
            "replicates": replicates,
            "seed": 1,
        },  # fmt: skip
        "targets": {"data": "observed.csv", "loss": "mse_of_mean"},
        "seed": 1,
        "execution": {
            "runner": "process",
            "timeout_seconds": 60,
            "dask": {"n_workers": THREADS, "threads_per_worker": 1},
        },  # fmt: skip
    }


def run(document: dict[str, Any]) -> tuple[dict[str, Any], float, float, Path]:
    """Run a calibration as a whole command; return calibration.json, wall s, peak RSS MiB."""
    scratch = Path(tempfile.mkdtemp(prefix="simstudy-calibration-scale-"))
    (scratch / "observed.csv").write_text("output,value\ndraw,500\n")
    path = scratch / "study.yaml"
    path.write_text(yaml.safe_dump(document))
    command = shutil.which("simstudy", path=str(Path(sys.executable).parent)) or "simstudy"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PYTHONPATH"] = str(Path(__file__).parents[1])  # the workers import benchmarks.burn
    started = time.monotonic()
    process = subprocess.Popen(
        [command, "run", str(path), "--output", str(scratch / "out"), "--no-progress"],
        cwd=scratch, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    peak = 0
    watched = psutil.Process(process.pid)
    while process.poll() is None:
        with contextlib.suppress(psutil.Error):
            peak = max(peak, watched.memory_info().rss)
        time.sleep(0.25)
    wall = time.monotonic() - started
    stderr = process.stderr.read() if process.stderr else ""
    if process.returncode != 0:
        raise SystemExit(f"simstudy run failed ({process.returncode}):\n{stderr[-3000:]}")
    result = json.loads((scratch / "out" / "calibration.json").read_text())
    return result, wall, peak / 2**20, scratch


def utilisation(trials: int, parallel: int) -> None:
    """Print the workers' busy share of a calibration whose trials differ 10-fold in cost."""
    document = study(trials, "tpe", 4, {"low": 20.0, "high": 200.0, "log": True}, parallel)
    result, wall, peak, scratch = run(document)
    parts = (scratch / "out" / "simulations" / "_parts").glob("*.parquet")
    busy = sum(sum(pq.read_table(part, columns=["duration_s"]).column(0).to_pylist())
               for part in parts)  # fmt: skip
    search = result["search_seconds"]
    print(f"\n{trials} trials x 4 replicates, cost 20-200 ms (log-uniform), parallel "
          f"{parallel}, {THREADS} workers x 1 thread\n")  # fmt: skip
    print("| simulations | model s | search s | whole command s | utilisation | flow peak |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(f"| {result['simulations']} | {busy:.1f} | {search:.1f} | {wall:.1f} | "
          f"{busy / (search * THREADS):.1%} | {peak:.0f} MiB |")  # fmt: skip
    shutil.rmtree(scratch, ignore_errors=True)


def memory(trials: int, parallel: int) -> None:
    """Print the flow process's peak RSS over a calibration of `trials` trials."""
    result, wall, peak, scratch = run(study(trials, "random", 1, 0.0, parallel))
    print(f"\n{trials} trials x 1 replicate, free model, random sampler, parallel {parallel}\n")
    print("| trials | simulations | search s | whole command s | flow peak RSS |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| {result['trials']} | {result['simulations']} | {result['search_seconds']:.1f} | "
          f"{wall:.1f} | {peak:.0f} MiB = {peak * 2**20 / 1e6:.0f} MB |")  # fmt: skip
    shutil.rmtree(scratch, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["utilisation", "memory"])
    parser.add_argument("--trials", type=int, default=None)
    parser.add_argument("--parallel", type=int, default=8)
    args = parser.parse_args()
    if args.what == "utilisation":
        utilisation(args.trials or 96, args.parallel)
    else:
        memory(args.trials or 10_000, args.parallel)


if __name__ == "__main__":
    main()
