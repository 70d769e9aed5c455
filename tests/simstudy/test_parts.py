"""Part files: what a resumed study may reuse, and what it must run again."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from simstudy.batch import run_batch
from simstudy.design import expand_parameters
from simstudy.fingerprint import model_fingerprint
from simstudy.location import OutputStore
from simstudy.parts import PART_SCHEMA, PARTS_DIR, part_name, read_parts, write_part
from simstudy.plan import Batch, plan_batches
from simstudy.results import read_table
from simstudy.spec import Study


@pytest.fixture
def study(make_study: Callable[..., Study]) -> Study:
    with pytest.warns(UserWarning):
        return make_study(replicates=4, execution={"runner": "thread", "batch_size": 2})


def store_first_batch(study: Study, folder: Path) -> Batch:
    """Run the study's first batch and write its part file; return the batch."""
    batch = plan_batches(study, expand_parameters(study))[0]
    result = run_batch(study, batch, "w", folder)
    write_part(OutputStore(folder), batch, result, model_fingerprint(study))
    # Every test below asserts what is NOT reused: without a part holding the batch's
    # replicates, they would pass on an empty folder.
    stored = read_table(OutputStore(folder), part_name(batch), schema=PART_SCHEMA)
    assert stored.column("replicate").to_pylist() == list(range(batch.start, batch.stop))
    return batch


def test_finished_batches_are_reused_with_identical_results(study: Study, tmp_path: Path) -> None:
    batches = plan_batches(study, expand_parameters(study))
    fingerprint = model_fingerprint(study)
    results = [run_batch(study, b, "w", tmp_path) for b in batches[:3]]
    for batch, result in zip(batches, results, strict=False):
        write_part(OutputStore(tmp_path), batch, result, fingerprint)
    stored = read_parts(OutputStore(tmp_path))
    assert len(stored.records) == sum(b.stop - b.start for b in batches[:3])
    reused = [stored.reusable_batch(b, fingerprint) for b in batches]
    assert reused[3] is None
    for original, again in zip(results, reused[:3], strict=True):
        assert again is not None
        assert again.records == original.records
        assert (again.partials["x"].values == original.partials["x"].values).all()


def test_a_changed_model_reuses_nothing(study: Study, tmp_path: Path) -> None:
    batch = store_first_batch(study, tmp_path)
    stored = read_parts(OutputStore(tmp_path))
    assert stored.reusable_batch(batch, model_fingerprint(study)) is not None
    changed = study.model_copy(update={"model_version": "2"})
    assert model_fingerprint(changed) != model_fingerprint(study)
    assert (
        read_parts(OutputStore(tmp_path)).reusable_batch(batch, model_fingerprint(changed)) is None
    )


def test_failed_replicates_are_not_reused(make_study: Callable[..., Study], tmp_path: Path) -> None:
    with pytest.warns(UserWarning):
        study = make_study(
            parameters={"list": [{"behavior": "raise"}]}, execution={"runner": "thread"}
        )
    batch = store_first_batch(study, tmp_path)
    stored = read_table(OutputStore(tmp_path), part_name(batch), schema=PART_SCHEMA)
    assert set(stored.column("status").to_pylist()) == {"failed"}
    assert read_parts(OutputStore(tmp_path)).records == {}


def test_truncated_part_is_detected_and_removed(study: Study, tmp_path: Path) -> None:
    batch = store_first_batch(study, tmp_path)
    fingerprint = model_fingerprint(study)
    path = tmp_path / part_name(batch)
    path.write_bytes(path.read_bytes()[:100])
    stored = read_parts(OutputStore(tmp_path))
    assert stored.corrupt_parts == [path.name]
    assert stored.reusable_batch(batch, fingerprint) is None
    assert list((tmp_path / PARTS_DIR).iterdir()) == []


def test_command_model_fingerprint_covers_the_program(
    make_study: Callable[..., Study], tmp_path: Path
) -> None:
    program = tmp_path / "model.py"
    program.write_text("print('{}')\n")
    study = make_study(model={"command": ["python3", "model.py"], "cwd": str(tmp_path)})
    before = model_fingerprint(study)
    program.write_text("print('{\"x\": 1}')\n")
    assert model_fingerprint(study) != before
