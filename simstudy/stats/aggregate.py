"""Aggregate a parameter set from its batches, and the study from its parameter sets."""

from __future__ import annotations

import pickle
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from simstudy.design.expand import ParameterSet
from simstudy.display import describe_outputs
from simstudy.run.batch import FIRST_ERRORS, BatchResult
from simstudy.stats.partial import Partial, summarize

if TYPE_CHECKING:
    from simstudy.analysis.targets import Targets

HEADLINE_SETS = 5
"""Failed parameter sets named in a study's one-paragraph headline."""


@dataclass(frozen=True, eq=False)
class SeriesStatistics:
    """One series output's statistics per time point, a column each.

    Columns, not a row per point: a 1,000,000-point series made a million Python dicts per
    set (273 s to aggregate two sets, gigabytes in the flow); columns are a few arrays.
    """

    columns: dict[str, np.ndarray]
    """n_ok, mean, std, min, max and each quantile (q0.05, ...), one value per time point."""

    @property
    def points(self) -> int:
        """Return the number of time points."""
        return len(self.columns["n_ok"])

    def head(self, points: int) -> SeriesStatistics:
        """Return the statistics of the first `points` time points."""
        return SeriesStatistics({name: column[:points] for name, column in self.columns.items()})

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SeriesStatistics):
            return NotImplemented
        return self.columns.keys() == other.columns.keys() and all(
            np.array_equal(column, other.columns[name], equal_nan=True)
            for name, column in self.columns.items()
        )

    __hash__ = None  # type: ignore[assignment]


class ParameterSetAggregate(BaseModel):
    """Statistics of one parameter set, or why it could not be aggregated."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    param_id: str = Field(description="Parameter set identity.")
    index: int = Field(description="Position in the design.")
    params: dict[str, Any] = Field(description="Full parameter set.")
    status: Literal["ok", "failed"] = Field(description="failed: too few successful replicates.")
    counts: dict[str, int] = Field(description="Replicates by status (ok, failed, timed_out).")
    reasons: list[str] = Field(default_factory=list, description="Why the set failed.")
    first_errors: list[str] = Field(default_factory=list, description="First distinct errors.")
    scalars: list[dict[str, Any]] = Field(
        default_factory=list, description="One row per scalar output."
    )
    series: dict[str, SeriesStatistics] = Field(
        default_factory=dict, description="Per series output, its statistics per time point."
    )
    refused_outputs: str | None = Field(
        default=None,
        description="Why the set's outputs were refused: they differ from the study's.",
    )
    loss: float | None = Field(
        default=None, description="Loss against the study's targets (None: no targets, failed)."
    )
    loss_se: float | None = Field(
        default=None,
        description="Standard error of the loss over replicates (None: fewer than 2, or unknown).",
    )
    target_losses: dict[str, float] = Field(
        default_factory=dict, description="Loss of each target output; they sum to loss."
    )
    loss_bias: float | None = Field(
        default=None,
        description="How much the loss of this many replicates' mean exceeds, on average, its "
        "limit with infinitely many (None: unknown for the loss); loss - loss_bias compares "
        "sets with different replicate counts.",
    )


class StudySummary(BaseModel):
    """Outcome of a whole study."""

    status: Literal["ok", "failed"] = Field(description="failed if any parameter set failed.")
    replicate_counts: dict[str, int] = Field(description="Replicates by status.")
    n_parameter_sets: int = Field(description="Parameter sets in the study.")
    n_aggregated: int = Field(description="Parameter sets aggregated.")
    failed_sets: dict[str, list[str]] = Field(
        default_factory=dict, description="param_id -> reasons and first errors."
    )

    def headline(self) -> str:
        """Return a one-paragraph description fit for a flow run's state message."""
        counts = ", ".join(f"{n} {status}" for status, n in sorted(self.replicate_counts.items()))
        sets = f"{self.n_aggregated}/{self.n_parameter_sets} parameter sets aggregated"
        text = f"{sets}; replicates: {counts}"
        if not self.failed_sets:
            return text
        failures = "; ".join(
            f"{pid[:12]}: {' | '.join(reasons)}"
            for pid, reasons in list(self.failed_sets.items())[:HEADLINE_SETS]
        )
        more = len(self.failed_sets) - HEADLINE_SETS
        if more > 0:
            failures += f"; and {more} more (see study.json)"
        return f"{len(self.failed_sets)} parameter set(s) failed - {failures}. {text}"


def aggregate_parameter_set(
    parameter_set: ParameterSet,
    batches: list[BatchResult],
    replicates: int,
    min_success_fraction: float,
    quantiles: list[float],
    targets: Targets | None = None,
) -> ParameterSetAggregate:
    """Merge a parameter set's batch statistics (in replicate order) into its aggregate.

    With targets, the set's loss too; a loss that cannot be computed (a target output the
    model does not return, a t beyond its series) fails the set, naming the reason.
    """
    batches = sorted(batches, key=lambda b: b.start)
    base = _identity_and_counts(parameter_set, batches)
    n_ok = base["counts"].get("ok", 0)
    reasons = []
    if n_ok < min_success_fraction * replicates:
        reasons.append(
            f"{n_ok}/{replicates} replicates ok, "
            f"below min_success_fraction {min_success_fraction:g}"
        )
    shapes = {(b.start, tuple(sorted(b.kinds.items())), _lengths(b)) for b in batches if b.kinds}
    if len({shape[1:] for shape in shapes}) > 1:
        described = ", ".join(f"replicates from {s[0]}: {dict(s[1])}" for s in sorted(shapes))
        reasons.append(f"outputs differ between batches ({described})")
    if reasons:
        return ParameterSetAggregate(status="failed", reasons=reasons, **base)
    merged = _merge_partials(batches)
    n_failed = sum(base["counts"].values()) - n_ok
    kinds = next((b.kinds for b in batches if b.kinds), {})
    scalars: list[dict[str, Any]] = []
    series: dict[str, SeriesStatistics] = {}
    for name, partial in merged.items():
        stats = summarize(partial, quantiles)
        if kinds[name] == "scalar":
            common = {"param_id": parameter_set.param_id, "output": name, "n_failed": n_failed}
            scalars.append({**common, **_row(stats, 0)})
        else:
            series[name] = _columns(stats)
    losses: dict[str, Any] = {}
    if targets is not None:
        # Imported here: scipy costs ~0.3 s, and only studies with targets need it.
        from simstudy.analysis.losses import LossError, set_loss

        try:
            found = set_loss(merged, kinds, targets, parameter_set.param_id)
        except LossError as exc:
            return ParameterSetAggregate(status="failed", reasons=[str(exc)], **base)
        losses = {
            "loss": found.loss,
            "loss_se": found.loss_se,
            "loss_bias": found.loss_bias,
            "target_losses": found.target_losses,
        }
    return ParameterSetAggregate(status="ok", scalars=scalars, series=series, **base, **losses)


class SetAggregation(BaseModel):
    """What a run needs to aggregate the sets it runs whole (a driver's sets: one task run
    less per set, which cost more than their simulations for a calibration's trials)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    sets: dict[str, ParameterSet] = Field(description="The sets to aggregate, by param_id.")
    replicates: dict[str, int] = Field(description="Each set's replicates, by param_id.")
    min_success_fraction: float = Field(description="The study's quorum.")
    quantiles: list[float] = Field(description="The study's quantiles.")
    targets: Any = Field(default=None, description="Observed data (Targets), if any.")

    def of(self, result: BatchResult) -> ParameterSetAggregate | None:
        """Return the aggregate of a batch that holds all of its set's replicates, else None."""
        parameter_set = self.sets.get(result.param_id)
        count = self.replicates.get(result.param_id)
        if parameter_set is None or result.start != 0 or result.stop != count:
            return None
        return aggregate_parameter_set(
            parameter_set, [result], count, self.min_success_fraction, self.quantiles,
            self.targets,
        )  # fmt: skip


def failed_aggregate(
    parameter_set: ParameterSet, batches: list[BatchResult], reason: str
) -> ParameterSetAggregate:
    """Return the aggregate of a set that could not be aggregated, with its replicate counts."""
    batches = sorted(batches, key=lambda b: b.start)
    return ParameterSetAggregate(
        status="failed", reasons=[reason], **_identity_and_counts(parameter_set, batches)
    )


def _identity_and_counts(parameter_set: ParameterSet, batches: list[BatchResult]) -> dict[str, Any]:
    counts: Counter[str] = Counter()
    for batch in batches:
        counts.update(batch.counts)
    errors = list(dict.fromkeys(error for batch in batches for error in batch.errors))
    return {
        "param_id": parameter_set.param_id,
        "index": parameter_set.index,
        "params": parameter_set.params,
        "counts": dict(counts),
        "first_errors": errors[:FIRST_ERRORS],
    }


def _lengths(batch: BatchResult) -> tuple[tuple[str, int], ...]:
    return tuple(sorted((name, p.length) for name, p in batch.partials.items()))


def _merge_partials(batches: list[BatchResult]) -> dict[str, Partial]:
    merged: dict[str, Partial] = {}
    for batch in batches:
        for name, partial in batch.partials.items():
            merged[name] = merged[name].merge(partial) if name in merged else partial
    return merged


def _row(stats: dict[str, Any], t: int) -> dict[str, Any]:
    row: dict[str, Any] = {"n_ok": int(stats["count"][t])}
    row.update({key: float(value[t]) for key, value in stats.items() if key != "count"})
    return row


def _columns(stats: dict[str, np.ndarray]) -> SeriesStatistics:
    columns = {"n_ok": np.asarray(stats["count"], dtype=np.int64)}
    columns.update(
        {key: np.asarray(value, dtype=np.float64) for key, value in stats.items() if key != "count"}
    )
    return SeriesStatistics(columns)


def reconcile_outputs(aggregates: list[ParameterSetAggregate]) -> list[ParameterSetAggregate]:
    """Fail every aggregated set whose output names or kinds differ from the study's.

    The study's outputs are those most parameter sets returned (on a tie, those of the
    first in design order), so one odd set is named rather than all the others. Series
    lengths may differ between sets (a parameter may set the number of days).
    """
    kinds = {a.param_id: aggregate_output_kinds(a) for a in aggregates if a.status == "ok"}
    if len(set(map(_frozen, kinds.values()))) <= 1:
        return list(aggregates)
    ordered = sorted((a for a in aggregates if a.status == "ok"), key=lambda a: a.index)
    votes = Counter(_frozen(kinds[a.param_id]) for a in ordered)
    reference = max(ordered, key=lambda a: votes[_frozen(kinds[a.param_id])])  # first of ties
    expected = kinds[reference.param_id]
    return [
        _fail_differing(a, kinds[a.param_id], reference.param_id, expected)
        if a.param_id in kinds and kinds[a.param_id] != expected
        else a
        for a in aggregates
    ]


def aggregate_output_kinds(aggregate: ParameterSetAggregate) -> dict[str, str]:
    """Return the output names of an aggregate and their kinds: 'scalar' or 'series'."""
    kinds = {row["output"]: "scalar" for row in aggregate.scalars}
    kinds.update(dict.fromkeys(aggregate.series, "series"))
    return kinds


def _fail_differing(
    aggregate: ParameterSetAggregate,
    kinds: dict[str, str],
    reference_id: str,
    expected: dict[str, str],
) -> ParameterSetAggregate:
    differing = sorted(
        name for name in kinds.keys() | expected.keys() if kinds.get(name) != expected.get(name)
    )
    reason = (
        f"outputs {describe_outputs(kinds, differing)} differ from parameter set "
        f"{reference_id[:12]}'s {describe_outputs(expected, differing)}: every parameter set "
        "must return the same output names and kinds"
    )
    counts = Counter(aggregate.counts)
    counts["failed"] += counts.pop("ok", 0)  # its replicates are failed with it
    return aggregate.model_copy(
        update={
            "status": "failed",
            "counts": dict(counts),
            "reasons": [*aggregate.reasons, reason],
            "scalars": [],
            "series": {},
            "refused_outputs": reason,
            "loss": None,
            "loss_se": None,
            "target_losses": {},
        }
    )


def _frozen(kinds: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(kinds.items()))


def without_rows(aggregate: ParameterSetAggregate) -> ParameterSetAggregate:
    """Return the aggregate with its series cut to their first point: what `summarize_study`
    needs (output names and kinds); the rest would travel to the summary task for nothing."""
    series = {name: statistics.head(1) for name, statistics in aggregate.series.items()}
    return aggregate.model_copy(update={"series": series})


class SetOutcomes(BaseModel):
    """Parameter-set aggregates in one opaque buffer, the study summary task's input.

    Prefect walks a task's arguments object by object, when it is submitted and again on
    the worker: 10,000 aggregates took 11.8 s to reach the summary task; one buffer is
    one object.
    """

    # Pickled by the flow for its own task: Dask pickles every task argument anyway.
    data: bytes = Field(description="The aggregates (one row per output), pickled.")

    @classmethod
    def of(cls, aggregates: list[ParameterSetAggregate]) -> SetOutcomes:
        """Pack aggregates, without their statistics rows (see `without_rows`)."""
        slim = [without_rows(aggregate) for aggregate in aggregates]
        return cls(data=pickle.dumps(slim, protocol=pickle.HIGHEST_PROTOCOL))

    def aggregates(self) -> list[ParameterSetAggregate]:
        """Return the aggregates packed by `of`."""
        aggregates: list[ParameterSetAggregate] = pickle.loads(self.data)
        return aggregates


def summarize_study(aggregates: list[ParameterSetAggregate]) -> StudySummary:
    """Combine parameter-set aggregates (reconciled first) into the study's outcome."""
    aggregates = reconcile_outputs(aggregates)
    counts: Counter[str] = Counter()
    for aggregate in aggregates:
        counts.update(aggregate.counts)
    failed = {
        a.param_id: a.reasons + a.first_errors[:1] for a in aggregates if a.status == "failed"
    }
    return StudySummary(
        status="failed" if failed else "ok",
        replicate_counts=dict(counts),
        n_parameter_sets=len(aggregates),
        n_aggregated=len(aggregates) - len(failed),
        failed_sets=failed,
    )
