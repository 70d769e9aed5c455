"""A calibration on one engine: trials asked as capacity frees, told as their set completes.

```python
>>> from flows.study import simulation_study
>>> state = simulation_study(study_path="examples/seir-calibrate.yaml", return_state=True)
```

A study with `calibrate` runs here. One cluster, one `StudyOrchestrator` and this one
flow run: the search (`simstudy.calibrate.search.Search`, plain code) drives the
orchestrator through the engine protocol, adding a trial's set as soon as a slot frees and
more replicates to competitive trials, interleaved. Every finished replicate goes to one
cache (`simulations/_parts`), written once; a rerun after a crash reuses it, and resumes
the search from Optuna's journal and the trial log. The Prefect UI shows one flow run
whose artifacts update as trials are told: progress, the best so far, the ten best.
At the end, the ten best trials are run again from the cache (nothing new runs) into
`simulations/`, for the report of their fit.
"""

from __future__ import annotations

import time
from contextlib import suppress
from typing import Any, cast
from uuid import UUID

from prefect.artifacts import (
    create_progress_artifact,
)
from prefect.states import Completed, Failed, State

from flows.artifacts import artifact_key, publish_progress, publish_table
from flows.engine_run import engine_study, run_engine
from flows.orchestrator import StudyOutcome, notify
from flows.study_run import (
    RunLogger,
    RunOptions,
    run_study,
)
from simstudy.calibrate.adaptive import simulations_saved
from simstudy.calibrate.folder import (
    CALIBRATION_FILE,
    JOURNAL_FILE,
    SIMULATIONS_DIR,
    TRIAL_LOG_FILE,
    TRIALS_FILE,
    calibration_id,
    check_calibration_dir,
    check_search_state,
    trials_ranking,
)
from simstudy.calibrate.optimizer import Optimizer
from simstudy.calibrate.search import Search, allocations_of
from simstudy.calibrate.space import search_space
from simstudy.calibrate.spec import CalibrateSettings
from simstudy.calibrate.trials import TrialLog, trials_table
from simstudy.display import format_number, format_parameters
from simstudy.errors import StorageError, StudyError
from simstudy.output.location import OutputStore, storage_errors
from simstudy.output.locking import output_lock
from simstudy.output.results import RANKING_FILE, now, write_json, write_table
from simstudy.spec.readiness import check_ready
from simstudy.spec.study import Study

BEST_TRIALS = 10
"""Trials in the table artifact of the best so far."""
REPORT_TRIALS = 10
"""Best trials whose fit to the targets the final report shows (simulations/report.html)."""
PUBLISH_SECONDS = 2.0
"""Least time between two updates of the artifacts and trials.parquet while trials are
told: a told trial every few milliseconds must not become an API call each."""


def run_calibration(
    study: Study, logger: RunLogger, overwrite: bool = False, fresh: bool = False
) -> State[Any]:
    """Run a calibration study into its output folder (checked and locked here)."""
    store = OutputStore(study.output_dir)
    if store.local is None:
        raise StudyError(
            study.name,
            [f"output: a calibration needs a local folder (Optuna's journal is a file), "
             f"not {store}"],
        )  # fmt: skip
    check_ready(study, import_model=False)  # output, scheduler, model, targets: exit early
    identity = calibration_id(study)
    check_calibration_dir(store, identity, overwrite)
    with output_lock(store):
        check_calibration_dir(store, identity, overwrite)  # another run may have come first
        if fresh or overwrite:
            for name in (JOURNAL_FILE, TRIAL_LOG_FILE, TRIALS_FILE, RANKING_FILE):
                store.delete(name)
            store.delete(CALIBRATION_FILE)
        if fresh:
            store.delete(SIMULATIONS_DIR)
        check_search_state(store)  # a journal without its trial log, or the other way round
        if not store.exists(CALIBRATION_FILE):  # claimed before the journal is created
            write_json(store, CALIBRATION_FILE, {"name": study.name, "calibration_id": identity,
                                                 "status": "starting"})  # fmt: skip
        calibration = Calibration(study, store, identity, logger)
        try:
            return calibration.run()
        finally:
            calibration.search.optimizer.close()


class Calibration:
    """One calibration run: its search, its engine, its files and artifacts."""

    def __init__(self, study: Study, store: OutputStore, identity: str, logger: RunLogger):
        assert study.calibrate is not None and study.parameters.sample is not None
        assert store.local is not None  # checked by run_calibration
        assert isinstance(study.calibrate, CalibrateSettings)
        self.study = study
        self.settings = study.calibrate
        self.store = store
        self.identity = identity
        self.logger = logger
        self.names = study.parameters.sample.names()
        optimizer = Optimizer.open(
            store.local / JOURNAL_FILE, study.name, self.settings,
            search_space(study.parameters.sample),
        )  # fmt: skip
        self.search = Search(
            self.settings, study.fixed, optimizer, TrialLog(store.local / TRIAL_LOG_FILE),
            on_change=self._publish,
        )  # fmt: skip
        self._published = 0.0
        self._progress: UUID | None = None
        self._search_seconds = 0.0

    def run(self) -> State[Any]:
        """Run the search until every trial is told; return the calibration's final state."""
        started = now().isoformat()
        self._write_document("running", started)
        try:
            # The journal and the trial log write outside `atomic_file`: a full disk there
            # is the same one error.
            with storage_errors(str(self.store)):
                return self._search(started)
        except StorageError as exc:
            with suppress(OSError):  # told if it can still be written; the journal resumes
                self._write_document("incomplete", started, {"error": str(exc)})
            raise

    def _search(self, started: str) -> State[Any]:
        self._progress = cast(UUID, create_progress_artifact(
            progress=self._percent(), key=artifact_key(self.study, "calibration-progress"),
            description=f"Trials told of {self.settings.trials}",
        ))  # fmt: skip

        def report_best(address: str, outcome: StudyOutcome) -> None:
            if not outcome.abandoned:
                self._report_best(address)

        run = run_engine(self.study, self.store, self.identity, self.logger, self.search,
                         while_connected=report_best)  # fmt: skip
        outcome = run.outcome
        self._search_seconds = run.seconds
        self._write_outputs()
        self._publish(self.search, force=True)
        summary = self._summary()
        stalled = outcome.abandoned and outcome.stall_report is not None
        self._write_document("stalled" if stalled else "completed", started, summary)
        message = self._final_message(summary)
        if stalled:
            assert outcome.stall_report is not None
            message = (
                f"{outcome.stall_report.headline()}; the trials not told run again when the "
                f"same command is run again. {message}"
            )
        report = self._report()
        if report:
            message += f"; report: {report}"
        self.logger.info(message)
        if stalled or summary["best"] is None:
            return Failed(message=message, data=summary)
        return Completed(message=message, data=summary)

    def _report(self) -> str | None:
        """Write the calibration's report; a failure is logged and loses nothing."""
        try:
            # Imported here: matplotlib is needed only now.
            from simstudy.report.calibration import build_calibration_report

            return build_calibration_report(self.store)
        except Exception as exc:
            self.logger.exception(
                "report not built (%s: %s); trials.parquet is written: rebuild it with "
                "`simstudy report %s`", type(exc).__name__, exc, self.store,
            )  # fmt: skip
            return None

    def _report_best(self, address: str) -> None:
        """Run the best trials again from the cache (nothing new runs) to report their fit."""
        best = self.search.best()[:REPORT_TRIALS]
        if not best:
            return
        # Every one of them has at least this many replicates cached.
        count = min(r.replicates for r in best)
        document = engine_study(self.study, self.store).model_dump(mode="json")
        document["parameters"] = {"list": [r.params for r in best]}
        document["replicates"] = count
        document["execution"]["dask"] = {"address": address}
        options = RunOptions(keep_other_parts=True, report=True, keep_written_parts=False)
        state = run_study(Study.model_validate(document), self.logger, overwrite=True,
                          options=options)  # fmt: skip
        if state.is_failed():
            self.logger.warning("the best trials' study: %s", state.message)

    def _publish(self, search: Search, force: bool = False) -> None:
        """Update trials.parquet and the artifacts, at most every PUBLISH_SECONDS."""
        if not force and time.monotonic() - self._published < PUBLISH_SECONDS:
            return
        self._published = time.monotonic()
        notify(self._write_outputs)
        if self._progress is not None:
            notify(publish_progress, self._progress, self._percent())
        best = search.best()
        rows = [
            {"rank": str(i + 1), "trial": str(r.trial), "loss": format_number(r.loss),
             "loss_se": format_number(r.loss_se), "replicates": str(r.replicates),
             **{name: format_number(r.params.get(name)) for name in self.names}}
            for i, r in enumerate(best[:BEST_TRIALS])
        ]  # fmt: skip
        told = search.optimizer.told()
        lead = (
            f"best loss so far {format_number(best[0].loss)} +- {format_number(best[0].loss_se)}"
            f" (trial {best[0].trial}, {best[0].replicates} replicates: "
            f"{format_parameters(best[0].params)})"
            if best else "no trial has a loss yet"
        )  # fmt: skip
        self.logger.info("%d/%d trials told, %d simulations; %s", told, self.settings.trials,
                         search.simulations(), lead)  # fmt: skip
        description = (
            f"Best {len(rows)} trials after {told} told ({search.simulations()} simulations)"
        )
        notify(publish_table, self.study, "best-trials", rows, description)

    def _write_outputs(self) -> None:
        records = sorted(self.search.records.values(), key=lambda r: r.trial)
        write_table(self.store, TRIALS_FILE, trials_table(records, self.names))
        write_table(self.store, RANKING_FILE, trials_ranking(records, self.names))

    def _percent(self) -> float:
        return 100.0 * self.search.optimizer.told() / self.settings.trials

    def _summary(self) -> dict[str, Any]:
        records = list(self.search.records.values())
        best = self.search.best()
        return {
            "trials": len(records),
            "failed": sum(r.state == "failed" for r in records),
            "simulations": self.search.simulations(),
            "saved": simulations_saved(allocations_of(records), self.settings.max_replicates),
            "best": best[0].model_dump(mode="json") if best else None,
            "importances": self.search.optimizer.importances(),
            # From the first trial asked to the last told: the search without start-up,
            # the best trials' study and the reports (benchmarks/calibration_loop.py).
            "search_seconds": round(self._search_seconds, 3),
        }

    def _final_message(self, summary: dict[str, Any]) -> str:
        best = summary["best"]
        lead = (
            f"best trial {best['trial']}: loss {format_number(best['loss'])} +- "
            f"{format_number(best['loss_se'])} ({format_parameters(best['params'])})"
            if best else "no trial has a loss: see trials.parquet's allocation for why"
        )  # fmt: skip
        return (
            f"{summary['trials']} trials ({summary['failed']} failed), {summary['simulations']} "
            f"simulations ({summary['saved']} fewer than {self.settings.max_replicates} "
            f"replicates for every trial); {lead}"
        )

    def _write_document(
        self, status: str, started: str, summary: dict[str, Any] | None = None
    ) -> None:
        write_json(self.store, CALIBRATION_FILE, {
            "name": self.study.name, "calibration_id": self.identity, "status": status,
            "study": self.study.model_dump(mode="json"), "started_at": started,
            **({"finished_at": now().isoformat(), **summary} if summary else {}),
        })  # fmt: skip
