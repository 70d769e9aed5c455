"""A calibration's output folder: its identity, its trials, and what may be resumed.

```
results/seir-calibrate/
  calibration.json   the study, its identity, status and final summary
  optuna.journal     Optuna's journal: every trial asked and told (one writer: the flow)
  trials.jsonl       the search's trial log: every change of a trial, before Optuna hears it
  trials.parquet     every trial: parameters, loss, loss_se, replicates, round, state
  ranking.parquet    the complete trials, best first
  simulations/       _parts/ caches every finished replicate; the best trials' study
```
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from simstudy.calibrate.spec import RESUMABLE_SETTINGS, PosteriorSettings
from simstudy.calibrate.trials import TrialRecord
from simstudy.display import format_number, format_parameters
from simstudy.errors import JournalError, OutputDirError
from simstudy.output.location import OutputStore
from simstudy.output.reading import Kind, read_document, read_result_table
from simstudy.output.results import LOCK_FILE, LOGS_DIR
from simstudy.spec.study import Study

CALIBRATION_FILE = "calibration.json"
JOURNAL_FILE = "optuna.journal"
TRIALS_FILE = "trials.parquet"
TRIAL_LOG_FILE = "trials.jsonl"
SIMULATIONS_DIR = "simulations"


def calibration_id(study: Study) -> str:
    """Return the identity of a calibration: its study (execution aside) and its targets."""
    document = study.model_dump(mode="json", exclude={"execution", "output", "base_dir"})
    if isinstance(study.calibrate, PosteriorSettings):
        for name in RESUMABLE_SETTINGS:  # when to stop: a resumed posterior may change them
            document["calibrate"].pop(name, None)
    if study.targets is not None:
        # The data's bytes, not its path: other observations make another search.
        document["observed"] = hashlib.blake2b(
            study.resolve(study.targets.data).read_bytes()
        ).hexdigest()
    text = json.dumps(document, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=32).hexdigest()


def check_calibration_dir(store: OutputStore, identity: str, overwrite: bool) -> None:
    """Raise `OutputDirError` unless the folder is new, or holds this very calibration."""
    if overwrite:
        return
    if not store.exists(CALIBRATION_FILE):
        if store.entries() - {LOCK_FILE, LOGS_DIR}:
            raise OutputDirError(
                f"output {store} is not empty and holds no calibration; choose another "
                "output or pass --overwrite"
            )
        return
    with store.fs.open(store.path(CALIBRATION_FILE), "rb") as handle:
        found = json.load(handle)
    if found.get("calibration_id") != identity:
        raise OutputDirError(
            f"output {store} holds another calibration ({found.get('name')!r}: its study, "
            "bounds, settings or targets differ); choose another output, or pass "
            "--overwrite to start the search over (finished replicates are still reused)"
        )


def check_search_state(store: OutputStore) -> None:
    """Raise `JournalError` when Optuna's journal and the trial log are not both there or gone.

    Both are the search's state: a search resumed from one without the other would start
    again (renumbered trials, losses at other replicate counts) or lose its told trials,
    and mix two searches silently.
    """
    journal, log = journal_trials(store), _size(store, TRIAL_LOG_FILE)
    if bool(journal) == bool(log):
        return
    present, missing = (JOURNAL_FILE, TRIAL_LOG_FILE) if journal else (TRIAL_LOG_FILE, JOURNAL_FILE)
    raise JournalError(
        f"{store.path(present)} holds a search but {missing} beside it is missing or empty "
        "(deleted, or written by an earlier simstudy): the search cannot resume from half its "
        f"state. Put {missing} back, or run with --overwrite to start the search over "
        "(finished replicates are reused)"
    )


CREATE_TRIAL = re.compile(rb'"op_code":\s*4\b')
"""How Optuna's journal writes a new trial (JournalOperation.CREATE_TRIAL is 4)."""


def journal_trials(store: OutputStore) -> int:
    """Return the trials Optuna's journal created (0: none yet, or no journal).

    A run that failed before its first trial (a refused preflight, Ctrl-C) leaves a journal
    holding only its study: that is no search to resume, and must not lock the folder.
    """
    if not store.exists(JOURNAL_FILE):
        return 0
    with store.fs.open(store.path(JOURNAL_FILE), "rb") as handle:
        return sum(CREATE_TRIAL.search(line) is not None for line in handle)


def _size(store: OutputStore, name: str) -> int:
    if not store.exists(name):
        return 0
    return int(store.fs.size(store.path(name)))


def trials_ranking(records: list[TrialRecord], names: list[str]) -> pa.Table:
    """Return the complete trials best first, laid out as a study's ranking.parquet."""
    # Scores, not raw losses: trials of different replicate counts compare like with like.
    ranked = sorted(
        (r for r in records if r.state == "complete" and r.loss is not None),
        key=lambda r: (r.score if r.score is not None else r.loss, r.trial),
    )
    columns: dict[str, pa.Array] = {
        "rank": pa.array(range(1, len(ranked) + 1), pa.int64()),
        "param_id": pa.array([r.param_id for r in ranked], pa.string()),
        "index": pa.array([r.trial for r in ranked], pa.int64()),  # the trial number
        "status": pa.array(["ok"] * len(ranked), pa.string()),
        "loss": pa.array([r.loss for r in ranked], pa.float64()),
        "loss_se": pa.array([r.loss_se for r in ranked], pa.float64()),
    }
    for name in names:
        columns[name] = pa.array([r.params.get(name) for r in ranked])
    return pa.table(columns)


class BestTrial(BaseModel):
    """The best trial as calibration.json holds it."""

    model_config = ConfigDict(extra="allow")

    trial: int = Field(description="Trial number.")
    replicates: int = Field(description="Replicates it ran.")
    loss: float | None = Field(description="Its loss.")
    loss_se: float | None = Field(default=None, description="The loss's standard error.")
    params: dict[str, bool | int | float | str | None] = Field(description="Its parameters.")


class CalibrationDocument(BaseModel):
    """What the readers of calibration.json use; the rest of the document is free."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(description="The study's name.")
    status: str | None = Field(default=None, description="running, completed or stalled.")
    study: dict[str, Any] = Field(default_factory=dict, description="The study as run.")
    trials: int | None = Field(default=None, description="Trials told.")
    failed: int | None = Field(default=None, description="Trials failed.")
    simulations: int | None = Field(default=None, description="Simulations run.")
    saved: int | None = Field(default=None, description="Simulations saved by adaptivity.")
    best: BestTrial | None = Field(default=None, description="The best trial.")
    importances: dict[str, float] = Field(default_factory=dict, description="Optuna's.")


TRIAL_COLUMNS: dict[str, Kind] = {
    "trial": "integer", "ask": "integer", "state": "text", "loss": "number",
    "loss_se": "number", "replicates": "integer",
}  # fmt: skip
"""The columns of trials.parquet its readers use."""


def read_calibration_document(store: OutputStore) -> dict[str, Any]:
    """Return calibration.json, checked to hold what its readers use; else raise naming it."""
    return read_document(store, CALIBRATION_FILE, CalibrationDocument, "calibration")


def read_trials(store: OutputStore) -> list[dict[str, Any]]:
    """Return trials.parquet's rows in trial order, checked as `read_result_table` does."""
    table = read_result_table(store, TRIALS_FILE, TRIAL_COLUMNS)
    return sorted(table.to_pylist(), key=lambda t: t["trial"])


def calibration_summary(store: OutputStore) -> str:
    """Return a finished calibration's headline from calibration.json, for the terminal."""
    document = read_calibration_document(store)
    lines = [f"calibration {document.get('name')}: {document.get('status')}"]
    if "trials" in document:
        lines.append(
            f"{document['trials']} trials ({document['failed']} failed), "
            f"{document['simulations']} simulations ({document['saved']} fewer than the "
            "maximum replicates for every trial)"
        )
    best = document.get("best")
    if best:
        ask = best.get("ask", best.get("round"))  # 'round' in folders of older versions
        lines.append(
            f"best trial {best['trial']} (ask {ask}, {best['replicates']} "
            f"replicates): loss {format_number(best['loss'])} +- "
            f"{format_number(best['loss_se'])}, {format_parameters(best['params'])}"
        )
    importances = document.get("importances") or {}
    if importances:
        shown = ", ".join(f"{k} {v:.2f}" for k, v in importances.items())
        lines.append(f"parameter importances (Optuna): {shown}")
    lines.append(f"output: {store}")
    return "\n".join(lines)
