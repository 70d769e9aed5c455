"""Sensitivity indices against functions whose indices are known in closed form."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest

from simstudy.analysis.sensitivity import SENSITIVITY_SCHEMA, sensitivity_table
from simstudy.design.expand import ParameterSet, expand_parameters
from simstudy.spec.loading import validate_study
from simstudy.spec.study import Study
from simstudy.stats.aggregate import ParameterSetAggregate


def sampled_study(method: str, n: int, bounds: dict[str, Any], **options: Any) -> Study:
    return validate_study(
        {
            "name": "s",
            "model": "simstudy.models.seir:simulate",
            "fixed": {"days": 10},
            "parameters": {"sample": {"method": method, "n": n, "bounds": bounds, **options}},
            "replicates": 3,
            "seed": 5,
        }
    )


def aggregate(ps: ParameterSet, means: dict[str, float]) -> ParameterSetAggregate:
    scalars = [{"param_id": ps.param_id, "output": name, "n_ok": 3, "mean": value}
               for name, value in means.items()]  # fmt: skip
    return ParameterSetAggregate(
        param_id=ps.param_id, index=ps.index, params=ps.params, status="ok",
        counts={"ok": 3}, scalars=scalars,
    )  # fmt: skip


def indices(table: pa.Table, output: str, index: str) -> dict[str, float]:
    return {
        row["parameter"]: row["value"]
        for row in table.to_pylist()
        if row["output"] == output and row["index"] == index
    }


def test_sobol_indices_of_a_weighted_sum_are_the_shares_of_its_variance() -> None:
    # y = a + 2b + 3c with a ~ U(0, 2), b, c ~ U(0, 1): Var = 4/12 + 4/12 + 9/12, so
    # S1 = ST = (4, 4, 9) / 17, and no interaction (S2 = 0).
    bounds = {"a": [0, 2], "b": [0, 1], "c": [0, 1]}
    study = sampled_study("saltelli", 512, bounds, second_order=True)
    sets = expand_parameters(study)
    rows = [aggregate(s, {"y": s.params["a"] + 2 * s.params["b"] + 3 * s.params["c"]})
            for s in sets]  # fmt: skip
    table = sensitivity_table(study, sets, rows)
    assert table is not None and table.schema == SENSITIVITY_SCHEMA
    expected = {"a": 4 / 17, "b": 4 / 17, "c": 9 / 17}
    for index in ("S1", "ST"):
        assert indices(table, "y", index) == pytest.approx(expected, abs=0.04)
    second = [r for r in table.to_pylist() if r["index"] == "S2"]
    assert {(r["parameter"], r["parameter_2"]) for r in second} == {
        ("a", "b"),
        ("a", "c"),
        ("b", "c"),
    }
    assert all(abs(r["value"]) < 0.05 and r["conf"] > 0 for r in second)
    assert {r["method"] for r in table.to_pylist()} == {"sobol"}


def test_repeated_design_rows_take_their_set_s_mean() -> None:
    # k in {0, 1} (variance 1/4) and x ~ U(0, 1) (variance 1/12): S1_k = 3/4, S1_x = 1/4.
    bounds = {"k": {"low": 0, "high": 1, "integer": True}, "x": [0, 1]}
    study = sampled_study("saltelli", 1024, bounds)
    sets = expand_parameters(study)
    assert len(sets) < 1024 * 4  # every A row's k-cross row repeats one set
    table = sensitivity_table(study, sets, [aggregate(s, {"y": s.params["k"] + s.params["x"]})
                                            for s in sets])  # fmt: skip
    assert table is not None
    assert indices(table, "y", "S1") == pytest.approx({"k": 0.75, "x": 0.25}, abs=0.04)


def test_morris_effects_of_a_linear_function_are_its_weights_times_the_range() -> None:
    bounds = {"a": [0, 2], "b": [10, 11]}
    study = sampled_study("morris", 10, bounds)
    sets = expand_parameters(study)
    rows = [aggregate(s, {"y": 3 * s.params["a"] - s.params["b"]}) for s in sets]
    table = sensitivity_table(study, sets, rows)
    assert table is not None
    assert indices(table, "y", "mu") == pytest.approx({"a": 6.0, "b": -1.0})
    assert indices(table, "y", "mu_star") == pytest.approx({"a": 6.0, "b": 1.0})
    assert indices(table, "y", "sigma") == pytest.approx({"a": 0.0, "b": 0.0}, abs=1e-9)
    conf = [r["conf"] for r in table.to_pylist() if r["index"] == "mu_star"]
    assert all(c is not None for c in conf)
    assert all(r["conf"] is None for r in table.to_pylist() if r["index"] != "mu_star")


def test_a_failed_set_skips_the_output_with_a_reason() -> None:
    study = sampled_study("saltelli", 8, {"a": [0, 1], "b": [0, 1]})
    sets = expand_parameters(study)
    rows = [aggregate(s, {"y": s.params["a"], "z": s.params["b"]}) for s in sets]
    rows[2] = rows[2].model_copy(update={"status": "failed", "scalars": []})
    rows[3] = rows[3].model_copy(update={"scalars": [rows[3].scalars[1]]})  # no 'y'
    table = sensitivity_table(study, sets, rows)
    assert table is not None
    notes = {r["output"]: r for r in table.to_pylist()}
    assert notes["y"]["index"] is None and notes["y"]["value"] is None
    assert notes["y"]["note"].startswith(f"2 of {len(sets)} parameter sets have no finite mean")
    assert sets[2].param_id[:12] in notes["y"]["note"]
    assert notes["z"]["note"].startswith(f"1 of {len(sets)} parameter sets")
    assert table.num_rows == 2  # nothing else: no NaN indices written


def test_an_output_that_never_varies_is_skipped_with_a_reason() -> None:
    study = sampled_study("morris", 4, {"a": [0, 1]})
    sets = expand_parameters(study)
    table = sensitivity_table(study, sets, [aggregate(s, {"flat": 2.0}) for s in sets])
    assert table is not None
    assert table.column("index").to_pylist() == [None]
    assert "'flat' is the same (2) for every parameter set" in table.column("note")[0].as_py()


def test_the_loss_gets_indices_of_its_own() -> None:
    study = sampled_study("saltelli", 64, {"a": [0, 1], "b": [0, 1]})
    sets = expand_parameters(study)
    rows = [
        aggregate(s, {"y": s.params["a"]}).model_copy(update={"loss": 5 * s.params["b"]})
        for s in sets
    ]
    table = sensitivity_table(study, sets, rows)
    assert table is not None
    assert indices(table, "loss", "ST") == pytest.approx({"a": 0.0, "b": 1.0}, abs=0.05)
    assert indices(table, "y", "ST") == pytest.approx({"a": 1.0, "b": 0.0}, abs=0.05)


@pytest.mark.parametrize(
    "parameters",
    [{"grid": {"a": [1, 2]}}, {"sample": {"method": "sobol", "n": 4, "bounds": {"a": [0, 1]}}}],
)
def test_other_designs_have_no_sensitivity_table(parameters: dict[str, Any]) -> None:
    study = validate_study(
        {"name": "s", "model": "m:f", "parameters": parameters, "replicates": 1, "seed": 1}
    )
    sets = expand_parameters(study)
    assert sensitivity_table(study, sets, [aggregate(s, {"y": 1.0}) for s in sets]) is None
