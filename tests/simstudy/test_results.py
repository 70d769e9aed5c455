"""Result files: atomic writes and the output-folder guard."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from simstudy.errors import OutputDirError
from simstudy.location import OutputStore, atomic_file
from simstudy.records import ReplicateRecord
from simstudy.results import (
    check_output_dir,
    prepare_output_dir,
    replicates_table,
    timeseries_table,
    write_json,
)


def test_atomic_file_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_file(target) as handle:
        handle.write(b"half")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


@pytest.mark.parametrize("location", ["local", "memory://guard-test/out"])
def test_output_dir_guard(tmp_path: Path, location: str) -> None:
    out = OutputStore(tmp_path / "out" if location == "local" else location)
    prepare_output_dir(out, "study-a", overwrite=False)
    write_json(out, "study.json", {"name": "a", "study_id": "study-a"})
    check_output_dir(out, "study-a", overwrite=False)  # same study: fine
    with pytest.raises(OutputDirError, match="holds results of another study"):
        check_output_dir(out, "study-b", overwrite=False)
    check_output_dir(out, "study-b", overwrite=True)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(OutputDirError, match="holds no simstudy results"):
        check_output_dir(OutputStore(tmp_path / "other"), "study-a", overwrite=False)


def test_tables_have_one_row_per_replicate_and_long_series() -> None:
    records = [
        ReplicateRecord(param_id="p", replicate=r, seed=10 + r, status="ok", attempts=1,
                        duration_s=0.5, worker="w", outputs={"x": float(r), "s": [1.0, 2.0]})
        for r in range(3)
    ] + [ReplicateRecord(param_id="p", replicate=3, seed=13, status="failed", attempts=2,
                         duration_s=1.0, error="boom", worker="w")]  # fmt: skip
    table = replicates_table(records)
    assert table.num_rows == 4
    assert table.column("x").to_pylist() == [0.0, 1.0, 2.0, None]
    assert table.schema.field("seed").type == pa.int64()
    series = timeseries_table(records)
    assert series is not None and series.num_rows == 6
    assert series.column_names == ["param_id", "replicate", "output", "t", "value"]
