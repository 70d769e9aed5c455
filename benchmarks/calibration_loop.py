"""simstudy's calibration against the hand-written Optuna + Dask loop a modeler would write.

    python -m benchmarks.calibration_loop --trials 256 --replicates 4 --seeds 7

Both calibrate the built-in SEIR model (simstudy.models.seir:simulate, the fixed
parameters of examples/seir-calibrate.yaml) against examples/seir-calibration/observed.csv,
one epidemic of a known truth (beta 0.35, gamma 0.15, R0 2.33), on the same machine, one
after the other, each on a local Dask cluster of 2 single-threaded worker processes:

- hand: the forty lines by hand (`hand_loop`): Optuna TPE (multivariate, constant liar)
  over beta in [0.15, 0.6] and gamma log-uniform in [0.05, 0.3]; every trial is
  `replicates` plain `client.submit` futures with seeds of its own; 2 x workers trials in
  flight, a new one asked as soon as one finishes (`distributed.as_completed`); loss: the
  Poisson negative log-likelihood of the replicate mean against the observed incidence.
  run as a whole command in a subprocess (`--hand`), as simstudy is: "study" time excludes
  the cluster's start-up, "whole" is the command's wall time (interpreter, imports, cluster,
  search, shut-down).
- simstudy: `simstudy run` of a temporary copy of the example with
  `calibrate: {trials, parallel: 4, replicates: <fixed>, seed}`, as a whole command in a
  subprocess without PREFECT_API_URL (so it starts its own temporary Prefect API, like the
  README's first command). "whole" is the command's wall time (interpreter, imports, API,
  cluster, calibration, the best trials' study, shut-down); "study" is the calibration's
  own span, calibration.json's started_at to finished_at.

Prints one markdown row per (system, seed): simulations run, study and whole wall
seconds, the best trial's loss, beta, gamma and R0 and R0's relative distance to the truth's,
then the ratios simstudy / hand of the study and whole times. Both systems score a trial
by its loss at a fixed number of replicates, but simstudy ranks by loss minus its replicate
bias and seeds replicates its own way, so the best trials differ by the search's noise.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy import special

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "seir-calibrate.yaml"
OBSERVED = REPO / "examples" / "seir-calibration" / "observed.csv"
TRUTH_R0 = 0.35 / 0.15
WORKERS = 2
FLOOR = 1e-6
"""Smallest Poisson rate, as simstudy.analysis.losses.FLOOR."""


def observed_incidence() -> np.ndarray:
    """Return the observed daily incidence, indexed by day."""
    with OBSERVED.open() as handle:
        rows = [r for r in csv.DictReader(handle) if r["output"] == "incidence"]
    values = np.zeros(max(int(r["t"]) for r in rows) + 1)
    for r in rows:
        values[int(r["t"])] = float(r["value"])
    return values


def poisson_nll(mean: np.ndarray, observed: np.ndarray) -> float:
    """Return the Poisson negative log-likelihood of the observed counts at the mean."""
    rate = np.maximum(mean[: len(observed)], FLOOR)
    logpmf = special.xlogy(observed, rate) - rate - special.gammaln(observed + 1)
    return float(-logpmf.sum())


def summary(name: str, seed: int, simulations: int, study: float, whole: float,
            beta: float, gamma: float, loss: float) -> dict[str, Any]:  # fmt: skip
    """Return a table row's figures."""
    r0 = beta / gamma
    return {"system": name, "seed": seed, "simulations": simulations, "study": study,
            "whole": whole, "loss": loss, "beta": beta, "gamma": gamma, "r0": r0,
            "r0_error": abs(r0 - TRUTH_R0) / TRUTH_R0}  # fmt: skip


def hand_loop(trials: int, replicates: int, seed: int) -> dict[str, Any]:
    """Calibrate with Optuna and plain Dask futures, as a modeler would by hand."""
    import optuna
    from distributed import Client, LocalCluster, as_completed

    from simstudy.models.seir import simulate

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    fixed = yaml.safe_load(EXAMPLE.read_text())["fixed"]
    observed = observed_incidence()
    whole_started = time.monotonic()
    cluster = LocalCluster(n_workers=WORKERS, threads_per_worker=1, processes=True,
                           dashboard_address=None)  # fmt: skip
    client = Client(cluster)
    try:
        started = time.monotonic()
        sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)
        search = optuna.create_study(direction="minimize", sampler=sampler)
        pending: dict[int, tuple[optuna.Trial, list[np.ndarray]]] = {}
        owner: dict[str, int] = {}  # future key -> trial number
        done = as_completed(with_results=True)

        def ask() -> None:
            trial = search.ask()
            params = {**fixed, "beta": trial.suggest_float("beta", 0.15, 0.6),
                      "gamma": trial.suggest_float("gamma", 0.05, 0.3, log=True)}  # fmt: skip
            pending[trial.number] = (trial, [])
            for r in range(replicates):
                replicate_seed = int(np.random.SeedSequence([seed, trial.number, r])
                                     .generate_state(1)[0])  # fmt: skip
                future = client.submit(simulate, params, replicate_seed, pure=False)
                owner[future.key] = trial.number
                done.add(future)

        asked = 0
        while asked < min(trials, 2 * WORKERS):
            ask()
            asked += 1
        for future, output in done:
            trial, outputs = pending[owner.pop(future.key)]
            outputs.append(output["incidence"])
            if len(outputs) < replicates:
                continue
            del pending[trial.number]
            search.tell(trial, poisson_nll(np.mean(outputs, axis=0), observed))
            if asked < trials:
                ask()
                asked += 1
        study = time.monotonic() - started
    finally:
        client.close()
        cluster.close()
    whole = time.monotonic() - whole_started
    best = search.best_params
    return summary("hand (Optuna + Dask futures)", seed, trials * replicates, study, whole,
                   best["beta"], best["gamma"], search.best_value)  # fmt: skip


def hand_command(trials: int, replicates: int, seed: int) -> dict[str, Any]:
    """Run `hand_loop` as a whole command in a subprocess; return its figures."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    command = [sys.executable, "-m", "benchmarks.calibration_loop", "--hand", "--trials",
               str(trials), "--replicates", str(replicates), "--seeds", str(seed)]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=3600)  # fmt: skip
    whole = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"the hand loop failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "whole": whole}


def simstudy_run(trials: int, replicates: int, seed: int, parallel: int = 8) -> dict[str, Any]:
    """Calibrate with `simstudy run` as a whole command; return its figures."""
    document = yaml.safe_load(EXAMPLE.read_text())
    document["calibrate"].update(trials=trials, parallel=parallel, replicates=replicates, seed=seed)
    document["targets"]["data"] = str(OBSERVED)
    command = shutil.which("simstudy", path=str(Path(sys.executable).parent)) or "simstudy"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    with tempfile.TemporaryDirectory(prefix="simstudy-calibration-loop-") as scratch:
        path, output = Path(scratch) / "study.yaml", Path(scratch) / "out"
        document.pop("output", None)
        path.write_text(yaml.safe_dump(document))
        started = time.monotonic()
        done = subprocess.run(
            [command, "run", str(path), "--output", str(output), "--no-progress"],
            cwd=scratch, env=env, capture_output=True, text=True, timeout=3600,
        )  # fmt: skip
        whole = time.monotonic() - started
        if done.returncode != 0:
            raise SystemExit(f"simstudy run failed ({done.returncode}):\n{done.stderr[-3000:]}")
        result = json.loads((output / "calibration.json").read_text())
    study = (
        datetime.fromisoformat(result["finished_at"]) - datetime.fromisoformat(result["started_at"])
    ).total_seconds()
    params = result["best"]["params"]
    row = summary("simstudy run", seed, result["simulations"], study, whole,
                  params["beta"], params["gamma"], result["best"]["loss"])  # fmt: skip
    return {**row, "search": result["search_seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=256)
    parser.add_argument("--replicates", type=int, default=4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[7])
    parser.add_argument("--parallel", type=int, default=8, help="simstudy's trials in flight")
    parser.add_argument("--hand", action="store_true", help="run only the hand loop; print JSON")
    args = parser.parse_args()
    if args.hand:
        print(json.dumps(hand_loop(args.trials, args.replicates, args.seeds[0])))
        return
    rows = []
    for seed in args.seeds:  # sequential: the systems never share the cores
        rows.append(hand_command(args.trials, args.replicates, seed))
        rows.append(simstudy_run(args.trials, args.replicates, seed, args.parallel))
    print(f"\n{args.trials} trials x {args.replicates} replicates, {WORKERS} workers; "
          f"truth beta 0.35, gamma 0.15, R0 {TRUTH_R0:.3f}\n")  # fmt: skip
    print("| system | seed | simulations | search s | study s | whole command s | best loss "
          "| best beta | best gamma | best R0 | R0 rel. error |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        search = r.get("search", r["study"])
        print(f"| {r['system']} | {r['seed']} | {r['simulations']} | {search:.1f} | "
              f"{r['study']:.1f} | "
              f"{r['whole']:.1f} | {r['loss']:.1f} | {r['beta']:.3f} | {r['gamma']:.3f} | "
              f"{r['r0']:.3f} | {r['r0_error']:.1%} |")  # fmt: skip
    print()
    for seed in args.seeds:
        hand, ours = (next(r for r in rows if r["seed"] == seed and r["system"].startswith(s))
                      for s in ("hand", "simstudy"))  # fmt: skip
        print(f"seed {seed}: simstudy / hand, search {ours['search'] / hand['study']:.2f}x, "
              f"study {ours['study'] / hand['study']:.2f}x, "
              f"whole command {ours['whole'] / hand['whole']:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
