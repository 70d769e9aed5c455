"""Finished studies built from aggregates directly, for tests of what is shown."""

from __future__ import annotations

from typing import Any

from simstudy.design.identity import param_id
from simstudy.output.location import OutputStore
from simstudy.output.results import (
    AGGREGATES_FILE,
    STUDY_FILE,
    aggregates_table,
    write_json,
    write_table,
)
from simstudy.stats.aggregate import ParameterSetAggregate, summarize_study

FIXED = {"gamma": 0.1, "population": 1000000}
OUTPUTS = {"attack_rate": 0.32116600000000006, "peak_infected": 101823.4, "peak_day": 177.02}


def scalar_row(
    pid: str, output: str, mean: float, quantiles: bool, n_ok: int = 10
) -> dict[str, Any]:
    """Return a scalar aggregate row as `aggregate_parameter_set` builds it."""
    row: dict[str, Any] = {
        "param_id": pid, "output": output, "n_failed": 0, "n_ok": n_ok,
        "mean": mean, "std": 0.1 * abs(mean), "min": 0.5 * mean, "max": 1.5 * mean,
    }  # fmt: skip
    if quantiles:
        row.update({"q0.05": 0.8 * mean, "q0.5": mean, "q0.95": 1.2 * mean})
    return row


def sample_aggregates(quantiles: bool = True, betas: int = 3) -> list[ParameterSetAggregate]:
    """Return aggregates of an SEIR-like study: beta varies, the last set failed."""
    aggregates = []
    for index in range(betas + 1):
        params = {"beta": 0.1 * (index + 1), **FIXED}
        pid = param_id(params)
        if index == betas:
            aggregates.append(
                ParameterSetAggregate(
                    param_id=pid, index=index, params=params, status="failed",
                    counts={"ok": 2, "failed": 8},
                    reasons=["2/10 replicates ok, below min_success_fraction 0.8"],
                )
            )  # fmt: skip
            continue
        scalars = [
            scalar_row(pid, name, value * (index + 1), quantiles) for name, value in OUTPUTS.items()
        ]
        aggregates.append(
            ParameterSetAggregate(
                param_id=pid, index=index, params=params, status="ok",
                counts={"ok": 10}, scalars=scalars,
            )
        )  # fmt: skip
    return aggregates


def write_finished_study(store: OutputStore, aggregates: list[ParameterSetAggregate]) -> None:
    """Write the aggregates and study.json the way a finished study does."""
    summary = summarize_study(aggregates)
    table = aggregates_table(aggregates, series=False)
    if table is not None:
        write_table(store, AGGREGATES_FILE, table)
    sets = [{"param_id": a.param_id, "index": a.index, "params": a.params} for a in aggregates]
    write_json(
        store,
        STUDY_FILE,
        {
            "name": "seir",
            "parameter_sets": sets,
            "status": summary.status,
            "counts": summary.replicate_counts,
            "failed_parameter_sets": summary.failed_sets,
        },
    )
