"""Sequential calibration against a fixed design: simulations needed to reach the same loss.

    python -m benchmarks.calibration [--trials 64] [--parallel 8]

Runs, each with `simstudy run` (its own local Prefect API and Dask cluster, 2 workers):

1. the fixed Sobol design of examples/seir-calibration.yaml (64 sets x 20 replicates);
2. examples/seir-calibrate.yaml: Optuna TPE with adaptive replicates (4 to 32);
3. the same with adaptive replicates off: every trial gets 32 replicates;
4. the same with every trial at 4 replicates.

and prints, for each: simulations, wall time, the best loss and how far its parameters
are from the truth that made the observed data (beta 0.35, gamma 0.15), and for the
calibrations the trials and simulations spent until a trial first reached the fixed
design's best loss. Losses of means fall slightly with replicates (a mean of more
replicates is less noisy), so losses at different replicate counts compare only roughly.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import yaml

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
TRUTH = {"beta": 0.35, "gamma": 0.15}
SPAN = {"beta": 0.45, "gamma": 0.25}
"""The sampled ranges: distances to the truth are in units of the box."""


def distance(params: dict[str, Any]) -> float:
    """Return the distance of a parameter set to the truth, in units of the sampled box."""
    return math.sqrt(sum(((params[n] - TRUTH[n]) / SPAN[n]) ** 2 for n in TRUTH))


def run(study: dict[str, Any], folder: Path, name: str) -> tuple[Path, float]:
    """Run a study document with `simstudy run`; return its output and wall seconds."""
    path = EXAMPLES / f".bench-{name}.yaml"  # beside the examples: their data paths hold
    output = folder / name
    path.write_text(yaml.safe_dump({**study, "output": str(output)}))
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "flows.cli", "run", str(path), "--no-progress"],
            cwd=REPO, capture_output=True, text=True, timeout=3600,
        )  # fmt: skip
    finally:
        path.unlink()
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    return output, time.monotonic() - started


def fixed_design(folder: Path) -> dict[str, Any]:
    """Run the Sobol design; return its figures."""
    study = yaml.safe_load((EXAMPLES / "seir-calibration.yaml").read_text())
    output, wall = run(study, folder, "sobol")
    best = pq.read_table(output / "ranking.parquet").to_pylist()[0]
    sets = len(pq.read_table(output / "ranking.parquet"))
    return {"name": "fixed Sobol design, 64 x 20", "simulations": sets * study["replicates"],
            "wall": wall, "loss": best["loss"], "loss_se": best["loss_se"],
            "distance": distance(best), "best": best}  # fmt: skip


def calibration(folder: Path, name: str, label: str, target: float, **settings: Any) -> dict:
    """Run the calibration example with other settings; return its figures."""
    study = yaml.safe_load((EXAMPLES / "seir-calibrate.yaml").read_text())
    study["calibrate"].update(settings)
    output, wall = run(study, folder, name)
    trials = sorted(pq.read_table(output / "trials.parquet").to_pylist(), key=lambda r: r["trial"])
    complete = [t for t in trials if t["state"] == "complete"]
    best = min(complete, key=lambda t: t["score"])  # as simstudy ranks: like with like
    reached = [t for t in complete if t["loss"] <= target]
    first_ask = min((t["ask"] for t in reached), default=None)
    spent = [t for t in trials if first_ask is not None and t["ask"] <= first_ask]
    to_reach = sum(t["replicates"] for t in spent) if reached else None
    return {"name": label, "simulations": sum(t["replicates"] for t in trials), "wall": wall,
            "loss": best["loss"], "loss_se": best["loss_se"], "distance": distance(best),
            "best": best, "trials_to_reach": len(spent) if reached else None,
            "simulations_to_reach": to_reach}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--parallel", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        rows = [fixed_design(folder)]
        target = rows[0]["loss"]
        common = {"trials": args.trials, "parallel": args.parallel}
        rows.append(calibration(folder, "adaptive", "TPE, adaptive 4-32 replicates", target,
                                replicates={"min": 4, "max": 32}, **common))  # fmt: skip
        rows.append(calibration(folder, "fixed32", "TPE, 32 replicates each", target,
                                replicates=32, **common))  # fmt: skip
        rows.append(calibration(folder, "fixed4", "TPE, 4 replicates each", target,
                                replicates=4, **common))  # fmt: skip
    print(f"\ntarget: the fixed design's best loss {target:.1f}\n")
    print(
        "| run | simulations | wall s | best loss +- se | best beta, gamma | distance to "
        "truth | trials to reach target | simulations to reach target |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        best = r["best"]
        print(f"| {r['name']} | {r['simulations']} | {r['wall']:.0f} | {r['loss']:.1f} +- "
              f"{r['loss_se']:.1f} | {best['beta']:.3f}, {best['gamma']:.3f} | "
              f"{r['distance']:.3f} | {r.get('trials_to_reach', '-')} | "
              f"{r.get('simulations_to_reach', '-')} |")  # fmt: skip


if __name__ == "__main__":
    main()
