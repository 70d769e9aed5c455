"""A study of very long series outputs, as a whole `simstudy run` (not a test).

    python -m benchmarks.long_series [--points 1000000] [--sets 2] [--replicates 4]

Runs `simstudy run --no-progress` of `sets` x `replicates` of benchmarks.burn's model (no
CPU burn, a `points`-point series of Poisson draws per replicate), `timeout_seconds: 30`
and everything else at its defaults, in a fresh temporary folder, with its own temporary
Prefect API. Prints the whole command's wall time, the aggregation (last replicate done
to the last set's aggregate in the flow), writing the result files (to the study's
summary line), the
report (as the flow logs it), the peak resident memory of the flow process and of the
whole process tree (sampled every 0.2 s), and the bytes of replicate values, for scale.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import psutil
import yaml

from benchmarks.overhead import TreeMeter

REPO = Path(__file__).resolve().parents[1]
TIMESTAMP = re.compile(r"^(\d\d:\d\d:\d\d\.\d{3}) \| \w+ +\| (.*)$")


class ProcessPeak:
    """Sample one process's resident memory every `interval` s; keep the peak."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.peak = 0
        self._process = psutil.Process(pid)
        self._stop = threading.Event()
        self._interval = interval
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.peak = max(self.peak, self._process.memory_info().rss)
            except psutil.Error:
                return

    def stop(self) -> int:
        """Stop sampling; return the peak in bytes."""
        self._stop.set()
        self._thread.join()
        return self.peak


def study_document(folder: Path, points: int, sets: int, replicates: int) -> dict[str, object]:
    """Return the benchmark's study: sets differ only in a label the model ignores."""
    return {
        "name": "long-series",
        "model": "benchmarks.burn:simulate",
        "fixed": {"cost_ms": 0.0, "series": points},
        "parameters": {"grid": {"label": [float(i) for i in range(sets)]}},
        "replicates": replicates,
        "seed": 1,
        "execution": {"timeout_seconds": 30},
        "output": str(folder / "out"),
    }


def log_times(lines: list[str]) -> dict[str, datetime]:
    """Return when the flow logged its milestones (last replicate, aggregated, report)."""
    found: dict[str, datetime] = {}
    for line in lines:
        match = TIMESTAMP.match(line)
        if not match:
            continue
        at, message = datetime.strptime(match.group(1), "%H:%M:%S.%f"), match.group(2)
        if re.search(r"(\d+)/\1 replicates done", message):
            found["replicates"] = at
        elif re.search(r"parameter sets? \w+ .* aggregated: ", message):
            found["sets"] = at  # the last set's aggregate reached the flow
        elif "parameter sets aggregated; replicates" in message and "written" not in found:
            found["written"] = at  # the result files are written
        elif " - report: " in message:
            found["report"] = at
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--sets", type=int, default=2)
    parser.add_argument("--replicates", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="simstudy-long-series-") as name:
        folder = Path(name)
        path = folder / "study.yaml"
        path.write_text(yaml.safe_dump(study_document(folder, args.points, args.sets,
                                                      args.replicates)))  # fmt: skip
        environment = {**os.environ, "PYTHONPATH": str(REPO)}
        environment.pop("PREFECT_API_URL", None)
        command = [sys.executable, "-m", "flows.cli", "run", str(path), "--no-progress"]
        started = time.monotonic()
        with TreeMeter() as tree:
            process = subprocess.Popen(
                command, cwd=REPO, env=environment, text=True,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            )  # fmt: skip
            flow = ProcessPeak(process.pid)
            assert process.stdout is not None
            lines = process.stdout.read().splitlines()  # drained to the end: no full pipe
            process.wait(timeout=60)
        wall = time.monotonic() - started
        flow_peak = flow.stop()
    if process.returncode != 0:
        print("\n".join(lines[-30:]))
        raise SystemExit(f"simstudy run exited with {process.returncode}")
    times = log_times(lines)
    logged = (re.search(r" - report: .* \(([\d.]+) s\)", line) for line in lines)
    report = next((float(match.group(1)) for match in logged if match), float("nan"))
    aggregation = (times["sets"] - times["replicates"]).total_seconds()
    written = (times["written"] - times["sets"]).total_seconds()
    values = args.sets * args.replicates * args.points * 8
    cells = [
        f"{args.sets} x {args.replicates}", f"{args.points:,}", f"{wall:.1f} s",
        f"{aggregation:.1f} s", f"{written:.1f} s", f"{report:.1f} s",
        f"{flow_peak / 2**20:,.0f} MiB", f"{tree.peak / 2**20:,.0f} MiB",
        f"{values / 2**20:,.0f} MiB",
    ]  # fmt: skip
    header = ["sets x replicates", "points", "whole", "aggregation", "result files", "report",
              "flow peak", "tree peak", "replicate values"]  # fmt: skip
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
