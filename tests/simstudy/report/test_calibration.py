"""The calibration report: built from trials.parquet and calibration.json alone."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from simstudy.calibrate.folder import CALIBRATION_FILE, TRIALS_FILE
from simstudy.calibrate.trials import TrialRecord, trials_table
from simstudy.errors import OutputDirError
from simstudy.output.location import OutputStore
from simstudy.output.results import write_json, write_table
from simstudy.report.calibration import build_calibration_report


def calibration_folder(folder: Path, name: str = "calib") -> OutputStore:
    store = OutputStore(str(folder))
    records = [
        TrialRecord(trial=n, ask=1 + n // 4, param_id=f"{n:064x}",
                    state="failed" if n == 5 else "complete",
                    loss=None if n == 5 else (n - 6) ** 2 + 100.0 * (n % 3) + 1.0,
                    loss_se=None if n == 5 else 0.5, replicates=4,
                    allocation="<img src=x onerror=alert(1)>" if n == 5 else "resolved",
                    params={"beta": 0.1 + 0.05 * n, "gamma": 0.3 - 0.02 * n})
        for n in range(12)
    ]  # fmt: skip
    write_table(store, TRIALS_FILE, trials_table(records, ["beta", "gamma"]))
    best = min((r for r in records if r.loss is not None), key=lambda r: r.loss or 0.0)
    write_json(store, CALIBRATION_FILE, {
        "name": name, "status": "completed", "trials": 12, "failed": 1, "simulations": 48,
        "saved": 336, "best": best.model_dump(mode="json"),
        "importances": {"beta": 0.8, "gamma": 0.2},
        "study": {"calibrate": {"parallel": 4, "sampler": "tpe", "replicates": {"min": 4}}},
    })  # fmt: skip
    return store


def test_the_report_shows_the_search_the_best_trials_and_the_failures_escaped(
    tmp_path: Path,
) -> None:
    store = calibration_folder(tmp_path, name="<script>alert(1)</script>")
    path = build_calibration_report(store)
    assert path == str(tmp_path / "report.html")
    page = (tmp_path / "report.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 4  # progress, parameters, pairs, importances
    for name in ("progress", "parameters", "pairs", "importances"):
        drawn = (tmp_path / "plots" / f"calibration-{name}.png").read_bytes()
        assert base64.b64encode(drawn).decode() in images
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "<img src=x" not in page and "Failed trials" in page
    assert "Best trial 6 (ask 2, 4 replicates): loss 1 +- 0.5" in page
    assert 'href="simulations/report.html"' in page


def test_a_folder_without_trials_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(OutputDirError, match="holds no finished calibration"):
        build_calibration_report(OutputStore(str(tmp_path)))


def test_the_best_trials_fit_to_the_data_comes_first(tmp_path: Path) -> None:
    store = calibration_folder(tmp_path)
    fit = (tmp_path / "plots").parent / "simulations" / "plots"
    fit.mkdir(parents=True)
    picture = base64.b64decode(
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg=="
    )
    (fit / "series-incidence.png").write_bytes(picture)
    (fit / "distribution-attack_rate.png").write_bytes(picture)  # not a fit over time
    build_calibration_report(store)
    page = (tmp_path / "report.html").read_text()
    figures = re.findall(r'<figure id="([^"]+)"', page)
    assert figures[0] == "best-trials-series-incidence.png" and len(figures) == 5
    assert page.index("<h2>Figures</h2>") < page.index("<h2>Best trials</h2>")
