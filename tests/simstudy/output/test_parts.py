"""Part files: what a resumed study may reuse, and what it must run again."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from simstudy.design.expand import expand_parameters
from simstudy.design.plan import Batch, plan_batches
from simstudy.output.fingerprint import model_fingerprint
from simstudy.output.location import OutputStore
from simstudy.output.parts import PART_SCHEMA, PARTS_DIR, PartWriter, read_parts, stored_replicates
from simstudy.output.results import read_table
from simstudy.run.batch import as_columns, batch_records, batch_table, run_batch
from simstudy.run.columns import concat_record_tables, records_table
from simstudy.spec.study import Study


@pytest.fixture
def study(make_study: Callable[..., Study]) -> Study:
    with pytest.warns(UserWarning):
        return make_study(replicates=4, execution={"runner": "thread", "batch_size": 2})


def store_first_batch(study: Study, folder: Path) -> tuple[Batch, str]:
    """Run the study's first batch and write its part file; return it and the part's name."""
    batch = plan_batches(study, expand_parameters(study))[0]
    result = run_batch(study, batch, "w", folder)
    writer = PartWriter(OutputStore(folder), model_fingerprint(study))
    writer.write([(0, batch, result)])
    # Every test below asserts what is NOT reused: without a part holding the batch's
    # replicates, they would pass on an empty folder.
    (name,) = writer.in_plan_order()
    stored = read_table(OutputStore(folder), name, schema=PART_SCHEMA)
    assert stored.column("replicate").to_pylist() == list(range(batch.start, batch.stop))
    return batch, name


def test_finished_batches_are_reused_with_identical_results(study: Study, tmp_path: Path) -> None:
    batches = plan_batches(study, expand_parameters(study))
    fingerprint = model_fingerprint(study)
    results = [run_batch(study, b, "w", tmp_path) for b in batches[:3]]
    writer = PartWriter(OutputStore(tmp_path), fingerprint)
    writer.write([(i, b, r) for i, (b, r) in enumerate(zip(batches[:2], results[:2], strict=True))])
    writer.write([(2, batches[2], results[2])])  # two parts, one of two batches
    assert stored_replicates(OutputStore(tmp_path)) == sum(b.size for b in batches[:3])
    stored = read_parts(OutputStore(tmp_path), fingerprint)
    assert len(stored.index) == sum(b.size for b in batches[:3])
    reused = [stored.reusable_batch(b) for b in batches]
    assert reused[3] is None
    for original, again in zip(results, reused[:3], strict=True):
        assert again is not None
        assert again.records == original.records
        assert (again.partials["x"].values == original.partials["x"].values).all()


def test_series_outputs_round_trip(study: Study, tmp_path: Path) -> None:
    batch = plan_batches(study, expand_parameters(study))[0]
    result = run_batch(study, batch, "w", tmp_path)
    assert isinstance(result.records[0].outputs["series"], list)
    PartWriter(OutputStore(tmp_path), model_fingerprint(study)).write([(0, batch, result)])
    again = read_parts(OutputStore(tmp_path), model_fingerprint(study)).reusable_batch(batch)
    assert again is not None and again.records == result.records


def test_a_changed_model_reuses_nothing(study: Study, tmp_path: Path) -> None:
    batch, _ = store_first_batch(study, tmp_path)
    assert read_parts(OutputStore(tmp_path), model_fingerprint(study)).reusable_batch(batch)
    changed = study.model_copy(update={"model_version": "2"})
    assert model_fingerprint(changed) != model_fingerprint(study)
    assert (
        read_parts(OutputStore(tmp_path), model_fingerprint(changed)).reusable_batch(batch) is None
    )


def test_failed_replicates_are_not_reused(make_study: Callable[..., Study], tmp_path: Path) -> None:
    with pytest.warns(UserWarning):
        study = make_study(
            parameters={"list": [{"behavior": "raise"}]}, execution={"runner": "thread"}
        )
    _, name = store_first_batch(study, tmp_path)
    stored = read_table(OutputStore(tmp_path), name, schema=PART_SCHEMA)
    assert set(stored.column("status").to_pylist()) == {"failed"}
    assert read_parts(OutputStore(tmp_path), model_fingerprint(study)).index == {}


@pytest.mark.parametrize("damage", ["truncate", "old format"])
def test_unreadable_part_is_detected_and_removed(study: Study, tmp_path: Path, damage: str) -> None:
    batch, name = store_first_batch(study, tmp_path)
    path = tmp_path / name
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:100])
    else:  # parts of earlier versions held the outputs as JSON text
        table = read_table(OutputStore(tmp_path), name, schema=PART_SCHEMA)
        pq.write_table(table.append_column("outputs", pa.array(["{}"] * table.num_rows)), path)
    stored = read_parts(OutputStore(tmp_path), model_fingerprint(study))
    assert stored.corrupt_parts == [path.name]
    assert stored.reusable_batch(batch) is None
    assert list((tmp_path / PARTS_DIR).iterdir()) == []


def test_parts_of_earlier_runs_are_removed_at_the_end(study: Study, tmp_path: Path) -> None:
    _, earlier = store_first_batch(study, tmp_path)
    batch = plan_batches(study, expand_parameters(study))[1]
    writer = PartWriter(OutputStore(tmp_path), model_fingerprint(study))
    writer.write([(1, batch, run_batch(study, batch, "w", tmp_path))])
    writer.remove_others()
    assert [p.name for p in (tmp_path / PARTS_DIR).iterdir()] == [
        writer.in_plan_order()[0].rsplit("/", 1)[-1]
    ]
    assert earlier not in writer.in_plan_order()


def test_command_model_fingerprint_covers_the_program(
    make_study: Callable[..., Study], tmp_path: Path
) -> None:
    program = tmp_path / "model.py"
    program.write_text("print('{}')\n")
    study = make_study(model={"command": ["python3", "model.py"], "cwd": str(tmp_path)})
    before = model_fingerprint(study)
    program.write_text("print('{\"x\": 1}')\n")
    assert model_fingerprint(study) != before


def test_a_part_a_worker_wrote_is_kept_whole_or_read_back(study: Study, tmp_path: Path) -> None:
    batches = plan_batches(study, expand_parameters(study))[:2]
    results = [as_columns(run_batch(study, b, "w", tmp_path)) for b in batches]
    writer = PartWriter(OutputStore(tmp_path), model_fingerprint(study))
    name = writer.target(0).write(results, execution="e" * 32)
    sent = [r.model_copy(update={"outputs": None, "part": name}) for r in results]
    # Only statistics and record fields travel: the outputs are in the part.
    assert all(r.outputs is None and all(not rec.outputs for rec in r.records) for r in sent)
    # Read back, each batch has its own outputs again, as if it had never left.
    for original, again in zip(results, writer.read_back(sent), strict=True):
        assert again.part is None
        assert batch_table(again).equals(batch_table(original))
        assert [r.outputs["x"] for r in batch_records(again)] == [
            r.outputs["x"] for r in batch_records(original)
        ]
    writer.write([(0, batches[0], sent[0]), (1, batches[1], sent[1])])
    assert writer.in_plan_order() == [name]  # remembered once, not written again
    stored = read_parts(OutputStore(tmp_path), model_fingerprint(study))
    assert sorted(stored.index) == sorted(
        (b.param_id, r) for b in batches for r in range(b.start, b.stop)
    )


def test_parts_of_batches_with_other_outputs_have_every_column(
    study: Study, tmp_path: Path
) -> None:
    batch = plan_batches(study, expand_parameters(study))[0]
    result = run_batch(study, batch, "w", tmp_path)
    scalar_only = [r.model_copy(update={"outputs": {"x": 1.0, "z": 2.0}}) for r in result.records]
    failed = [r.model_copy(update={"status": "failed", "outputs": {}}) for r in result.records]
    tables = [batch_table(as_columns(result))]
    tables += [records_table(scalar_only), records_table(failed)]
    table = concat_record_tables(tables)
    assert table.column_names[-4:] == ["output:series", "output:x", "output:y", "output:z"]
    assert table.column("output:x").to_pylist()[-2 * batch.size :: batch.size] == [1.0, None]
    assert table.column("output:series").null_count == 2 * batch.size
