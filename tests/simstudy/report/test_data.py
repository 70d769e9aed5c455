"""What the report reads: finished folders only, sets in ranking order, only what it draws."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from simstudy.errors import OutputDirError
from simstudy.output.location import OutputStore
from simstudy.report.data import load_report_data, replicate_values, series_view
from tests.simstudy.report.folders import SERIES, write_folder


def test_a_folder_without_study_json_is_refused_naming_it(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(OutputDirError, match="not a simstudy output folder.*no study.json"):
        load_report_data(OutputStore(tmp_path))


@pytest.mark.parametrize("content", ["[1, 2]", '{"name": "x"}', "{not json"])
def test_a_study_json_that_is_not_simstudys_is_refused(tmp_path: Path, content: str) -> None:
    (tmp_path / "study.json").write_text(content)
    with pytest.raises(OutputDirError, match="study.json"):
        load_report_data(OutputStore(tmp_path))


def test_a_file_is_not_an_output_folder(tmp_path: Path) -> None:
    (tmp_path / "study.json").write_text("{}")
    with pytest.raises(OutputDirError, match="not a simstudy output folder"):
        load_report_data(OutputStore(tmp_path / "study.json"))


def test_a_running_study_is_refused(tmp_path: Path) -> None:
    write_folder(OutputStore(tmp_path))
    study = json.loads((tmp_path / "study.json").read_text())
    (tmp_path / "study.json").write_text(json.dumps({**study, "status": "running"}))
    with pytest.raises(OutputDirError, match="has not finished.*'running'"):
        load_report_data(OutputStore(tmp_path))


def test_an_unreadable_result_file_is_an_output_error_naming_it(tmp_path: Path) -> None:
    write_folder(OutputStore(tmp_path))
    (tmp_path / "aggregates.parquet").write_bytes(b"not parquet")
    with pytest.raises(OutputDirError, match="cannot read .*aggregates.parquet"):
        load_report_data(OutputStore(tmp_path))


def test_sets_come_best_first_with_a_ranking_and_failed_sets_last(tmp_path: Path) -> None:
    sets = write_folder(OutputStore(tmp_path), sets=6, ranking=True, failed=1)
    data = load_report_data(OutputStore(tmp_path))
    betas = [data.params[pid]["beta"] for pid in data.order]
    assert abs(betas[0] - 0.3) == min(abs(b - 0.3) for b in betas[:-1])
    assert data.order[-1] == sets[-1]["param_id"]  # the failed one, unranked
    assert data.ordered_by_loss and data.varied == ["beta", "gamma"]


def test_without_a_ranking_sets_keep_design_order(tmp_path: Path) -> None:
    sets = write_folder(OutputStore(tmp_path), sets=5)
    data = load_report_data(OutputStore(tmp_path))
    assert data.order == [ps["param_id"] for ps in sets]
    assert not data.ordered_by_loss and data.loss() == {}


def test_replicate_values_reads_the_chosen_sets_ok_replicates_only(tmp_path: Path) -> None:
    sets = write_folder(OutputStore(tmp_path), sets=4, replicates=5, failed=1)
    data = load_report_data(OutputStore(tmp_path))
    chosen = [sets[0]["param_id"], sets[3]["param_id"]]  # the last one failed
    values = replicate_values(data, ["attack_rate", "peak_day", "no_such_output"], chosen)
    assert sorted(values) == ["attack_rate", "peak_day"]
    assert list(values["attack_rate"]) == [sets[0]["param_id"]]
    assert len(values["attack_rate"][sets[0]["param_id"]]) == 5
    assert replicate_values(data, ["no_such_output"], chosen) == {}


def test_replicate_values_stop_at_the_limit_per_set(tmp_path: Path) -> None:
    sets = write_folder(OutputStore(tmp_path), sets=2, replicates=50)
    data = load_report_data(OutputStore(tmp_path))
    ids = [ps["param_id"] for ps in sets]
    values = replicate_values(data, ["peak_day"], ids, limit=7)["peak_day"]
    assert {pid: len(v) for pid, v in values.items()} == {pid: 7 for pid in ids}


def test_series_view_keeps_drawn_sets_whole_and_the_rest_as_an_envelope(tmp_path: Path) -> None:
    sets = write_folder(OutputStore(tmp_path), sets=5, series_points=30)
    data = load_report_data(OutputStore(tmp_path))
    drawn = [sets[0]["param_id"], sets[1]["param_id"]]
    view = series_view(data, SERIES, drawn, quantiles=True)
    assert view is not None and sorted(view.drawn) == sorted(drawn)
    t, centre, low, high = view.drawn[drawn[0]]
    assert list(t) == list(range(30)) and np.all(low <= centre) and np.all(centre <= high)
    assert view.others == 3 and view.envelope is not None
    env_t, env_low, env_high = view.envelope
    assert len(env_t) == 30 and np.all(env_low <= env_high)
    assert series_view(data, "no_such_series", drawn, quantiles=True) is None
