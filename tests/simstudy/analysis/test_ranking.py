"""The ranking table and the loss columns of aggregates.parquet."""

from __future__ import annotations

import math

import pyarrow as pa

from simstudy.analysis.ranking import ranking_table
from simstudy.output.results import aggregates_table
from simstudy.stats.aggregate import ParameterSetAggregate


def aggregate(index: int, loss: float | None, status: str = "ok") -> ParameterSetAggregate:
    return ParameterSetAggregate(
        param_id=f"p{index}",
        index=index,
        params={"beta": 0.1 * index, "name": f"n{index}", "population": 1000},
        status=status,  # type: ignore[arg-type]
        counts={"ok": 2},
        scalars=[{"param_id": f"p{index}", "output": "size", "n_ok": 2, "mean": 1.0}],
        loss=loss,
        loss_se=None if loss is None else 0.5,
        target_losses={} if loss is None else {"cases": loss - 1, "size": 1.0},
    )


def test_sets_are_ranked_by_loss_and_those_without_come_last_in_design_order() -> None:
    sets = [
        aggregate(0, None, "failed"),
        aggregate(1, 5.0),
        aggregate(2, math.nan),
        aggregate(3, 2.0),
        aggregate(4, 5.0),
    ]
    table = ranking_table(sets, ["beta", "name"])
    assert table.column("param_id").to_pylist() == ["p3", "p1", "p4", "p0", "p2"]
    assert table.column("rank").to_pylist() == [1, 2, 3, None, None]
    assert table.column_names == [
        "rank", "param_id", "index", "status", "loss", "loss_se", "loss_cases", "loss_size",
        "beta", "name",
    ]  # fmt: skip
    assert table.schema.field("rank").type == pa.int64()
    assert table.column("loss_cases").to_pylist()[:3] == [1.0, 4.0, 4.0]
    assert table.column("name").to_pylist()[0] == "n3"
    assert table.column("status").to_pylist()[3] == "failed"


def test_a_ranking_of_sets_without_any_loss_has_only_null_ranks() -> None:
    table = ranking_table([aggregate(0, None, "failed")], ["beta"])
    assert table.column("rank").null_count == 1
    assert table.schema.field("loss").type == pa.float64()


def test_aggregates_table_gains_loss_columns_only_with_targets() -> None:
    with_loss = aggregates_table([aggregate(1, 3.0), aggregate(0, None, "failed")], series=False)
    assert with_loss is not None
    row = with_loss.to_pylist()[0]
    assert (row["loss"], row["loss_se"], row["loss_cases"], row["loss_size"]) == (
        3.0,
        0.5,
        2.0,
        1.0,
    )
    plain = ParameterSetAggregate(**{**aggregate(1, None).model_dump()})
    without = aggregates_table([plain], series=False)
    assert without is not None and "loss" not in without.column_names


def test_loss_columns_stay_float_when_every_loss_se_is_null() -> None:
    single = aggregate(1, 3.0).model_copy(update={"loss_se": None})
    table = aggregates_table([single], series=False)
    assert table is not None
    assert table.schema.field("loss_se").type == pa.float64()
    assert table.column("loss_se").to_pylist() == [None]


def test_a_set_refused_for_its_outputs_loses_its_loss() -> None:
    from simstudy.stats.aggregate import reconcile_outputs

    odd = aggregate(2, 1.0).model_copy(
        update={"scalars": [{"param_id": "p2", "output": "other", "n_ok": 2, "mean": 1.0}]}
    )
    reconciled = reconcile_outputs([aggregate(0, 2.0), aggregate(1, 3.0), odd])
    assert reconciled[2].status == "failed"
    assert (reconciled[2].loss, reconciled[2].target_losses) == (None, {})
    assert ranking_table(reconciled, ["beta"]).column("rank").to_pylist() == [1, 2, None]
