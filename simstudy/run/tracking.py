"""Which replicates and aggregations of a study are finished, and which are missing.

The flow feeds a `StudyTracker` with every finished replicate (as workers report them)
and every finished batch and aggregation; at any moment it answers exactly what is
missing, and how long nothing has finished. Thread-safe: replicate reports arrive on
the Dask client's event-loop thread.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from simstudy.design.plan import Batch


@dataclass
class TrackerSnapshot:
    """Counts at one moment."""

    replicates: dict[str, int]
    total_replicates: int
    sets_aggregated: int
    sets_failed: int
    total_sets: int
    seconds_since_progress: float
    reused: int = 0

    @property
    def replicates_done(self) -> int:
        """Return replicates finished in any status."""
        return sum(self.replicates.values())


@dataclass
class StudyTracker:
    """Progress of one study run."""

    batches: list[Batch]
    param_ids: list[str]
    reused: int = 0
    _finished: dict[tuple[str, int], str] = field(default_factory=dict)  # unfinished batches
    _counts: Counter[str] = field(default_factory=Counter)  # replicates of finished batches
    _done_batches: set[tuple[str, int]] = field(default_factory=set)  # (param_id, start)
    _aggregated: dict[str, str] = field(default_factory=dict)
    _last_progress: float = field(default_factory=time.monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        # Copies: a driver adds sets and batches while the study runs (add_set, add_batch).
        self.batches = list(self.batches)
        self.param_ids = list(self.param_ids)
        self._batches_of: dict[str, list[Batch]] = {}
        for batch in self.batches:
            self._batches_of.setdefault(batch.param_id, []).append(batch)

    def add_set(self, param_id: str) -> None:
        """Count a set a driver added while the study runs."""
        with self._lock:
            self.param_ids.append(param_id)

    def add_batch(self, batch: Batch) -> None:
        """Count a batch a driver added while the study runs."""
        with self._lock:
            self.batches.append(batch)
            self._batches_of.setdefault(batch.param_id, []).append(batch)

    def aggregate_reopened(self, param_id: str) -> None:
        """Forget a set's aggregation: it got more replicates and is aggregated again."""
        with self._lock:
            self._aggregated.pop(param_id, None)

    def replicate_finished(self, param_id: str, replicate: int, status: str) -> None:
        """Record one finished replicate; a repeat report counts once, with its last status.

        A replicate failed in one execution may be ok in another (Dask ran its task again):
        the count follows the record the study keeps.
        """
        with self._lock:
            key = (param_id, replicate)
            if self._in_done_batch(param_id, replicate):
                return
            if key not in self._finished:
                self._last_progress = time.monotonic()
            self._finished[key] = status

    def work_progressed(self) -> None:
        """Note progress that finished nothing yet (an aggregation still computing)."""
        with self._lock:
            self._last_progress = time.monotonic()

    def replicate_unfinished(self, param_id: str, replicate: int) -> None:
        """Forget a finished replicate that will run again (its outputs were lost)."""
        with self._lock:
            self._finished.pop((param_id, replicate), None)

    def batch_finished(self, batch: Batch) -> None:
        """Fold a finished batch's replicates into counts: memory per batch, not per replicate."""
        with self._lock:
            for replicate in range(batch.start, batch.stop):
                status = self._finished.pop((batch.param_id, replicate), None)
                if status is not None:
                    self._counts[status] += 1
            self._done_batches.add((batch.param_id, batch.start))

    def aggregate_finished(self, param_id: str, status: str) -> None:
        """Record one finished parameter-set aggregation."""
        with self._lock:
            self._aggregated[param_id] = status
            self._last_progress = time.monotonic()

    def _in_done_batch(self, param_id: str, replicate: int) -> bool:
        if not self._done_batches:
            return False
        return any(
            (b.param_id, b.start) in self._done_batches
            for b in self._batches_of.get(param_id, ())
            if b.start <= replicate < b.stop
        )

    def seconds_since_progress(self) -> float:
        """Return the seconds since a replicate or aggregation last finished."""
        with self._lock:
            return time.monotonic() - self._last_progress

    def missing_replicates(self) -> list[tuple[str, int]]:
        """Return every (param_id, replicate) not finished yet, in study order."""
        with self._lock:
            return [
                (b.param_id, r)
                for b in self.batches
                if (b.param_id, b.start) not in self._done_batches
                for r in range(b.start, b.stop)
                if (b.param_id, r) not in self._finished
            ]

    def missing_aggregations(self) -> list[str]:
        """Return the param_ids whose aggregation has not finished."""
        with self._lock:
            return [pid for pid in self.param_ids if pid not in self._aggregated]

    def snapshot(self) -> TrackerSnapshot:
        """Return the current counts."""
        with self._lock:
            statuses = Counter(self._aggregated.values())
            return TrackerSnapshot(
                replicates=dict(self._counts + Counter(self._finished.values())),
                total_replicates=sum(b.size for b in self.batches),
                sets_aggregated=statuses.get("ok", 0),
                sets_failed=statuses.get("failed", 0),
                total_sets=len(self.param_ids),
                seconds_since_progress=time.monotonic() - self._last_progress,
                reused=self.reused,
            )
