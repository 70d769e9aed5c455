"""The optimizer: seeded asks repeat, across a reopen of the journal too; failures are told."""

from __future__ import annotations

import json
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

from simstudy.calibrate.optimizer import (
    FAILED_REASON_ATTR,
    INTERRUPTED_REASON,
    Optimizer,
    TrialProposal,
)
from simstudy.calibrate.spec import CalibrateSettings, Sampler
from simstudy.design.sampling import round_significant
from simstudy.errors import JournalError

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
    optimizer.close()


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


CREATE_TRIAL = 4
"""Optuna's journal op code for a new trial (the params follow as separate lines)."""


def cut_after_create_trial(path: Path, params_kept: int) -> None:
    """Cut the journal after the last trial's create line and `params_kept` lines: a kill."""
    lines = path.read_bytes().splitlines(keepends=True)
    created = max(i for i, line in enumerate(lines) if json.loads(line)["op_code"] == CREATE_TRIAL)
    path.write_bytes(b"".join(lines[: created + 1 + params_kept]))


@pytest.mark.parametrize("params_kept", [0, 1])
def test_a_trial_killed_before_its_parameters_is_failed_and_a_new_one_asked(
    tmp_path: Path, params_kept: int
) -> None:
    path = tmp_path / "optuna.journal"
    optimizer = Optimizer.open(path, "demo", settings(), SPACE)
    done, pending = optimizer.ask(2)
    optimizer.tell(done.number, loss(done.params), None)
    (killed,) = optimizer.ask(1)
    cut_after_create_trial(path, params_kept)
    reopened = Optimizer.open(path, "demo", settings(), SPACE)
    assert reopened.pending() == [pending]  # a whole trial is still run; the cut one is not
    trial = reopened.study.get_trials()[killed.number]
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs[FAILED_REASON_ATTR] == INTERRUPTED_REASON
    (new,) = reopened.ask(1)
    assert new.number == killed.number + 1 and set(new.params) == set(SPACE)
    assert Optimizer.open(path, "demo", settings(), SPACE).asked() == 4


def test_a_journal_of_only_a_killed_trial_has_nothing_pending(tmp_path: Path) -> None:
    path = tmp_path / "optuna.journal"
    Optimizer.open(path, "demo", settings(), SPACE).ask(1)
    cut_after_create_trial(path, 0)
    reopened = Optimizer.open(path, "demo", settings(), SPACE)
    assert reopened.pending() == []
    assert reopened.told_trials() == {0: (None, INTERRUPTED_REASON)}
    (new,) = reopened.ask(1)
    assert new.number == 1 and set(new.params) == set(SPACE)


def journal_of_two_told_trials(path: Path) -> list[bytes]:
    """Write a journal with two told trials; return its lines."""
    optimizer = Optimizer.open(path, "demo", settings(), SPACE)
    for proposal in optimizer.ask(2):
        optimizer.tell(proposal.number, loss(proposal.params), None)
    return path.read_bytes().splitlines(keepends=True)


@pytest.mark.parametrize("at", [3, None], ids=["middle", "last"])
def test_a_line_that_is_not_json_is_named_with_its_file_and_what_to_do(
    tmp_path: Path, at: int | None
) -> None:
    path = tmp_path / "optuna.journal"
    lines = journal_of_two_told_trials(path)
    at = len(lines) + 1 if at is None else at
    lines.insert(at - 1, b"garbage\n")  # a complete line: not a torn write, which is cut
    path.write_bytes(b"".join(lines))
    with pytest.raises(JournalError) as raised:
        Optimizer.open(path, "demo", settings(), SPACE)
    message = str(raised.value)
    assert str(path) in message and f"line {at} is not JSON" in message
    assert "move the journal away and run with --overwrite" in message


def test_bytes_that_are_not_text_are_named_with_their_line(tmp_path: Path) -> None:
    path = tmp_path / "optuna.journal"
    lines = journal_of_two_told_trials(path)
    lines.insert(1, b"\xff\xfe\xfa{\n")
    path.write_bytes(b"".join(lines))
    with pytest.raises(JournalError, match="line 2 is not JSON"):
        Optimizer.open(path, "demo", settings(), SPACE)


@pytest.mark.parametrize("line", [b'{"op_code": 99}\n', b'{"foo": 1}\n', b"[1, 2]\n"])
def test_a_journal_optuna_cannot_replay_is_a_journal_error_naming_the_file(
    tmp_path: Path, line: bytes
) -> None:
    path = tmp_path / "optuna.journal"
    path.write_bytes(b"".join(journal_of_two_told_trials(path)) + line)
    with pytest.raises(JournalError) as raised:
        Optimizer.open(path, "demo", settings(), SPACE)
    message = str(raised.value)
    assert f"the Optuna journal {path} cannot be loaded" in message
    assert "run with --overwrite" in message
    assert raised.value.__cause__ is not None  # Optuna's own error stays in the chain


def test_told_trials_and_asked_follow_the_journal(tmp_path: Path) -> None:
    path = tmp_path / "optuna.journal"
    optimizer = Optimizer.open(path, "demo", settings(), SPACE)
    assert optimizer.told_trials() == {} and optimizer.asked() == 0
    a, b, c, _ = optimizer.ask(4)
    optimizer.tell(a.number, 1.5, None)
    optimizer.tell(b.number, None, "every replicate failed")
    optimizer.tell(c.number, math.inf, None)
    expected = {0: (1.5, None), 1: (None, "every replicate failed"), 2: (None, "its loss is inf")}
    assert optimizer.told_trials() == expected and optimizer.asked() == 4
    reopened = Optimizer.open(path, "demo", settings(), SPACE)
    assert reopened.told_trials() == expected and reopened.asked() == 4


def test_tell_once_tells_a_running_trial_and_refuses_a_told_one(tmp_path: Path) -> None:
    path = tmp_path / "optuna.journal"
    optimizer = Optimizer.open(path, "demo", settings(), SPACE)
    a, b = optimizer.ask(2)
    assert optimizer.tell_once(a.number, 2.0, None) is True
    assert optimizer.tell_once(a.number, 3.0, None) is False
    # A kill after the driver recorded trial b but before it told Optuna: the resume tells
    # b once, and a second resume finds both told.
    reopened = Optimizer.open(path, "demo", settings(), SPACE)
    assert reopened.tell_once(a.number, 2.0, None) is False
    assert reopened.tell_once(b.number, None, "every replicate failed") is True
    again = Optimizer.open(path, "demo", settings(), SPACE)
    assert again.tell_once(b.number, None, "every replicate failed") is False
    assert again.told_trials() == {0: (2.0, None), 1: (None, "every replicate failed")}
    assert again.pending() == []


@pytest.mark.parametrize("number", [2, -1])
def test_tell_once_of_a_trial_the_journal_lacks_names_the_journal(
    tmp_path: Path, number: int
) -> None:
    path = tmp_path / "optuna.journal"
    optimizer = Optimizer.open(path, "demo", settings(), SPACE)
    optimizer.ask(2)
    with pytest.raises(JournalError, match=f"trial {number} is not in the Optuna journal"):
        optimizer.tell_once(number, 1.0, None)
