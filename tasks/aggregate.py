"""Aggregation tasks: per parameter set, then the whole study."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from simstudy.aggregate import (
    ParameterSetAggregate,
    StudySummary,
    aggregate_parameter_set,
    summarize_study,
)
from simstudy.batch import BatchResult
from simstudy.design import ParameterSet


# `batches` arrives as the batch tasks' futures: Dask resolves them before this task
# starts, so it never holds a worker thread while waiting for its inputs.
@task(name="aggregate-parameter-set", cache_policy=NO_CACHE, persist_result=False)
def aggregate_parameter_set_task(
    parameter_set: ParameterSet,
    batches: list[BatchResult],
    replicates: int,
    min_success_fraction: float,
    quantiles: list[float],
) -> ParameterSetAggregate:
    """Merge one parameter set's batch statistics."""
    return aggregate_parameter_set(
        parameter_set, batches, replicates, min_success_fraction, quantiles
    )


@task(name="summarize-study", cache_policy=NO_CACHE, persist_result=False)
def summarize_study_task(aggregates: list[ParameterSetAggregate]) -> StudySummary:
    """Combine the parameter-set aggregates into the study's outcome."""
    return summarize_study(aggregates)
