"""report.html: self-contained, escaped, with the sections the study's files allow."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from simstudy.output.location import OutputStore
from simstudy.report import build_report, page
from simstudy.report.plots import MAX_OUTPUTS
from tests.simstudy.report.folders import write_folder

IMAGE = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def built(tmp_path: Path, **options: object) -> str:
    write_folder(OutputStore(tmp_path), **options)  # type: ignore[arg-type]
    location = build_report(OutputStore(tmp_path))
    assert location == str(tmp_path / "report.html")
    return (tmp_path / "report.html").read_text()


def test_every_plot_is_embedded_as_a_png_and_written_to_plots(tmp_path: Path) -> None:
    everything = {"ranking": True, "targets": True, "sensitivity": "sobol"}
    text = built(tmp_path, sets=5, series_points=40, **everything)
    images = IMAGE.findall(text)
    files = sorted((tmp_path / "plots").glob("*.png"))
    assert len(images) == len(files) == 10  # 2 x 2 scalar, series, 2 loss, 3 sensitivity
    assert {base64.b64decode(i) for i in images} == {f.read_bytes() for f in files}
    assert all(f.read_bytes().startswith(b"\x89PNG") for f in files)
    assert "<script" not in text and "http://" not in text and "https://" not in text
    # The answer first: the best sets, their fit, the landscape; then sensitivity; then
    # the other figures and the tables.
    headings = re.findall(r"<h2>([^<]+)</h2>", text)
    assert headings == [
        "Best parameter sets", "Fit to the data", "Loss landscape", "Sensitivity",
        "Distributions", "Ranking", "Summary", "Replicate noise", "The study",
    ]  # fmt: skip
    assert text.count("<figcaption><b>Figure ") == 10
    fit = text.split("<h2>Fit to the data</h2>")[1].split("<h2>")[0]
    assert 'id="series-incidence.png"' in fit and 'id="distribution-attack_rate.png"' in fit
    assert "95% interval [" in text.split("<h2>Fit to the data</h2>")[0]
    assert "observed values of attack_rate, incidence" in text
    assert "with the loss <code>poisson</code>" in text


def test_a_plain_study_has_no_ranking_sensitivity_or_failure_sections(tmp_path: Path) -> None:
    text = built(tmp_path, sets=3)
    for heading in ("Results", "The study", "Summary", "Distributions", "Replicate noise"):
        assert f"<h2>{heading}</h2>" in text
    for heading in ("Ranking", "Sensitivity", "Failed parameter sets", "Best parameter sets"):
        assert f"<h2>{heading}</h2>" not in text
    assert "3 parameter sets" in text and "ended <b" in text
    assert "on 2026-11-28 05:01:30 UTC, 90 s after it started" in text


def test_a_study_with_only_study_json_still_gets_a_report(tmp_path: Path) -> None:
    write_folder(OutputStore(tmp_path), sets=2, failed=2)  # nothing aggregated
    (tmp_path / "replicates.parquet").unlink()
    build_report(OutputStore(tmp_path))
    text = (tmp_path / "report.html").read_text()
    assert "<h2>Failed parameter sets</h2>" in text and "<h2>Distributions</h2>" not in text


def test_strings_from_the_study_and_model_errors_are_escaped(tmp_path: Path) -> None:
    attack = '<img src=x onerror="alert(1)">'
    text = built(
        tmp_path, sets=3, failed=1, name="<script>alert(1)</script>",
        extra_params={"contact": [attack]}, error=f"model said {attack}",
    )  # fmt: skip
    assert "<script>" not in text and attack not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "model said &lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in text
    assert "<h2>Failed parameter sets</h2>" in text


def test_a_rebuild_removes_plots_it_no_longer_draws(tmp_path: Path) -> None:
    built(tmp_path, sets=3, ranking=True)
    assert (tmp_path / "plots" / "loss-pairs.png").exists()
    (tmp_path / "ranking.parquet").unlink()
    build_report(OutputStore(tmp_path))
    assert not (tmp_path / "plots" / "loss-pairs.png").exists()
    assert (tmp_path / "plots" / "distribution-attack_rate.png").exists()


def test_an_fsspec_output_gets_its_report_at_its_url() -> None:
    store = OutputStore("memory://report-test/study")
    write_folder(store, sets=3)
    assert build_report(store) == "memory://report-test/study/report.html"
    assert b"<h2>Summary</h2>" in store.read_bytes("report.html")
    assert store.names("plots", ".png")


def test_the_replicate_noise_section_shows_the_variance_shares(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def share(aggregates: pa.Table) -> pa.Table:
        outputs = sorted(set(aggregates.column("output").to_pylist()))
        return pa.table({
            "output": outputs, "between_sets_variance": [2.0] * len(outputs),
            "within_sets_variance": [1.0] * len(outputs), "within_share": [1 / 3] * len(outputs),
        })  # fmt: skip

    monkeypatch.setattr(page, "variance_share", share)
    text = built(tmp_path, sets=3)
    section = text.split("<h2>Replicate noise</h2>")[1]
    assert "attack_rate" in section and "0.3333" in section


def test_without_the_variance_function_the_noise_section_is_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(page, "variance_share", None)
    assert "<h2>Replicate noise</h2>" not in built(tmp_path, sets=3)


def test_many_outputs_draw_the_first_by_name_and_say_which_are_left_out(tmp_path: Path) -> None:
    outputs = tuple(f"out{i:02d}" for i in range(MAX_OUTPUTS + 2))
    text = built(tmp_path, sets=2, scalars=outputs)
    drawn = sorted(p.name for p in (tmp_path / "plots").glob("distribution-*.png"))
    assert drawn == [f"distribution-{name}.png" for name in outputs[:MAX_OUTPUTS]]
    assert f"2 more scalar outputs ({outputs[-2]}, {outputs[-1]})" in text


def test_infinite_and_missing_values_still_give_a_report(tmp_path: Path) -> None:
    write_folder(OutputStore(tmp_path), sets=4, replicates=5, series_points=20, ranking=True)
    for name in ("replicates.parquet", "aggregates.parquet", "timeseries_aggregates.parquet"):
        table = pq.read_table(tmp_path / name)
        for column in ("attack_rate", "mean", "q0.5", "q0.95"):
            if column in table.column_names:
                values = table.column(column).to_numpy(zero_copy_only=False).copy()
                values[::3], values[1::3] = np.inf, np.nan
                where = table.column_names.index(column)
                table = table.set_column(where, column, pa.array(values))
        pq.write_table(table, tmp_path / name)
    build_report(OutputStore(tmp_path))
    text = (tmp_path / "report.html").read_text()
    assert text.count("<img ") == 7 and ">inf<" in text
