"""Targets: the study field, the data file read and checked, targets.parquet."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from simstudy.analysis.targets import load_targets, observed_table
from simstudy.errors import StudyError
from simstudy.spec.loading import validate_study
from simstudy.spec.readiness import check_ready
from simstudy.spec.study import Study


def study_with(
    tmp_path: Path, csv: str, replicates: int = 3, data: str = "observed.csv", **targets: Any
) -> Study:
    (tmp_path / "observed.csv").write_text(csv)
    return Study.model_validate(
        {
            "name": "t",
            "model": "simstudy.models.seir:simulate",
            "parameters": {"grid": {"beta": [0.2]}},
            "replicates": replicates,
            "seed": 1,
            "base_dir": str(tmp_path),
            "output": str(tmp_path / "out"),
            "targets": {"data": data, **targets},
        }
    )


def problems(tmp_path: Path, csv: str, **kwargs: Any) -> str:
    with pytest.raises(StudyError) as caught:
        load_targets(study_with(tmp_path, csv, **kwargs))
    return str(caught.value)


def test_scalar_and_series_targets_with_weights_and_losses_per_output(tmp_path: Path) -> None:
    csv = "output,t,value,weight\nincidence,1,3,\nincidence,0,5,2\nattack_rate,,0.4,10\n"
    targets = load_targets(
        study_with(tmp_path, csv, loss={"incidence": "poisson", "attack_rate": "mse_of_mean"})
    )
    assert targets is not None
    incidence, attack = targets.outputs
    assert (incidence.output, incidence.loss, attack.loss) == (
        "incidence",
        "poisson",
        "mse_of_mean",
    )
    assert incidence.t.tolist() == [1, 0] and incidence.weight.tolist() == [1.0, 2.0]
    assert attack.t is None and attack.value.tolist() == [0.4]
    assert (targets.seed, targets.bootstrap) == (1, 200)


def test_a_study_without_targets_has_none(make_study: Callable[..., Study]) -> None:
    assert load_targets(make_study()) is None


def test_parquet_data_and_the_normalised_table(tmp_path: Path) -> None:
    data = pa.table(
        {"output": ["cases", "cases"], "t": [0, 1], "value": [3, 4], "denominator": [10, 12]}
    )
    pq.write_table(data, tmp_path / "observed.parquet")
    study = study_with(tmp_path, "", data="observed.parquet", loss="binomial")
    table = observed_table(load_targets(study))
    assert table.schema == pa.schema(
        [
            ("output", pa.string()),
            ("t", pa.int64()),
            ("value", pa.float64()),
            ("weight", pa.float64()),
            ("denominator", pa.float64()),
        ]
    )
    assert table.to_pylist()[1] == {
        "output": "cases", "t": 1, "value": 4.0, "weight": 1.0, "denominator": 12.0
    }  # fmt: skip


def test_observed_table_of_a_scalar_target_has_null_t_and_denominator(tmp_path: Path) -> None:
    table = observed_table(load_targets(study_with(tmp_path, "output,value\nsize,2.5\n")))
    assert table.to_pylist() == [
        {"output": "size", "t": None, "value": 2.5, "weight": 1.0, "denominator": None}
    ]


def test_errors_name_the_file_the_column_the_row_and_the_fix(tmp_path: Path) -> None:
    text = problems(tmp_path, "output,t,value,weight\ncases,0,x,1\ncases,0,2,-1\n,1,2,1\n")
    assert "targets.data (" in text and "observed.csv" in text
    assert "column 'value', row 1: 'x' is not a number" in text
    assert "column 'weight', row 2: -1 is negative; give a weight >= 0" in text
    assert "column 'output', row 3: empty" in text


def test_duplicate_time_points_and_mixed_scalar_rows_are_refused(tmp_path: Path) -> None:
    text = problems(tmp_path, "output,t,value\ncases,0,1\ncases,0,2\nsize,,1\nsize,3,1\n")
    assert "output 'cases': row 1 and row 2 both observe t = 0; keep one row" in text
    assert "output 'size': row 3 has no t but other rows have one" in text


def test_unknown_and_missing_columns(tmp_path: Path) -> None:
    text = problems(tmp_path, "output,tt,weight\ncases,0,1\n")
    assert "unknown column(s) 'tt'" in text
    assert "missing column(s) 'value'" in text


def test_count_likelihoods_need_non_negative_integer_counts(tmp_path: Path) -> None:
    text = problems(tmp_path, "output,t,value\ncases,0,2.5\ncases,1,-1\n", loss="poisson")
    assert "column 'value', row 1: 2.5 is not a count" in text
    assert "row 2: -1 is not a count" in text


def test_binomial_needs_a_denominator_at_least_the_value(tmp_path: Path) -> None:
    text = problems(
        tmp_path, "output,t,value,denominator\ncases,0,2,\ncases,1,5,4\n", loss="binomial"
    )
    assert "column 'denominator', row 1: empty, but output 'cases' has loss binomial" in text
    assert "column 'denominator', row 2: 4 is not a number of trials >= the value 5" in text


def test_the_loss_mapping_must_match_the_data(tmp_path: Path) -> None:
    text = problems(tmp_path, "output,value\na,1\nb,2\n", loss={"a": "poisson", "c": "poisson"})
    assert "targets.loss names output 'c', which the data has no row of" in text
    assert "targets.loss gives no loss for output 'b'" in text


def test_spread_losses_need_two_replicates(tmp_path: Path) -> None:
    text = problems(tmp_path, "output,value\na,1\n", replicates=1, loss="gaussian_nll")
    assert "gaussian_nll (output 'a') needs the spread of at least 2 replicates" in text


def test_unknown_loss_name_is_refused_by_the_study_file(tmp_path: Path) -> None:
    with pytest.raises(StudyError, match="targets.loss: loss 'poison' is unknown; use one of"):
        validate_study(
            {
                "name": "t",
                "model": "simstudy.models.seir:simulate",
                "parameters": {"grid": {"beta": [0.2]}},
                "replicates": 2,
                "seed": 1,
                "targets": {"data": "observed.csv", "loss": "poison"},
            }
        )


def test_a_missing_file_is_caught_before_anything_runs(tmp_path: Path) -> None:
    study = study_with(tmp_path, "output,value\na,1\n")
    (tmp_path / "observed.csv").unlink()
    with pytest.raises(StudyError, match=r"targets.data \(.*observed.csv\): cannot read"):
        check_ready(study, import_model=False)


def test_targets_arrays_are_float_and_int(tmp_path: Path) -> None:
    targets = load_targets(study_with(tmp_path, "output,t,value\nc,2,7\n"))
    target = targets.outputs[0]
    assert target.t.dtype == np.int64 and target.value.dtype == np.float64


def test_targets_and_losses_are_not_part_of_the_results_identity(tmp_path: Path) -> None:
    # Resume reuses every replicate when only the targets or the loss change.
    from simstudy.design.expand import expand_parameters
    from simstudy.output.fingerprint import model_fingerprint
    from simstudy.output.results import study_id

    poisson = study_with(tmp_path, "output,value\na,1\n", loss="poisson")
    other = study_with(tmp_path, "output,value\na,1\n", loss="mse_of_mean")
    plain = poisson.model_copy(update={"targets": None})
    sets = expand_parameters(plain)
    assert expand_parameters(poisson) == expand_parameters(other) == sets
    assert study_id(poisson, sets) == study_id(other, sets) == study_id(plain, sets)
    assert model_fingerprint(poisson) == model_fingerprint(other) == model_fingerprint(plain)


def test_a_user_loss_module_that_does_not_exist_is_caught_before_anything_runs(
    tmp_path: Path,
) -> None:
    study = study_with(tmp_path, "output,value\na,1\n", loss="no_such_module_here:fit")
    with pytest.raises(StudyError, match="targets.loss: no module named 'no_such_module_here'"):
        check_ready(study, import_model=False)
    check_ready(study_with(tmp_path, "output,value\na,1\n", loss="json:dumps"), import_model=False)


def test_a_calibration_s_spread_loss_needs_two_replicates_from_its_first_round(
    tmp_path: Path,
) -> None:
    (tmp_path / "observed.csv").write_text("output,value\npeak,3\n")
    study = validate_study(
        {
            "name": "c", "model": "simstudy.models.seir:simulate", "seed": 1,
            "parameters": {"sample": {"bounds": {"beta": [0.1, 0.5]}}},
            "calibrate": {"trials": 4, "replicates": {"min": 1, "max": 8}},
            "targets": {"data": "observed.csv", "loss": "gaussian_nll"},
            "base_dir": str(tmp_path),
        }
    )  # fmt: skip
    with pytest.raises(StudyError, match=r"the study has 1; raise calibrate.replicates.min"):
        load_targets(study)


def parquet_problems(tmp_path: Path, table: pa.Table, **kwargs: Any) -> str:
    pq.write_table(table, tmp_path / "observed.parquet")
    with pytest.raises(StudyError) as caught:
        load_targets(study_with(tmp_path, "", data="observed.parquet", **kwargs))
    return str(caught.value)


def test_time_points_beyond_the_longest_series_are_refused_not_overflowed(
    tmp_path: Path,
) -> None:
    text = problems(tmp_path, "output,t,value\ncases,1e19,3\ncases,1000000,3\ncases,999999,3\n")
    assert "column 't', row 1: '1e19' is beyond the longest series" in text
    assert "column 't', row 2: '1000000' is beyond" in text and "row 3" not in text
    biggest = pa.table({"output": ["cases"], "t": pa.array([2**64 - 1], pa.uint64()),
                        "value": [3.0]})  # fmt: skip
    assert f"column 't', row 1: {2**64 - 1} is beyond" in parquet_problems(tmp_path, biggest)


def test_a_parquet_file_is_measured_from_its_footer_before_it_is_decoded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = 1_000_001
    many = pa.table({"output": pa.array(["cases"] * rows).dictionary_encode(),
                     "value": pa.array(np.zeros(rows))})  # fmt: skip

    def no_read(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the file was read")

    monkeypatch.setattr(pq.ParquetFile, "read", no_read)
    assert "more than 1,000,000 rows" in parquet_problems(tmp_path, many)
    # A 100 kB output name repeated 2,000 times: a small file, 200 MB decoded.
    monkeypatch.undo()
    names = pa.table({"output": pa.array(["x" * 100_000] * 2000).dictionary_encode(),
                      "value": pa.array(np.zeros(2000))})  # fmt: skip
    text = parquet_problems(tmp_path, names)
    assert "column 'output' holds a text of 100,000 characters, more than 1,000" in text


def test_outputs_called_na_null_or_nan_are_outputs_and_numbers_are_plain(tmp_path: Path) -> None:
    csv = "output,value\nNA,1\nnull,2\nNaN,3\n"
    targets = load_targets(study_with(tmp_path, csv))
    assert targets is not None and [t.output for t in targets.outputs] == ["NA", "null", "NaN"]
    text = problems(tmp_path, "output,t,value\ncases,0,1_000\ncases,1,NaN\n")
    assert "column 'value', row 1: '1_000' is not a number" in text
    assert "column 'value', row 2: 'NaN' is not finite" in text
    flags = pa.table({"output": ["cases"], "value": [True]})
    assert "column 'value', row 1: True is not a number" in parquet_problems(tmp_path, flags)
