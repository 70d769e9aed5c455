"""The calibration loop: asynchronous ask/tell over an engine, adaptive replicates.

```python
>>> from simstudy.calibrate.search import Search
```

`Search` is a driver (`simstudy/run/engine.py`): it keeps `calibrate.parallel` trials in
flight, asks Optuna for new ones as soon as capacity frees, and tells a trial as soon as
its set is complete, so the cluster never idles while trials remain. No rounds: one
engine, one flow run. Every change of a trial is appended to `trials.jsonl` (`TrialLog`)
*before* Optuna is told, so a kill at any point resumes with the same told trials.

Adaptive replicates compare like with like: a loss of a replicate mean falls as
replicates grow (`simstudy.analysis.losses.replicate_bias`), so every trial is scored as
at `replicates.min` (`score`): its loss there, or for a trial with more replicates its
loss plus the bias it would have at min. Optuna is told the score of a trial's first
outcome, at min replicates: every trial on the same footing. A trial still competitive with the
best (`adaptive.allocate`) gets twice its replicates, interleaved with new trials; the
new replicates extend its earlier ones (same seeds), and its record is updated, not what
Optuna was told (a told value cannot change). Only the `OPEN_TRIALS` best trials stay
open for more replicates: the engine may forget the others' statistics.

Imports nothing from Prefect or Dask.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from simstudy.calibrate.adaptive import Allocation, TrialScore, allocate
from simstudy.calibrate.optimizer import INTERRUPTED_REASON, Optimizer, TrialProposal
from simstudy.calibrate.space import trial_params
from simstudy.calibrate.spec import CalibrateSettings
from simstudy.calibrate.trials import TrialLog, TrialRecord
from simstudy.design.expand import ParameterSet
from simstudy.design.identity import param_id
from simstudy.run.engine import Engine, SetOutcome

KEPT = "kept at"
"""How the allocation of a trial whose extension failed begins."""
OPEN_TRIALS = 16
"""Best trials kept open for more replicates; a trial below them is not extended again."""


class Search:
    """Ask, simulate, tell, extend: a calibration as a driver of an engine.

    Args:
        settings: the study file's `calibrate` section.
        fixed: the study's fixed parameters (every trial's set has them too).
        optimizer: the Optuna study in its journal.
        log: the trial log; its records are the state a resumed search starts from.
        on_change: called after each change of the trials (the flow's files and artifacts).
    """

    def __init__(
        self,
        settings: CalibrateSettings,
        fixed: Mapping[str, Any],
        optimizer: Optimizer,
        log: TrialLog,
        on_change: Callable[[Search], None] | None = None,
    ):
        self.settings = settings
        self.fixed = dict(fixed)
        self.optimizer = optimizer
        self.log = log
        self.records: dict[int, TrialRecord] = log.read()
        self.on_change = on_change
        self._engine: Engine | None = None
        self._trials_of: dict[str, list[int]] = {}  # param_id -> trial numbers
        self._sets: dict[str, ParameterSet] = {}  # param_id -> its set, once added
        self._running: set[str] = set()  # sets whose outcome the engine still owes
        self._closed: set[str] = set()
        self._asks = max((r.ask for r in self.records.values()), default=0)
        self._ordered = settings.order == "ask"
        self._unheard: dict[int, TrialRecord] = {}  # ordered: recorded, waiting for earlier ones
        for record in self.records.values():
            self._trials_of.setdefault(record.param_id, []).append(record.trial)
            if record.allocation.startswith(KEPT):
                self._closed.add(record.param_id)  # its extension failed: not again

    # The driver protocol.

    def start(self, engine: Engine) -> None:
        """Finish what a crash interrupted, then fill the engine with new trials."""
        self._engine = engine
        self._record_interrupted()
        for proposal in self.optimizer.pending():
            record = self.records.get(proposal.number)
            if record is not None and record.state != "pending":
                # Recorded, then killed before the tell: told now, from its record.
                self._tell(record)
            else:
                self._propose(proposal, record.ask if record else max(self._asks, 1))
                self._run(proposal.number, self.settings.min_replicates)
        self._tell_in_order()
        self._extend_competitive()
        self._fill()

    def on_outcomes(self, engine: Engine, outcomes: list[SetOutcome]) -> None:
        """Record and tell each finished trial, extend competitive ones, ask new ones."""
        self._engine = engine
        changed: list[TrialRecord] = []
        for outcome in outcomes:
            self._running.discard(outcome.param_id)
            for number in self._trials_of.get(outcome.param_id, ()):
                record = self._apply(self.records[number], outcome)
                if record is not None:
                    changed.append(record)
        self._record(changed)  # on disk before Optuna hears of them
        for record in changed:
            if record.state != "pending":
                self._tell(record)
        self._tell_in_order()
        self._extend_competitive()
        self._fill()
        if self.on_change is not None:
            self.on_change(self)

    def finished(self) -> bool:
        """Return whether every trial is told and no extension is running."""
        told = self._told() - self._interrupted()
        return told >= self.settings.trials and not self._running and not self._unheard

    # Reading the state.

    def best(self) -> list[TrialRecord]:
        """Return the complete trials, best score first (the lower number on a tie)."""
        complete = [r for r in self.records.values() if r.state == "complete"]
        return sorted(
            complete, key=lambda r: (r.score if r.score is not None else math.inf, r.trial)
        )

    def simulations(self) -> int:
        """Return the replicates the search ran or reused, over every distinct set."""
        per_set: dict[str, int] = {}
        for record in self.records.values():
            per_set[record.param_id] = max(per_set.get(record.param_id, 0), record.replicates)
        return sum(per_set.values())

    # Inner steps.

    def _fill(self) -> None:
        """Ask new trials while fewer than `parallel` sets run and trials remain."""
        room = self.settings.parallel - len(self._running)
        asked = self.optimizer.asked() - self._interrupted()
        if self._ordered:
            # The window, not the running sets (extensions run when they happen to): trial n
            # is asked once trial n - parallel is told, so the asks are the same on any layout.
            room = self.optimizer.told() + self.settings.parallel - self.optimizer.asked()
        remaining = self.settings.trials - asked
        count = min(room, remaining)
        if count <= 0:
            return
        self._asks += 1
        proposals = self.optimizer.ask(count)
        for proposal in proposals:
            self._propose(proposal, self._asks)
        self._record([self.records[p.number] for p in proposals])
        for proposal in proposals:
            self._run(proposal.number, self.settings.min_replicates)

    def _propose(self, proposal: TrialProposal, ask: int) -> None:
        params = trial_params(proposal.params)
        pid = param_id({**self.fixed, **params})
        self.records[proposal.number] = TrialRecord(
            trial=proposal.number, ask=ask, param_id=pid, state="pending",
            replicates=0, allocation="new trial", params=params,
        )  # fmt: skip
        numbers = self._trials_of.setdefault(pid, [])
        if proposal.number not in numbers:
            numbers.append(proposal.number)

    def _run(self, number: int, replicates: int) -> None:
        """Have the engine give a trial's set `replicates` replicates in all."""
        assert self._engine is not None
        record = self.records[number]
        pid = record.param_id
        if pid in self._running:
            return  # the same set runs for another trial: its outcome serves both
        if record.state == "pending":
            told = [self.records[n] for n in self._trials_of[pid] if n != number]
            twins = [r for r in told if r.state != "pending"]
            if twins:  # a repeated point: the outcome another trial of it had
                self._apply_twin(record, max(twins, key=lambda r: r.replicates))
                return
        if pid not in self._sets:
            ps = ParameterSet(param_id=pid, index=number, params={**self.fixed, **record.params})
            self._sets[pid] = ps
            self._engine.add_sets([ps], replicates)
        elif pid in self._closed:
            return  # its statistics are gone: it keeps the replicates it has
        else:
            self._engine.extend(pid, replicates)
        self._running.add(pid)

    def _apply(self, record: TrialRecord, outcome: SetOutcome) -> TrialRecord | None:
        """Return the trial's record updated by its set's outcome (None: nothing changes)."""
        reason = "; ".join(outcome.reasons) or "failed"
        if outcome.status == "ok" and outcome.loss is not None:
            return self._update(
                record, state="complete", loss=outcome.loss, loss_se=outcome.loss_se,
                loss_bias=outcome.loss_bias, replicates=outcome.replicates,
                score=score(outcome, record.score, self.settings.min_replicates),
            )  # fmt: skip
        if record.state == "complete":
            # More replicates failed, not the trial: it keeps its loss, and is not extended
            # again (its failed replicates would fail again).
            self._close(record.param_id)
            return self._update(
                record, allocation=f"{KEPT} {record.replicates} replicates: "
                f"{outcome.replicates} failed ({reason})",
            )  # fmt: skip
        return self._update(
            record, state="failed", loss=None, loss_se=None, replicates=outcome.replicates,
            allocation=reason,
        )  # fmt: skip

    def _apply_twin(self, record: TrialRecord, twin: TrialRecord) -> None:
        fields = ("state", "loss", "loss_se", "loss_bias", "score", "replicates", "allocation")
        updated = self._update(record, **{name: getattr(twin, name) for name in fields})
        self._record([updated])
        self._tell(updated)

    def _record(self, records: list[TrialRecord]) -> None:
        """Append records to the trial log, after the journal lines they refer to are on disk."""
        if records:
            self.optimizer.sync()
            self.log.append(records)

    def _update(self, record: TrialRecord, **changes: Any) -> TrialRecord:
        updated = record.model_copy(update=changes)
        self.records[record.trial] = updated
        return updated

    def _tell(self, record: TrialRecord) -> None:
        if self._ordered:
            self._unheard[record.trial] = record
            return
        self._tell_now(record)

    def _tell_in_order(self) -> None:
        """Tell waiting trials whose every earlier trial is told (order: ask)."""
        told = self.optimizer.told_trials()
        for number in sorted(self._unheard):
            if any(n not in told and n not in self._unheard for n in range(number)):
                return
            self._tell_now(self._unheard.pop(number))
            told[number] = (None, None)
            # Each tell opens the window by one ask, with the history it has at that point:
            # trials told together ask as they would have one by one.
            self._fill()

    def _tell_now(self, record: TrialRecord) -> None:
        if record.state == "complete":
            self.optimizer.tell_once(record.trial, record.score, None)
        else:
            self.optimizer.tell_once(record.trial, None, record.allocation or "failed")

    def _told(self) -> int:
        return sum(r.state != "pending" for r in self.records.values())

    def _interrupted(self) -> int:
        """Return the trials a kill left without their parameters: they count for nothing."""
        return sum(r.allocation == INTERRUPTED_REASON for r in self.records.values())

    def _record_interrupted(self) -> None:
        """Record the trials Optuna told failed on opening its journal (parameters lost)."""
        lost = [
            TrialRecord(trial=number, ask=max(self._asks, 1), param_id="", state="failed",
                        replicates=0, allocation=reason or INTERRUPTED_REASON, params={})
            for number, (_, reason) in self.optimizer.told_trials().items()
            if number not in self.records and reason == INTERRUPTED_REASON
        ]  # fmt: skip
        for record in lost:
            self.records[record.trial] = record
        self._record(lost)

    def _extend_competitive(self) -> None:
        """Give competitive trials more replicates; close the sets no longer among the best."""
        scores = [
            TrialScore(r.trial, r.score, r.loss_se, r.replicates)
            for r in self.records.values()
            if r.state == "complete" and r.param_id not in self._closed
        ]
        if not scores:
            return
        minimum, maximum = self.settings.min_replicates, self.settings.max_replicates
        allocations = allocate(scores, minimum, maximum)
        open_trials = {r.trial for r in self.best()[:OPEN_TRIALS]}
        changed = []
        for number, allocation in sorted(allocations.items()):
            record = self.records[number]
            pid = record.param_id
            if pid in self._running:
                continue
            if number not in open_trials:
                self._close(pid)
            elif allocation.replicates > record.replicates:
                changed.append(self._update(record, allocation=allocation.reason))
                self._run(number, allocation.replicates)
            elif allocation.reason != record.allocation:
                changed.append(self._update(record, allocation=allocation.reason))
        self._record(changed)

    def _close(self, pid: str) -> None:
        if pid in self._closed:
            return
        self._closed.add(pid)
        if pid in self._sets and self._engine is not None:
            self._engine.close(pid)


def score(outcome: SetOutcome, earlier: float | None, minimum: int) -> float | None:
    """Return an outcome's loss as at `minimum` replicates: how trials compare and are told.

    With n replicates the loss of a mean is high by loss_bias ~ c / n on average, so at
    `minimum` it would be high by loss_bias x n / minimum: adding the difference compares
    a trial with more replicates with one at `minimum` (the bias is estimated better from
    more replicates, and a trial at `minimum` gets no estimate's noise at all). Where the
    bias is unknown (a loss of the spread, a user loss), the trial keeps the score of its
    first outcome, compared at the replicates it was told at.
    """
    if outcome.loss is None:
        return None
    if outcome.loss_bias is not None:
        return outcome.loss + outcome.loss_bias * (outcome.replicates / minimum - 1)
    return earlier if earlier is not None else outcome.loss


def allocations_of(records: list[TrialRecord]) -> dict[int, Allocation]:
    """Return each complete trial's replicates and reason, for `adaptive.simulations_saved`."""
    return {
        r.trial: Allocation(r.replicates, r.allocation or "")
        for r in records
        if r.state == "complete"
    }
