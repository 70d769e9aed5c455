"""Outputs that differ between parameter sets, through the whole flow."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from flows.study import simulation_study
from simstudy.spec.study import Study

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api_url", "no_leftover_processes")]

# a = 2.0 returns one output more than the other sets.
MODEL = """
import json, sys
request = json.load(sys.stdin)
a = request["params"]["a"]
outputs = {"x": a, "s": [a, a]}
if a == 2.0:
    outputs["extra"] = 1.0
print(json.dumps(outputs))
"""


@pytest.mark.timeout(180)
def test_a_set_with_other_outputs_fails_and_adds_no_columns(
    make_study: Callable[..., Study],
) -> None:
    study = make_study(
        model={"command": [sys.executable, "-c", MODEL]},
        parameters={"grid": {"a": [1.0, 2.0, 3.0]}},
        replicates=2,
        execution={"runner": "subprocess"},
    )
    state = simulation_study(study=study, return_state=True)
    out = Path(study.output_dir)
    document = json.loads((out / "study.json").read_text())
    assert document["status"] == "failed"
    assert document["counts"] == {"ok": 4, "failed": 2}
    [(odd, reasons)] = document["failed_parameter_sets"].items()
    assert reasons[0].startswith("outputs {'extra': 'scalar'} differ from parameter set ")
    assert "every parameter set must return the same output names and kinds" in reasons[0]
    assert odd[:12] in (state.message or "")
    replicates = pq.read_table(out / "replicates.parquet")
    assert "extra" not in replicates.column_names
    assert replicates.column("x").null_count == 2  # the refused set's replicates
    aggregates = pq.read_table(out / "aggregates.parquet").to_pylist()
    assert {row["a"] for row in aggregates} == {1.0, 3.0}
    assert {
        row["a"] for row in pq.read_table(out / "timeseries_aggregates.parquet").to_pylist()
    } == {1.0, 3.0}
