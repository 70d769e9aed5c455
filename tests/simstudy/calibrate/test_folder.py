"""A calibration's folder: the search's state is Optuna's journal and the trial log, together."""

from __future__ import annotations

from pathlib import Path

import pytest
from optuna.distributions import FloatDistribution

from simstudy.calibrate.folder import check_search_state, journal_trials
from simstudy.calibrate.optimizer import Optimizer
from simstudy.calibrate.spec import CalibrateSettings
from simstudy.calibrate.trials import TrialLog, TrialRecord
from simstudy.errors import JournalError
from simstudy.output.location import OutputStore

SETTINGS = CalibrateSettings(sampler="random", trials=4, replicates=2, seed=1)


def open_journal(folder: Path) -> Optimizer:
    return Optimizer.open(folder / "optuna.journal", "s", SETTINGS, {"a": FloatDistribution(0, 1)})


def test_a_journal_without_trials_is_no_search_and_does_not_lock_the_folder(
    tmp_path: Path,
) -> None:
    open_journal(tmp_path)  # a run that failed before its first trial (a refused preflight)
    store = OutputStore(str(tmp_path))
    assert journal_trials(store) == 0
    check_search_state(store)


def test_a_journal_with_trials_but_no_trial_log_says_which_is_missing(tmp_path: Path) -> None:
    open_journal(tmp_path).ask(2)
    store = OutputStore(str(tmp_path))
    assert journal_trials(store) == 2
    with pytest.raises(JournalError, match="trials.jsonl beside it is missing"):
        check_search_state(store)
    record = TrialRecord(trial=0, ask=1, param_id="x", state="pending", replicates=0,
                         params={"a": 0.5})  # fmt: skip
    TrialLog(tmp_path / "trials.jsonl").append([record])
    check_search_state(store)
    (tmp_path / "optuna.journal").unlink()
    with pytest.raises(JournalError, match="optuna.journal beside it is missing"):
        check_search_state(store)
