"""Batch summaries and parameter-set aggregation, from real runner records."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from simstudy.design.expand import ParameterSet, expand_parameters
from simstudy.design.identity import param_id
from simstudy.design.plan import Batch, plan_batches
from simstudy.run.batch import run_batch, statistics_only, summarize_batch
from simstudy.run.records import ReplicateRecord
from simstudy.spec.study import Study
from simstudy.stats.aggregate import (
    ParameterSetAggregate,
    SeriesStatistics,
    SetOutcomes,
    aggregate_parameter_set,
    reconcile_outputs,
    summarize_study,
    without_rows,
)
from tests.support.aggregates import scalar_row


def thread_study(make_study: Callable[..., Study], **overrides) -> Study:
    execution = {"runner": "thread", "batch_size": 2, **overrides.pop("execution", {})}
    with pytest.warns(UserWarning):
        return make_study(execution=execution, **overrides)


def test_batch_split_does_not_change_the_aggregate(make_study: Callable[..., Study]) -> None:
    results = {}
    for size in (1, 2, 5):
        study = thread_study(make_study, replicates=5, execution={"batch_size": size})
        sets = expand_parameters(study)
        batches = [run_batch(study, b, "w", "/tmp") for b in plan_batches(study, sets)]
        mine = [b for b in batches if b.param_id == sets[0].param_id]
        results[size] = aggregate_parameter_set(sets[0], mine, 5, 1.0, [0.5])
    rows = {size: {r["output"]: r for r in agg.scalars} for size, agg in results.items()}
    for size in (2, 5):
        assert rows[size]["x"]["mean"] == pytest.approx(rows[1]["x"]["mean"], rel=1e-14)
        assert rows[size]["x"]["q0.5"] == rows[1]["x"]["q0.5"]
    assert results[1].series["series"].points == 5  # every time point of 'series'
    for size in (2, 5):
        assert results[size].series == results[1].series


def test_set_below_min_success_fraction_fails_with_reasons(
    make_study: Callable[..., Study],
) -> None:
    study = thread_study(make_study, parameters={"list": [{"behavior": "raise"}]})
    sets = expand_parameters(study)
    batches = [run_batch(study, b, "w", "/tmp") for b in plan_batches(study, sets)]
    aggregate = aggregate_parameter_set(sets[0], batches, 3, 0.5, [])
    assert aggregate.status == "failed"
    assert aggregate.reasons == ["0/3 replicates ok, below min_success_fraction 0.5"]
    assert "model failed on purpose" in aggregate.first_errors[0]
    summary = summarize_study([aggregate])
    assert summary.status == "failed"
    assert sets[0].param_id[:12] in summary.headline()


def test_partial_success_aggregates_the_successes(make_study: Callable[..., Study]) -> None:
    study = thread_study(make_study)
    sets = expand_parameters(study)
    batch = plan_batches(study, sets)[0]
    records = run_batch(study, batch, "w", "/tmp").records
    records[0] = records[0].model_copy(update={"status": "timed_out", "outputs": {}, "error": "t"})
    result = summarize_batch(batch, records)
    aggregate = aggregate_parameter_set(sets[0], [result], 2, 0.5, [])
    row = next(r for r in aggregate.scalars if r["output"] == "x")
    assert (aggregate.status, row["n_ok"], row["n_failed"]) == ("ok", 1, 1)


def test_replicate_with_different_outputs_is_failed(make_study: Callable[..., Study]) -> None:
    study = thread_study(make_study)
    sets = expand_parameters(study)
    batch = plan_batches(study, sets)[0]
    records = [
        ReplicateRecord(param_id=batch.param_id, replicate=r, seed=r, status="ok", attempts=1,
                        duration_s=0.1, worker="w", outputs=outputs)
        for r, outputs in enumerate([{"a": 1.0, "s": [1.0, 2.0]}, {"a": 2.0, "s": [1.0]}])
    ]  # fmt: skip
    result = summarize_batch(batch, records)
    assert [r.status for r in result.records] == ["ok", "failed"]
    assert "differ from replicate 0" in (result.records[1].error or "")
    # Only the outputs that differ are named, at most 10 of them.
    many = {f"o{i:04d}": 1.0 for i in range(1000)}
    records = [
        ReplicateRecord(param_id=batch.param_id, replicate=r, seed=r, status="ok", attempts=1,
                        duration_s=0.1, worker="w", outputs=outputs)
        for r, outputs in enumerate([many, {**many, "o0999": [1.0, 2.0], "extra": 1.0}])
    ]  # fmt: skip
    error = summarize_batch(batch, records).records[1].error or ""
    assert error.startswith(
        "outputs {'extra': ('scalar', 1), 'o0999': ('series', 2)} differ from replicate 0's "
        "{'extra': 'missing', 'o0999': ('scalar', 1)}"
    )
    assert "o0001" not in error and len(error) < 300
    np.testing.assert_array_equal(result.partials["s"].values, [[1.0, 2.0]])


def output_aggregate(index: int, kinds: dict[str, str], length: int = 3) -> ParameterSetAggregate:
    """Return an ok aggregate of set `index` with the given output names and kinds."""
    params = {"a": float(index)}
    pid = param_id(params)
    scalars = [scalar_row(pid, name, 1.0, False) for name, k in kinds.items() if k == "scalar"]
    series = {
        name: SeriesStatistics({"n_ok": np.full(length, 10), "mean": np.ones(length)})
        for name, k in kinds.items()
        if k == "series"
    }
    return ParameterSetAggregate(
        param_id=pid, index=index, params=params, status="ok", counts={"ok": 10},
        scalars=scalars, series=series,
    )  # fmt: skip


STUDY_OUTPUTS = {"x": "scalar", "incidence": "series"}


def test_sets_whose_outputs_differ_from_the_study_fail_naming_them() -> None:
    aggregates = [
        output_aggregate(0, STUDY_OUTPUTS),
        output_aggregate(1, {**STUDY_OUTPUTS, "extra": "scalar"}),
        output_aggregate(2, {"x": "series", "incidence": "series"}),
        output_aggregate(3, {"incidence": "series"}),
        output_aggregate(4, STUDY_OUTPUTS, length=7),  # series lengths may differ
    ]
    reconciled = reconcile_outputs(aggregates)
    assert [a.status for a in reconciled] == ["ok", "failed", "failed", "failed", "ok"]
    reference = aggregates[0].param_id[:12]
    rule = "every parameter set must return the same output names and kinds"
    assert reconciled[1].reasons == [
        f"outputs {{'extra': 'scalar'}} differ from parameter set {reference}'s "
        f"{{'extra': 'missing'}}: {rule}"
    ]
    assert reconciled[2].reasons == [
        f"outputs {{'x': 'series'}} differ from parameter set {reference}'s {{'x': 'scalar'}}: "
        f"{rule}"
    ]
    assert "{'x': 'missing'} differ" in reconciled[3].reasons[0]
    assert all(not a.scalars and not a.series for a in reconciled[1:4])
    assert [a.counts for a in reconciled] == [{"ok": 10}, *[{"failed": 10}] * 3, {"ok": 10}]
    assert reconciled[4] == aggregates[4]


def test_the_outputs_most_sets_return_are_the_reference() -> None:
    odd = output_aggregate(0, {"x": "scalar", "old": "scalar"})
    usual = [output_aggregate(i, {"x": "scalar"}) for i in (1, 2)]
    reconciled = reconcile_outputs([*usual, odd])  # not in design order
    assert [a.status for a in reconciled] == ["ok", "ok", "failed"]
    assert f"parameter set {usual[0].param_id[:12]}'s" in reconciled[2].reasons[0]


def test_on_a_tie_the_first_set_in_design_order_is_the_reference() -> None:
    second, first = output_aggregate(1, {"y": "scalar"}), output_aggregate(0, {"x": "scalar"})
    reconciled = reconcile_outputs([second, first])
    assert [a.status for a in reconciled] == ["failed", "ok"]


def test_sets_that_failed_already_and_many_differences() -> None:
    failed = output_aggregate(1, {"other": "scalar"}).model_copy(
        update={"status": "failed", "reasons": ["0/10 replicates ok"], "scalars": []}
    )
    many = output_aggregate(2, {f"o{i:02d}": "scalar" for i in range(15)})
    aggregates = [
        output_aggregate(0, {"x": "scalar"}),
        failed,
        output_aggregate(3, {"x": "scalar"}),
        many,
    ]
    reconciled = reconcile_outputs(aggregates)
    assert reconciled[1] == failed  # nothing to compare: its failure stays its own
    assert ", and 6 more}" in reconciled[3].reasons[0]  # 16 differing names, 10 shown
    assert reconcile_outputs(reconciled) == reconciled


def test_study_summary_fails_a_set_with_other_outputs() -> None:
    aggregates = [output_aggregate(0, {"x": "scalar"}), output_aggregate(1, {"y": "scalar"})]
    aggregates.append(output_aggregate(2, {"x": "scalar"}))
    summary = summarize_study(aggregates)
    assert (summary.status, summary.n_aggregated) == ("failed", 2)
    pid = aggregates[1].param_id
    assert summary.failed_sets[pid][0].startswith("outputs {'x': 'missing', 'y': 'scalar'} differ")
    assert pid[:12] in summary.headline()


def test_aggregation_inputs_without_records_give_the_same_aggregate() -> None:
    batch = Batch(param_id="p" * 64, params={"a": 1.0}, start=0, stop=3)
    records = [
        ReplicateRecord(
            param_id=batch.param_id, replicate=r, seed=r, status="ok", attempts=1,
            duration_s=0.0, worker="w", outputs={"x": float(r), "s": [float(r), 1.0]},
        )
        for r in range(3)
    ]  # fmt: skip
    result = summarize_batch(batch, records)
    slim = statistics_only(result)
    assert slim.records == [] and slim.counts == {"ok": 3}
    assert all(r.outputs for r in result.records)  # the original is untouched
    parameter_set = ParameterSet(index=0, param_id=batch.param_id, params={"a": 1.0})
    full = aggregate_parameter_set(parameter_set, [result], 3, 1.0, [0.5])
    assert aggregate_parameter_set(parameter_set, [slim], 3, 1.0, [0.5]) == full


def test_the_summary_task_needs_one_row_per_output() -> None:
    def aggregate(index: int, kind: str) -> ParameterSetAggregate:
        columns = {"n_ok": np.full(365, 2), "mean": np.ones(365)}
        series = {"s": SeriesStatistics(columns)} if kind == "series" else {}
        return ParameterSetAggregate(
            param_id=str(index), index=index, params={}, status="ok", counts={"ok": 2},
            scalars=[{"output": "x", "mean": 1.0}], series=series,
        )  # fmt: skip

    aggregates = [aggregate(0, "series"), aggregate(1, "series"), aggregate(2, "none")]
    slim = [without_rows(a) for a in aggregates]
    assert [[s.points for s in a.series.values()] for a in slim] == [[1], [1], []]
    assert summarize_study(slim) == summarize_study(aggregates)  # the odd set is named in both
    assert summarize_study(slim).failed_sets.keys() == {"2"}
    # The summary task gets them as one buffer, rows left out, and summarises the same.
    packed = SetOutcomes.of(aggregates)
    assert packed.aggregates() == slim
    assert summarize_study(packed.aggregates()) == summarize_study(aggregates)
