"""Sequential calibration: rounds of trials asked from Optuna, run as studies, told their loss.

```python
>>> from flows.study import simulation_study
>>> state = simulation_study(study_path="examples/seir-calibrate.yaml", return_state=True)
```

A study with `calibrate` runs here instead of as one study. Each round asks Optuna for
`parallel` trials and runs them with `replicates.min` replicates through the same path as
a study (batches, runners, timeouts, retries, aggregation with the loss), as a subflow run
named `round-003`. Trials whose loss is still competitive with the best trial's then get
twice the replicates (subflow runs `round-003-more-1`, ...), up to `replicates.max`, and
the round's trials are told their losses. Every round shares one cache of finished
replicates (`simulations/_parts`), so a trial given more replicates runs only the new
ones, and a rerun after a crash reuses every finished replicate and continues from the
last told trial (Optuna's journal file, `optuna.journal`).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, cast
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.states import Completed, State

from flows.artifacts import artifact_key
from flows.cluster import started_task_runner
from flows.orchestrator import notify
from flows.study import RunLogger, RunOptions, run_study
from simstudy.calibrate.adaptive import Allocation, TrialScore, allocate, simulations_saved
from simstudy.calibrate.folder import (
    CALIBRATION_FILE,
    JOURNAL_FILE,
    SIMULATIONS_DIR,
    TRIALS_FILE,
    calibration_id,
    check_calibration_dir,
    read_records,
    trials_ranking,
)
from simstudy.calibrate.optimizer import Optimizer, TrialProposal
from simstudy.calibrate.space import search_space, trial_params
from simstudy.calibrate.trials import TrialRecord, trials_table
from simstudy.display import format_number, format_parameters
from simstudy.errors import StudyError
from simstudy.identity import param_id
from simstudy.location import OutputStore
from simstudy.locking import output_lock
from simstudy.readiness import check_ready
from simstudy.results import (
    RANKING_FILE,
    now,
    read_table,
    write_json,
    write_table,
)
from simstudy.spec import Study

BEST_TRIALS = 10
"""Trials in the table artifact of the best so far."""
REPORT_TRIALS = 10
"""Best trials whose fit to the targets the final report shows (simulations/report.html)."""


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
            for name in (JOURNAL_FILE, TRIALS_FILE, RANKING_FILE, CALIBRATION_FILE):
                store.delete(name)
        if fresh:
            store.delete(SIMULATIONS_DIR)
        if not store.exists(CALIBRATION_FILE):  # claimed before the journal is created
            write_json(store, CALIBRATION_FILE, {"name": study.name, "calibration_id": identity,
                                                 "status": "starting"})  # fmt: skip
        return Calibration(study, store, identity, logger).run()


class Calibration:
    """The rounds of one calibration: ask, simulate, give more replicates, tell."""

    def __init__(self, study: Study, store: OutputStore, identity: str, logger: RunLogger):
        assert study.calibrate is not None and study.parameters.sample is not None
        self.study = study
        self.settings = study.calibrate
        self.store = store
        self.identity = identity
        self.logger = logger
        self.names = study.parameters.sample.names()
        self.records: dict[int, TrialRecord] = read_records(store)
        self.stuck: set[int] = set()
        """Trials whose extension failed: they keep their loss and replicates."""
        self.optimizer = Optimizer.open(
            store.local / JOURNAL_FILE,  # type: ignore[operator]  # local: checked above
            study.name,
            self.settings,
            search_space(study.parameters.sample),
        )

    def run(self) -> State[Any]:
        """Run rounds until every trial is told; return the calibration's final state."""
        started = now().isoformat()
        self._write_document("running", started)
        progress = cast(UUID, create_progress_artifact(
            progress=self._percent(), key=artifact_key(self.study, "calibration-progress"),
            description=f"Trials told of {self.settings.trials}",
        ))  # fmt: skip
        with started_task_runner(self.study.execution.dask) as runner:
            # One cluster for every round: each round's studies reach it by address.
            scheduler = cast(Any, runner.client.scheduler)
            address = str(self.study.execution.dask.address or scheduler.address)
            while True:
                proposals = self.optimizer.pending()  # a round a crash interrupted
                if not proposals:
                    remaining = self.settings.trials - self.optimizer.told()
                    if remaining <= 0:
                        break
                    proposals = self.optimizer.ask(min(self.settings.parallel, remaining))
                self._round(proposals, address)
                notify(publish_progress, progress, self._percent())
            self._report_best(address)
        self._write_outputs()
        summary = self._summary()
        self._write_document("completed", started, summary)
        message = self._final_message(summary)
        report = self._report()
        if report:
            message += f"; report: {report}"
        self.logger.info(message)
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

    def _round(self, proposals: list[TrialProposal], address: str) -> None:
        number = max((r.round for r in self.records.values()), default=0) + 1
        label = f"round-{number:03d}"
        for proposal in proposals:
            params = trial_params(proposal.params)
            full = {**self.study.fixed, **params}
            self.records[proposal.number] = TrialRecord(
                trial=proposal.number, round=number, param_id=param_id(full),
                state="pending", replicates=self.settings.min_replicates,
                allocation="new trial", params=params,
            )  # fmt: skip
        new = {p.number: self.settings.min_replicates for p in proposals}
        self._simulate(new, label, address)
        stage = 0
        while True:
            allocations = allocate(self._scores(), self.settings.min_replicates,
                                   self.settings.max_replicates)  # fmt: skip
            more = {
                n: a
                for n, a in allocations.items()
                if a.replicates > self.records[n].replicates and n not in self.stuck
            }
            self._note(allocations)
            if not more:
                break
            stage += 1
            self._simulate({n: a.replicates for n, a in more.items()},
                           f"{label}-more-{stage}", address)  # fmt: skip
        # Recorded before told: a crash between the two reruns the round's untold trials
        # from the cache, and no told trial is ever missing from trials.parquet.
        self._write_outputs()
        for proposal in proposals:
            record = self.records[proposal.number]
            failed = None if record.state == "complete" else (record.allocation or "failed")
            self.optimizer.tell(proposal.number, record.loss, failed)
        self._log_round(number, len(proposals), stage)

    def _report_best(self, address: str) -> None:
        """Run the best trials again from the cache (nothing new runs) to report their fit."""
        best = self._best()[:REPORT_TRIALS]
        if not best:
            return
        # Every one of them has at least this many replicates cached.
        count = min(r.replicates for r in best)
        study = self._round_study({r.param_id: r.params for r in best}, count, address)
        calibration_round.with_options(flow_run_name="best-trials")(studies=[study], report=True)

    def _simulate(self, replicates: dict[int, int], label: str, address: str) -> None:
        """Run trials with the given replicates, one study per replicate count; score them."""
        by_count: dict[int, dict[str, dict[str, Any]]] = defaultdict(dict)
        for number, count in replicates.items():
            record = self.records[number]
            by_count[count][record.param_id] = record.params  # a repeated trial runs once
        scores = calibration_round.with_options(flow_run_name=label)(
            studies=[self._round_study(sets, count, address)
                     for count, sets in sorted(by_count.items())],
        )  # fmt: skip
        for number, count in replicates.items():
            record = self.records[number]
            score = scores.get(f"{record.param_id}/{count}")
            update: dict[str, Any] = {"replicates": count}
            if score is None or score["loss"] is None:
                reason = (score or {}).get("reason") or "no loss: the round did not aggregate it"
                if record.state == "complete":
                    # More replicates failed, not the trial: it keeps the loss it had, and is
                    # not extended again (its failed replicates would fail again).
                    self.stuck.add(number)
                    update = {"allocation": f"kept at {record.replicates} replicates: "
                              f"{count} failed ({reason})"}  # fmt: skip
                else:
                    update.update(state="failed", loss=None, loss_se=None, allocation=reason)
            else:
                update.update(state="complete", loss=score["loss"], loss_se=score["loss_se"])
            self.records[number] = TrialRecord.model_validate({**record.model_dump(), **update})

    def _round_study(self, sets: dict[str, dict[str, Any]], count: int, address: str) -> Study:
        """Return the study of some trials at one replicate count, on the shared cluster."""
        document = self.study.model_dump(mode="json", exclude={"calibrate"})
        document["parameters"] = {"list": list(sets.values())}
        document["replicates"] = count
        document["output"] = str(self.store.local / SIMULATIONS_DIR)  # type: ignore[operator]
        # Batches of replicates.min keep earlier replicates reusable when a trial doubles.
        document["execution"]["batch_size"] = self.settings.min_replicates
        document["execution"]["dask"] = {"address": address}
        return Study.model_validate(document)

    def _scores(self) -> list[TrialScore]:
        return [
            TrialScore(number=r.trial, loss=r.loss if r.state == "complete" else None,
                       loss_se=r.loss_se, replicates=r.replicates)
            for r in self.records.values()
        ]  # fmt: skip

    def _note(self, allocations: dict[int, Allocation]) -> None:
        for number, allocation in allocations.items():
            record = self.records[number]
            if record.state == "complete" and number not in self.stuck:
                self.records[number] = record.model_copy(update={"allocation": allocation.reason})

    def _best(self) -> list[TrialRecord]:
        complete = [
            r for r in self.records.values() if r.state == "complete" and r.loss is not None
        ]
        return sorted(complete, key=lambda r: (r.loss, r.trial))

    def _log_round(self, number: int, trials: int, stages: int) -> None:
        best = self._best()
        lead = (
            f"best loss so far {format_number(best[0].loss)} +- {format_number(best[0].loss_se)}"
            f" (trial {best[0].trial}, {best[0].replicates} replicates: "
            f"{format_parameters(best[0].params)})"
            if best else "no trial has a loss yet"
        )  # fmt: skip
        self.logger.info(
            "round %03d: %d trials, %d rounds of more replicates; %s; %d/%d trials told",
            number, trials, stages, lead, self.optimizer.told(), self.settings.trials,
        )  # fmt: skip
        rows = [
            {"rank": str(i + 1), "trial": str(r.trial), "loss": format_number(r.loss),
             "loss_se": format_number(r.loss_se), "replicates": str(r.replicates),
             **{name: format_number(r.params.get(name)) for name in self.names}}
            for i, r in enumerate(best[:BEST_TRIALS])
        ]  # fmt: skip
        notify(publish_best_trials, self.study, rows, number)

    def _write_outputs(self) -> None:
        records = sorted(self.records.values(), key=lambda r: r.trial)
        write_table(self.store, TRIALS_FILE, trials_table(records, self.names))
        write_table(self.store, RANKING_FILE, trials_ranking(records, self.names))

    def _percent(self) -> float:
        return 100.0 * self.optimizer.told() / self.settings.trials

    def _summary(self) -> dict[str, Any]:
        best = self._best()
        complete = [r for r in self.records.values() if r.state == "complete"]
        return {
            "trials": len(self.records),
            "failed": sum(r.state == "failed" for r in self.records.values()),
            "simulations": sum(r.replicates for r in self.records.values()),
            "saved": simulations_saved(
                {r.trial: Allocation(r.replicates, r.allocation or "") for r in complete},
                self.settings.max_replicates,
            ),
            "best": best[0].model_dump(mode="json") if best else None,
            "importances": self.optimizer.importances(),
        }

    def _final_message(self, summary: dict[str, Any]) -> str:
        best = summary["best"]
        lead = (
            f"best trial {best['trial']}: loss {format_number(best['loss'])} +- "
            f"{format_number(best['loss_se'])} ({format_parameters(best['params'])})"
            if best else "no trial has a loss"
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


def publish_progress(artifact: UUID, percent: float) -> None:
    """Update the progress artifact of trials told."""
    update_progress_artifact(artifact, percent)


def publish_best_trials(study: Study, rows: list[dict[str, str]], round_number: int) -> None:
    """Create (or update) the table artifact of the best trials so far."""
    create_table_artifact(
        table=rows, key=artifact_key(study, "best-trials"),
        description=f"Best {len(rows)} trials after round {round_number}",
    )  # fmt: skip


# validate_parameters=False: the round's studies are built and validated by the calibration.
@flow(name="calibration-round", validate_parameters=False)
def calibration_round(studies: list[Study], report: bool = False) -> dict[str, dict[str, Any]]:
    """Run some trials' studies (one per replicate count); return each set's loss by id/count."""
    logger = get_run_logger()
    options = RunOptions(keep_other_parts=True, report=report)
    scores: dict[str, dict[str, Any]] = {}
    for study in studies:
        state = run_study(study, logger, overwrite=True, options=options)
        failed = getattr(state.data, "failed_sets", None) or {}
        store = OutputStore(study.output_dir)
        if not store.exists(RANKING_FILE):
            continue
        for row in read_table(store, RANKING_FILE).to_pylist():
            reasons = failed.get(row["param_id"])
            scores[f"{row['param_id']}/{study.replicates}"] = {
                "loss": row["loss"] if row["status"] == "ok" else None,
                "loss_se": row["loss_se"],
                "reason": "; ".join(reasons) if reasons else None,
            }
    return scores
