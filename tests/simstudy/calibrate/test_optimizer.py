"""The optimizer: seeded asks repeat, across a reopen of the journal too; failures are told."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState

from simstudy.calibrate.optimizer import FAILED_REASON_ATTR, Optimizer, TrialProposal
from simstudy.calibrate.spec import CalibrateSettings, Sampler
from simstudy.sampling import round_significant

SPACE: dict[str, BaseDistribution] = {
    "beta": FloatDistribution(0.1, 0.6),
    "gamma": FloatDistribution(0.05, 0.5, log=True),
    "days": IntDistribution(10, 40),
}
SAMPLERS: list[Sampler] = ["tpe", "qmc", "random", "cmaes"]


@pytest.fixture(autouse=True)
def _quiet() -> Any:
    # Optuna logs each told trial, and cmaes warns about the integer parameter.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def settings(sampler: Sampler = "tpe", seed: int = 3) -> CalibrateSettings:
    return CalibrateSettings(trials=24, parallel=4, replicates=4, sampler=sampler, seed=seed)


def loss(params: dict[str, Any]) -> float:
    return (params["beta"] - 0.3) ** 2 + (math.log(params["gamma"] / 0.1)) ** 2 + params["days"]


def calibrate(path: Path, sampler: Sampler, reopen_in_round: int | None = None) -> list[dict]:
    """Run 6 rounds of 4 trials; optionally reopen the journal mid-round, as a resume does."""
    optimizer = Optimizer.open(path, "demo", settings(sampler), SPACE)
    asked: list[dict] = []
    for round_ in range(6):
        proposals = optimizer.ask(4)
        if round_ == reopen_in_round:
            optimizer.tell(proposals[0].number, loss(proposals[0].params), None)
            optimizer = Optimizer.open(path, "demo", settings(sampler), SPACE)
            assert optimizer.pending() == proposals[1:]
            proposals = [proposals[0], *optimizer.pending()]
            for proposal in proposals[1:]:
                optimizer.tell(proposal.number, loss(proposal.params), None)
        else:
            for proposal in proposals:
                optimizer.tell(proposal.number, loss(proposal.params), None)
        asked.extend(p.params for p in proposals)
    assert optimizer.told() == 24
    return asked


def _sampler_available(sampler: str) -> None:
    if sampler == "cmaes":
        pytest.importorskip("cmaes")


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_the_same_seed_and_history_ask_the_same_trials(tmp_path: Path, sampler: Sampler) -> None:
    _sampler_available(sampler)
    first = calibrate(tmp_path / "a" / "optuna.journal", sampler)
    second = calibrate(tmp_path / "b" / "optuna.journal", sampler)
    assert first == second
    assert len({tuple(p.values()) for p in first}) > 1


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_a_reopened_journal_returns_pending_trials_and_asks_the_same_next(
    tmp_path: Path, sampler: Sampler
) -> None:
    _sampler_available(sampler)
    uninterrupted = calibrate(tmp_path / "a" / "optuna.journal", sampler)
    resumed = calibrate(tmp_path / "b" / "optuna.journal", sampler, reopen_in_round=3)
    assert resumed == uninterrupted


def test_another_seed_asks_other_trials(tmp_path: Path) -> None:
    a = Optimizer.open(tmp_path / "a.journal", "demo", settings(seed=1), SPACE).ask(4)
    b = Optimizer.open(tmp_path / "b.journal", "demo", settings(seed=2), SPACE).ask(4)
    assert [p.params for p in a] != [p.params for p in b]


def test_asked_values_lie_within_bounds_and_are_rounded(tmp_path: Path) -> None:
    optimizer = Optimizer.open(tmp_path / "j.journal", "demo", settings("random"), SPACE)
    for proposal in optimizer.ask(20):
        beta, gamma, days = (proposal.params[name] for name in ("beta", "gamma", "days"))
        assert 0.1 <= beta <= 0.6 and 0.05 <= gamma <= 0.5 and 10 <= days <= 40
        assert type(days) is int
        assert beta == float(round_significant(np.asarray(beta)))


def test_failures_are_told_failed_with_their_reason(tmp_path: Path) -> None:
    optimizer = Optimizer.open(tmp_path / "j.journal", "demo", settings(), SPACE)
    a, b, c, d = optimizer.ask(4)
    optimizer.tell(a.number, None, "every replicate failed: ZeroDivisionError")
    optimizer.tell(b.number, None, None)
    optimizer.tell(c.number, math.nan, None)
    optimizer.tell(d.number, 2.5, None)
    trials = {t.number: t for t in optimizer.study.get_trials()}
    assert [trials[n].state for n in range(4)] == [TrialState.FAIL] * 3 + [TrialState.COMPLETE]
    assert trials[0].user_attrs[FAILED_REASON_ATTR] == "every replicate failed: ZeroDivisionError"
    assert trials[1].user_attrs[FAILED_REASON_ATTR] == "no loss"
    assert trials[2].user_attrs[FAILED_REASON_ATTR] == "its loss is nan"
    assert trials[3].value == 2.5
    assert optimizer.told() == 4 and optimizer.pending() == []


def test_a_loss_with_a_reason_is_told_failed(tmp_path: Path) -> None:
    optimizer = Optimizer.open(tmp_path / "j.journal", "demo", settings(), SPACE)
    (proposal,) = optimizer.ask(1)
    optimizer.tell(proposal.number, 3.0, "below min_success_fraction")
    (trial,) = optimizer.study.get_trials()
    assert trial.state == TrialState.FAIL


def test_the_calibration_goes_on_after_failed_trials(tmp_path: Path) -> None:
    optimizer = Optimizer.open(tmp_path / "j.journal", "demo", settings(), SPACE)
    for proposal in optimizer.ask(4):
        optimizer.tell(proposal.number, None, "failed")
    assert [p.number for p in optimizer.ask(2)] == [4, 5]


def test_importances_need_two_complete_trials(tmp_path: Path) -> None:
    optimizer = Optimizer.open(tmp_path / "j.journal", "demo", settings("random"), SPACE)
    assert optimizer.importances() == {}
    for proposal in optimizer.ask(12):
        optimizer.tell(proposal.number, loss(proposal.params), None)
    importances = optimizer.importances()
    assert set(importances) == set(SPACE)
    assert all(value >= 0 for value in importances.values())
    assert sum(importances.values()) == pytest.approx(1.0)


def test_a_categorical_space_is_asked_and_reopened(tmp_path: Path) -> None:
    space: dict[str, BaseDistribution] = {"variant": CategoricalDistribution(["a", "b", True])}
    path = tmp_path / "j.journal"
    optimizer = Optimizer.open(path, "demo", settings(), space)
    proposals = optimizer.ask(3)
    assert all(p.params["variant"] in ("a", "b", True) for p in proposals)
    assert Optimizer.open(path, "demo", settings(), space).pending() == proposals


def test_unresolved_seed_is_refused(tmp_path: Path) -> None:
    unseeded = CalibrateSettings(trials=4, replicates=2)
    with pytest.raises(ValueError, match="calibrate.seed is not set"):
        Optimizer.open(tmp_path / "j.journal", "demo", unseeded, SPACE)


def test_proposals_are_frozen() -> None:
    proposal = TrialProposal(0, {"beta": 0.2})
    with pytest.raises(AttributeError):
        proposal.number = 1  # type: ignore[misc]


def test_a_torn_last_journal_line_is_cut_and_the_journal_keeps_loading(tmp_path: Path) -> None:
    path = tmp_path / "optuna.journal"
    optimizer = Optimizer.open(path, "demo", settings(), SPACE)
    for proposal in optimizer.ask(3):
        optimizer.tell(proposal.number, loss(proposal.params), None)
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"op_code": 4, "torn')  # a crash mid-write
    reopened = Optimizer.open(path, "demo", settings(), SPACE)
    assert path.read_bytes().startswith(whole) and b'"torn' not in path.read_bytes()
    for proposal in reopened.ask(2):  # appended after a complete line: the journal still loads
        reopened.tell(proposal.number, loss(proposal.params), None)
    assert Optimizer.open(path, "demo", settings(), SPACE).told() == 5
