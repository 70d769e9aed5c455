"""Posterior predictive draws: fresh replicates of the final particles, and their bands."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from simstudy.analysis.targets import OutputTarget, Targets
from simstudy.calibrate.abc_smc import AbcSmc, AbcSmcSettings
from simstudy.calibrate.predictive import WithPredictive, coverage, predictive_table
from simstudy.calibrate.priors import Prior
from simstudy.design.expand import ParameterSet
from simstudy.run.engine import SetOutcome


class Ledger:
    """An in-process engine that, like the real one, refuses to extend a closed set."""

    def __init__(self) -> None:
        self.replicates: dict[str, int] = {}  # param_id -> replicates asked in all
        self.first_asked: dict[str, int] = {}  # param_id -> replicates when first added
        self.params: dict[str, dict[str, Any]] = {}
        self.closed: set[str] = set()
        self.queue: list[str] = []

    def add_sets(self, sets: Sequence[ParameterSet], replicates: int) -> None:
        for parameter_set in sets:
            assert parameter_set.param_id not in self.replicates, "a set added twice"
            self.replicates[parameter_set.param_id] = replicates
            self.first_asked[parameter_set.param_id] = replicates
            self.params[parameter_set.param_id] = parameter_set.params
            self.queue.append(parameter_set.param_id)

    def extend(self, param_id: str, replicates: int) -> None:
        assert param_id not in self.closed, "a closed set cannot be extended"
        assert param_id not in self.queue, "extended before its outcome"
        assert replicates > self.replicates[param_id]
        self.replicates[param_id] = replicates
        self.queue.append(param_id)

    def close(self, param_id: str) -> None:
        assert param_id not in self.queue, "closed before its outcome"
        self.closed.add(param_id)

    def capacity(self) -> int:
        return 4

    def in_flight(self) -> int:
        return len(self.queue)

    def run(self, driver: WithPredictive) -> None:
        driver.start(self)
        while self.queue:
            batch, self.queue = self.queue[:3], self.queue[3:]
            outcomes = [
                SetOutcome(pid, "ok", self.replicates[pid], loss=abs(self.params[pid]["x"] - 0.3))
                for pid in batch
            ]
            driver.on_outcomes(self, outcomes)
        assert driver.finished(), "idle but not finished"


def driver(journal: Path, predictive: int = 2, **settings: Any) -> WithPredictive:
    abc = AbcSmcSettings.model_validate(
        {"seed": 3, "population_size": 20, "generations": 3, **settings}
    )
    return WithPredictive(AbcSmc(abc, Prior.from_mapping({"x": [0.0, 1.0]}), journal), predictive)


def test_each_final_particle_gets_fresh_replicates_and_only_it_stays_open(tmp_path: Path) -> None:
    wrapped, engine = driver(tmp_path / "abc.jsonl", predictive=2), Ledger()
    engine.run(wrapped)
    final = wrapped.driver.population
    assert final is not None and len(wrapped.driver.generations) == 3
    for pid in final.param_ids:
        assert engine.replicates[pid] == 1 + 2  # the distance's replicate, then 2 fresh ones
        assert pid not in engine.closed
    others = set(engine.replicates) - set(final.param_ids)
    assert others and others <= engine.closed  # every other set was closed (memory)
    assert all(engine.replicates[pid] == 1 for pid in others)
    draws = wrapped.draws()
    assert [d[0] for d in draws] == final.param_ids
    assert all(d[2] == range(1, 3) for d in draws)
    assert sum(d[1] for d in draws) == pytest.approx(1.0)


def test_a_resumed_posterior_adds_its_particles_again_with_their_fresh_replicates(
    tmp_path: Path,
) -> None:
    journal = tmp_path / "abc.jsonl"
    Ledger().run(driver(journal, predictive=1))
    resumed, engine = driver(journal, predictive=3), Ledger()  # may change: not the particles
    engine.run(resumed)
    final = resumed.driver.population
    assert final is not None and set(engine.replicates) == set(final.param_ids)
    assert all(engine.first_asked[pid] == 1 + 3 for pid in final.param_ids)


def test_no_predictive_replicates_finish_with_the_driver(tmp_path: Path) -> None:
    wrapped, engine = driver(tmp_path / "abc.jsonl", predictive=0), Ledger()
    engine.run(wrapped)
    assert wrapped.draws() == [] and max(engine.replicates.values()) == 1


def targets(*outputs: OutputTarget) -> Targets:
    return Targets(outputs, dispersion=None, bootstrap=0, seed=1, source="observed.csv")


def target(output: str, values: list[float], t: list[int] | None = None) -> OutputTarget:
    return OutputTarget(
        output, "mse_of_mean", None if t is None else np.array(t), np.array(values, float),
        np.ones(len(values)), None,
    )  # fmt: skip


def test_bands_are_weighted_quantiles_of_the_draws_at_each_target_point() -> None:
    draws = [("a", 0.5, range(1, 2)), ("b", 0.25, range(1, 3)), ("c", 0.25, range(1, 2))]
    outputs = {
        ("a", 1): {"total": 10.0, "curve": [0.0, 1.0, 2.0]},
        ("b", 1): {"total": 20.0, "curve": [0.0, 3.0, 4.0]},
        ("b", 2): {"total": 30.0, "curve": [0.0, 5.0, 6.0]},
        # ("c", 1) failed: left out, the others reweighted
    }
    table = predictive_table(
        targets(target("total", [12.0]), target("curve", [1.5, 9.0], t=[1, 2])), draws, outputs
    ).to_pydict()
    assert table["output"] == ["total", "curve", "curve"] and table["t"] == [None, 1, 2]
    assert table["draws"] == [3, 3, 3] and table["observed"] == [12.0, 1.5, 9.0]
    # Reweighted, a weighs 2/3 and each of b's two draws 1/6; their mass midpoints are at
    # 1/3, 3/4 and 11/12: the median is 40 % of the way from a's value to b's first.
    assert table["q50"] == pytest.approx([14.0, 1.8, 2.8])
    assert table["q2_5"][0] == 10.0 and table["q97_5"][0] == 30.0
    assert coverage(predictive_table(
        targets(target("curve", [1.5, 9.0], t=[1, 2])), draws, outputs
    )) == {"curve": {"points": 2, "inside_95": 0.5}}  # fmt: skip
