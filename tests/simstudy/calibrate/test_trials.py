"""trials.parquet: fixed columns with fixed types, then the parameters."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from pydantic import ValidationError

from simstudy.calibrate.trials import TRIALS_SCHEMA, TrialLog, TrialRecord, trials_table


def record(trial: int, **fields: object) -> TrialRecord:
    values: dict[str, object] = {
        "trial": trial,
        "ask": 1,
        "param_id": f"id{trial}",
        "state": "complete",
        "loss": 10.0 + trial,
        "loss_se": 1.0,
        "replicates": 4,
        "allocation": "resolved",
        "params": {"beta": 0.1 * (trial + 1), "days": 10 + trial, "variant": "alpha"},
    }
    values.update(fields)
    return TrialRecord.model_validate(values)


def test_the_table_has_the_schema_then_one_column_per_parameter_by_trial() -> None:
    records = [record(1), record(0, state="failed", loss=None, loss_se=None), record(2)]
    table = trials_table(records, ["beta", "days", "variant"])
    assert table.schema.names == [*TRIALS_SCHEMA.names, "beta", "days", "variant"]
    for field in TRIALS_SCHEMA:
        assert table.schema.field(field.name).type == field.type
    assert table.schema.field("days").type == pa.int64()
    assert table.schema.field("variant").type == pa.string()
    assert table.column("trial").to_pylist() == [0, 1, 2]
    assert table.column("state").to_pylist() == ["failed", "complete", "complete"]
    assert table.column("loss").to_pylist() == [None, 11.0, 12.0]


def test_an_empty_calibration_has_the_fixed_columns() -> None:
    assert trials_table([], []).schema == TRIALS_SCHEMA


def test_an_unknown_state_is_refused() -> None:
    with pytest.raises(ValidationError, match="state"):
        record(0, state="running")


def test_the_trial_log_survives_torn_lines_on_every_resume(tmp_path: Path) -> None:
    log = TrialLog(tmp_path / "trials.jsonl")
    log.append([record(0), record(1)])
    for kill in range(3):  # killed mid-write, again and again: each resume reads it all
        with log.path.open("ab") as handle:
            handle.write(record(9).model_dump_json()[:25].encode())
        assert sorted(log.read()) == list(range(kill + 2))
        log.append([record(kill + 2)])
    assert sorted(log.read()) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="line 2: not a trial record"):
        log.path.write_bytes(log.path.read_bytes().replace(b"\n", b"\ngarbage\n", 1))
        log.read()


def test_a_trial_log_written_with_rounds_reads_them_as_asks(tmp_path: Path) -> None:
    log = TrialLog(tmp_path / "trials.jsonl")
    old_line = record(0, ask=3).model_dump_json().replace('"ask"', '"round"')
    log.path.write_text(old_line + "\n")
    assert log.read()[0].ask == 3
