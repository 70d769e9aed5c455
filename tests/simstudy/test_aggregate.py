"""Batch summaries and parameter-set aggregation, from real runner records."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from simstudy.aggregate import aggregate_parameter_set, summarize_study
from simstudy.batch import run_batch, summarize_batch
from simstudy.batching import plan_batches
from simstudy.design import expand_parameters
from simstudy.records import ReplicateRecord
from simstudy.spec import Study


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
    assert len(results[1].series) == 5  # one row per time point of 'series'
    assert {r["t"] for r in results[1].series} == set(range(5))


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
    np.testing.assert_array_equal(result.partials["s"].values, [[1.0, 2.0]])
