"""Result files: atomic writes and the output-folder guard."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from simstudy.design.plan import Batch
from simstudy.errors import OutputDirError
from simstudy.output.location import OutputStore, atomic_file
from simstudy.output.parts import PartWriter
from simstudy.output.results import (
    check_output_dir,
    prepare_output_dir,
    replicates_table,
    series_aggregates_table,
    timeseries_table,
    write_json,
    write_results,
)
from simstudy.run.batch import BatchResult
from simstudy.run.records import ReplicateRecord
from simstudy.stats.aggregate import ParameterSetAggregate, SeriesStatistics


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


def test_series_aggregates_have_a_row_per_set_output_and_point_with_the_parameters() -> None:
    def aggregate(index: int, params: dict[str, Any], points: int) -> ParameterSetAggregate:
        columns = {"n_ok": np.full(points, 3), "mean": np.arange(points) + 0.5 * index,
                   "q0.5": np.arange(points) * 2.0}  # fmt: skip
        return ParameterSetAggregate(
            param_id=f"p{index}", index=index, params=params, status="ok",
            counts={"ok": 3, "failed": index}, series={"s": SeriesStatistics(columns)},
        )  # fmt: skip

    # Set 1's `a` is an int and set 0's a float: one float column, as from rows.
    table = series_aggregates_table(
        [aggregate(0, {"a": 0.5, "name": "x"}, 3), aggregate(1, {"a": 2, "name": "y"}, 2)]
    )
    assert table is not None
    assert table.column_names == [
        "a", "name", "param_id", "output", "n_failed", "t", "n_ok", "mean", "q0.5",
    ]  # fmt: skip
    assert table.to_pylist()[3] == {
        "a": 2.0,
        "name": "y",
        "param_id": "p1",
        "output": "s",
        "n_failed": 1,
        "t": 0,
        "n_ok": 3,
        "mean": 0.5,
        "q0.5": 0.0,
    }
    assert table.column("t").to_pylist() == [0, 1, 2, 0, 1]
    assert table.column("param_id").to_pylist() == ["p0"] * 3 + ["p1"] * 2
    assert table.schema.field("n_ok").type == pa.int64()
    assert series_aggregates_table([aggregate(0, {}, 0).model_copy(update={"series": {}})]) is None


def test_a_million_point_series_aggregate_is_a_few_arrays() -> None:
    points = 1_000_000
    columns = {name: np.ones(points) for name in ("mean", "std", "min", "max", "q0.5")}
    series = SeriesStatistics({"n_ok": np.full(points, 4), **columns})
    aggregate = ParameterSetAggregate(
        param_id="p", index=0, params={"a": 1.0}, status="ok", counts={"ok": 4},
        series={"s": series},
    )  # fmt: skip
    assert len(pickle.dumps(aggregate)) < 50 * points  # 6 float columns: 48 bytes a point
    table = series_aggregates_table([aggregate])
    assert table is not None and table.num_rows == points


def record(param_id: str, replicate: int, status: str = "ok", **outputs: Any) -> ReplicateRecord:
    """Return a record of a replicate with the given outputs."""
    return ReplicateRecord(param_id=param_id, replicate=replicate, seed=replicate, status=status,
                           attempts=1, duration_s=0.1, worker="w", outputs=outputs)  # fmt: skip


def test_result_files_are_assembled_part_by_part_as_from_all_records(tmp_path: Path) -> None:
    store = OutputStore(tmp_path)
    first = [record("a", r, x=float(r), s=[1.0, float(r)]) for r in range(3)]
    second = [record("b", 0, x=5.0, s=[2.0]), record("b", 1, "failed")]
    refused = [record("c", 0, x=1.0, extra=2.0, s=[3.0])]  # a set whose outputs were refused
    writer = PartWriter(store, "fingerprint")
    # Written out of order (a rerun finishing late), assembled in plan order.
    for index, records in [(1, second + refused), (0, first)]:
        batch = Batch(param_id=records[0].param_id, params={}, start=0, stop=len(records))
        writer.write([(index, batch, BatchResult(param_id=batch.param_id, start=0,
                      stop=len(records), records=records, kinds={}, partials={}))])  # fmt: skip
    reason = "outputs {'extra': 'scalar'} differ"
    aggregates = [
        ParameterSetAggregate(param_id="c", index=2, params={}, status="failed", counts={},
                              refused_outputs=reason)
    ]  # fmt: skip
    write_results(store, writer.in_plan_order(), aggregates)
    replicates = pq.read_table(tmp_path / "replicates.parquet")
    expected = replicates_table([*first, *second, record("c", 0, "failed")])
    assert replicates.column_names == expected.column_names  # no column of refused outputs
    assert replicates.column("x").to_pylist() == [0.0, 1.0, 2.0, 5.0, None, None]
    assert replicates.column("status").to_pylist()[-1] == "failed"
    assert replicates.column("error").to_pylist()[-1] == reason
    series = pq.read_table(tmp_path / "timeseries.parquet")
    assert series.equals(timeseries_table([*first, *second]))  # same rows, same order
