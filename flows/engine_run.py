"""One engine run for a driver: a cluster, a `StudyOrchestrator` and the replicate cache.

```python
>>> from flows.engine_run import run_engine
```

A calibration (`flows/calibrate.py`) and a posterior (`flows/posterior.py`) are drivers
(`simstudy.run.engine`): each runs its sets as the study `engine_study` returns, in the
output folder's `simulations/`, on one cluster in the calling flow run. Every finished
replicate goes to one cache (`simulations/_parts`), written once; a rerun after a crash
reuses it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from prefect.runtime import flow_run

from flows.cluster import reachable_threads, started_task_runner
from flows.orchestrator import StudyOrchestrator, StudyOutcome, notify
from flows.preflight import preflight, remove_study_plugin
from flows.study_run import RunLogger, crash_abandoned_task_runs, publish_stall_report
from flows.task_settings import task_settings_context
from simstudy.analysis.targets import load_targets
from simstudy.calibrate.folder import SIMULATIONS_DIR
from simstudy.output.fingerprint import model_fingerprint
from simstudy.output.location import OutputStore
from simstudy.output.parts import PartWriter, read_parts
from simstudy.run.engine import Driver
from simstudy.spec.study import Study


@dataclass(frozen=True)
class EngineRun:
    """What an engine run ended with: the orchestrator's outcome, the cluster, its time."""

    outcome: StudyOutcome
    address: str
    """The scheduler's address (a study run after it on the same cluster uses it)."""
    seconds: float
    """From the first set submitted to the driver's end: without start-up."""


def engine_study(study: Study, store: OutputStore) -> Study:
    """Return the study the engine runs a driver's sets as: the calibration's, in `simulations/`."""
    assert study.calibrate is not None and store.local is not None
    document = study.model_dump(mode="json", exclude={"calibrate"})
    document["parameters"] = {"list": [{}]}  # sets come from the driver, not a design
    document["output"] = str(store.local / SIMULATIONS_DIR)
    # Batches of replicates.min keep earlier replicates reusable when a set gets more.
    document["execution"]["batch_size"] = study.calibrate.min_replicates
    return Study.model_validate(document)


def run_engine(
    study: Study,
    store: OutputStore,
    identity: str,
    logger: RunLogger,
    driver: Driver,
    while_connected: Callable[[str, StudyOutcome], None] | None = None,
) -> EngineRun:
    """Run `driver` on one engine until it is finished or the run stalls.

    `while_connected(address, outcome)` runs before the cluster stops (a study of the best
    sets on the same workers).
    """
    assert study.calibrate is not None
    engine = engine_study(study, store)
    simulations = OutputStore(engine.output_dir)
    log_dir = str(simulations.local_log_dir(engine.name))
    flow_run_id = flow_run.get_id()
    with started_task_runner(engine.execution.dask, logger) as runner:
        client = runner.client
        plugin_name = f"simstudy-{identity[:12]}"
        joined = preflight(client, engine, plugin_name, log_dir)
        threads = reachable_threads(runner, engine.execution.dask, joined.joined, joined.per_worker)
        fingerprint = model_fingerprint(engine)
        parts = PartWriter(simulations, fingerprint)
        orchestrator = StudyOrchestrator(
            runner=runner, client=client, study=engine, sets=[], batches=[],
            log_dir=log_dir, worker_threads=threads,
            progress_topic=f"simstudy-calibration-{flow_run_id or identity}",
            on_progress=lambda _: None,
            on_stall=lambda report: publish_stall_report(study, report, store, logger),
            on_batches=parts.write, targets=load_targets(engine), driver=driver,
            stored=read_parts(simulations, fingerprint),
            driver_batch_size=study.calibrate.min_replicates,
        )  # fmt: skip
        try:
            with task_settings_context(client):
                started = time.monotonic()
                outcome = orchestrator.run()
                seconds = time.monotonic() - started
        finally:
            if flow_run_id:
                notify(crash_abandoned_task_runs, orchestrator.abandoned_task_runs(), logger)
            if engine.execution.dask.address:
                remove_study_plugin(client, plugin_name)
        for unfinished in outcome.unfinished:  # a stalled run keeps what finished
            notify(parts.write, [unfinished])
        address = str(engine.execution.dask.address or cast(Any, client.scheduler).address)
        if while_connected is not None:
            while_connected(address, outcome)
    return EngineRun(outcome, address, seconds)
