"""Run a resolved study on Dask: replicates -> per-parameter-set aggregate -> study summary.

```python
>>> from flows.study_run import run_study
```

`run_study` checks and locks the output folder, starts the cluster, checks it
(`flows/preflight.py`), then `StudyOrchestrator` submits batches (bounded), reruns what a
lost batch did not finish, submits each group of parameter sets' aggregation once its
batches have finished (with their statistics as arguments) and follows them with a stall
watchdog. Finished batches go to part files at once; the result files are assembled from
them when everything has finished. The flow itself (`flows/study.py`) only resolves the
study and dispatches it here or to a calibration (`flows/calibrate.py`).
"""

from __future__ import annotations

import importlib.util
import logging
import time
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from functools import partial
from typing import Any
from uuid import UUID

import pyarrow as pa
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from prefect.states import Completed, Failed, State

from flows.artifacts import (
    FirstFailures,
    ProgressArtifact,
    artifact_key,
    publish_aggregates_table,
    publish_dashboard_link,
    publish_summary,
    summary_markdown,
)
from flows.cluster import reachable_threads, started_task_runner
from flows.orchestrator import StudyOrchestrator, StudyOutcome, notify
from flows.preflight import preflight, remove_study_plugin
from flows.progress import publish
from flows.task_runs import crash_unfinished_task_runs, study_tag, tag_flow_run
from flows.task_settings import task_settings_context
from simstudy.analysis.files import write_analysis
from simstudy.analysis.targets import Targets, load_targets
from simstudy.design.expand import ParameterSet, expand_parameters
from simstudy.design.plan import Batch, plan_batches
from simstudy.errors import StorageError
from simstudy.output.fingerprint import model_fingerprint
from simstudy.output.location import OutputStore
from simstudy.output.locking import output_lock
from simstudy.output.parts import PARTS_DIR, PartWriter, read_parts
from simstudy.output.results import (
    STUDY_FILE,
    check_output_dir,
    now,
    prepare_output_dir,
    study_document,
    study_id,
    write_json,
    write_results,
)
from simstudy.run.batch import BatchResult
from simstudy.run.stall import STALL_MARKDOWN, StallReport
from simstudy.run.tracking import TrackerSnapshot
from simstudy.spec.readiness import check_ready
from simstudy.spec.study import Study
from simstudy.stats.aggregate import ParameterSetAggregate, StudySummary

LOG_EVERY_FRACTION = 0.1
RunLogger = logging.Logger | logging.LoggerAdapter[Any]


@dataclass(frozen=True)
class RunOptions:
    """How a study run treats its folder, for runs that share one (a calibration's)."""

    keep_other_parts: bool = False
    """Keep part files of sets outside this run: the calibration's other trials reuse them."""
    report: bool = True
    """Draw plots and report.html at the end."""
    keep_written_parts: bool = True
    """Keep the part files this run wrote. A study run only to report sets the cache holds
    already (a calibration's best trials) drops them: the cache keeps each replicate once."""


def run_study(
    study: Study,
    logger: RunLogger,
    overwrite: bool = False,
    fresh: bool = False,
    options: RunOptions | None = None,
) -> State[StudySummary]:
    """Run a resolved study into its output folder (checked and locked here)."""
    sets = expand_parameters(study)
    check_ready(study, import_model=False)  # output, scheduler address, model: exit early
    batches = plan_batches(study, sets)
    store = OutputStore(study.output_dir)
    identity = study_id(study, sets)
    check_output_dir(store, identity, overwrite)
    with output_lock(store):
        if fresh or (overwrite and not (options and options.keep_other_parts)):
            store.delete(PARTS_DIR)
        return _run_study(study, sets, batches, store, identity, overwrite, logger, options)


def _run_study(
    study: Study,
    sets: list[ParameterSet],
    batches: list[Batch],
    store: OutputStore,
    identity: str,
    overwrite: bool,
    logger: RunLogger,
    options: RunOptions | None = None,
) -> State[StudySummary]:
    options = options or RunOptions()
    log_dir = str(store.local_log_dir(study.name))
    targets = load_targets(study)  # read once: the losses and targets.parquet agree
    flow_run_id = flow_run.get_id()
    if flow_run_id:
        tag_flow_run(UUID(flow_run_id), study_tag(study.name))
    wall_started = time.monotonic()
    with started_task_runner(study.execution.dask, logger) as runner, ExitStack() as leaving:
        client = runner.client
        plugin_name = f"simstudy-{identity[:12]}"
        joined = preflight(client, study, plugin_name, log_dir)  # removes it if it fails
        threads = reachable_threads(runner, study.execution.dask, joined.joined, joined.per_worker)
        if study.execution.dask.address:  # a cluster that outlives the study, whatever fails
            leaving.callback(remove_study_plugin, client, plugin_name)
        publish_dashboard_link(study, dashboard_link(client))
        progress_artifact = ProgressArtifact(study)
        # Only now, with a cluster that can run the study, are earlier results replaced.
        prepare_output_dir(store, identity, overwrite)
        started_at = now()
        document = study_document(study, sets, identity, started_at)
        write_json(store, STUDY_FILE, {**document, "status": "running"})
        fingerprint = model_fingerprint(study)
        reused = reusable_batches(store, batches, fingerprint, logger)
        parts = PartWriter(store, fingerprint)
        first_failures = FirstFailures()
        logger.info(
            "study %s: %d parameter sets x %d replicates in %d batches (%d reused) -> %s",
            study.name, len(sets), study.replicates, len(batches), len(reused), store,
        )  # fmt: skip
        orchestrator = StudyOrchestrator(
            runner=runner,
            client=client,
            study=study,
            sets=sets,
            batches=batches,
            log_dir=log_dir,
            worker_threads=threads,
            progress_topic=f"simstudy-progress-{flow_run_id or identity}",
            on_progress=ProgressLog(logger, progress_artifact),
            on_aggregate=partial(log_aggregates, logger=logger),
            on_stall=partial(publish_stall_report, study, store=store, logger=logger),
            on_batches=partial(keep_finished, parts=parts, failures=first_failures),
            reused=reused,
            worker_parts=parts if study.execution.part_files == "workers" else None,
            targets=targets,
        )
        try:
            with task_settings_context(client) as settings_decision:
                logger.debug(settings_decision.describe())
                outcome = orchestrator.run()
        except StorageError as exc:
            mark_incomplete(store, document, exc)
            raise
        finally:
            if flow_run_id:
                notify(crash_abandoned_task_runs, orchestrator.abandoned_task_runs(), logger)

    summary = outcome.summary
    try:
        for unfinished in outcome.unfinished:  # a stalled study keeps what finished
            keep_finished([unfinished], parts, first_failures)
        write_results(store, parts.in_plan_order(), outcome.aggregates)
        # Before any part goes: a study.json that cannot be written leaves them to resume.
        write_json(
            store,
            STUDY_FILE,
            {
                **document,
                "finished_at": now().isoformat(),
                "status": "stalled" if outcome.abandoned else summary.status,
                "counts": summary.replicate_counts,
                "reused_replicates": orchestrator.tracker.reused,
                "failed_parameter_sets": summary.failed_sets,
            },
        )
    except StorageError as exc:
        mark_incomplete(store, document, exc)
        raise
    if not options.keep_other_parts:
        parts.remove_others()
    if not options.keep_written_parts:
        for name in parts.in_plan_order():
            store.delete(name)
    message = final_message(outcome)
    logger.info(message)
    ranking, report = analyse_and_report(
        store, study, sets, outcome.aggregates, targets, logger, draw_report=options.report
    )
    notify(publish_aggregates_table, study, outcome.aggregates)
    markdown = summary_markdown(
        study, summary, first_failures.records, store,
        wall_seconds=time.monotonic() - wall_started,
        reused=orchestrator.tracker.reused,
        headline=message,
        ranking=ranking,
        report=report,
    )  # fmt: skip
    notify(publish_summary, study, markdown, message)
    if summary.status == "failed":
        return Failed(message=message, data=summary)
    return Completed(message=message, data=summary)


def mark_incomplete(store: OutputStore, document: dict[str, Any], error: StorageError) -> None:
    """Say in study.json that the study stopped on a storage error, if it can still be written.

    Its part files stay: the same command, once there is room, resumes from them.
    """
    with suppress(OSError):
        write_json(store, STUDY_FILE, {**document, "status": "incomplete", "error": str(error)})


def analyse_and_report(
    store: OutputStore,
    study: Study,
    sets: list[ParameterSet],
    aggregates: list[ParameterSetAggregate],
    targets: Targets | None,
    logger: RunLogger,
    draw_report: bool = True,
) -> tuple[pa.Table | None, str | None]:
    """Write the ranking, sensitivity and report files; return the ranking and the report.

    The result files are written by now: a failure here is logged and loses nothing.
    """
    ranking = None
    try:
        ranking = write_analysis(store, study, sets, aggregates, targets)
    except Exception:
        logger.exception("ranking and sensitivity not written (the results are)")
    if not draw_report:
        return ranking, None
    try:
        # Imported here: matplotlib is needed only now, after the study's memory peak.
        from simstudy.report import build_report

        started = time.monotonic()
        report = build_report(store)
    except Exception as exc:
        logger.exception(
            "report not built (%s: %s); the results are written: rebuild it with "
            "`simstudy report %s`", type(exc).__name__, exc, store,
        )  # fmt: skip
        return ranking, None
    logger.info("report: %s (%.1f s)", report, time.monotonic() - started)
    return ranking, report


def keep_finished(
    finished: list[tuple[int, Batch, BatchResult]], parts: PartWriter, failures: FirstFailures
) -> None:
    """Write batches that finished together as a part file; note their first failures."""
    parts.write(finished)
    failures.add(finished)


def crash_abandoned_task_runs(task_runs: dict[UUID, str], logger: RunLogger) -> None:
    """Set the task runs a study left unfinished to Crashed, so none stays RUNNING."""
    abandoned = crash_unfinished_task_runs(
        task_runs, "abandoned: the study ended before this task finished"
    )
    if abandoned:
        logger.warning("task runs marked Crashed: %s", ", ".join(abandoned))


def reusable_batches(
    store: OutputStore, batches: list[Batch], fingerprint: str, logger: RunLogger
) -> dict[int, BatchResult]:
    """Return the batches an earlier run of this study finished, rebuilt from part files."""
    stored = read_parts(store, fingerprint)
    if stored.corrupt_parts:
        logger.warning(
            "unreadable part files removed, their replicates run again: %s",
            ", ".join(stored.corrupt_parts),
        )
    reused = {}
    for index, batch in enumerate(batches):
        result = stored.reusable_batch(batch)
        if result is not None:
            reused[index] = result
    return reused


def final_message(outcome: StudyOutcome) -> str:
    """Return the flow run's state message: the stall headline first, if it stalled."""
    if outcome.abandoned and outcome.stall_report is not None:
        return f"{outcome.stall_report.headline()} (see {STALL_MARKDOWN}). " + (
            outcome.summary.headline()
        )
    return outcome.summary.headline()


def publish_stall_report(
    study: Study, report: StallReport, store: OutputStore, logger: RunLogger
) -> None:
    """Send a stall report to the log, the output folder and a Prefect artifact."""
    report.write(store)
    logger.warning("%s; report: %s", report.headline(), store.path(STALL_MARKDOWN))
    create_markdown_artifact(
        markdown=report.to_markdown(),
        key=artifact_key(study, "stall-report"),
        description=report.headline()[:500],
    )


class ProgressLog:
    """Publish progress to listeners and the progress artifact; log it every ~10%."""

    def __init__(self, logger: RunLogger, artifact: ProgressArtifact):
        self.logger = logger
        self.artifact = artifact
        self.next_fraction = LOG_EVERY_FRACTION

    def __call__(self, snapshot: TrackerSnapshot) -> None:
        publish(snapshot)
        self.artifact.update(snapshot)
        fraction = snapshot.replicates_done / max(snapshot.total_replicates, 1)
        if fraction >= self.next_fraction:
            self.logger.info(
                "%d/%d replicates done (%s)",
                snapshot.replicates_done, snapshot.total_replicates, snapshot.replicates,
            )  # fmt: skip
            self.next_fraction = (int(fraction / LOG_EVERY_FRACTION) + 1) * LOG_EVERY_FRACTION


def log_aggregates(aggregates: list[ParameterSetAggregate], logger: RunLogger) -> None:
    """Log a group's aggregates: a line for a lone set, else one line and one per failed set.

    A line per set of a 1,000-set study cost the Prefect API more CPU than the task runs.
    """
    if len(aggregates) == 1:
        (aggregate,) = aggregates
        logger.info(
            "parameter set %s %s aggregated: %s (%s)%s",
            aggregate.param_id[:12], aggregate.params, aggregate.status, aggregate.counts,
            f" - {'; '.join(aggregate.reasons)}" if aggregate.reasons else "",
        )  # fmt: skip
        return
    failed = [a for a in aggregates if a.status == "failed"]
    logger.info(
        "parameter sets %d-%d aggregated: %d ok, %d failed",
        aggregates[0].index, aggregates[-1].index, len(aggregates) - len(failed), len(failed),
    )  # fmt: skip
    for aggregate in failed:
        logger.info(
            "parameter set %s %s failed (%s) - %s",
            aggregate.param_id[:12], aggregate.params, aggregate.counts,
            "; ".join(aggregate.reasons),
        )  # fmt: skip


def dashboard_link(client: Any) -> str | None:
    """Return the Dask dashboard URL when the cluster serves one (it needs bokeh)."""
    if importlib.util.find_spec("bokeh") is None:
        return None
    return str(client.dashboard_link) if client.dashboard_link else None
