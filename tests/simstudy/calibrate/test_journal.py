"""The calibration's journal file is Optuna's format, read and written either way."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from simstudy.calibrate.journal import JournalFile

optuna.logging.set_verbosity(optuna.logging.WARNING)


def run_trials(storage: JournalStorage, count: int) -> optuna.Study:
    study = optuna.create_study(storage=storage, study_name="demo", load_if_exists=True,
                                sampler=optuna.samplers.RandomSampler(seed=1))  # fmt: skip
    for _ in range(count):
        trial = study.ask()
        study.tell(trial, trial.suggest_float("x", 0, 1) ** 2)
    return study


def trials_of(storage: JournalStorage) -> list[tuple[int, float | None, dict[str, float]]]:
    study = optuna.load_study(study_name="demo", storage=storage)
    return [(t.number, t.value, t.params) for t in study.trials]


def test_optuna_reads_what_it_wrote_and_the_other_way_round(tmp_path: Path) -> None:
    path = tmp_path / "optuna.journal"
    ours = JournalFile(path)
    run_trials(JournalStorage(ours), 3)
    # Flushed as written: another reader sees every line before it is synced or closed.
    written = trials_of(JournalStorage(JournalFileBackend(str(path))))
    assert [number for number, _, _ in written] == [0, 1, 2]
    ours.close()

    run_trials(JournalStorage(JournalFileBackend(str(path))), 2)  # Optuna's backend goes on
    resumed = JournalFile(path)
    assert trials_of(JournalStorage(resumed)) == trials_of(
        JournalStorage(JournalFileBackend(str(path)))
    )
    assert len(trials_of(JournalStorage(resumed))) == 5
    resumed.sync()  # nothing to sync: a no-op
    resumed.close()
    resumed.close()  # closing twice is harmless
