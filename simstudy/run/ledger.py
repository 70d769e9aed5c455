"""What a running study knows: a pure ledger, changed only by typed events.

```python
>>> from simstudy.run.ledger import Ledger
```

The engine (`flows/orchestrator.py`) does the I/O: it submits the runs the ledger hands
out, fetches results, and feeds back what happened as events: a run began
(`RunBegan`), records streamed in (`RecordsReported`), a run finished with its results,
a run was lost (its worker died, or an error outside the model), an aggregation finished
or failed, work was cancelled. The ledger decides everything else, applying the rerun
decisions of `simstudy/run/reruns.py`: which replicates have their final record (a duplicate
execution counts its attempts once; a provisional record gives way to one with outputs),
what runs again and who is charged, when a batch is finished (handed on to the part
files), when a group of sets is due for aggregation, and each set's outcome for a driver.

Like distributed's `WorkerState`, it is mutated only through its event methods, from one
thread, and knows no Dask, Prefect or file: tests drive it with event sequences
(`tests/simstudy/run/test_ledger.py`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

from simstudy.design.expand import ParameterSet
from simstudy.design.plan import Batch, aggregation_groups, plan_runs, run_label
from simstudy.run.batch import BatchResult, batch_records, lost_replicate, statistics_only
from simstudy.run.batch import summarize_batch as summarize_records
from simstudy.run.columns import records_from_bytes
from simstudy.run.engine import SetOutcome
from simstudy.run.events import RecordsReported, RunBegan
from simstudy.run.records import ReplicateRecord
from simstudy.run.reruns import LostRun, contiguous_ranges, plan_rerun
from simstudy.run.tracking import StudyTracker
from simstudy.spec.study import Study
from simstudy.stats.aggregate import ParameterSetAggregate, failed_aggregate, without_rows

Reuse = Callable[[Batch], BatchResult | None]
"""Returns a batch finished by an earlier run (from the part cache), or None."""


@dataclass
class Run:
    """One run to submit: (parts of) one or more planned batches, in order."""

    pieces: list[tuple[int, Batch]]  # (planned batch, the replicates this run covers)
    careful: bool  # reports each start and record at once (a rerun)
    suspect: bool = False  # the lone rerun of a replicate charged with a lost run
    key: str | None = None  # its Dask key, once submitted
    started: list[tuple[str, int]] = field(default_factory=list)  # (param_id, replicate)
    whole_sets: list[str] = field(default_factory=list)  # sets it may aggregate itself

    @property
    def label(self) -> str:
        """Return the run's name."""
        return run_label([piece for _, piece in self.pieces])

    @property
    def size(self) -> int:
        """Return the replicates the run covers."""
        return sum(piece.size for _, piece in self.pieces)


@dataclass
class BatchProgress:
    """What is known of one planned batch: finished replicates and lost executions."""

    batch: Batch
    records: dict[int, ReplicateRecord] = field(default_factory=dict)
    lost_executions: dict[int, int] = field(default_factory=dict)  # replicate -> count
    executions: dict[int, set[str]] = field(default_factory=dict)  # replicate -> ids seen
    failed_before_start: int = 0  # runs whose task raised before any replicate started
    lost_before_start: int = 0  # runs whose worker died before they began
    merged: bool = False  # a replicate's records of two executions were merged
    provisional: set[int] = field(default_factory=set)  # ok records whose outputs may be lost
    redone: dict[int, int] = field(default_factory=dict)  # replicate -> attempts run again
    finished: bool = False  # every replicate has its final record
    cancelled: bool = False  # its set was cancelled: nothing of it runs any more
    result: BatchResult | None = None  # kept (without outputs) until its set is aggregated

    def other_executions(self, execution: str | None) -> bool:
        """Return whether records of another execution than `execution` were seen."""
        return any(ids - {execution} for ids in self.executions.values())

    def missing(self, piece: Batch) -> list[int]:
        """Return the replicates of `piece` without a record."""
        return [r for r in range(piece.start, piece.stop) if r not in self.records]


@dataclass
class SetProgress:
    """One parameter set: its planned batches and its aggregate."""

    parameter_set: ParameterSet
    batch_indices: list[int]
    group: int = 0  # its aggregation group
    aggregate: ParameterSetAggregate | None = None
    open: bool = False  # a driver may extend it: its batch statistics stay after aggregation
    replicates: int = 0  # replicates planned so far (a driver's sets; 0: the study's)
    cancelled: bool = False


@dataclass
class GroupProgress:
    """Consecutive parameter sets aggregated by one task run."""

    set_indices: range
    attempts: int = 0
    running: bool = False
    done: bool = False


class Ledger:
    """The state of one study run, and the decisions that follow from each event.

    Args:
        study: the study (its execution settings: quorum, resubmits).
        sets: the parameter sets given up front (a fixed design), in design order.
        batches: their planned batches, each with its run (`simstudy.design.plan`).
        reused: planned batches finished by an earlier run, by index.
        driver_batch_size: replicates per batch of sets added later, by a driver.
        reuse: looks up a driver's batch in the part cache.
    """

    def __init__(
        self,
        study: Study,
        sets: Sequence[ParameterSet],
        batches: Sequence[Batch],
        reused: dict[int, BatchResult] | None = None,
        driver_batch_size: int = 1,
        reuse: Reuse | None = None,
    ):
        self.study = study
        self.sets = list(sets)
        self.batches = list(batches)
        self.driver_batch_size = driver_batch_size
        self._reuse = reuse
        self._max_resubmits = study.execution.max_resubmits
        self.tracker = StudyTracker(self.batches, [ps.param_id for ps in self.sets])
        self.progress = [BatchProgress(batch) for batch in self.batches]
        self.set_states = [SetProgress(ps, []) for ps in self.sets]
        self._set_index = {ps.param_id: i for i, ps in enumerate(self.sets)}
        for i, batch in enumerate(self.batches):
            self.set_states[self._set_index[batch.param_id]].batch_indices.append(i)
        self.groups = [GroupProgress(sets) for sets in aggregation_groups(len(self.sets))]
        for group_index, group in enumerate(self.groups):
            for set_index in group.set_indices:
                self.set_states[set_index].group = group_index
        self.pending: deque[Run] = deque()
        # Lone reruns of charged replicates go one at a time: two of them sharing a worker
        # that one kills would both be charged.
        self.suspects: deque[Run] = deque()
        self.running: dict[str, Run] = {}  # Dask key -> run
        self._priors: dict[str, dict[tuple[str, int], int]] = {}  # key -> prior attempts
        self._finished: list[tuple[int, Batch, BatchResult]] = []  # to hand on
        self._not_written: set[int] = set()  # reused batches of a driver's sets
        self._due: list[int] = []  # groups whose aggregation is due
        self._outcomes: list[SetOutcome] = []  # for the driver
        self.awaited: set[str] = set()  # a driver's sets whose outcome has not come yet
        self.driven = False  # a driver adds work: its runs are merged and aggregate themselves
        reused = dict(reused or {})
        for indices in plan_runs(self.batches):
            pieces = [(i, self.batches[i]) for i in indices if i not in reused]
            if pieces:
                self.pending.append(Run(pieces, careful=False))
        for index, result in sorted(reused.items()):
            self._finish_batch(index, result, reused=True)
        self.tracker.reused = sum(result.stop - result.start for result in reused.values())
        for group_index in range(len(self.groups)):
            self._aggregate_if_complete(group_index)

    # Work a driver adds (the engine protocol, simstudy/run/engine.py).

    def add_sets(self, sets: Sequence[ParameterSet], replicates: int) -> None:
        """Plan `replicates` replicates of each new set (what the cache holds is reused)."""
        self.driven = True
        for parameter_set in sets:
            if parameter_set.param_id in self._set_index:
                raise ValueError(
                    f"parameter set {parameter_set.param_id[:12]} was added already: extend it"
                )
            set_index = len(self.sets)
            self.sets.append(parameter_set)
            self._set_index[parameter_set.param_id] = set_index
            self.set_states.append(
                SetProgress(parameter_set, [], group=len(self.groups), open=True)
            )
            self.groups.append(GroupProgress(range(set_index, set_index + 1)))
            self.tracker.add_set(parameter_set.param_id)
            self._plan_set(set_index, 0, replicates)

    def extend(self, param_id: str, replicates: int) -> None:
        """Plan more replicates of a set with an outcome: `replicates` in all."""
        state = self.set_states[self._set_index[param_id]]
        group = self.groups[state.group]
        if not state.open or not group.done or replicates <= state.replicates:
            raise ValueError(
                f"parameter set {param_id[:12]} cannot get {replicates} replicates: it has "
                f"{state.replicates}, and only a set with an outcome and not closed is extended"
            )
        group.done = False
        group.attempts = 0  # each aggregation of the set has its own resubmits
        state.aggregate = None
        self.tracker.aggregate_reopened(param_id)
        self._plan_set(self._set_index[param_id], state.replicates, replicates)

    def close(self, param_id: str) -> None:
        """Forget a set's batch statistics once aggregated: it gets no more replicates."""
        state = self.set_states[self._set_index[param_id]]
        state.open = False
        if self.groups[state.group].done:
            for index in state.batch_indices:
                self.progress[index].result = None

    def cancel(self, param_id: str) -> None:
        """Run nothing more of a set; its outcome (failed: cancelled) goes to the driver now.

        Runs already submitted finish (their records are kept in the part files), but no
        rerun or aggregation follows, and a later result of the set is ignored.
        """
        state = self.set_states[self._set_index[param_id]]
        if state.cancelled:
            return
        state.cancelled = True
        for index in state.batch_indices:
            self.progress[index].cancelled = True
        for queue in (self.pending, self.suspects):
            kept = [self._without_cancelled(run) for run in queue]
            queue.clear()
            queue.extend(run for run in kept if run.pieces)
        group = self.groups[state.group]
        if group.done:
            return
        group.done = True
        self._due = [g for g in self._due if g != state.group]
        self.tracker.aggregate_finished(param_id, "failed")
        if param_id in self.awaited:
            self.awaited.discard(param_id)
            self._outcomes.append(
                SetOutcome(param_id, "failed", state.replicates, reasons=["cancelled"])
            )

    def _without_cancelled(self, run: Run) -> Run:
        run.pieces = [(i, p) for i, p in run.pieces if not self.progress[i].cancelled]
        return run

    def _plan_set(self, set_index: int, start: int, stop: int) -> None:
        state = self.set_states[set_index]
        parameter_set = state.parameter_set
        for begin in range(start, stop, self.driver_batch_size):
            batch = Batch(
                param_id=parameter_set.param_id,
                params=parameter_set.params,
                start=begin,
                stop=min(begin + self.driver_batch_size, stop),
                set_index=set_index,
            )
            index = len(self.batches)
            self.batches.append(batch)
            self.progress.append(BatchProgress(batch))
            state.batch_indices.append(index)
            self.tracker.add_batch(batch)
            reused = self._reuse(batch) if self._reuse is not None else None
            if reused is None:
                self.pending.append(Run([(index, batch)], careful=False))
                continue
            self._not_written.add(index)  # its replicates are in the cache's parts already
            self.tracker.reused += batch.size
            self._finish_batch(index, reused, reused=True)
        state.replicates = stop
        self.awaited.add(parameter_set.param_id)
        self._aggregate_if_complete(state.group)

    # Handing out work.

    def next_runs(self, room: int, slots: int) -> list[Run]:
        """Return up to `room` runs to submit now (a lone suspect first).

        A driver's waiting sets are folded into runs of a fair share each (the waiting sets
        over `slots`, the most runs in flight): a calibration's trial or an ABC particle is
        a few replicates of milliseconds, and a run each would be mostly overhead. Taking
        only `room` sets, as a design's runs are taken, made a run of one set whenever one
        run had just finished: about 15 ms of the flow's time per simulation, measured.
        """
        runs: list[Run] = []
        if room > 0 and self.suspects and not any(r.suspect for r in self.running.values()):
            runs.append(self.suspects.popleft())
        if self.driven:
            runs += self._folded(room - len(runs), slots)
        while len(runs) < room and self.pending:
            runs.append(self.pending.popleft())
        for run in runs:
            run.whole_sets = self._whole_sets(run)
        return runs

    def _folded(self, room: int, slots: int) -> list[Run]:
        """Take a driver's waiting runs into at most `room` runs of a fair share each."""
        share = max(1, -(-len(self.pending) // max(1, slots)))
        careful: list[Run] = []
        plain: list[Run] = []
        while self.pending:
            is_careful = self.pending[0].careful
            careful_runs = len(careful) + is_careful
            plain_runs = -(-(len(plain) + (not is_careful)) // share)
            if careful_runs + plain_runs > room:
                break
            (careful if is_careful else plain).append(self.pending.popleft())
        merged = [
            Run([piece for run in plain[i : i + share] for piece in run.pieces], careful=False)
            for i in range(0, len(plain), share)
        ]
        return careful + merged

    def _whole_sets(self, run: Run) -> list[str]:
        """Return a driver's sets the run holds all of: it may aggregate them itself."""
        if not self.driven or run.careful:
            return []
        whole = []
        for _, piece in run.pieces:
            state = self.set_states[self._set_index[piece.param_id]]
            if state.open and piece.start == 0 and piece.stop == state.replicates:
                whole.append(piece.param_id)
        return whole

    def prior_attempts(self, run: Run) -> dict[tuple[str, int], int]:
        """Return (param_id, replicate) -> executions lost earlier, for the run's replicates."""
        priors: dict[tuple[str, int], int] = {}
        for index, piece in run.pieces:
            progress = self.progress[index]
            for lost in (progress.lost_executions, progress.redone):
                for r, n in lost.items():
                    if piece.start <= r < piece.stop:
                        priors[(piece.param_id, r)] = priors.get((piece.param_id, r), 0) + n
        return priors

    def submitted(self, run: Run, key: str, priors: dict[tuple[str, int], int]) -> None:
        """Record that `run` was submitted as the Dask task `key`."""
        run.key = key
        self.running[key] = run
        self._priors[key] = priors

    def not_submitted(self, runs: list[Run]) -> None:
        """Put back runs whose submission failed: they go first next time."""
        for run in reversed(runs):
            (self.suspects if run.suspect else self.pending).appendleft(run)

    # Events.

    def run_began(self, event: RunBegan) -> None:
        """Note a run's (careful: a replicate's) start."""
        run = self.running.get(event.key)
        # Events are applied on the loop's thread after the runs of its turn are submitted:
        # an unknown key is a run already taken or lost (a late event), kept nowhere.
        if run is not None:
            run.started.append((event.param_id, event.replicate))

    def records_reported(self, event: RecordsReported) -> None:
        """Keep streamed records: a record is a result wherever it comes from."""
        for record in records_from_bytes(event.records, arrays=True):
            progress = self._progress_of(record.param_id, record.replicate)
            if progress is not None and not progress.finished:
                self._accept(progress, record, event.execution, event.key, event.provisional)

    def needs_outputs(self, key: str, results: list[BatchResult]) -> bool:
        """Return whether a worker-written run's batches must be read back (not taken whole)."""
        run = self.running[key]
        return not all(
            not self.progress[index].finished and self._taken_whole(index, piece, result)
            for (index, piece), result in zip(run.pieces, results, strict=True)
        )

    def run_finished(self, key: str, results: list[BatchResult]) -> None:
        """Take a finished run's results (one per piece); finish what is complete."""
        run = self.running.pop(key)
        try:
            if all(self.progress[index].finished for index, _ in run.pieces):
                return  # finished by other runs meanwhile
            taken: list[BatchResult | None] = []
            for (index, piece), result in zip(run.pieces, results, strict=True):
                progress = self.progress[index]
                whole = not progress.finished and self._taken_whole(index, piece, result)
                taken.append(result if whole else None)
                if progress.finished:
                    continue
                # The usual case, a whole batch run once, is taken from the result's columns
                # as they came; otherwise records are assembled one by one.
                for record in result.records if whole else batch_records(result):
                    self._accept(progress, record, result.execution, key)
            for (index, piece), whole_result in zip(run.pieces, taken, strict=True):
                merged = self.progress[index].merged
                self._finish_if_complete(index, piece, None if merged else whole_result)
        finally:
            self._priors.pop(key, None)  # its future is released now: Dask cannot run it again

    def run_lost(self, key: str, reason: str, worker_lost: bool) -> None:
        """Queue what a failed run did not finish, charging the replicate that was running.

        Runs go through their batches in order: the first batch with replicates missing was
        running; the later ones never started and run again uncharged.
        """
        run = self.running.pop(key)
        self._priors.pop(key, None)
        reruns: list[tuple[int, int, int]] = []  # (batch, start, stop)
        charged = False
        for index, piece in run.pieces:
            progress = self.progress[index]
            if progress.cancelled or progress.finished:  # finished by another run meanwhile
                continue
            missing = progress.missing(piece)
            started = [r for pid, r in run.started if pid == piece.param_id or not run.careful]
            if not missing:
                continue
            if charged:
                reruns.extend((index, a, b) for a, b in contiguous_ranges(missing))
                continue
            charged = True
            lost = LostRun(missing, started, run.careful, worker_lost)
            reruns.extend((index, a, b) for a, b in self._plan_rerun(index, lost, reason))
        reruns = self._with_provisional(run, reruns)
        if reruns:  # reruns go ahead of first runs
            pieces = [(i, self._piece(i, a, b)) for i, a, b in reruns]
            self.pending.appendleft(Run(pieces, careful=True))
        for index, piece in run.pieces:  # replicates given up may complete a batch
            self._finish_if_complete(index, piece, None)

    def aggregation_started(self, group_index: int) -> None:
        """Note that a group's aggregation was submitted."""
        group = self.groups[group_index]
        group.running = True
        group.attempts += 1

    def aggregation_finished(
        self, group_index: int, aggregates: list[ParameterSetAggregate]
    ) -> None:
        """Take a group's aggregates: its sets are done; a driver hears of its own."""
        group = self.groups[group_index]
        group.running = False
        if group.done:
            return  # cancelled meanwhile
        group.done = True
        for set_index, aggregate in zip(group.set_indices, aggregates, strict=True):
            state = self.set_states[set_index]
            state.aggregate = aggregate
            if not state.open:
                for index in state.batch_indices:
                    self.progress[index].result = None  # aggregated: nothing left to keep
            self.tracker.aggregate_finished(aggregate.param_id, aggregate.status)
            if aggregate.param_id in self.awaited:
                self.awaited.discard(aggregate.param_id)
                self._outcomes.append(set_outcome(aggregate))
                # Its rows are in no result file of a driver's run: only the outcome stays,
                # so 10,000 trials of a 365-point series do not pile up in the flow.
                state.aggregate = without_rows(aggregate)

    def aggregation_failed(self, group_index: int, reason: str) -> None:
        """Note a failed aggregation: it is due again, or past `max_resubmits` its sets fail."""
        group = self.groups[group_index]
        group.running = False
        if group.done:
            return
        if group.attempts <= self._max_resubmits:
            self._due.append(group_index)
            return
        reason = f"aggregation failed {group.attempts} times: {reason}"
        aggregates = [
            failed_aggregate(self.sets[s], self._set_batches(s), reason) for s in group.set_indices
        ]
        self.aggregation_finished(group_index, aggregates)

    # What the engine drains after each event.

    def take_finished(self) -> list[list[tuple[int, Batch, BatchResult]]]:
        """Return the batches finished since, in runs contiguous in the plan (a part each)."""
        finished, self._finished = sorted(self._finished, key=lambda f: f[0]), []
        if self._not_written:
            finished = [item for item in finished if item[0] not in self._not_written]
            self._not_written.clear()
        groups: list[list[tuple[int, Batch, BatchResult]]] = []
        for item in finished:
            if groups and groups[-1][-1][0] + 1 == item[0]:
                groups[-1].append(item)
            else:
                groups.append([item])
        return groups

    def take_due(self) -> list[int]:
        """Return the groups whose aggregation is due now (each once)."""
        due, self._due = self._due, []
        return due

    def take_outcomes(self) -> list[SetOutcome]:
        """Return the driver's sets' outcomes since."""
        outcomes, self._outcomes = self._outcomes, []
        return outcomes

    def group_batches(self, group_index: int) -> list[list[BatchResult]]:
        """Return each set's batch statistics of a group, for its aggregation."""
        return [self._set_batches(s) for s in self.groups[group_index].set_indices]

    def set_of(self, param_id: str) -> SetProgress:
        """Return a set's progress by its id."""
        return self.set_states[self._set_index[param_id]]

    def set_replicates(self, set_index: int) -> int:
        """Return a set's planned replicates."""
        return self.set_states[set_index].replicates or self.study.replicates

    def all_done(self) -> bool:
        """Return whether every group is aggregated (or cancelled)."""
        return all(group.done for group in self.groups)

    def kept_records(self) -> list[tuple[int, Batch, BatchResult]]:
        """Return the finished replicates of unfinished batches (a stalled study keeps them)."""
        for p in self.progress:
            for replicate in p.provisional:  # their outputs never reached a part
                self.tracker.replicate_unfinished(p.batch.param_id, replicate)
        kept = [
            (i, p.batch, [p.records[r] for r in sorted(p.records) if r not in p.provisional])
            for i, p in enumerate(self.progress)
            if not p.finished
        ]
        return [
            (i, batch, summarize_records(piece, records))
            for i, batch, records in kept
            if records
            for piece in [
                batch.model_copy(
                    update={"start": records[0].replicate, "stop": records[-1].replicate + 1}
                )
            ]
        ]

    # Inner decisions.

    def _accept(
        self,
        progress: BatchProgress,
        record: ReplicateRecord,
        execution: str | None,
        key: str | None,
        provisional: bool = False,
    ) -> None:
        """Keep a replicate's record; a second execution of it adds its attempts.

        A `provisional` record (ok, its outputs in a part its worker has not written yet)
        never replaces one whose outputs are known, and is replaced by any such one.
        """
        replicate = record.replicate
        provisional = provisional and record.status == "ok"
        seen = progress.executions.setdefault(replicate, set())
        existing = progress.records.get(replicate)
        was_provisional = replicate in progress.provisional
        attempts: int | None = None
        if existing is None or execution is None:
            new_wins = True
        elif execution in seen:
            # The same execution again (its result after its streamed record): the result
            # wins (a batch's own checks may fail a replicate), the executions counted stay.
            new_wins = was_provisional or not provisional
            attempts = max(existing.attempts, record.attempts)
        else:
            # Dask ran its task again (its result was lost with a worker before the flow
            # fetched it): both executions count; a record with its outputs wins over a
            # provisional one, an ok one over a failed one.
            prior = self._priors.get(str(key), {}).get((record.param_id, replicate), 0)
            if provisional != was_provisional:
                new_wins = was_provisional
            else:
                new_wins = existing.status != "ok" and record.status == "ok"
            attempts = existing.attempts + record.attempts - prior
            progress.merged = True
        kept = record if new_wins else cast(ReplicateRecord, existing)
        if attempts is not None:
            kept = kept.model_copy(update={"attempts": attempts})
        progress.records[replicate] = kept
        if provisional if new_wins else was_provisional:
            progress.provisional.add(replicate)
        else:
            progress.provisional.discard(replicate)
        if execution is not None:
            seen.add(execution)
        self.tracker.replicate_finished(kept.param_id, replicate, kept.status)

    def _progress_of(self, param_id: str, replicate: int) -> BatchProgress | None:
        set_index = self._set_index.get(param_id)
        if set_index is None:
            return None
        for index in self.set_states[set_index].batch_indices:
            if self.batches[index].start <= replicate < self.batches[index].stop:
                return self.progress[index]
        return None

    def _taken_whole(self, index: int, piece: Batch, result: BatchResult) -> bool:
        """Return whether a batch is taken as its result has it: the run covered all of it,
        and no other execution of its replicates was seen."""
        progress = self.progress[index]
        return piece == progress.batch and not progress.other_executions(result.execution)

    def _finish_if_complete(self, index: int, piece: Batch, whole: BatchResult | None) -> None:
        progress = self.progress[index]
        complete = len(progress.records) == progress.batch.size and not progress.provisional
        if complete and not progress.finished and not progress.cancelled:
            self._finish_batch(index, whole if piece == progress.batch else None)

    def _finish_batch(self, index: int, result: BatchResult | None, reused: bool = False) -> None:
        """Hand a planned batch's records on once all are in; aggregate its group if complete."""
        progress = self.progress[index]
        batch = progress.batch
        if result is None:
            records = [progress.records[r] for r in range(batch.start, batch.stop)]
            result = summarize_records(batch, records)
        progress.finished = True
        progress.records.clear()  # the result holds them now
        progress.executions.clear()
        if reused:
            for record in result.records:
                self.tracker.replicate_finished(record.param_id, record.replicate, record.status)
        self._finished.append((index, batch, result))
        self.tracker.batch_finished(batch)
        # Only what an aggregation needs stays: the outputs are in the part file now.
        progress.result = statistics_only(result)
        if reused:
            return
        state = self.set_states[self._set_index[batch.param_id]]
        if result.aggregate is not None and state.batch_indices == [index]:
            # Its run aggregated it: the set's one batch, taken whole from that run.
            self.aggregation_finished(state.group, [result.aggregate])
        else:
            self._aggregate_if_complete(state.group)

    def _aggregate_if_complete(self, group_index: int) -> None:
        group = self.groups[group_index]
        if group.done or group.running or group_index in self._due:
            return
        indices = [i for s in group.set_indices for i in self.set_states[s].batch_indices]
        if all(self.progress[i].finished for i in indices):
            self._due.append(group_index)

    def _set_batches(self, set_index: int) -> list[BatchResult]:
        return [
            cast(BatchResult, self.progress[i].result)
            for i in self.set_states[set_index].batch_indices
        ]

    def _with_provisional(
        self, run: Run, reruns: list[tuple[int, int, int]]
    ) -> list[tuple[int, int, int]]:
        """Add the lost run's provisional replicates to its reruns (uncharged): they finished,
        but their outputs were to be written with the run's part, which is lost."""
        again: dict[int, set[int]] = {}
        for index, start, stop in reruns:
            again.setdefault(index, set()).update(range(start, stop))
        for index, piece in run.pieces:
            progress = self.progress[index]
            if progress.cancelled:
                continue
            for replicate in sorted(progress.provisional):
                if piece.start <= replicate < piece.stop:
                    progress.provisional.discard(replicate)
                    attempts = progress.records.pop(replicate).attempts
                    # They did run: the rerun's record counts these attempts too.
                    progress.redone[replicate] = attempts
                    self.tracker.replicate_unfinished(piece.param_id, replicate)
                    again.setdefault(index, set()).add(replicate)
        return [
            (index, start, stop)
            for index, replicates in sorted(again.items())
            for start, stop in contiguous_ranges(sorted(replicates))
        ]

    def _plan_rerun(self, index: int, lost: LostRun, reason: str) -> list[tuple[int, int]]:
        """Charge one batch's lost run; give up or isolate its replicates; return the rest."""
        progress = self.progress[index]
        plan = plan_rerun(
            lost,
            progress.lost_executions,
            progress.failed_before_start,
            self._max_resubmits,
            progress.lost_before_start,
        )
        if plan.batch_failed_before_start:
            progress.failed_before_start += 1
        if plan.lost_before_start:
            progress.lost_before_start += 1
        if plan.running is not None:
            progress.lost_executions[plan.running] = (
                progress.lost_executions.get(plan.running, 0) + 1
            )
        for replicate in plan.give_up:
            if replicate == plan.running:
                error = (
                    f"its batch task failed {progress.lost_executions[replicate]} times while "
                    f"this replicate ran: {reason}"
                )
            else:
                times = max(progress.failed_before_start, progress.lost_before_start)
                error = (
                    f"not run: its batch task failed {times} times before its first "
                    f"replicate started: {reason}"
                )
            self._give_up(index, replicate, error)
        if plan.isolated is not None:
            piece = self._piece(index, *plan.isolated)
            self.suspects.append(Run([(index, piece)], careful=True, suspect=True))
        return plan.pieces

    def _piece(self, index: int, start: int, stop: int) -> Batch:
        return self.batches[index].model_copy(update={"start": start, "stop": stop})

    def _give_up(self, index: int, replicate: int, error: str) -> None:
        progress = self.progress[index]
        record = lost_replicate(
            self.study,
            progress.batch.param_id,
            replicate,
            attempts=progress.lost_executions.get(replicate, 0),
            error=error,
        )
        progress.records[replicate] = record
        self.tracker.replicate_finished(record.param_id, replicate, record.status)


def set_outcome(aggregate: ParameterSetAggregate) -> SetOutcome:
    """Return what a driver learns of an aggregated set."""
    return SetOutcome(
        param_id=aggregate.param_id,
        status=aggregate.status,
        replicates=sum(aggregate.counts.values()),
        loss=aggregate.loss,
        loss_se=aggregate.loss_se,
        loss_bias=aggregate.loss_bias,
        reasons=list(aggregate.reasons),
    )
