"""A posterior by ABC-SMC on one engine: populations of particles, as a calibration's driver.

```python
>>> from flows.study import simulation_study
>>> state = simulation_study(study_path="examples/seir-posterior.yaml", return_state=True)
```

A study whose `calibrate.method` is `abc-smc` runs here: the driver
(`simstudy.calibrate.abc_smc.AbcSmc`, plain code) proposes parameter sets as capacity
frees, each recorded in `posterior.jsonl` before it runs, and the engine
(`flows/engine_run.py`) runs them on one cluster in this flow run. A rerun after a kill
replays the journal, reuses every finished replicate (`simulations/_parts`) and ends with
the posterior an uninterrupted run gives. Each closed generation updates the Prefect
artifacts (epsilon, acceptance, ESS, simulations, the current intervals) and the files.
"""

from __future__ import annotations

from contextlib import suppress
from typing import Any, cast
from uuid import UUID

from prefect.artifacts import create_progress_artifact
from prefect.states import Completed, Failed, State

from flows.artifacts import artifact_key, publish_progress, publish_table
from flows.engine_run import engine_study, run_engine
from flows.orchestrator import notify
from flows.study_run import RunLogger
from simstudy.analysis.targets import load_targets
from simstudy.calibrate.abc_smc import AbcSmc
from simstudy.calibrate.folder import (
    CALIBRATION_FILE,
    SIMULATIONS_DIR,
    calibration_id,
    check_calibration_dir,
)
from simstudy.calibrate.posterior import (
    FAILURES_TABLE,
    POSTERIOR_FILE,
    POSTERIOR_JOURNAL,
    POSTERIOR_TABLE,
    failures_table,
    interval_text,
    posterior_document,
    posterior_table,
    study_prior,
)
from simstudy.calibrate.predictive import (
    PREDICTIVE_TABLE,
    WithPredictive,
    coverage,
    predictive_table,
)
from simstudy.calibrate.spec import PosteriorSettings
from simstudy.display import format_number
from simstudy.errors import JournalError, StorageError, StudyError
from simstudy.output.fingerprint import model_fingerprint
from simstudy.output.location import OutputStore, storage_errors
from simstudy.output.locking import output_lock
from simstudy.output.parts import read_parts
from simstudy.output.results import now, write_json, write_table
from simstudy.run.engine import Engine, SetOutcome
from simstudy.spec.readiness import check_ready
from simstudy.spec.study import Study

POSTERIOR_FILES = (
    POSTERIOR_JOURNAL, POSTERIOR_TABLE, POSTERIOR_FILE, FAILURES_TABLE, PREDICTIVE_TABLE
)  # fmt: skip


def run_posterior(
    study: Study, logger: RunLogger, overwrite: bool = False, fresh: bool = False
) -> State[Any]:
    """Run an ABC-SMC posterior into its output folder (checked and locked here)."""
    store = OutputStore(study.output_dir)
    if store.local is None:
        raise StudyError(
            study.name,
            [f"output: a posterior needs a local folder (its journal is a file), not {store}"],
        )
    check_ready(study, import_model=False)  # output, scheduler, model, targets: exit early
    identity = calibration_id(study)
    check_calibration_dir(store, identity, overwrite)
    with output_lock(store):
        check_calibration_dir(store, identity, overwrite)  # another run may have come first
        if fresh or overwrite:
            for name in (*POSTERIOR_FILES, CALIBRATION_FILE):
                store.delete(name)
        if fresh:
            store.delete(SIMULATIONS_DIR)
        if not store.exists(CALIBRATION_FILE):
            write_json(store, CALIBRATION_FILE, {"name": study.name, "calibration_id": identity,
                                                 "status": "starting"})  # fmt: skip
        return Posterior(study, store, identity, logger).run()


class Posterior:
    """One posterior run: its driver, its engine, its files and artifacts."""

    def __init__(self, study: Study, store: OutputStore, identity: str, logger: RunLogger):
        settings = study.calibrate
        assert isinstance(settings, PosteriorSettings) and study.parameters.sample is not None
        assert store.local is not None  # checked by run_posterior
        self.study = study
        self.settings = settings
        self.store = store
        self.identity = identity
        self.logger = logger
        journal = store.local / POSTERIOR_JOURNAL
        try:
            self.driver = AbcSmc(settings, study_prior(study.parameters.sample, settings),
                                 journal, fixed=study.fixed)  # fmt: skip
        except ValueError as exc:  # a journal of other settings, or not a journal
            raise JournalError(
                f"{exc}. To start the posterior over, run with --overwrite (finished "
                "replicates are reused)"
            ) from exc
        self.predictive = WithPredictive(self.driver, settings.predictive_replicates)
        self._closed = len(self.driver.generations)
        self._progress: UUID | None = None

    def run(self) -> State[Any]:
        """Run generations until a stopping rule; return the posterior's final state."""
        started = now().isoformat()
        self._write_document("running", started)
        try:
            with storage_errors(str(self.store)):  # the journal writes outside atomic_file
                return self._infer(started)
        except StorageError as exc:
            with suppress(OSError):  # told if it can still be written; the journal resumes
                self._write_document("incomplete", started, {"error": str(exc)})
            raise

    def _infer(self, started: str) -> State[Any]:
        self._progress = cast(UUID, create_progress_artifact(
            progress=self._percent(), key=artifact_key(self.study, "posterior-progress"),
            description=f"Generations closed of at most {self.settings.generations}",
        ))  # fmt: skip
        run = run_engine(self.study, self.store, self.identity, self.logger, _Watched(self))
        self._write_outputs()
        summary = {**posterior_document(self.driver), "search_seconds": round(run.seconds, 3)}
        predicted = self._predictive_bands() if self.predictive.finished() else None
        if predicted:
            summary["predictive"] = predicted
            write_json(self.store, POSTERIOR_FILE, {**posterior_document(self.driver),
                                                    "predictive": predicted})  # fmt: skip
        stalled = run.outcome.abandoned and run.outcome.stall_report is not None
        status = "stalled" if stalled else "completed"
        self._write_document(status, started, {"posterior": summary})
        message = self._final_message(summary)
        if stalled:
            assert run.outcome.stall_report is not None
            message = (
                f"{run.outcome.stall_report.headline()}; the sets not finished run again when "
                f"the same command is run again. {message}"
            )
        report = self._report()
        if report:
            message += f"; report: {report}"
        self.logger.info(message)
        if stalled or self.driver.population is None:
            return Failed(message=message, data=summary)
        return Completed(message=message, data=summary)

    def on_generation(self) -> None:
        """Publish each newly closed generation: a log line, the files, the artifacts."""
        generations = self.driver.generations
        if len(generations) == self._closed:
            return
        self._closed = len(generations)
        last = generations[-1]
        summary = self.driver.posterior_summary()
        intervals = "; ".join(interval_text(name, vars(s)) for name, s in summary.items())
        self.logger.info(
            "generation %d: epsilon %s, acceptance rate %.3g, ESS %.0f, %d simulations; %s",
            last.number, format_number(last.epsilon), last.acceptance_rate, last.ess,
            self.driver.simulations(), intervals,
        )  # fmt: skip
        notify(self._write_outputs)
        if self._progress is not None:
            notify(publish_progress, self._progress, self._percent())
        rows = [
            {"parameter": name, "mean": format_number(s.mean), "sd": format_number(s.sd),
             "2.5%": format_number(s.q2_5), "50%": format_number(s.q50),
             "97.5%": format_number(s.q97_5)}
            for name, s in summary.items()
        ]  # fmt: skip
        description = (
            f"Posterior after generation {last.number}: epsilon {format_number(last.epsilon)}, "
            f"acceptance rate {last.acceptance_rate:.3g}, ESS {last.ess:.0f}, "
            f"{self.driver.simulations()} simulations"
        )
        notify(publish_table, self.study, "posterior", rows, description)

    def _write_outputs(self) -> None:
        write_table(self.store, POSTERIOR_TABLE, posterior_table(self.driver))
        write_table(self.store, FAILURES_TABLE, failures_table(self.driver))
        write_json(self.store, POSTERIOR_FILE, posterior_document(self.driver))

    def _predictive_bands(self) -> dict[str, Any] | None:
        """Write the predictive bands; a failure is logged and loses nothing (rerun: cached)."""
        try:
            return self._write_predictive()
        except StorageError:
            raise
        except Exception as exc:
            self.logger.exception(
                "posterior predictive bands not written (%s: %s); the posterior is; run the "
                "same command again to write them (their replicates are cached)",
                type(exc).__name__, exc,
            )  # fmt: skip
            return None

    def _write_predictive(self) -> dict[str, Any] | None:
        """Write the predictive bands from the cached replicates; return their coverage."""
        targets, draws = load_targets(self.study), self.predictive.draws()
        if targets is None or not draws:
            self.store.delete(PREDICTIVE_TABLE)  # an earlier run's bands: not this posterior's
            return None
        assert self.store.local is not None
        engine = engine_study(self.study, self.store)
        simulations = OutputStore(self.store.local / SIMULATIONS_DIR)
        stored = read_parts(simulations, model_fingerprint(engine))
        outputs = stored.outputs((pid, r) for pid, _, replicates in draws for r in replicates)
        table = predictive_table(targets, draws, outputs)
        write_table(self.store, PREDICTIVE_TABLE, table)
        wanted = sum(len(replicates) for _, _, replicates in draws)
        return {"replicates": self.settings.predictive_replicates, "draws": len(outputs),
                "missing": wanted - len(outputs), "outputs": coverage(table)}  # fmt: skip

    def _report(self) -> str | None:
        """Write the posterior's report; a failure is logged and loses nothing."""
        try:
            # Imported here: matplotlib is needed only now.
            from simstudy.report.posterior import build_posterior_report

            return build_posterior_report(self.store)
        except Exception as exc:
            self.logger.exception(
                "report not built (%s: %s); posterior.parquet is written: rebuild it with "
                "`simstudy report %s`", type(exc).__name__, exc, self.store,
            )  # fmt: skip
            return None

    def _percent(self) -> float:
        return 100.0 * min(len(self.driver.generations) / self.settings.generations, 1.0)

    def _final_message(self, summary: dict[str, Any]) -> str:
        generations = summary["generations"]
        lead = (
            "; ".join(interval_text(name, s) for name, s in summary["parameters"].items())
            if summary["parameters"] else "no generation closed: there is no posterior sample"
        )  # fmt: skip
        return (
            f"posterior by ABC-SMC: {len(generations)} generation(s), {summary['simulations']} "
            f"simulations, {summary['failures']} rejected without a distance (stopped: "
            f"{summary['stop_reason'] or 'not yet'}); {lead}"
        )

    def _write_document(
        self, status: str, started: str, summary: dict[str, Any] | None = None
    ) -> None:
        write_json(self.store, CALIBRATION_FILE, {
            "name": self.study.name, "calibration_id": self.identity, "status": status,
            "method": "abc-smc", "study": self.study.model_dump(mode="json"),
            "started_at": started, **({"finished_at": now().isoformat(), **summary} if summary
                                      else {}),
        })  # fmt: skip


class _Watched:
    """The driver, with each closed generation published as it closes."""

    def __init__(self, posterior: Posterior):
        self._posterior = posterior
        self._driver = posterior.predictive

    def start(self, engine: Engine) -> None:
        """Start the driver (a resumed run goes on from its journal)."""
        self._driver.start(engine)
        self._posterior.on_generation()

    def on_outcomes(self, engine: Engine, outcomes: list[SetOutcome]) -> None:
        """Give the driver the outcomes, then publish a generation they closed."""
        self._driver.on_outcomes(engine, outcomes)
        self._posterior.on_generation()

    def finished(self) -> bool:
        """Return whether the driver stopped and its predictive draws came."""
        return self._driver.finished()
