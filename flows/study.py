"""The `simulation-study` flow: replicates -> per-parameter-set aggregate -> study summary.

```python
>>> from flows.study import simulation_study
>>> state = simulation_study(study_path="examples/seir.yaml", return_state=True)
```

Every batch, aggregation and the summary is submitted up front to a DaskTaskRunner
built from the study's `execution.dask`; aggregations receive their batches' futures as
arguments, so Dask starts them only once their inputs exist.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import distributed
from prefect import flow, get_run_logger, unmapped
from prefect.states import Completed, Failed, State

from flows.cluster import study_task_runner
from flows.progress import StudyProgress, publish
from simstudy.aggregate import ParameterSetAggregate, StudySummary
from simstudy.batch import BatchResult
from simstudy.batching import Batch, plan_batches
from simstudy.design import ParameterSet, expand_parameters
from simstudy.errors import StudyError
from simstudy.loading import load_study
from simstudy.records import ReplicateRecord
from simstudy.spec import Study
from simstudy.storage import (
    LOGS_DIR,
    STUDY_FILE,
    now,
    prepare_output_dir,
    study_document,
    study_id,
    write_json,
    write_results,
)
from tasks.aggregate import aggregate_parameter_set_task, summarize_study_task
from tasks.simulate import configured_simulate_batch

LOG_EVERY_FRACTION = 0.1


def resolve_study(study_path: str | None, study: Study | None, output: str | None) -> Study:
    """Return the study from a path or a model (exactly one), with the output override."""
    if (study_path is None) == (study is None):
        raise StudyError("flow parameters", ["give exactly one of study_path or study"])
    resolved = load_study(study_path) if study_path is not None else study
    assert resolved is not None
    return resolved.model_copy(update={"output": output}) if output else resolved


@flow(name="simulation-study", validate_parameters=True)
def simulation_study(
    study_path: str | None = None,
    study: Study | None = None,
    output: str | None = None,
    overwrite: bool = False,
) -> State[StudySummary]:
    """Run a simulation study on Dask: every replicate, every aggregate, the summary."""
    logger = get_run_logger()
    study = resolve_study(study_path, study, output)
    sets = expand_parameters(study)
    batches = plan_batches(study, sets)
    output_dir = Path(study.output_dir)
    identity = study_id(study, sets)
    prepare_output_dir(output_dir, identity, overwrite)
    started_at = now()
    write_json(
        output_dir / STUDY_FILE, study_document(study, sets, identity, started_at, status="running")
    )
    logger.info(
        "study %s: %d parameter sets x %d replicates in %d batches -> %s",
        study.name, len(sets), study.replicates, len(batches), output_dir,
    )  # fmt: skip

    with study_task_runner(study.execution.dask) as runner:
        batch_futures = runner.map(
            configured_simulate_batch(study, max(b.size for b in batches)),
            {
                "study": unmapped(study),
                "batch": batches,
                "log_dir": unmapped(str(output_dir / LOGS_DIR)),
            },
        )
        futures_by_set: dict[str, list[Any]] = defaultdict(list)
        for batch, future in zip(batches, batch_futures, strict=True):
            futures_by_set[batch.param_id].append(future)
        aggregate_futures = [
            runner.submit(
                aggregate_parameter_set_task.with_options(task_run_name=f"agg-{ps.param_id[:12]}"),
                {
                    "parameter_set": ps,
                    "batches": futures_by_set[ps.param_id],
                    "replicates": study.replicates,
                    "min_success_fraction": study.execution.min_success_fraction,
                    "quantiles": study.aggregate.quantiles,
                },
            )
            for ps in sets
        ]
        summary_future = runner.submit(summarize_study_task, {"aggregates": aggregate_futures})
        batch_results, aggregates = _collect(
            runner.client, study, sets, batches, list(batch_futures), aggregate_futures, logger
        )
        summary: StudySummary = summary_future.result()

    write_results(output_dir, records_of(batch_results), aggregates)
    write_json(
        output_dir / STUDY_FILE,
        study_document(
            study, sets, identity, started_at,
            finished_at=now().isoformat(),
            status=summary.status,
            counts=summary.replicate_counts,
            failed_parameter_sets=summary.failed_sets,
        ),
    )  # fmt: skip
    logger.info(summary.headline())
    if summary.status == "failed":
        return Failed(message=summary.headline(), data=summary)
    return Completed(message=summary.headline(), data=summary)


def _collect(
    client: distributed.Client,
    study: Study,
    sets: list[ParameterSet],
    batches: list[Batch],
    batch_futures: list[Any],
    aggregate_futures: list[Any],
    logger: Any,
) -> tuple[list[BatchResult], list[ParameterSetAggregate]]:
    """Wait for every batch and aggregate, publishing progress as each finishes."""
    progress = StudyProgress(total_replicates=len(sets) * study.replicates, total_sets=len(sets))
    counts: Counter[str] = Counter()
    batch_results: dict[int, BatchResult] = {}
    aggregates: dict[int, ParameterSetAggregate] = {}
    position = {id(f.wrapped_future): i for i, f in enumerate(batch_futures)}
    position.update({id(f.wrapped_future): -1 - i for i, f in enumerate(aggregate_futures)})
    wrapped = [f.wrapped_future for f in batch_futures + aggregate_futures]
    next_log = LOG_EVERY_FRACTION
    for done in distributed.as_completed(wrapped, loop=client.loop):
        index = position[id(done)]
        if index >= 0:
            result: BatchResult = batch_futures[index].result()
            batch_results[index] = result
            counts.update(r.status for r in result.records)
        else:
            aggregate: ParameterSetAggregate = aggregate_futures[-1 - index].result()
            aggregates[-1 - index] = aggregate
            progress.sets_aggregated += aggregate.status == "ok"
            progress.sets_failed += aggregate.status == "failed"
            logger.info(
                "parameter set %s aggregated: %s (%s)",
                aggregate.param_id[:12], aggregate.status, dict(aggregate.counts),
            )  # fmt: skip
        progress.replicates = dict(counts)
        publish(progress)
        fraction = progress.replicates_done / progress.total_replicates
        if fraction >= next_log:
            logger.info(
                "%d/%d replicates done (%s)",
                progress.replicates_done, progress.total_replicates, dict(counts),
            )  # fmt: skip
            next_log = (int(fraction / LOG_EVERY_FRACTION) + 1) * LOG_EVERY_FRACTION
    ordered_batches = [batch_results[i] for i in range(len(batches))]
    return ordered_batches, [aggregates[i] for i in range(len(sets))]


def records_of(batch_results: list[BatchResult]) -> list[ReplicateRecord]:
    """Return every replicate record of the study, in batch order."""
    return [r for result in batch_results for r in result.records]
