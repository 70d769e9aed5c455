"""The calibration driver on an engine of the test's own: asks, tells, extends, resumes."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import FloatDistribution

from simstudy.calibrate.optimizer import Optimizer
from simstudy.calibrate.search import Search
from simstudy.calibrate.spec import CalibrateSettings
from simstudy.calibrate.trials import TrialLog
from simstudy.design.expand import ParameterSet
from simstudy.run.engine import SetOutcome

SPACE = {"a": FloatDistribution(0.0, 3.0)}


@pytest.fixture(autouse=True)
def _quiet() -> None:
    optuna.logging.set_verbosity(logging.WARNING)


class ScriptedEngine:
    """Runs nothing: records what the driver asks; the test decides when sets complete."""

    def __init__(self, threads: int = 2):
        self.threads = threads
        self.sets: dict[str, ParameterSet] = {}
        self.replicates: dict[str, int] = {}
        self.running: list[str] = []  # in submission order
        self.closed: set[str] = set()
        self.calls: list[tuple[str, str, int]] = []

    def add_sets(self, sets: Sequence[ParameterSet], replicates: int) -> None:
        for parameter_set in sets:
            self.sets[parameter_set.param_id] = parameter_set
            self.replicates[parameter_set.param_id] = replicates
            self.running.append(parameter_set.param_id)
            self.calls.append(("add", parameter_set.param_id, replicates))

    def extend(self, param_id: str, replicates: int) -> None:
        assert param_id not in self.closed and param_id not in self.running
        self.replicates[param_id] = replicates
        self.running.append(param_id)
        self.calls.append(("extend", param_id, replicates))

    def close(self, param_id: str) -> None:
        self.closed.add(param_id)

    def capacity(self) -> int:
        return self.threads

    def in_flight(self) -> int:
        return len(self.running)

    def complete(self, search: Search, loss: Any, count: int | None = None) -> None:
        """Complete the first `count` running sets (all by default), loss(params, replicates)."""
        done = self.running[: count if count is not None else len(self.running)]
        self.running = self.running[len(done) :]
        outcomes = []
        for pid in done:
            value = loss(self.sets[pid].params, self.replicates[pid])
            outcomes.append(
                SetOutcome(pid, "ok", self.replicates[pid], loss=value, loss_se=0.0, loss_bias=0.0)
                if value is not None
                else SetOutcome(pid, "failed", self.replicates[pid], reasons=["0/2 replicates ok"])
            )
        search.on_outcomes(self, outcomes)


def make_search(
    tmp_path: Path, trials: int = 6, parallel: int = 2, replicates: Any = 2, **extra: Any
) -> Search:
    sampler = extra.pop("sampler", "random")
    settings = CalibrateSettings(
        sampler=sampler, trials=trials, parallel=parallel, replicates=replicates, seed=1, **extra
    )
    optimizer = Optimizer.open(tmp_path / "optuna.journal", "s", settings, SPACE)
    return Search(settings, {"k": 1}, optimizer, TrialLog(tmp_path / "trials.jsonl"))


def distance(params: dict[str, Any], replicates: int) -> float:
    return (params["a"] - 1.0) ** 2


def run_to_end(search: Search, engine: ScriptedEngine, loss: Any = distance) -> None:
    search.start(engine)
    for _ in range(100):
        if search.finished():
            return
        engine.complete(search, loss, count=1)
    raise AssertionError("the search never finished")


def test_a_trial_is_told_as_soon_as_its_set_completes_and_a_new_one_fills_its_slot(
    tmp_path: Path,
) -> None:
    search, engine = make_search(tmp_path), ScriptedEngine()
    search.start(engine)
    assert len(engine.running) == 2 and search.optimizer.asked() == 2  # `parallel` in flight
    engine.complete(search, distance, count=1)
    assert search.optimizer.told() == 1, "told before the other trial finished"
    assert search.optimizer.asked() == 3 and len(engine.running) == 2, "its slot refilled"
    assert all(params["k"] == 1 for params in (s.params for s in engine.sets.values()))


def test_every_trial_is_told_once_and_recorded_before_it_is_told(tmp_path: Path) -> None:
    search, engine = make_search(tmp_path), ScriptedEngine()
    run_to_end(search, engine)
    told = search.optimizer.told_trials()
    assert sorted(told) == list(range(6))
    logged = TrialLog(tmp_path / "trials.jsonl").read()
    for number, (loss, reason) in told.items():
        assert reason is None
        assert logged[number].state == "complete" and logged[number].score == loss


def test_a_failed_set_is_told_failed_with_its_reason(tmp_path: Path) -> None:
    search, engine = make_search(tmp_path, trials=3), ScriptedEngine()
    run_to_end(search, engine, loss=lambda params, n: None)
    assert {reason for _, reason in search.optimizer.told_trials().values()} == {
        "0/2 replicates ok"
    }
    assert search.best() == []


def two_close_trials(tmp_path: Path, bias: float | None) -> tuple[Search, ScriptedEngine, list]:
    """Start a search of two trials, and complete both within each other's noise."""
    search = make_search(tmp_path, trials=2, replicates={"min": 2, "max": 8})
    engine = ScriptedEngine()
    search.start(engine)
    pids = list(engine.running)
    engine.running = []
    search.on_outcomes(engine, [
        SetOutcome(pid, "ok", 2, loss=10.0 + i, loss_se=5.0, loss_bias=bias)
        for i, pid in enumerate(pids)
    ])  # fmt: skip
    engine.running = []
    return search, engine, pids


def test_competitive_trials_are_extended_and_scored_as_at_their_minimum_replicates(
    tmp_path: Path,
) -> None:
    # Both trials within each other's noise: both double, interleaved with nothing else.
    search, engine, pids = two_close_trials(tmp_path, bias=3.0)
    assert sorted(call for call in engine.calls if call[0] == "extend") == sorted(
        ("extend", pid, 4) for pid in pids
    )
    assert [r.score for r in search.best()] == [10.0, 11.0]  # at min replicates: as measured
    assert sorted(loss for loss, _ in search.optimizer.told_trials().values()) == [10.0, 11.0]
    # The extension's outcome updates the record, not what Optuna was told.
    search.on_outcomes(engine, [SetOutcome(pids[0], "ok", 4, loss=9.0, loss_se=0.1, loss_bias=1.5)])
    record = next(r for r in search.records.values() if r.param_id == pids[0])
    # As at 2 replicates: its bias at 4 (1.5) would be twice that at 2.
    assert (record.replicates, record.score) == (4, 10.5)
    assert sorted(loss for loss, _ in search.optimizer.told_trials().values()) == [10.0, 11.0]


def test_a_failed_extension_keeps_the_trial_s_loss_and_is_not_extended_again(
    tmp_path: Path,
) -> None:
    search, engine, pids = two_close_trials(tmp_path, bias=None)
    search.on_outcomes(engine, [SetOutcome(pids[0], "failed", 4, reasons=["timed out"])])
    record = next(r for r in search.records.values() if r.param_id == pids[0])
    assert record.state == "complete" and record.loss == 10.0 and record.replicates == 2
    assert record.allocation.startswith("kept at 2 replicates")
    assert pids[0] not in engine.running


def test_a_search_killed_after_recording_a_trial_tells_it_on_resume_without_running_it(
    tmp_path: Path,
) -> None:
    search, engine = make_search(tmp_path), ScriptedEngine()
    search.start(engine)
    first = engine.running[0]
    engine.running = engine.running[1:]
    outcome = SetOutcome(first, "ok", 2, loss=4.0, loss_se=0.0)
    # Killed between the log and the tell: the record is on disk, Optuna never heard.
    record = search._apply(next(r for r in search.records.values() if r.param_id == first), outcome)
    assert record is not None
    search.log.append([record])

    resumed, engine = make_search(tmp_path), ScriptedEngine()
    resumed.start(engine)
    assert resumed.optimizer.told_trials()[record.trial] == (4.0, None)
    assert first not in engine.running, "a recorded trial does not run again"
    assert len(engine.running) == 2  # the other trial again, and a new one
    run_to_end(resumed, engine)
    assert sorted(resumed.optimizer.told_trials()) == list(range(6))


def test_a_trial_in_flight_at_a_kill_runs_again_with_its_parameters(tmp_path: Path) -> None:
    search, engine = make_search(tmp_path), ScriptedEngine()
    search.start(engine)
    before = {engine.sets[pid].params["a"] for pid in engine.running}
    resumed, engine = make_search(tmp_path), ScriptedEngine()
    resumed.start(engine)
    assert {engine.sets[pid].params["a"] for pid in engine.running} == before
    assert resumed.optimizer.asked() == 2, "no new trial while the old ones fill the slots"


def test_a_trial_a_kill_left_without_parameters_is_recorded_and_replaced(
    tmp_path: Path,
) -> None:
    search, engine = make_search(tmp_path, trials=4), ScriptedEngine()
    search.start(engine)  # trials 0 and 1 asked and logged
    # Killed while a third trial was being written: created, its parameter never.
    search.optimizer.study.ask()
    journal = tmp_path / "optuna.journal"
    lines = journal.read_bytes().splitlines(keepends=True)
    created = max(i for i, line in enumerate(lines) if b'"op_code":4,' in line)
    journal.write_bytes(b"".join(lines[: created + 1]))

    resumed, engine = make_search(tmp_path, trials=4), ScriptedEngine()
    run_to_end(resumed, engine)
    interrupted = [r for r in resumed.records.values() if r.state == "failed"]
    assert [r.trial for r in interrupted] == [2]
    assert "interrupted before its parameters" in interrupted[0].allocation
    complete = [r for r in resumed.records.values() if r.state == "complete"]
    assert len(complete) == 4, "the budget of trials is kept: a new trial replaced it"
    assert TrialLog(tmp_path / "trials.jsonl").read()[2].state == "failed"


def finishing_order_histories(tmp_path: Path, order: str) -> list[list[tuple[Any, ...]]]:
    """Run one TPE search twice, sets finishing first-in and last-in; return both histories."""
    histories = []
    for name, pick in (("first", 0), ("last", -1)):
        folder = tmp_path / f"{order}-{name}"
        folder.mkdir()
        search = make_search(folder, trials=16, parallel=3, order=order, sampler="tpe")
        engine = ScriptedEngine()
        search.start(engine)
        while not search.finished():
            pid = engine.running.pop(pick)
            value = distance(engine.sets[pid].params, 2)
            search.on_outcomes(engine, [SetOutcome(pid, "ok", 2, loss=value, loss_se=0.0)])
        trials = search.optimizer.study.get_trials()
        histories.append([(t.number, t.params["a"], t.value) for t in trials])
    return histories


def test_told_in_ask_order_the_trials_do_not_depend_on_which_finishes_first(
    tmp_path: Path,
) -> None:
    first, last = finishing_order_histories(tmp_path, "ask")
    assert first == last
    # Told as they finish, the sampler learns from other trials: the search differs.
    first, last = finishing_order_histories(tmp_path, "finish")
    assert first != last
