"""The report of a calibration: how the search went, from its trials.parquet and calibration.json.

```python
>>> build_calibration_report(OutputStore("results/seir-calibrate"))
'results/seir-calibrate/report.html'
```

Beside it, `simulations/report.html` is the study report of the ten best trials (their fit
to the targets); this page shows the search: the loss of every trial and the best so far,
where the trials went in each parameter, the loss landscape over pairs of parameters (a
ridge of parameters that trade off shows as a valley), and Optuna's parameter importances.
"""

from __future__ import annotations

import math
from itertools import combinations
from typing import Any

import numpy as np

from simstudy.calibrate.folder import (
    CALIBRATION_FILE,
    SIMULATIONS_DIR,
    TRIALS_FILE,
    read_calibration_document,
    read_trials,
)
from simstudy.calibrate.trials import TRIALS_SCHEMA
from simstudy.display import format_number, format_parameters
from simstudy.errors import OutputDirError
from simstudy.output.location import OutputStore
from simstudy.output.results import PLOTS_DIR, REPORT_FILE, write_text
from simstudy.report import report_location, report_writes
from simstudy.report.page import RANKED_ROWS, _e, _Figures, _table, html_document
from simstudy.report.plots import (
    MAX_PANELS,
    Plot,
    _figure,
    _is_number,
    _png,
    loss_colorbar,
    loss_norm,
    plain_ticks,
)

FAILED_TRIALS = 20
"""Failed trials listed with their reasons; all are in trials.parquet."""


def build_calibration_report(store: OutputStore) -> str:
    """Write plots/*.png and report.html of a finished calibration; return the report's path."""
    if not store.exists(CALIBRATION_FILE) or not store.exists(TRIALS_FILE):
        raise OutputDirError(f"{store} holds no finished calibration (no {TRIALS_FILE})")
    document = read_calibration_document(store)
    trials = read_trials(store)
    names = [n for n in (trials[0] if trials else {}) if n not in TRIALS_SCHEMA.names]
    plots = [
        *best_trials_fit(store),
        *(
            plot
            for plot in (
                search_progress(trials),
                trials_by_parameter(trials, names),
                trials_by_pair(trials, names),
                importances(document.get("importances") or {}),
            )
            if plot is not None
        ),
    ]
    page = calibration_page(document, trials, names, plots)
    with report_writes(store):
        for plot in plots:
            store.write_bytes(f"{PLOTS_DIR}/{plot.name}", plot.png)
        write_text(store, REPORT_FILE, page)
    return report_location(store)


def best_trials_fit(store: OutputStore) -> list[Plot]:
    """Return the best trials' fit to the observed series, as their study drew it, if it did.

    The answer of a calibration: how well its best trials reproduce the data. The figures
    are the best trials' study's (`simulations/plots/series-*.png`), shown first here too.
    """
    found = []
    for name in sorted(store.names(f"{SIMULATIONS_DIR}/{PLOTS_DIR}", ".png")):
        file = name.rsplit("/", 1)[-1]
        if not file.startswith("series-"):
            continue
        caption = (
            "The best trials' fit to the observed data: the median and 5-95% band of their "
            f"replicates, from their study ({SIMULATIONS_DIR}/report.html)."
        )
        found.append(Plot(f"best-trials-{file}", "Fit of the best trials", caption,
                          store.read_bytes(name)))  # fmt: skip
    return found


def search_progress(trials: list[dict[str, Any]]) -> Plot | None:
    """Draw every complete trial's loss by trial number, and the best loss so far."""
    complete = _complete(trials)
    if not complete:
        return None
    figure, (ax,) = _figure()
    numbers = np.array([t["trial"] for t in complete])
    losses = np.array([t["loss"] for t in complete])
    ax.plot(numbers, losses, ".", color="0.6", label="trial")
    ax.step(numbers, np.minimum.accumulate(losses), where="post", color="tab:red",
            label="best so far")  # fmt: skip
    if loss_norm(losses) is not None:
        ax.set_yscale("log")
        plain_ticks(ax.yaxis)
    ax.set_xlabel("trial")
    ax.set_ylabel("loss")
    ax.legend(loc="best")
    asks = max(t["ask"] for t in trials)
    caption = (
        f"The loss of each of the {len(complete)} complete trials (grey; failed trials have "
        f"none) over {asks} asks, and the best loss so far (red)."
    )
    return Plot("calibration-progress.png", "Search progress", caption, _png(figure))


def trials_by_parameter(trials: list[dict[str, Any]], names: list[str]) -> Plot | None:
    """Draw where the trials went in each parameter, by trial number, coloured by loss."""
    complete = _complete(trials)
    numeric = _numeric(names, complete)[:MAX_PANELS]
    if not complete or not numeric:
        return None
    figure, axes = _figure(panels=len(numeric))
    loss = np.array([t["loss"] for t in complete])
    norm = loss_norm(loss)
    scatter = None
    for ax, name in zip(axes, numeric, strict=False):
        x = [t["trial"] for t in complete]
        y = [t[name] for t in complete]
        scatter = ax.scatter(x, y, c=loss, cmap="viridis_r", s=12, norm=norm)
        ax.set_xlabel("trial")
        ax.set_ylabel(name)
    loss_colorbar(figure, axes, scatter, norm)
    caption = (
        "Each parameter of every complete trial by trial number, coloured by loss (yellow is "
        "best): a search that learns concentrates its later trials where the loss is low."
    )
    return Plot("calibration-parameters.png", "Trials by parameter", caption, _png(figure))


def trials_by_pair(trials: list[dict[str, Any]], names: list[str]) -> Plot | None:
    """Draw every complete trial in each pair of numeric parameters, coloured by loss."""
    complete = _complete(trials)
    pairs = list(combinations(_numeric(names, complete), 2))[:MAX_PANELS]
    if not complete or not pairs:
        return None
    figure, axes = _figure(panels=len(pairs))
    ordered = sorted(complete, key=lambda t: t["loss"], reverse=True)  # best drawn last
    loss = np.array([t["loss"] for t in ordered])
    norm = loss_norm(loss)
    scatter = None
    for ax, (a, b) in zip(axes, pairs, strict=False):
        scatter = ax.scatter([t[a] for t in ordered], [t[b] for t in ordered], c=loss,
                             cmap="viridis_r", s=14, norm=norm)  # fmt: skip
        ax.plot(ordered[-1][a], ordered[-1][b], "*", color="tab:red", markersize=11)
        ax.set_xlabel(a)
        ax.set_ylabel(b)
    loss_colorbar(figure, axes, scatter, norm)
    caption = (
        "Every complete trial in each pair of numeric parameters, coloured by loss (yellow is "
        "best); the red star is the best trial. Parameters that trade off (beta and gamma of "
        "an epidemic, along R0) show as a valley: many trials of almost equal loss."
    )
    return Plot("calibration-pairs.png", "Loss landscape of the trials", caption, _png(figure))


def importances(found: dict[str, float]) -> Plot | None:
    """Draw Optuna's parameter importances (fANOVA over the complete trials)."""
    if not found:
        return None
    names = list(found)
    figure, (ax,) = _figure(height=max(2.0, 0.4 * len(names) + 1.0))
    ax.barh(np.arange(len(names))[::-1], [found[n] for n in names], color="tab:blue")
    ax.set_yticks(np.arange(len(names))[::-1], names)
    ax.set_xlabel("importance (share of the loss's variance over the trials)")
    caption = (
        "Optuna's parameter importances (fANOVA): how much of the variation of the loss over "
        "the trials each parameter explains. They describe the trials the search chose, not "
        "the whole space (see a saltelli design's Sobol' indices for that)."
    )
    return Plot("calibration-importances.png", "Parameter importances", caption, _png(figure))


def calibration_page(
    document: dict[str, Any], trials: list[dict[str, Any]], names: list[str], plots: list[Plot]
) -> str:
    """Return the calibration report's HTML: the search, the best trials, figures, failures."""
    name = _e(document.get("name", "calibration"))
    settings = (document.get("study") or {}).get("calibrate") or {}
    best = document.get("best")
    lead = (
        f"<p>{_e(document.get('trials', len(trials)))} trials ({_e(document.get('failed', 0))} "
        f"failed) in {_e(max((t['ask'] for t in trials), default=0))} asks, at most "
        f"{_e(settings.get('parallel', ''))} trials in flight, sampler "
        f"{_e(settings.get('sampler', ''))}, "
        f"replicates {_e(settings.get('replicates', ''))}: {_e(document.get('simulations', ''))}"
        f" simulations, {_e(document.get('saved', ''))} fewer than the maximum for every "
        f"trial. Status {_e(document.get('status', ''))}.</p>"
    )
    if best:
        loss, se = format_number(best["loss"]), format_number(best["loss_se"])
        lead += (
            f"<p>Best trial {_e(best['trial'])} (ask {_e(best.get('ask', best.get('round')))}, "
            f"{_e(best['replicates'])} replicates): loss {_e(loss)} +- {_e(se)}, "
            f"{_e(format_parameters(best['params']))}.</p>"
        )
    lead += (
        '<p>The fit of the ten best trials to the targets: <a href="simulations/report.html">'
        "simulations/report.html</a>.</p>"
    )
    ranked = sorted(_complete(trials), key=lambda t: (t["loss"], t["trial"]))[:RANKED_ROWS]
    columns = ["trial", "ask", "loss", "loss_se", "replicates", *names, "allocation"]
    failed = [t for t in trials if t["state"] == "failed"][:FAILED_TRIALS]
    numbered = _Figures()
    sections = [
        f"<h1>{name}: calibration</h1>",
        "<h2>The search</h2>",
        lead,
        "<h2>Figures</h2>",
        *(numbered.render(plot) for plot in plots),
        "<h2>Best trials</h2>",
        _table(columns, ranked, f"The best {len(ranked)} trials by loss (all in trials.parquet)"),
    ]
    if failed:
        sections += [
            "<h2>Failed trials</h2>",
            _table(["trial", "ask", *names, "allocation"], failed, "Why they failed"),
        ]
    return html_document(f"{name}: calibration", sections)


def _complete(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return the trials that have a loss, in their order."""
    return [t for t in trials if t["state"] == "complete" and t["loss"] is not None]


def _numeric(names: list[str], trials: list[dict[str, Any]]) -> list[str]:
    """Return the parameters that are a finite number in every one of the trials."""
    return [
        name
        for name in names
        if all(_is_number(t.get(name)) and math.isfinite(t[name]) for t in trials)
    ]
