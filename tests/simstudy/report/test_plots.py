"""Each plot: a real PNG when its inputs exist, None when they do not, legible at scale."""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
import pytest
from matplotlib.figure import Figure
from matplotlib.image import imread

from simstudy.output.location import OutputStore
from simstudy.output.results import RANKING_FILE, read_table, write_table
from simstudy.report import plots
from simstudy.report.data import ReportData, load_report_data
from tests.simstudy.report.folders import SERIES, write_folder


def folder(tmp_path: Path, **options: object) -> ReportData:
    write_folder(OutputStore(tmp_path), **options)  # type: ignore[arg-type]
    return load_report_data(OutputStore(tmp_path))


def assert_drawn(plot: plots.Plot | None) -> plots.Plot:
    """Assert the plot is a PNG that decodes to a picture with something drawn on it."""
    assert plot is not None
    assert plot.png.startswith(b"\x89PNG\r\n\x1a\n")
    pixels = imread(io.BytesIO(plot.png), format="png")
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100
    drawn = (pixels[..., :3] < 0.9).any(axis=-1).mean()  # share of pixels that are not white
    assert drawn > 0.01
    return plot


def test_every_plot_is_drawn_when_its_inputs_exist(tmp_path: Path) -> None:
    data = folder(tmp_path, sets=6, series_points=50, ranking=True, targets=True)
    assert_drawn(plots.replicate_distribution(data, "attack_rate"))
    assert_drawn(plots.output_vs_parameters(data, "attack_rate"))
    assert_drawn(plots.series_bands(data, SERIES))
    assert_drawn(plots.loss_profiles(data))
    assert_drawn(plots.loss_pairs(data))
    names = [p.name for p in plots.all_plots(data)]
    assert names == [
        "distribution-attack_rate.png", "distribution-peak_day.png",
        "by-parameter-attack_rate.png", "by-parameter-peak_day.png",
        "series-incidence.png", "loss-profiles.png", "loss-pairs.png",
    ]  # fmt: skip


def test_plots_without_their_inputs_are_skipped(tmp_path: Path) -> None:
    data = folder(tmp_path, sets=3)  # no ranking, targets, sensitivity or series
    assert plots.series_bands(data, SERIES) is None
    assert plots.loss_profiles(data) is None
    assert plots.loss_pairs(data) is None
    assert plots.sensitivity_bars(data, "attack_rate") is None
    assert plots.sensitivity_plots(data) == []
    assert plots.replicate_distribution(data, "no_such_output") is None
    assert plots.output_vs_parameters(data, "no_such_output") is None


@pytest.mark.parametrize("method", ["sobol", "morris"])
def test_sensitivity_bars_per_output_and_for_the_loss(tmp_path: Path, method: str) -> None:
    data = folder(tmp_path, sets=4, sensitivity=method)
    drawn = plots.sensitivity_plots(data)
    assert [p.name for p in drawn] == [  # the loss first
        "sensitivity-loss.png",
        "sensitivity-attack_rate.png",
        "sensitivity-peak_day.png",
    ]
    for plot in drawn:
        assert_drawn(plot)
    assert ("S1" in drawn[0].caption) == (method == "sobol")
    assert ("mu_star" in drawn[0].caption) == (method == "morris")


def test_captions_say_which_band_is_drawn(tmp_path: Path) -> None:
    with_quantiles = folder(tmp_path / "q", sets=3, series_points=20)
    without = folder(tmp_path / "std", sets=3, series_points=20, quantiles=False)
    quantile_series = assert_drawn(plots.series_bands(with_quantiles, SERIES))
    assert "median and 5-95% band" in quantile_series.caption
    assert "mean ± 2 std" in assert_drawn(plots.series_bands(without, SERIES)).caption
    assert (
        "5-95% of replicates"
        in assert_drawn(plots.output_vs_parameters(with_quantiles, "peak_day")).caption
    )
    assert "mean ± 2 std" in assert_drawn(plots.output_vs_parameters(without, "peak_day")).caption


@pytest.mark.timeout(120)
def test_a_thousand_sets_draw_the_top_n_and_count_the_rest(tmp_path: Path) -> None:
    data = folder(tmp_path, sets=1000, replicates=4, series_points=100, ranking=True)
    distribution = assert_drawn(plots.replicate_distribution(data, "attack_rate"))
    assert "the best by loss" in distribution.caption
    assert f"{1000 - plots.TOP_SETS} more parameter sets are not drawn" in distribution.caption
    series = assert_drawn(plots.series_bands(data, SERIES))
    assert f"of {plots.TOP_SERIES} parameter sets (the best by loss)" in series.caption
    assert f"other {1000 - plots.TOP_SERIES} sets" in series.caption
    pairs = assert_drawn(plots.loss_pairs(data))
    assert f"The {plots.BEST_SETS} best parameter sets" in pairs.caption


def test_untrusted_names_are_drawn_as_text_and_filed_safely(tmp_path: Path) -> None:
    # "$...$" would be parsed as mathtext (and "$\\frac{" fails to parse) if not disabled.
    odd = ("$\\frac{x$", "../../etc/passwd")
    data = folder(tmp_path, sets=3, scalars=odd, extra_params={"contact": ["home", "<b>"]})
    for output in odd:
        plot = assert_drawn(plots.replicate_distribution(data, output))
        assert "/" not in plot.name and ".." not in plot.name.removesuffix(".png")
        assert_drawn(plots.output_vs_parameters(data, output))  # "contact" is categorical
    assert plots.file_name("x", odd[0]) != plots.file_name("x", "__frac_x_")


def test_no_tick_label_is_raw_math_text_on_any_axis_even_logarithmic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = OutputStore(tmp_path)
    write_folder(store, sets=6, series_points=50, ranking=True, targets=True, sensitivity="sobol")
    # Losses over five orders of magnitude: the loss axes and colours are logarithmic.
    ranking = read_table(store, RANKING_FILE)
    spread = pa.array([10.0**rank for rank in ranking.column("rank").to_pylist()])
    write_table(store, RANKING_FILE, ranking.set_column(4, "loss", spread))
    drawn: list[Figure] = []
    real_png = plots._png
    monkeypatch.setattr(plots, "_png", lambda figure: drawn.append(figure) or real_png(figure))
    data = load_report_data(store)
    assert plots.all_plots(data) and plots.sensitivity_plots(data)
    labels = [
        label.get_text()
        for figure in drawn
        for ax in figure.axes
        for label in ax.get_xticklabels() + ax.get_yticklabels()
    ]
    assert any(ax.get_yscale() == "log" for figure in drawn for ax in figure.axes)
    assert labels and not [text for text in labels if "$" in text or "mathdefault" in text]
