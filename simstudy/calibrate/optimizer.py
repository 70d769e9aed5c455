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
flow) writes it, through `simstudy.calibrate.journal.JournalFile`.

Crashes: a torn last line is cut; a trial a kill left without all its parameters is told
failed, never run; any other damage raises `JournalError`, naming the file and the way out.
`told_trials`, `asked` and `tell_once` let the driver reconcile its records with the journal.

Determinism: a seeded Optuna sampler is deterministic given the same history only within
one process, because its random state advances with every ask. A resume opens the journal
in a new process, so each ask gets a sampler seeded from (seed, trial number)
(`trial_seed`): the same history then gives the same trial in one run or across a crash.
The qmc sampler is the exception: its scrambled Sobol' sequence must keep one seed, and
its position in the sequence is kept in the journal.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.storages import JournalStorage
from optuna.trial import TrialState

from simstudy.calibrate.journal import JournalFile
from simstudy.calibrate.space import trial_params
from simstudy.calibrate.spec import CalibrateSettings
from simstudy.errors import JournalError

logger = logging.getLogger(__name__)

FAILED_REASON_ATTR = "failed_reason"
"""User attribute of a failed trial: why it has no loss."""

INTERRUPTED_REASON = "interrupted before its parameters were recorded; a new trial is asked instead"
"""Failed reason of a trial a crash left without a value for every parameter."""

START_OVER = (
    "move the journal away and run with --overwrite to start the search over; finished "
    "replicates are reused"
)
"""What to do with a journal that cannot be loaded."""


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


def check_journal_lines(path: Path) -> None:
    """Raise `JournalError` naming the first line of the journal that is not JSON."""
    # Optuna raises a bare JSONDecodeError that names neither the file nor the line (and
    # silently skips a bad last line, until the next append makes it fatal).
    if not path.exists():
        return
    with path.open("rb") as journal:
        for number, line in enumerate(journal, start=1):
            problem = _json_problem(line)
            if problem is not None:
                raise JournalError(
                    f"the Optuna journal {path} is damaged: line {number} is not JSON "
                    f"({problem}): {START_OVER}"
                )


def _json_problem(line: bytes) -> str | None:
    """Return why `line` is not JSON, or None if it is."""
    try:
        json.loads(line)
    except json.JSONDecodeError as exc:
        return f"{exc.msg} at character {exc.colno}"
    except UnicodeDecodeError:
        return "it holds bytes that are not UTF-8 text"
    return None


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
        path: Path | None = None,
        journal: JournalFile | None = None,
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
        self._path = path
        self._journal = journal
        self._study_id = storage.get_study_id_from_name(study.study_name)

    @classmethod
    def open(
        cls,
        path: Path,
        name: str,
        settings: CalibrateSettings,
        space: dict[str, BaseDistribution],
    ) -> Optimizer:
        """Return the optimizer of the journal at `path`: created, or loaded with its trials.

        Raises `JournalError` if the journal cannot be loaded; trials a crash left without
        all their parameters are told failed.
        """
        if settings.seed is None:
            raise ValueError(
                "calibrate.seed is not set: validate the settings within a Study, which "
                "gives them the study's seed"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        cut_torn_line(path)
        check_journal_lines(path)
        sampler = build_sampler(settings.sampler, settings.seed)
        try:
            journal = JournalFile(path)
            storage = JournalStorage(journal)
            study = optuna.create_study(
                storage=storage,
                study_name=name,
                direction="minimize",
                sampler=sampler,
                load_if_exists=True,
            )
        except Exception as exc:  # noqa: BLE001 - any replay failure is the journal's
            raise JournalError(
                f"the Optuna journal {path} cannot be loaded ({type(exc).__name__}: {exc}): "
                f"{START_OVER}"
            ) from exc
        optimizer = cls(study, storage, settings, space, path, journal)
        optimizer._fail_interrupted()
        return optimizer

    def sync(self) -> None:
        """Write what the journal holds through to the disk (before a record relies on it)."""
        if self._journal is not None:
            self._journal.sync()

    def close(self) -> None:
        """Sync and close the journal file."""
        if self._journal is not None:
            self._journal.close()

    @property
    def study(self) -> optuna.Study:
        """Return the Optuna study (for its trials and plots; ask and tell go through here)."""
        return self._study

    def pending(self) -> list[TrialProposal]:
        """Return the trials asked but never told (a round that crashed), by number."""
        # A trial without all its parameters would run the model on the fixed ones only.
        self._fail_interrupted()
        return [_proposal(trial) for trial in self._running()]

    def _running(self) -> list[optuna.trial.FrozenTrial]:
        """Return the RUNNING trials, by number."""
        running = self._study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        return sorted(running, key=lambda t: t.number)

    def _fail_interrupted(self) -> None:
        """Tell failed each RUNNING trial without a value for every parameter of the space."""
        # Optuna writes a trial's creation and each parameter as separate journal lines, and
        # one process writes the journal: a partial trial is one a crash cut short.
        for trial in self._running():
            missing = sorted(set(self._space) - set(trial.params))
            if missing:
                logger.warning(
                    "trial %d lacks parameter(s) %s: %s", trial.number, missing, INTERRUPTED_REASON
                )
                self.tell(trial.number, None, INTERRUPTED_REASON)

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

    def tell_once(self, number: int, loss: float | None, failed_reason: str | None) -> bool:
        """Tell trial `number` as `tell` does if it is still RUNNING; False if already told."""
        # A kill between recording a trial's result and telling Optuna leaves it RUNNING; a
        # kill after the tell leaves it told, and Optuna refuses a second tell.
        trial = self._trial(number)
        if trial.state != TrialState.RUNNING:
            return False
        self.tell(number, loss, failed_reason)
        return True

    def _trial(self, number: int) -> optuna.trial.FrozenTrial:
        """Return trial `number`, or raise `JournalError` if the journal has no such trial."""
        trials = self._study.get_trials(deepcopy=False)  # by number, as Optuna numbers them
        if not 0 <= number < len(trials):
            where = f"the Optuna journal {self._path}" if self._path else "the Optuna journal"
            raise JournalError(
                f"trial {number} is not in {where} ({len(trials)} trial(s) asked): the journal "
                f"is not the one the calibration recorded its trials with; {START_OVER}"
            )
        return trials[number]

    def told(self) -> int:
        """Return how many trials were told (complete or failed)."""
        states = (TrialState.COMPLETE, TrialState.FAIL)
        return len(self._study.get_trials(deepcopy=False, states=states))

    def told_trials(self) -> dict[int, tuple[float | None, str | None]]:
        """Return number -> (loss, failed reason) of each complete or failed trial."""
        told: dict[int, tuple[float | None, str | None]] = {}
        for trial in self._study.get_trials(deepcopy=False):
            if trial.state == TrialState.COMPLETE:
                told[trial.number] = (trial.value, None)
            elif trial.state == TrialState.FAIL:
                told[trial.number] = (None, trial.user_attrs.get(FAILED_REASON_ATTR))
        return told

    def asked(self) -> int:
        """Return how many trials were asked so far, in any state."""
        return len(self._study.get_trials(deepcopy=False))

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
