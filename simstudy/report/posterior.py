"""The report of an ABC-SMC posterior: the answer first, then how the generations got there.

```python
>>> build_posterior_report(OutputStore("results/seir-posterior"))
'results/seir-posterior/report.html'
```

From posterior.parquet and posterior.json: the final population's intervals, its marginal
densities (weighted) over the prior's range, its pairs (a ridge of parameters the data do
not separate shows as a line of particles), each parameter's 95 % interval shrinking over
the generations, epsilon and acceptance per generation, and where proposals failed.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np
import pyarrow as pa

from simstudy.calibrate.abc_smc import weighted_quantiles
from simstudy.calibrate.folder import CALIBRATION_FILE, read_calibration_document
from simstudy.calibrate.posterior import (
    FAILURES_TABLE,
    POSTERIOR_FILE,
    POSTERIOR_TABLE,
    read_posterior_document,
    weighted_correlations,
)
from simstudy.calibrate.predictive import PREDICTIVE_TABLE
from simstudy.display import format_number
from simstudy.errors import OutputDirError
from simstudy.output.location import OutputStore
from simstudy.output.reading import read_result_table
from simstudy.output.results import PLOTS_DIR, REPORT_FILE, write_text
from simstudy.report import report_location, report_writes
from simstudy.report.page import _e, _Figures, _table, html_document
from simstudy.report.plots import MAX_PANELS, Plot, _figure, _png

POSTERIOR_COLUMNS = ("generation", "epsilon", "param_id", "weight", "distance")
"""The columns of posterior.parquet beside the parameters."""
BINS = 30
"""Bins of a marginal density."""


def build_posterior_report(store: OutputStore) -> str:
    """Write plots/*.png and report.html of a posterior; return the report's path."""
    if not store.exists(CALIBRATION_FILE) or not store.exists(POSTERIOR_FILE):
        raise OutputDirError(f"{store} holds no posterior (no {POSTERIOR_FILE})")
    document = read_calibration_document(store)
    posterior = read_posterior_document(store)
    table = read_result_table(store, POSTERIOR_TABLE, {"generation": "integer",
                                                       "weight": "number"})  # fmt: skip
    names = [n for n in table.column_names if n not in POSTERIOR_COLUMNS]
    final = _final_population(table)
    failures = read_result_table(store, FAILURES_TABLE) if store.exists(FAILURES_TABLE) else None
    predictive = (
        read_result_table(store, PREDICTIVE_TABLE) if store.exists(PREDICTIVE_TABLE) else None
    )
    plots = [
        plot
        for plot in (
            marginals(final, names, posterior.get("priors") or {}),
            pairs(final, names),
            predictive_bands(predictive, posterior.get("predictive") or {}),
            intervals_by_generation(table, names),
            generations_progress(posterior["generations"]),
            failures_by_parameter(failures, names),
        )
        if plot is not None
    ]
    page = posterior_page(document, posterior, plots)
    with report_writes(store):
        for plot in plots:
            store.write_bytes(f"{PLOTS_DIR}/{plot.name}", plot.png)
        write_text(store, REPORT_FILE, page)
    return report_location(store)


def _final_population(table: pa.Table) -> dict[str, np.ndarray]:
    """Return the last generation's columns as arrays (empty arrays when there is none)."""
    generations = table.column("generation").to_numpy()
    last = generations.max() if len(generations) else -1
    rows = np.flatnonzero(generations == last)
    return {
        name: np.asarray(table.column(name).to_numpy(zero_copy_only=False))[rows]
        for name in table.column_names
    }


def marginals(
    final: dict[str, np.ndarray], names: list[str], priors: dict[str, Any]
) -> Plot | None:
    """Draw each parameter's weighted marginal density in the final population."""
    if not len(final.get("weight", ())) or not names:
        return None
    shown = names[:MAX_PANELS]
    figure, axes = _figure(panels=len(shown))
    weights = final["weight"]
    for ax, name in zip(axes, shown, strict=False):
        values = final[name]
        ax.hist(values, bins=BINS, weights=weights, density=True, color="tab:blue", alpha=0.7)
        mean = float(np.sum(weights * values))
        ax.axvline(mean, color="tab:red", linewidth=1.2)
        prior = priors.get(name) or {}
        if prior.get("low") is not None and prior.get("high") is not None:
            ax.set_xlim(prior["low"], prior["high"])  # the posterior against the prior's range
            if prior.get("log"):
                ax.set_xscale("log")
        ax.set_xlabel(name)
        ax.set_ylabel("density")
    caption = (
        "The final population's marginal density of each parameter (weighted histogram; the "
        "red line is the posterior mean), over the prior's range where the prior has bounds."
    )
    return Plot("posterior-marginals.png", "Posterior marginals", caption, _png(figure))


def pairs(final: dict[str, np.ndarray], names: list[str]) -> Plot | None:
    """Draw the final population in each pair of parameters, sized by weight."""
    combos = list(combinations(names, 2))[:MAX_PANELS]
    if not combos or not len(final.get("weight", ())):
        return None
    figure, axes = _figure(panels=len(combos))
    weights = final["weight"]
    sizes = 4 + 60 * weights / max(float(weights.max()), 1e-300)
    for ax, (a, b) in zip(axes, combos, strict=False):
        ax.scatter(final[a], final[b], s=sizes, alpha=0.5, color="tab:blue", linewidths=0)
        ax.set_xlabel(a)
        ax.set_ylabel(b)
    found = weighted_correlations({name: final[name] for name in names}, weights)
    correlations = ", ".join(f"{a}/{b} {found[f'{a}/{b}']:+.2f}" for a, b in combos)
    caption = (
        "The final population in each pair of parameters (marker size: weight). Parameters the "
        "data do not separate (beta and gamma of an epidemic, along R0) lie along a ridge. "
        f"Weighted correlations: {correlations}."
    )
    return Plot("posterior-pairs.png", "Posterior pairs", caption, _png(figure))


def predictive_bands(table: pa.Table | None, summary: dict[str, Any]) -> Plot | None:
    """Draw each target output's posterior predictive band with the observed values."""
    if table is None or table.num_rows == 0:
        return None
    columns = table.to_pydict()
    outputs = list(dict.fromkeys(columns["output"]))[:MAX_PANELS]
    figure, axes = _figure(panels=len(outputs))
    for ax, output in zip(axes, outputs, strict=False):
        rows = [i for i, name in enumerate(columns["output"]) if name == output]
        series = columns["t"][rows[0]] is not None
        x = np.array([columns["t"][i] if series else position for position, i in enumerate(rows)])

        def band(column: str, rows: list[int] = rows) -> np.ndarray:
            return np.array([columns[column][i] for i in rows], dtype=float)

        if series:
            ax.fill_between(x, band("q2_5"), band("q97_5"), color="tab:blue", alpha=0.2,
                            label="95 %")  # fmt: skip
            ax.fill_between(x, band("q25"), band("q75"), color="tab:blue", alpha=0.35,
                            label="50 %")  # fmt: skip
            ax.plot(x, band("q50"), color="tab:blue", linewidth=1.2, label="median")
            ax.set_xlabel("t")
        else:
            median = band("q50")
            ax.errorbar(x, median, yerr=[median - band("q2_5"), band("q97_5") - median],
                        fmt="o", color="tab:blue", capsize=4, label="median, 95 %")  # fmt: skip
            ax.set_xticks(x)
            ax.set_xlim(x.min() - 1, x.max() + 1)
        ax.plot(x, band("observed"), "o" if series else "D", color="black", markersize=3,
                label="observed")  # fmt: skip
        ax.set_title(output)
        ax.legend(fontsize="small")
    inside = ", ".join(
        f"{name} {100 * figures['inside_95']:.0f} % of {figures['points']}"
        for name, figures in (summary.get("outputs") or {}).items()
    )
    caption = (
        "Posterior predictive bands: each final particle simulated again with fresh replicates "
        f"({summary.get('draws', '?')} draws, weighted as their particles), their 95 % and "
        "50 % bands and median, against the observed targets. Observed values inside the "
        f"95 % band: {inside or 'none'}. A model that fits sees about 95 %; far fewer "
        "means the model (or the epsilon reached) cannot reproduce the data."
    )
    return Plot("posterior-predictive.png", "Posterior predictive", caption, _png(figure))


def intervals_by_generation(table: pa.Table, names: list[str]) -> Plot | None:
    """Draw each parameter's weighted 95 % interval and mean over the generations."""
    generations = table.column("generation").to_numpy()
    if not len(generations) or not names:
        return None
    shown = names[:MAX_PANELS]
    figure, axes = _figure(panels=len(shown))
    numbers = np.unique(generations)
    weights = table.column("weight").to_numpy()
    for ax, name in zip(axes, shown, strict=False):
        values = table.column(name).to_numpy()
        rows = [generations == g for g in numbers]
        quantiles = np.array(
            [weighted_quantiles(values[r], weights[r], [0.025, 0.5, 0.975]) for r in rows]
        )
        low, mid, high = quantiles.T
        ax.fill_between(numbers, low, high, color="tab:blue", alpha=0.25, label="95% interval")
        ax.plot(numbers, mid, color="tab:blue", marker="o", markersize=3, label="median")
        ax.set_xlabel("generation")
        ax.set_ylabel(name)
    axes[0].legend(loc="best")
    caption = "Each parameter's weighted median and 95% interval per generation: they shrink "
    caption += "as epsilon falls, and settle once the data say no more."
    return Plot("posterior-generations.png", "Generations", caption, _png(figure))


def generations_progress(generations: list[dict[str, Any]]) -> Plot | None:
    """Draw epsilon and the acceptance rate of each generation."""
    if not generations:
        return None
    figure, (left, right) = _figure(panels=2)
    numbers = [g["generation"] for g in generations]
    epsilons = [g["epsilon"] for g in generations]
    points = [(n, e) for n, e in zip(numbers, epsilons, strict=True) if e is not None]
    if points:
        left.plot(*zip(*points, strict=True), marker="o", color="tab:red")
        if all(e > 0 for _, e in points) and max(e for _, e in points) > 10 * min(
            e for _, e in points
        ):
            left.set_yscale("log")
    left.set_xlabel("generation")
    left.set_ylabel("epsilon")
    right.plot(numbers, [g["acceptance_rate"] for g in generations], marker="o")
    right.set_xlabel("generation")
    right.set_ylabel("acceptance rate")
    caption = (
        "Epsilon (the distance a particle had to beat; generation 0 is the prior, unfiltered) "
        "and the acceptance rate of each generation: simulations per particle grow as 1 / rate."
    )
    return Plot("posterior-epsilon.png", "Epsilon and acceptance", caption, _png(figure))


def failures_by_parameter(failures: pa.Table | None, names: list[str]) -> Plot | None:
    """Draw where proposals failed (no distance), by parameter: failures are not random."""
    if failures is None or failures.num_rows == 0:
        return None
    shown = [n for n in names if n in failures.column_names][:MAX_PANELS]
    if not shown:
        return None
    figure, axes = _figure(panels=len(shown))
    for ax, name in zip(axes, shown, strict=False):
        ax.hist(failures.column(name).to_numpy(zero_copy_only=False), bins=BINS,
                color="tab:orange")  # fmt: skip
        ax.set_xlabel(name)
        ax.set_ylabel("failed proposals")
    caption = (
        f"Where the {failures.num_rows} proposals rejected without a distance (a failed, "
        "timed-out or NaN simulation) lay. The posterior is conditioned on success: where "
        "failures cluster, it is biased away from that region."
    )
    return Plot("posterior-failures.png", "Failed proposals", caption, _png(figure))


def posterior_page(document: dict[str, Any], posterior: dict[str, Any], plots: list[Plot]) -> str:
    """Return the posterior report's HTML: the intervals, figures, then the generations."""
    name = _e(document.get("name", "posterior"))
    generations = posterior["generations"]
    rows = [
        {"parameter": parameter, **{key: format_number(value) for key, value in summary.items()}}
        for parameter, summary in posterior["parameters"].items()
    ]
    lead = (
        f"<p>{len(generations)} generation(s), {_e(posterior['simulations'])} simulations, "
        f"{_e(posterior['failures'])} proposals rejected without a distance; stopped: "
        f"{_e(posterior.get('stop_reason') or 'not yet')}. Status "
        f"{_e(document.get('status', ''))}.</p>"
    )
    numbered = _Figures()
    sections = [
        f"<h1>{name}: posterior (ABC-SMC)</h1>",
        "<h2>The posterior</h2>",
        lead,
        _table(
            ["parameter", "mean", "sd", "q2_5", "q50", "q97_5", "ess"],
            rows,
            "The final population: weighted mean, sd, 2.5/50/97.5% quantiles, effective "
            "sample size",
        ),  # fmt: skip
        "<h2>Figures</h2>",
        *(numbered.render(plot) for plot in plots),
        "<h2>Generations</h2>",
        _table(
            [
                "generation",
                "epsilon",
                "proposals",
                "failed",
                "acceptance_rate",
                "ess",
                "simulations",
            ],
            generations,
            "Every generation",
        ),  # fmt: skip
    ]
    reasons = posterior.get("failure_reasons") or []
    if reasons:
        sections += ["<h2>Why proposals failed</h2>", *(f"<p>{_e(r)}</p>" for r in reasons)]
    return html_document(f"{name}: posterior", sections)
