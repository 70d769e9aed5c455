"""Simulation-based calibration of the ABC-SMC driver on the Gamma-Poisson model (not a test).

    python -m benchmarks.sbc [--datasets 100] [--population 200]

Talts et al. (2018): draw a rate from the prior, simulate a data set from it, infer the
posterior from that data set, and note the rank of the true rate in its posterior: here
the posterior mass below it, the weighted share of the final particles below the truth
(the limit of Talts' rank among L posterior draws as L grows; resampling L draws from the
weighted particles only adds noise). If the inference is exact, the rank is uniform on
(0, 1) over data sets. The benchmark prints the ranks' histogram in ten bins, a
chi-square test of the bins and a Kolmogorov-Smirnov test of the ranks (their p-values),
for the correct setup and two deliberately wrong ones:

- "wrong prior": the inference assumes a prior four times narrower than the one the true
  rates are drawn from (the posterior is pulled toward the wrong mean);
- "epsilon too large": the inference stops at final epsilon 30 (totals within 30 of the
  observed total), so its posterior is too wide and the ranks bunch in the middle.

A correct setup gives a p-value spread over (0, 1); the wrong ones give a p-value near 0.

The driver (`simstudy.calibrate.abc_smc.AbcSmc`, journal and all) runs against an
in-process engine that simulates each set as it is added: the benchmark checks the
algorithm's statistics, which do not depend on the engine (the end-to-end tests in
`tests/flows/test_posterior.py` run the same driver on Prefect and Dask).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.stats

from simstudy.calibrate.abc_smc import AbcSmc
from simstudy.calibrate.priors import Prior
from simstudy.calibrate.spec import AbcSmcSettings
from simstudy.design.expand import ParameterSet
from simstudy.design.identity import replicate_seed
from simstudy.models import counts
from simstudy.run.engine import SetOutcome

DAYS = 10
TRUE_PRIOR = {"dist": "gamma", "a": 2.0, "scale": 2.5}
"""The prior the true rates are drawn from (mean 5 per day)."""
BINS = 10
SBC_SEED = 20_261_206


@dataclass(frozen=True)
class Setup:
    """One way to infer: the prior it assumes and the final epsilon it stops at."""

    name: str
    prior: dict[str, Any]
    epsilon: float


SETUPS = [
    Setup("correct", TRUE_PRIOR, 0.0),
    Setup("wrong prior (4 x narrower)", {"dist": "gamma", "a": 2.0, "scale": 0.625}, 0.0),
    Setup("epsilon too large (30)", TRUE_PRIOR, 30.0),
]


class InlineEngine:
    """The engine protocol in-process: each set is simulated when added; outcomes in order."""

    def __init__(self, observed_total: float, study_seed: int, threads: int = 16):
        self.observed_total = observed_total
        self.study_seed = study_seed
        self.threads = threads
        self.waiting: list[SetOutcome] = []
        self.simulations = 0

    def add_sets(self, sets: Sequence[ParameterSet], replicates: int) -> None:
        """Simulate each set's replicates now; its outcome is delivered later."""
        for parameter_set in sets:
            distances = [
                abs(counts.simulate(parameter_set.params, self._seed(parameter_set, r))["total"]
                    - self.observed_total)
                for r in range(replicates)
            ]  # fmt: skip
            self.simulations += replicates
            loss = float(np.mean(distances))
            self.waiting.append(SetOutcome(parameter_set.param_id, "ok", replicates, loss=loss))

    def extend(self, param_id: str, replicates: int) -> None:
        """ABC-SMC never extends a set."""
        raise AssertionError("ABC-SMC never extends a set")

    def close(self, param_id: str) -> None:
        """Nothing to forget."""

    def capacity(self) -> int:
        """Return the pretend worker threads."""
        return self.threads

    def in_flight(self) -> int:
        """Return the outcomes not delivered yet."""
        return len(self.waiting)

    def run(self, driver: AbcSmc) -> None:
        """Start the driver and deliver outcomes, `threads` at a time, until it is done."""
        driver.start(self)
        while self.waiting:
            batch, self.waiting = self.waiting[: self.threads], self.waiting[self.threads :]
            driver.on_outcomes(self, batch)
        if not driver.finished():
            raise RuntimeError("the engine is idle but the driver is not finished")

    def _seed(self, parameter_set: ParameterSet, replicate: int) -> int:
        return replicate_seed(self.study_seed, parameter_set.param_id, replicate)


def true_rate_and_data(dataset: int) -> tuple[float, float]:
    """Return data set `dataset`'s true rate (from the true prior) and its observed total."""
    rng = np.random.default_rng([SBC_SEED, dataset])
    rate = float(rng.gamma(TRUE_PRIOR["a"], TRUE_PRIOR["scale"]))
    total = counts.simulate({"rate": rate, "days": DAYS}, seed=int(rng.integers(2**62)))["total"]
    return rate, total


def rank_of_truth(setup: Setup, dataset: int, population: int, folder: Path) -> tuple[float, int]:
    """Infer data set `dataset`'s posterior; return the truth's rank and the simulations."""
    rate, total = true_rate_and_data(dataset)
    settings = AbcSmcSettings(
        population_size=population, epsilon=setup.epsilon, generations=30, seed=dataset + 1
    )
    prior = Prior.from_mapping({"rate": setup.prior})
    driver = AbcSmc(settings, prior, folder / f"{dataset}.jsonl", fixed={"days": DAYS})
    engine = InlineEngine(total, study_seed=dataset)
    engine.run(driver)
    final = driver.population
    if final is None:
        raise RuntimeError(f"data set {dataset}: no population ({driver.stop_reason})")
    below = final.particles[:, 0] < rate
    return float(np.sum(final.weights[below]) / np.sum(final.weights)), engine.simulations


def calibrate(setup: Setup, datasets: int, population: int) -> dict[str, Any]:
    """Run the SBC of one setup; return its ranks' histogram, p-value and cost."""
    started, ranks, simulations = time.perf_counter(), [], 0
    with tempfile.TemporaryDirectory() as scratch:
        for dataset in range(datasets):
            rank, spent = rank_of_truth(setup, dataset, population, Path(scratch))
            ranks.append(rank)
            simulations += spent
    histogram = np.histogram(ranks, bins=BINS, range=(0.0, 1.0))[0]
    return {
        "setup": setup.name,
        "histogram": histogram.tolist(),
        "p_value": float(scipy.stats.chisquare(histogram).pvalue),
        "ks_p_value": float(scipy.stats.kstest(ranks, "uniform").pvalue),
        "simulations": simulations,
        "seconds": time.perf_counter() - started,
    }


def main() -> None:
    """Print the SBC of each setup: histogram of ranks, chi-square p-value, cost."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", type=int, default=100)
    parser.add_argument("--population", type=int, default=200)
    args = parser.parse_args()
    print(
        f"SBC, Gamma-Poisson ({DAYS} days, true prior {TRUE_PRIOR}): {args.datasets} data sets, "
        f"population {args.population}; ranks in {BINS} bins"
    )
    print("| setup | ranks per bin | chi-square p | KS p | simulations | wall |")
    print("| --- | --- | --- | --- | --- | --- |")
    for setup in SETUPS:
        result = calibrate(setup, args.datasets, args.population)
        print(
            f"| {result['setup']} | {' '.join(map(str, result['histogram']))} "
            f"| {result['p_value']:.2g} | {result['ks_p_value']:.2g} "
            f"| {result['simulations']:,} | {result['seconds']:.0f} s |",
            flush=True,
        )


if __name__ == "__main__":
    main()
