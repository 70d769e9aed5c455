"""The report reads the files the analysis modules write (ranking, sensitivity, targets)."""

from __future__ import annotations

from pathlib import Path

import pytest

from simstudy.analysis.ranking import ranking_table
from simstudy.analysis.sensitivity import sensitivity_table
from simstudy.design.expand import expand_parameters
from simstudy.output.location import OutputStore
from simstudy.output.results import (
    AGGREGATES_FILE,
    RANKING_FILE,
    SENSITIVITY_FILE,
    STUDY_FILE,
    aggregates_table,
    now,
    study_document,
    write_json,
    write_table,
)
from simstudy.report import build_report
from simstudy.report.data import load_report_data
from simstudy.spec.study import Study
from simstudy.stats.aggregate import ParameterSetAggregate
from tests.support.aggregates import scalar_row


@pytest.mark.timeout(120)
def test_a_saltelli_study_with_losses_gets_ranking_loss_and_sensitivity_plots(
    tmp_path: Path,
) -> None:
    study = Study.model_validate(
        {
            "name": "sobol", "model": "simstudy.models.seir:simulate", "replicates": 2,
            "seed": 1, "output": str(tmp_path),
            "parameters": {"sample": {"method": "saltelli", "n": 16, "seed": 1,
                                      "bounds": {"a": [0.0, 1.0], "b": [0.0, 1.0]}}},
        }
    )  # fmt: skip
    sets = expand_parameters(study)
    aggregates = []
    for ps in sets:
        a, b = ps.params["a"], ps.params["b"]
        loss = (a - 0.3) ** 2 + (b - 0.6) ** 2
        aggregates.append(
            ParameterSetAggregate(
                param_id=ps.param_id, index=ps.index, params=ps.params, status="ok",
                counts={"ok": 2}, scalars=[scalar_row(ps.param_id, "y", a + 4 * b, True)],
                loss=loss, loss_se=0.01, target_losses={"y": loss},
            )
        )  # fmt: skip
    store = OutputStore(tmp_path)
    write_table(store, AGGREGATES_FILE, aggregates_table(aggregates, series=False))
    write_table(store, RANKING_FILE, ranking_table(aggregates, ["a", "b"]))
    indices = sensitivity_table(study, sets, aggregates)
    assert indices is not None
    write_table(store, SENSITIVITY_FILE, indices)
    document = study_document(study, sets, "0" * 32, now())
    write_json(store, STUDY_FILE, {**document, "status": "ok", "finished_at": now().isoformat()})

    build_report(store)
    plots = {p.name for p in (tmp_path / "plots").glob("*.png")}
    assert {"loss-profiles.png", "loss-pairs.png", "sensitivity-y.png", "sensitivity-loss.png"} <= (
        plots
    )
    text = (tmp_path / "report.html").read_text()
    assert "<h2>Ranking</h2>" in text and "<h2>Sensitivity</h2>" in text
    assert "sampled by saltelli, n = 16" in text
    data = load_report_data(store)
    best = data.order[0]
    assert data.ranks[best] == 1
    assert min(data.loss().values()) == data.loss()[best]
