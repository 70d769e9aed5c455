"""Expanding the design: sizes counted before anything is built, typed parameter files."""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from simstudy.design.expand import design_row_ids, expand_parameters, sample_seed
from simstudy.errors import SHOWN_PROBLEMS, StudyError
from simstudy.spec.loading import load_study, validate_study
from simstudy.spec.study import MAX_BATCHES, MAX_PARAMETER_SETS, MAX_SIMULATIONS, Study


def study_with(**fields: Any) -> Study:
    document: dict[str, Any] = {
        "name": "d",
        "model": "simstudy.models.seir:simulate",
        "parameters": {"grid": {"beta": [0.2, 0.3]}},
        "replicates": 2,
        "seed": 1,
    }
    document.update(fields)
    return validate_study(document)


def expand_quickly(study: Study) -> None:
    """Expand, expecting a StudyError within a second."""
    started = time.monotonic()
    try:
        expand_parameters(study)
    finally:
        assert time.monotonic() - started < 1.0


def csv_study(tmp_path: Path, text: str) -> Study:
    path = tmp_path / "params.csv"
    path.write_text(text)
    return study_with(parameters={"file": str(path)})


def test_a_grid_too_large_is_refused_before_it_is_built() -> None:
    grid = {f"p{i}": list(range(10)) for i in range(10)}
    with pytest.raises(StudyError, match="10,000,000,000 parameter sets, more than the maximum"):
        expand_quickly(study_with(parameters={"grid": grid}))


def test_one_anchor_reused_for_nine_parameters_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(
        "name: s\nmodel: m:f\nreplicates: 1\nseed: 1\nparameters:\n  grid:\n"
        "    a: &v [0,1,2,3,4,5,6,7,8,9]\n" + "".join(f"    {name}: *v\n" for name in "bcdefghi")
    )
    assert len(path.read_bytes()) < 250
    with pytest.raises(StudyError, match="1,000,000,000 parameter sets"):
        expand_quickly(load_study(path))


def test_replicates_have_an_upper_bound() -> None:
    with pytest.raises(StudyError, match="replicates: Input should be less than or equal to"):
        study_with(replicates=10_000_000, execution={"batch_size": 1})


def test_too_many_batches_are_refused_naming_batch_size() -> None:
    study = study_with(
        parameters={"list": [{"beta": 0.2}]}, replicates=1_000_000, execution={"batch_size": 1}
    )
    expected = (
        "execution.batch_size: 1 replicates per task run gives 1,000,000 task runs, "
        f"more than the maximum of {MAX_BATCHES:,}"
    )
    with pytest.raises(StudyError, match=expected):
        expand_quickly(study)


def test_too_many_simulations_are_refused_naming_replicates() -> None:
    study = study_with(
        parameters={"grid": {"beta": list(range(20))}}, replicates=MAX_SIMULATIONS // 10
    )
    with pytest.raises(StudyError, match=r"replicates: 20 parameter sets x 1,000,000 replicates"):
        expand_quickly(study)


def test_auto_batches_of_the_largest_design_fit() -> None:
    study = study_with(parameters={"grid": {"beta": list(range(MAX_PARAMETER_SETS))}})
    assert len(expand_parameters(study)) == MAX_PARAMETER_SETS


def test_integer_beyond_64_bits_in_a_grid_is_named() -> None:
    study = study_with(parameters={"grid": {"beta": [1, 10**20]}})
    with pytest.raises(StudyError, match="parameter 'beta' is 100000000000000000000, beyond a 64"):
        expand_parameters(study)


def test_many_problems_are_listed_up_to_a_bound() -> None:
    study = study_with(parameters={"list": [{"beta": float("nan")}] * 50})
    with pytest.raises(StudyError) as caught:
        expand_parameters(study)
    message = str(caught.value)
    assert message.count("\n  - ") == SHOWN_PROBLEMS + 1
    assert "... and 30 more problems" in message


def test_csv_columns_get_one_type_each(tmp_path: Path) -> None:
    study = csv_study(tmp_path, "n,rate,flag,label\n1,2.5,true,a b\n2,1e-3,False,c\n")
    assert [s.params for s in expand_parameters(study)] == [
        {"n": 1, "rate": 2.5, "flag": True, "label": "a b"},
        {"n": 2, "rate": 0.001, "flag": False, "label": "c"},
    ]


def test_csv_duplicated_column_is_named(tmp_path: Path) -> None:
    with pytest.raises(StudyError, match="column 'a' appears more than once"):
        expand_parameters(csv_study(tmp_path, "a,b,a\n1,2,3\n"))


def test_csv_mixed_column_is_named(tmp_path: Path) -> None:
    with pytest.raises(StudyError, match=r"column 'a' mixes numbers and text \(set 0: '1', set 1"):
        expand_parameters(csv_study(tmp_path, "a\n1\nx\n5\n"))


def test_csv_integer_beyond_64_bits_is_named(tmp_path: Path) -> None:
    with pytest.raises(StudyError, match="column 'a' holds 100000000000000000000000, an integer"):
        expand_parameters(csv_study(tmp_path, "a\n1\n100000000000000000000000\n"))


def test_csv_with_too_many_rows_is_refused_fast(tmp_path: Path) -> None:
    rows = "".join(f"{i}\n" for i in range(MAX_PARAMETER_SETS + 1))
    with pytest.raises(StudyError, match=f"more than {MAX_PARAMETER_SETS:,} rows"):
        expand_quickly(csv_study(tmp_path, "a\n" + rows))


def test_csv_empty_cell_is_named(tmp_path: Path) -> None:
    with pytest.raises(StudyError, match=r"set 1\): no value for \['beta'\]"):
        expand_parameters(csv_study(tmp_path, "beta,gamma\n0.1,0.2\n,0.3\n"))


def test_parquet_types_are_checked_by_column(tmp_path: Path) -> None:
    path = tmp_path / "params.parquet"
    pq.write_table(pa.table({"a": [1, 2], "when": pa.array([1, 2], pa.timestamp("s"))}), path)
    with pytest.raises(StudyError, match="column 'when' has type timestamp"):
        expand_parameters(study_with(parameters={"file": str(path)}))


def test_parquet_duplicated_column_is_named(tmp_path: Path) -> None:
    path = tmp_path / "params.parquet"
    pq.write_table(pa.Table.from_arrays([pa.array([1]), pa.array([2])], names=["a", "a"]), path)
    with pytest.raises(StudyError, match="column 'a' appears more than once"):
        expand_parameters(study_with(parameters={"file": str(path)}))


def test_parquet_unsigned_beyond_64_bits_is_named(tmp_path: Path) -> None:
    path = tmp_path / "params.parquet"
    pq.write_table(pa.table({"a": pa.array([1, 2**63], pa.uint64())}), path)
    with pytest.raises(StudyError, match="column 'a' holds an integer beyond 64 bits"):
        expand_parameters(study_with(parameters={"file": str(path)}))


def test_parquet_category_column_is_text(tmp_path: Path) -> None:
    path = tmp_path / "params.parquet"
    pq.write_table(pa.table({"a": pa.array(["x", "y"]).dictionary_encode()}), path)
    sets = expand_parameters(study_with(parameters={"file": str(path)}))
    assert [s.params for s in sets] == [{"a": "x"}, {"a": "y"}]


def test_parameter_file_that_is_not_regular_is_refused(tmp_path: Path) -> None:
    for path in (tmp_path, Path("/dev/zero")):
        with pytest.raises(StudyError, match="not a regular file"):
            expand_quickly(study_with(parameters={"file": str(path)}))


def sampled(method: str, n: int, bounds: dict[str, Any], **options: Any) -> Study:
    return study_with(
        parameters={"sample": {"method": method, "n": n, "bounds": bounds, **options}}
    )


def test_a_sampled_design_too_large_is_refused_before_it_is_sampled() -> None:
    bounds = {"a": [0, 1], "b": [0, 1], "c": [0, 1]}
    with pytest.raises(StudyError, match="the design has 8,388,608 parameter sets"):
        expand_quickly(sampled("saltelli", 2**20, bounds, second_order=True))


def test_a_sampled_design_gets_ids_and_fixed_values_and_is_reproducible() -> None:
    study = study_with(
        fixed={"days": 30},
        parameters={"sample": {"method": "lhs", "n": 8, "bounds": {"b": [1, 2]}}},
    )
    sets = expand_parameters(study)
    assert [s.index for s in sets] == list(range(8))
    assert all(s.params["days"] == 30 and 1 <= s.params["b"] <= 2 for s in sets)
    assert [s.param_id for s in sets] == [s.param_id for s in expand_parameters(study)]
    assert design_row_ids(study) == [s.param_id for s in sets]


def test_the_sample_seed_defaults_to_the_study_seed() -> None:
    bounds = {"b": [1, 2]}
    own = sampled("random", 4, bounds, seed=1)  # study seed is 1 too
    assert sample_seed(own) == 1
    assert design_row_ids(own) == design_row_ids(sampled("random", 4, bounds))
    assert design_row_ids(own) != design_row_ids(sampled("random", 4, bounds, seed=2))


def test_repeated_saltelli_rows_run_once_and_every_row_maps_to_its_set() -> None:
    # Two whole numbers and two choices: 32 x (2+2) rows hold at most four distinct sets.
    bounds = {"k": {"low": 0, "high": 1, "integer": True}, "c": {"choices": ["x", "y"]}}
    study = sampled("saltelli", 32, bounds)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # expected in saltelli: no warning
        sets = expand_parameters(study)
    rows = design_row_ids(study)
    assert len(rows) == 32 * 4
    assert len(sets) == 4 == len(set(rows))
    assert [s.param_id for s in sets] == list(dict.fromkeys(rows))  # first occurrence order
    assert [s.index for s in sets] == [0, 1, 2, 3]


def test_repeated_rows_of_a_space_filling_design_run_once_with_a_warning() -> None:
    study = sampled("random", 40, {"c": {"choices": ["x", "y", "z"]}})
    with pytest.warns(UserWarning, match="37 of 40 sampled rows repeat an earlier parameter set"):
        sets = expand_parameters(study)
    assert sorted(s.params["c"] for s in sets) == ["x", "y", "z"]


@pytest.mark.timeout(60)
def test_a_large_sampled_design_expands_in_seconds() -> None:
    bounds = {f"p{i}": [0, 1] for i in range(5)}
    started = time.monotonic()
    sets = expand_parameters(sampled("sobol", 2**15, bounds))
    assert len(sets) == 2**15
    assert time.monotonic() - started < 10
