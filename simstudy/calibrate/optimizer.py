"""The ask/tell loop: an Optuna study kept in a journal file in the study's output.

```python
>>> from pathlib import Path
>>> from tempfile import mkdtemp
>>> from simstudy.calibrate.optimizer import Optimizer
>>> from simstudy.calibrate.spec import CalibrateSettings
>>> from optuna.distributions import FloatDistribution
>>> settings = CalibrateSettings(trials=4, parallel=2, replicates=4, seed=7)
>>> path = Path(mkdtemp()) / "optuna.journal"
>>> optimizer = Optimizer.open(path, "demo", settings, {"beta": FloatDistribution(0.1, 0.6)})
>>> [p.number for p in optimizer.ask(2)]
[0, 1]
>>> optimizer.tell(0, 3.5, None); optimizer.tell(1, None, "every replicate failed")
>>> optimizer.told()
2
```

Why a journal file and not SQLite: SQLite's lock fails under concurrent writers ("database
is locked", optuna issue 820), while the journal is an append-only log that a rerun
replays, so a crash loses at most the line being written. One process (the calibration's
flow) writes it.

Determinism: a seeded Optuna sampler is deterministic given the same history only within
one process, because its random state advances with every ask. A resume opens the journal
in a new process, so each ask gets a sampler seeded from (seed, trial number)
(`trial_seed`): the same history then gives the same trial in one run or across a crash.
The qmc sampler is the exception: its scrambled Sobol' sequence must keep one seed, and
its position in the sequence is kept in the journal.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from simstudy.calibrate.space import trial_params
from simstudy.calibrate.spec import CalibrateSettings

logger = logging.getLogger(__name__)

FAILED_REASON_ATTR = "failed_reason"
"""User attribute of a failed trial: why it has no loss."""


@dataclass(frozen=True)
class TrialProposal:
    """A trial asked from the optimizer: its number and its parameter values (rounded)."""

    number: int
    params: dict[str, Any]


def trial_seed(seed: int, number: int) -> int:
    """Return the sampler seed of trial `number` (a 32-bit int, as numpy's RandomState takes)."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


def cut_torn_line(path: Path) -> None:
    """Cut a journal back to its last complete line (a write a crash interrupted).

    Optuna skips an unterminated last line when it reads, but appends the next line after
    it: the two would then make one line it cannot parse, and the journal would never load.
    """
    if not path.exists():
        return
    with path.open("rb+") as journal:
        data = journal.read()
        if data and not data.endswith(b"\n"):
            journal.truncate(data.rfind(b"\n") + 1)


def build_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """Return the Optuna sampler called `name` in the study file, seeded with `seed`."""
    if name == "tpe":
        # The constant liar lets a round ask several trials before any is told; the
        # multivariate model follows a ridge of parameters that trade off (beta and gamma
        # of an epidemic), which independent per-parameter models miss.
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True, multivariate=True)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, qmc_type="sobol", scramble=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"calibrate.sampler {name!r} is unknown: use tpe, cmaes, gp, qmc or random")


class Optimizer:
    """An Optuna study (minimise the loss) in a journal file, asked and told by trial number.

    Args:
        study: the Optuna study, loaded from `storage`.
        storage: its journal storage.
        settings: the study file's `calibrate` section, with its seed resolved.
        space: the search space (`space.search_space`).

    Use `Optimizer.open`, which creates the journal or resumes from it.
    """

    def __init__(
        self,
        study: optuna.Study,
        storage: JournalStorage,
        settings: CalibrateSettings,
        space: dict[str, BaseDistribution],
    ):
        if settings.seed is None:
            raise ValueError(
                "calibrate.seed is not set: validate the settings within a Study, which "
                "gives them the study's seed"
            )
        self._study = study
        self._storage = storage
        self._settings = settings
        self._seed: int = settings.seed
        self._space = space
        self._study_id = storage.get_study_id_from_name(study.study_name)

    @classmethod
    def open(
        cls,
        path: Path,
        name: str,
        settings: CalibrateSettings,
        space: dict[str, BaseDistribution],
    ) -> Optimizer:
        """Return the optimizer of the journal at `path`: created, or loaded with its trials."""
        if settings.seed is None:
            raise ValueError(
                "calibrate.seed is not set: validate the settings within a Study, which "
                "gives them the study's seed"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        cut_torn_line(path)
        storage = JournalStorage(JournalFileBackend(str(path)))
        study = optuna.create_study(
            storage=storage,
            study_name=name,
            direction="minimize",
            sampler=build_sampler(settings.sampler, settings.seed),
            load_if_exists=True,
        )
        return cls(study, storage, settings, space)

    @property
    def study(self) -> optuna.Study:
        """Return the Optuna study (for its trials and plots; ask and tell go through here)."""
        return self._study

    def pending(self) -> list[TrialProposal]:
        """Return the trials asked but never told (a round that crashed), by number."""
        running = self._study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        return [_proposal(trial) for trial in sorted(running, key=lambda t: t.number)]

    def ask(self, n: int) -> list[TrialProposal]:
        """Return `n` new trials, numbered on from the last one asked."""
        proposals = []
        for _ in range(n):
            if self._settings.sampler != "qmc":
                number = len(self._study.get_trials(deepcopy=False))
                self._study.sampler = build_sampler(
                    self._settings.sampler, trial_seed(self._seed, number)
                )
            trial = self._study.ask(self._space)
            proposals.append(TrialProposal(trial.number, trial_params(trial.params)))
        return proposals

    def tell(self, number: int, loss: float | None, failed_reason: str | None) -> None:
        """Record trial `number`'s loss; no loss (or not finite) or a reason fails it."""
        if failed_reason is None and loss is not None and not math.isfinite(loss):
            failed_reason = f"its loss is {loss}"
        if loss is not None and failed_reason is None:
            self._study.tell(number, loss)
            return
        reason = failed_reason or "no loss"
        trial_id = self._storage.get_trial_id_from_study_id_trial_number(self._study_id, number)
        # Set before the tell: a finished trial's attributes cannot change.
        self._storage.set_trial_user_attr(trial_id, FAILED_REASON_ATTR, reason)
        self._study.tell(number, state=TrialState.FAIL)

    def told(self) -> int:
        """Return how many trials were told (complete or failed)."""
        states = (TrialState.COMPLETE, TrialState.FAIL)
        return len(self._study.get_trials(deepcopy=False, states=states))

    def importances(self) -> dict[str, float]:
        """Return Optuna's parameter importances (empty with fewer than 2 complete trials)."""
        complete = self._study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if len(complete) < 2:
            logger.info("no parameter importances: %d complete trial(s), 2 needed", len(complete))
            return {}
        try:
            found = optuna.importance.get_param_importances(self._study)
        except Exception as exc:  # noqa: BLE001 - importances are a report's extra, never fatal
            logger.warning("no parameter importances: %s: %s", type(exc).__name__, exc)
            return {}
        return {name: float(value) for name, value in found.items()}


def _proposal(trial: optuna.trial.FrozenTrial) -> TrialProposal:
    return TrialProposal(trial.number, trial_params(trial.params))
