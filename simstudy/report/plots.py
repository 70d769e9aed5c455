"""The report's plots: one function per plot, each a PNG or None when its inputs are absent.

Figures are matplotlib `Figure` objects drawn on the Agg canvas, never through pyplot: no
display, no global figure list to leak, and the flow may draw from any thread.

Legible at 1,000 parameter sets: at most `TOP_SETS` sets are drawn individually (the best by
loss when there is a ranking, else the first in design order), the rest summarised (a grey
envelope, a count in the caption).

```python
>>> plot = series_bands(load_report_data(OutputStore("results/seir-demo")), "incidence")
>>> plot.name, plot.png[:4]
('series-incidence.png', b'\\x89PNG')
```
"""

from __future__ import annotations

import hashlib
import io
import math
import re
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np
from matplotlib import rc_context
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from simstudy.display import format_number
from simstudy.report.data import (
    MAX_REPLICATES_READ,
    ReportData,
    replicate_values,
    series_quantiles,
    series_view,
)
from simstudy.report.thinning import thin_band, thin_line
from simstudy.stats.partial import quantile_column

TOP_SETS = 20
"""Parameter sets drawn one by one in a replicate distribution plot."""
TOP_SERIES = 10
"""Parameter sets drawn one by one (median and band) in a series plot."""
BEST_SETS = 50
"""Best sets coloured by loss in the 2-D loss scatter; the others are grey dots."""
LOG_COLOURS = 20
"""Largest / smallest loss of the coloured sets beyond which their colours use a log scale."""
MAX_OUTPUTS = 12
"""Outputs drawn per kind of plot (by name); the summary table and the files have them all."""
MAX_PANELS = 12
"""Parameters (or pairs) drawn per figure; a design with more is cut, and the caption says so."""
POINTS_SHOWN = 200
"""Replicates per set drawn as dots over a box; above it the box alone."""
DPI = 100
STYLE: dict[Any, Any] = {
    "text.parse_math": False,  # names come from the study file: "$x$" stays text
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
LOSS = "loss"
"""The loss's name where outputs are listed (sensitivity.parquet)."""
LOWER, MEDIAN, UPPER = quantile_column(0.05), quantile_column(0.5), quantile_column(0.95)


@dataclass(frozen=True)
class Plot:
    """One drawn figure: file name under plots/, title, caption and the PNG bytes."""

    name: str
    title: str
    caption: str
    png: bytes


def file_name(kind: str, subject: str = "") -> str:
    """Return a safe PNG name for a plot of a subject (an output name, untrusted)."""
    if not subject:
        return f"{kind}.png"
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", subject)[:60]
    if safe != subject:  # keep distinct names distinct once their odd characters are gone
        safe += "-" + hashlib.blake2b(subject.encode(), digest_size=4).hexdigest()
    return f"{kind}-{safe}.png"


def replicate_distribution(
    data: ReportData, output: str, values: dict[str, np.ndarray] | None = None
) -> Plot | None:
    """Draw the replicates of a scalar output per parameter set (box, and dots when few).

    `values` (param_id -> replicates) are read from replicates.parquet when not given.
    """
    chosen = data.order[:TOP_SETS]
    if values is None:
        values = replicate_values(data, [output], chosen).get(output, {})
    shown = [pid for pid in chosen if pid in values]
    if not shown:
        return None
    figure, axes = _figure(height=max(2.5, 0.32 * len(shown) + 1.2))
    ax = axes[0]
    positions = np.arange(len(shown))[::-1]  # the best (or first) set on top
    ax.boxplot(
        [values[pid] for pid in shown],
        positions=positions,
        orientation="horizontal",
        widths=0.6,
        showfliers=False,
        medianprops={"color": "black"},
    )
    rng = np.random.default_rng(0)  # the same jitter every time the report is rebuilt
    for position, pid in zip(positions, shown, strict=True):
        points = values[pid]
        if len(points) <= POINTS_SHOWN:
            jitter = position + rng.uniform(-0.18, 0.18, len(points))
            ax.plot(points, jitter, ".", color="tab:blue", alpha=0.5, markersize=3)
    ax.set_yticks(positions, [_set_label(data, pid) for pid in shown])
    ax.set_xlabel(output)
    observed = _scalar_target(data, output)
    if observed is not None:
        ax.axvline(observed, color="tab:red", linestyle="--", label="observed")
        ax.legend(loc="best")
    rest = len(data.order) - len(shown)
    which = "the best by loss" if data.ordered_by_loss else "the first in design order"
    caption = (
        f"Replicates of {output} per parameter set ({which}, top to bottom): the box spans "
        "the quartiles with the median, whiskers reach 1.5 interquartile ranges; dots are "
        f"the replicates when a set has at most {POINTS_SHOWN}."
    )
    if any(len(values[pid]) >= MAX_REPLICATES_READ for pid in shown):
        caption += f" Sets with more replicates are drawn from their first {MAX_REPLICATES_READ:,}."
    if rest > 0:
        caption += f" {rest} more parameter sets are not drawn (all are in replicates.parquet)."
    return Plot(file_name("distribution", output), f"Replicates of {output}", caption, _png(figure))


def output_vs_parameters(data: ReportData, output: str) -> Plot | None:
    """Draw a scalar output's mean and band against each varied parameter."""
    if data.aggregates is None or not data.varied:
        return None
    rows = [r for r in data.aggregates.to_pylist() if r.get("output") == output]
    rows = [r for r in rows if r.get("mean") is not None]
    if not rows:
        return None
    quantiles = all(r.get(LOWER) is not None and r.get(UPPER) is not None for r in rows)
    mean = np.array([r["mean"] for r in rows], float)
    if quantiles:
        lower = np.array([r[LOWER] for r in rows], float)
        upper = np.array([r[UPPER] for r in rows], float)
    else:
        spread = 2 * np.array([r.get("std") or 0.0 for r in rows], float)
        lower, upper = mean - spread, mean + spread
    names = data.varied[:MAX_PANELS]
    figure, axes = _figure(panels=len(names))
    observed = _scalar_target(data, output)
    alpha = 0.8 if len(rows) <= 50 else 0.25
    for ax, name in zip(axes, names, strict=False):
        x, ticks = _positions([data.params.get(r["param_id"], {}).get(name) for r in rows])
        ax.vlines(x, lower, upper, color="tab:blue", alpha=alpha * 0.6, linewidth=1.5)
        ax.plot(x, mean, "o", color="tab:blue", alpha=alpha, markersize=3)
        if ticks:
            ax.set_xticks(range(len(ticks)), ticks, rotation=30)
        if observed is not None:
            ax.axhline(observed, color="tab:red", linestyle="--", linewidth=1)
        ax.set_xlabel(name)
        ax.set_ylabel(output)
    band = "5-95% of replicates (quantiles 0.05 and 0.95)" if quantiles else "mean ± 2 std"
    caption = (
        f"Mean of {output} per parameter set (dots) against each varied parameter, with "
        f"{band} as vertical lines"
        + ("; the dashed line is the observed value." if observed is not None else ".")
        + _cut(len(data.varied), "parameters")
    )
    return Plot(file_name("by-parameter", output), f"{output} by parameter", caption, _png(figure))


def series_bands(data: ReportData, output: str) -> Plot | None:
    """Draw a series output's median and 5-95% band per set, the rest as a grey envelope."""
    quantiles = series_quantiles(data)
    failed = data.study.get("failed_parameter_sets") or {}
    candidates = [pid for pid in data.order if pid not in failed][:TOP_SERIES]
    view = series_view(data, output, candidates, quantiles)
    if view is None:
        return None
    figure, axes = _figure(height=4.0)
    ax = axes[0]
    if view.envelope is not None:
        ax.fill_between(*thin_band(*view.envelope), color="0.85", linewidth=0,
                        label="other sets")  # fmt: skip
    drawn = [pid for pid in candidates if pid in view.drawn]
    for color, pid in zip(_colors(len(drawn)), drawn, strict=True):
        # A quantile can be missing (no ok replicate at a time point): the band has a gap.
        t, centre, low, high = view.drawn[pid]
        ax.fill_between(*thin_band(t, low, high), color=color, alpha=0.15, linewidth=0)
        ax.plot(*thin_line(t, centre), color=color, linewidth=1.2, label=_set_label(data, pid))
    observed = _series_target(data, output)
    if observed is not None:
        ax.plot(*thin_line(*observed), "o", color="black", markersize=2.5, label="observed")
    ax.set_xlabel("t")
    ax.set_ylabel(output)
    if len(drawn) + (observed is not None) <= 12:
        ax.legend(loc="best", fontsize=7, ncols=2)
    which = "the best by loss" if data.ordered_by_loss else "the first in design order"
    centre_band = (
        "median and 5-95% band of the replicates (quantiles 0.05, 0.5, 0.95)"
        if quantiles
        else "mean and mean ± 2 std of the replicates (add 0.05, 0.5 and 0.95 to "
        "aggregate.quantiles for the median and the 5-95% band)"
    )
    caption = f"{output} over time: the {centre_band} of {len(drawn)} parameter sets ({which})"
    if view.others:
        caption += f"; the grey envelope spans the centre lines of the other {view.others} sets"
    caption += "; black dots are the observed data." if observed is not None else "."
    return Plot(file_name("series", output), f"{output} over time", caption, _png(figure))


def loss_profiles(data: ReportData) -> Plot | None:
    """Draw the loss of every ranked set against each varied parameter (1-D profiles)."""
    losses = data.loss()
    if not losses or not data.varied:
        return None
    ids = list(losses)
    loss = np.array([losses[pid] for pid in ids])
    best = min(ids, key=losses.__getitem__)
    names = data.varied[:MAX_PANELS]
    figure, axes = _figure(panels=len(names))
    for ax, name in zip(axes, names, strict=False):
        x, ticks = _positions([data.params.get(pid, {}).get(name) for pid in ids])
        ax.plot(x, loss, "o", color="tab:blue", alpha=0.5 if len(ids) > 50 else 0.9, markersize=3)
        ax.plot(x[ids.index(best)], losses[best], "*", color="tab:red", markersize=11)
        if ticks:
            ax.set_xticks(range(len(ticks)), ticks, rotation=30)
        if _log_scale(loss):
            ax.set_yscale("log")
            plain_ticks(ax.yaxis)
        ax.set_xlabel(name)
        ax.set_ylabel("loss")
    caption = (
        f"Loss of each of the {len(ids)} parameter sets with a finite loss against each "
        "varied parameter (the other parameters vary too); the red star is the best set."
        + _cut(len(data.varied), "parameters")
    )
    return Plot(file_name("loss-profiles"), "Loss profiles", caption, _png(figure))


def loss_pairs(data: ReportData) -> Plot | None:
    """Draw each pair of numeric varied parameters, the best sets coloured by loss."""
    losses = data.loss()
    numeric = [n for n in data.varied if all(_is_number(p.get(n)) for p in data.params.values())]
    pairs = list(combinations(numeric, 2))
    if not losses or not pairs:
        return None
    ids = sorted(losses, key=losses.__getitem__)
    best, others = ids[:BEST_SETS], ids[BEST_SETS:]
    shown = pairs[:MAX_PANELS]
    figure, axes = _figure(panels=len(shown))
    loss = np.array([losses[pid] for pid in best])
    norm = loss_norm(loss)
    logarithmic = norm is not None
    scatter = None
    for ax, (a, b) in zip(axes, shown, strict=False):
        if others:
            ax.plot(*_xy(data, others, a, b), ".", color="0.8", markersize=3)
        x, y = _xy(data, best, a, b)
        scatter = ax.scatter(
            x[::-1], y[::-1], c=loss[::-1], cmap="viridis_r", s=14, norm=norm,
        )  # fmt: skip
        ax.plot(x[0], y[0], "*", color="tab:red", markersize=11)
        ax.set_xlabel(a)
        ax.set_ylabel(b)
    loss_colorbar(figure, axes, scatter, norm)
    caption = (
        f"The {len(best)} best parameter sets for each pair of varied parameters, coloured by "
        "loss (yellow is best"
        + (", log scale" if logarithmic else "")
        + "); the red star is the best set"
        + (f"; grey dots are the other {len(others)} sets." if others else ".")
        + _cut(len(pairs), "pairs")
    )
    return Plot(file_name("loss-pairs"), "Loss landscape", caption, _png(figure))


def sensitivity_bars(data: ReportData, output: str) -> Plot | None:
    """Draw the sensitivity indices of one output: S1 and ST, or mu* and sigma, with conf."""
    if data.sensitivity is None:
        return None
    rows = [r for r in data.sensitivity.to_pylist() if r.get("output") == output]
    rows = [r for r in rows if r.get("parameter_2") is None and r.get("value") is not None]
    method = next((r["method"] for r in rows), None)
    indices = ("S1", "ST") if method == "sobol" else ("mu_star", "sigma")
    rows = [r for r in rows if r.get("index") in indices]
    if not rows:
        return None
    parameters = list(dict.fromkeys(r["parameter"] for r in rows))
    figure, axes = _figure(height=max(2.5, 0.35 * len(parameters) * len(indices) + 1.0))
    ax = axes[0]
    width = 0.8 / len(indices)
    y = np.arange(len(parameters))[::-1]
    for k, (index, color) in enumerate(zip(indices, ("tab:blue", "tab:orange"), strict=True)):
        found = {r["parameter"]: r for r in rows if r["index"] == index}
        value = [found[p]["value"] if p in found else np.nan for p in parameters]
        conf = [(found[p].get("conf") if p in found else None) for p in parameters]
        error = [c if c is not None and math.isfinite(c) else 0.0 for c in conf]
        ax.barh(y + (0.4 - width / 2 - k * width), value, height=width, xerr=error, color=color,
                label=index, capsize=2)  # fmt: skip
    ax.set_yticks(y, parameters)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.legend(loc="best")
    ax.set_xlabel(f"{'Sobol index' if method == 'sobol' else 'elementary effect'} of {output}")
    what = (
        "first-order (S1) and total (ST) Sobol indices"
        if method == "sobol"
        else "Morris elementary effects: mean absolute effect (mu_star) and spread (sigma)"
    )
    caption = (
        f"Sensitivity of {output} (the per-set means) to each parameter: {what}; "
        "error bars are SALib's 95% confidence intervals where it gives one."
    )
    return Plot(file_name("sensitivity", output), f"Sensitivity of {output}", caption, _png(figure))


def all_plots(data: ReportData) -> list[Plot]:
    """Draw every plot whose inputs exist, in the order the report shows them."""
    plots: list[Plot | None] = []
    scalars = data.scalar_outputs[:MAX_OUTPUTS]
    values = replicate_values(data, scalars, data.order[:TOP_SETS])  # one read for all
    plots += [replicate_distribution(data, name, values.get(name, {})) for name in scalars]
    plots += [output_vs_parameters(data, name) for name in scalars]
    plots += [series_bands(data, name) for name in data.series_outputs[:MAX_OUTPUTS]]
    plots += [loss_profiles(data), loss_pairs(data)]
    return [plot for plot in plots if plot is not None]


def sensitivity_plots(data: ReportData) -> list[Plot]:
    """Draw the sensitivity bars of every output with indices (the loss included)."""
    if data.sensitivity is None:
        return []
    outputs = list(dict.fromkeys(data.sensitivity.column("output").to_pylist()))
    loss = [name for name in outputs if name == LOSS]  # the loss first: it answers the question
    chosen = loss + [name for name in outputs if name != LOSS][:MAX_OUTPUTS]
    plots = [sensitivity_bars(data, name) for name in chosen]
    return [plot for plot in plots if plot is not None]


def _figure(panels: int = 1, height: float = 3.2) -> tuple[Figure, list[Axes]]:
    columns = min(panels, 3)
    rows = math.ceil(panels / columns)
    with rc_context(STYLE):
        figure = Figure(figsize=(8.0, height * rows if panels > 1 else height), dpi=DPI,
                        layout="constrained")  # fmt: skip
        FigureCanvasAgg(figure)
        grid = figure.subplots(rows, columns, squeeze=False)
    axes = [ax for row in grid for ax in row]
    for ax in axes[panels:]:
        ax.set_visible(False)
    return figure, axes[:panels]


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    with rc_context(STYLE):
        figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _set_label(data: ReportData, pid: str) -> str:
    params = data.params.get(pid, {})
    shown = ", ".join(f"{n}={format_number(params.get(n))}" for n in data.varied[:3])
    label = data.label(pid) + (f" {shown}" if shown else "")
    return label if len(label) <= 48 else label[:47] + "…"


def _scalar_target(data: ReportData, output: str) -> float | None:
    """Return the observed value of a scalar target, or None."""
    if data.targets is None:
        return None
    for row in data.targets.to_pylist():
        if row.get("output") == output and row.get("t") is None and row.get("value") is not None:
            return float(row["value"])
    return None


def _series_target(data: ReportData, output: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Return the observed points (t, value) of a series target, or None."""
    if data.targets is None:
        return None
    rows = [
        r
        for r in data.targets.to_pylist()
        if r.get("output") == output and r.get("t") is not None and r.get("value") is not None
    ]
    if not rows:
        return None
    return np.array([r["t"] for r in rows], float), np.array([r["value"] for r in rows], float)


def _colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def _positions(values: list[Any]) -> tuple[np.ndarray, list[str]]:
    """Return x positions of parameter values: the numbers, or category indices with ticks."""
    if all(_is_number(v) for v in values):
        return np.array(values, float), []
    categories = sorted({str(v) for v in values})
    return np.array([categories.index(str(v)) for v in values], float), categories


def _xy(data: ReportData, ids: list[str], a: str, b: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.array([data.params[pid][a] for pid in ids], float)
    y = np.array([data.params[pid][b] for pid in ids], float)
    return x, y


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def loss_norm(loss: np.ndarray) -> LogNorm | None:
    """Return a log colour scale for losses spanning more than `LOG_COLOURS` times, else None."""
    # Losses far from the data dwarf the rest: a log scale shows the valley among the best.
    return LogNorm() if loss.min() > 0 and loss.max() > LOG_COLOURS * loss.min() else None


def loss_colorbar(figure: Any, axes: Any, scatter: Any, norm: LogNorm | None) -> None:
    """Add the colour bar of a loss scatter (`norm` from `loss_norm`), ticks plain numbers."""
    if scatter is None:
        return
    label = "loss (log scale)" if norm is not None else "loss"
    bar = figure.colorbar(scatter, ax=axes, label=label, shrink=0.8)
    plain_ticks(bar.ax.yaxis)


def plain_ticks(axis: Any) -> None:
    """Write an axis's ticks as plain numbers (math text is off: names are the user's)."""
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


def _log_scale(values: np.ndarray) -> bool:
    """Return True when positive values span more than two orders of magnitude."""
    return bool(len(values) and values.min() > 0 and values.max() / values.min() > 100)


def _cut(total: int, what: str) -> str:
    if total <= MAX_PANELS:
        return ""
    return f" The first {MAX_PANELS} of {total} {what} are drawn."
