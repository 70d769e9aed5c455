"""ABC-SMC head to head: simstudy against pyabc on the Gamma-Poisson model (not a test).

    pip install -e '.[bench]'            # pyabc, for this benchmark only
    python -m benchmarks.pyabc_compare [--population 200] [--repeats 3]

The same model (10 days of Poisson counts, observed total 52), prior (Gamma(2, scale 2) on
the rate), population size, distance (|total - 52|; simstudy's mse_of_mean of one replicate
is its square: the same acceptances at every epsilon) and epsilon schedule, down to final
epsilon 0, on the same 2 single-thread workers, one system after the other in one run.

The schedule is simstudy's (the median of the last generation's distances, lowered to the
next distance below when the median would not shrink it), given to pyabc as a
`ListEpsilon` of the same values. pyabc's own `QuantileEpsilon(alpha=0.5)` never reaches
0 here: once epsilon is 1, two thirds of the accepted totals are 51 or 53, the weighted
median stays 1, and it ran to its 30-generation cap (50,536 and 49,731 simulations,
measured). The systems:

- simstudy: `simstudy run` of a study with `calibrate.method: abc-smc` on a local Dask
  cluster of 2 workers; "inference" is from the posterior's start to its end
  (calibration.json), "whole" is the command (its Prefect API and cluster start included);
- pyabc with its `DaskDistributedSampler` on a `LocalCluster` of 2 workers (started before
  the clock: its cost is in the "whole" column), and with its
  `MulticoreEvalParallelSampler` of 2 processes.

For each: the simulations, the generations, the wall time, and the 1-Wasserstein distance
of the final weighted population to the exact posterior Gamma(2 + 52, scale 2 / 21).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import scipy.stats
import yaml

from simstudy.models import counts

DAYS = 10
OBSERVED_TOTAL = 52
PRIOR_A, PRIOR_SCALE = 2.0, 2.0
MAX_GENERATIONS = 30
REPO = Path(__file__).parents[1]
FIRST_EPSILON = 1e12
"""Generation 0's epsilon for pyabc: every prior draw is accepted (simstudy's is infinite)."""


def exact() -> Any:
    """Return the exact posterior of the rate."""
    return counts.exact_posterior(OBSERVED_TOTAL, DAYS, PRIOR_A, PRIOR_SCALE)


def wasserstein_to_exact(particles: np.ndarray, weights: np.ndarray) -> float:
    """Return the 1-Wasserstein distance of a weighted sample to the exact posterior."""
    grid = exact().ppf((np.arange(20_000) + 0.5) / 20_000)
    return float(scipy.stats.wasserstein_distance(particles, grid, u_weights=weights))


def summary(name: str, simulations: int, generations: int, whole: float, inference: float,
            particles: np.ndarray, weights: np.ndarray) -> dict[str, Any]:  # fmt: skip
    """Return one run's figures."""
    weights = weights / weights.sum()
    mean = float(np.sum(weights * particles))
    return {
        "system": name,
        "simulations": simulations,
        "generations": generations,
        "whole": whole,
        "inference": inference,
        "w1": wasserstein_to_exact(particles, weights),
        "mean": mean,
        "sd": float(np.sqrt(np.sum(weights * (particles - mean) ** 2))),
    }


def run_simstudy(population: int, seed: int) -> dict[str, Any]:
    """Run the posterior with `simstudy run`; return its figures."""
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        (folder / "observed.csv").write_text(f"output,value\ntotal,{OBSERVED_TOTAL}\n")
        study = {
            "name": "gamma-poisson", "model": "simstudy.models.counts:simulate",
            "fixed": {"days": DAYS},
            "parameters": {"sample": {"bounds": {"rate": [0.0, 20.0]}}},
            "calibrate": {
                "method": "abc-smc", "population_size": population, "epsilon": 0.0,
                "generations": MAX_GENERATIONS, "seed": seed,
                "priors": {"rate": {"dist": "gamma", "a": PRIOR_A, "scale": PRIOR_SCALE}},
            },
            "targets": {"data": "observed.csv", "loss": "mse_of_mean", "bootstrap": 0},
            "seed": seed,
            "execution": {"runner": "thread", "dask": {"n_workers": 2, "threads_per_worker": 1}},
            "output": str(folder / "out"),
        }  # fmt: skip
        (folder / "study.yaml").write_text(yaml.safe_dump(study))
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "flows.cli", "run", str(folder / "study.yaml"), "--no-progress"],
            cwd=REPO, check=True, capture_output=True, timeout=1800,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )  # fmt: skip
        whole = time.perf_counter() - started
        output = folder / "out"
        document = json.loads((output / "calibration.json").read_text())
        inference = (
            datetime.fromisoformat(document["finished_at"])
            - datetime.fromisoformat(document["started_at"])
        ).total_seconds()
        posterior = json.loads((output / "posterior.json").read_text())
        table = pq.read_table(output / "posterior.parquet").to_pandas()
        final = table[table["generation"] == table["generation"].max()]
        result = summary(
            "simstudy (Dask, 2 workers)", posterior["simulations"],
            len(posterior["generations"]), whole, inference,
            final["rate"].to_numpy(), final["weight"].to_numpy(),
        )  # fmt: skip
        # Squared distances (mse_of_mean): |total - 52| is their square root.
        result["schedule"] = [
            math.sqrt(g["epsilon"]) if g["epsilon"] is not None else FIRST_EPSILON
            for g in posterior["generations"]
        ]
        return result


def pyabc_model(parameter: dict[str, float]) -> dict[str, float]:
    """The model as pyabc calls it: parameters in, summary statistics out."""
    seed = int(np.random.default_rng().integers(2**62))
    return counts.simulate({"rate": parameter["rate"], "days": DAYS}, seed)


def pyabc_distance(simulated: dict[str, float], observed: dict[str, float]) -> float:
    """|total - observed total|."""
    return abs(simulated["total"] - observed["total"])


@contextlib.contextmanager
def dask_sampler() -> Iterator[Any]:
    """pyabc's Dask sampler on a LocalCluster of 2 single-thread workers."""
    from distributed import Client, LocalCluster
    from pyabc.sampler import DaskDistributedSampler

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True) as cluster,
        Client(cluster) as client,
    ):
        client.submit(sum, [1]).result(timeout=60)  # workers up before the clock
        yield DaskDistributedSampler(dask_client=client)


@contextlib.contextmanager
def multicore_sampler() -> Iterator[Any]:
    """pyabc's multicore sampler with 2 processes."""
    from pyabc.sampler import MulticoreEvalParallelSampler

    yield MulticoreEvalParallelSampler(n_procs=2)


def run_pyabc(
    name: str, make_sampler: Callable[[], Any], population: int, schedule: list[float]
) -> dict[str, Any]:
    """Run pyabc's ABC-SMC with one sampler and an epsilon schedule; return its figures."""
    import pyabc

    started = time.perf_counter()
    with make_sampler() as sampler, tempfile.TemporaryDirectory() as scratch:
        clock = time.perf_counter()
        prior = pyabc.Distribution(rate=pyabc.RV("gamma", PRIOR_A, scale=PRIOR_SCALE))
        abc = pyabc.ABCSMC(
            pyabc_model, prior, pyabc_distance, population_size=population, sampler=sampler,
            eps=pyabc.ListEpsilon(schedule),
        )  # fmt: skip
        abc.new(f"sqlite:///{scratch}/abc.db", {"total": float(OBSERVED_TOTAL)})
        history = abc.run(minimum_epsilon=0.0, max_nr_populations=len(schedule))
        inference = time.perf_counter() - clock
        frame, weights = history.get_distribution(m=0, t=history.max_t)
        simulations = int(history.total_nr_simulations)
        generations = history.max_t + 1
    whole = time.perf_counter() - started
    return summary(
        name, simulations, generations, whole, inference,
        frame["rate"].to_numpy(), np.asarray(weights),
    )  # fmt: skip


def main() -> None:
    """Run each system `repeats` times; print every run and the medians."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--population", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import logging

    logging.getLogger("ABC").setLevel(logging.WARNING)  # pyabc's per-generation lines
    pyabc_samplers = [
        ("pyabc Dask sampler (2 workers)", dask_sampler),
        ("pyabc multicore sampler (2 processes)", multicore_sampler),
    ]
    posterior = exact()
    print(
        f"Gamma-Poisson, population {args.population}, final epsilon 0; exact posterior mean "
        f"{posterior.mean():.3f}, sd {posterior.std():.3f}; {os.cpu_count()} cores"
    )
    header = "| system | simulations | generations | inference | whole | W1 to exact | mean | sd |"
    print(header + "\n" + "| --- " * 8 + "|")
    results: dict[str, list[dict[str, Any]]] = {}
    for repeat in range(args.repeats):
        ours = run_simstudy(args.population, seed=11 + repeat)
        results.setdefault("simstudy", []).append(ours)
        print(row(ours), flush=True)
        for name, sampler in pyabc_samplers:
            result = run_pyabc(name, sampler, args.population, ours["schedule"])
            results.setdefault(name, []).append(result)
            print(row(result), flush=True)
    print("\nMedians over the repeats:\n" + header + "\n" + "| --- " * 8 + "|")
    for runs in results.values():
        median = {k: statistics.median(r[k] for r in runs) for k in runs[0] if k not in NOT_FIGURES}
        print(row({"system": runs[0]["system"], **median}))


NOT_FIGURES = ("system", "schedule")


def row(result: dict[str, Any]) -> str:
    """Return a result as a table row."""
    return (
        f"| {result['system']} | {result['simulations']:,.0f} | {result['generations']:.0f} "
        f"| {result['inference']:.1f} s | {result['whole']:.1f} s | {result['w1']:.4f} "
        f"| {result['mean']:.3f} | {result['sd']:.3f} |"
    )


if __name__ == "__main__":
    main()
