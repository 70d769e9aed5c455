"""Aggregation tasks: per group of parameter sets, then the whole study."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from simstudy.analysis.targets import Targets
from simstudy.design.expand import ParameterSet
from simstudy.run.batch import BatchResult
from simstudy.stats.aggregate import (
    ParameterSetAggregate,
    SetOutcomes,
    StudySummary,
    aggregate_parameter_set,
    summarize_study,
)


# `batches` arrives as values: the flow submits a group once all its batches have finished,
# so the task never holds a worker thread while waiting for its inputs.
@task(name="aggregate-parameter-sets", cache_policy=NO_CACHE, persist_result=False)
def aggregate_parameter_sets_task(
    parameter_sets: list[ParameterSet],
    batches: list[list[BatchResult]],
    replicates: int | list[int],
    min_success_fraction: float,
    quantiles: list[float],
    targets: Targets | None = None,
) -> list[ParameterSetAggregate]:
    """Merge the batch statistics of a group of parameter sets, each on its own, with its loss.

    `replicates` is every set's count, or one count per set (a calibration's sets differ).
    """
    counts = replicates if isinstance(replicates, list) else [replicates] * len(parameter_sets)
    return [
        aggregate_parameter_set(
            parameter_set, set_batches, count, min_success_fraction, quantiles, targets
        )
        for parameter_set, set_batches, count in zip(parameter_sets, batches, counts, strict=True)
    ]


@task(name="summarize-study", cache_policy=NO_CACHE, persist_result=False)
def summarize_study_task(aggregates: SetOutcomes) -> StudySummary:
    """Combine the parameter-set aggregates into the study's outcome."""
    return summarize_study(aggregates.aggregates())
