"""report.html: one self-contained page (inline CSS, images as data URIs, no script).

The answer comes first: the best parameter sets with their loss intervals, their fit to
the observed data and the loss landscape; then the sensitivity indices; then the other
figures, the ranking and summary tables, the replicate noise, the study's details and the
failed sets.
Every string that comes from the study (names, parameters, model errors) is escaped: the
study file and the model's messages are untrusted.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

import pyarrow as pa

from simstudy.display import Z_95, Spread, format_number, format_parameters, visible
from simstudy.report.data import ReportData
from simstudy.report.plots import MAX_OUTPUTS, Plot, file_name

RANKED_ROWS = 20
"""Rows of the ranking shown; ranking.parquet has them all."""
SUMMARY_SETS = 20
"""Parameter sets in the summary table; aggregates.parquet has them all."""
SENSITIVITY_ROWS = 200
FAILED_SETS = 50
ID_CHARS = 12

VarianceShare = Callable[[pa.Table], pa.Table]

try:  # the analysis package may be absent from a trimmed install: the section goes, not the page
    from simstudy.analysis.variance import replicate_variance_share as _variance_share

    variance_share: VarianceShare | None = _variance_share
except ImportError:  # pragma: no cover - depends on what is installed
    variance_share = None

CSS = """
body { font: 15px/1.5 Georgia, 'Times New Roman', serif; max-width: 60em; margin: 2em auto;
       padding: 0 1em; color: #222; }
h1, h2 { font-family: Helvetica, Arial, sans-serif; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font: 13px/1.4 Helvetica, Arial, sans-serif; margin: 0.5em 0; }
th, td { padding: 0.2em 0.6em; border-bottom: 1px solid #e4e4e4; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f4f4f4; }
caption { caption-side: bottom; text-align: left; color: #555; font-size: 12px;
          padding-top: 0.3em; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; height: auto; }
figcaption { font-size: 13px; color: #444; } code { font-size: 13px; }
.failed { color: #a00; } .note { color: #555; font-size: 13px; }
"""


def render_page(data: ReportData, plots: Sequence[Plot], sensitivity: Sequence[Plot]) -> str:
    """Return the report's HTML, the answer first: the best sets and their fit, the loss
    landscape; then sensitivity; then the other figures, the tables and the study's details."""
    name = _e(data.study.get("name", "study"))
    numbered = _Figures()
    fit, landscape, others = _grouped(data, plots)
    sections = [
        f"<h1>{name}: results</h1>",
        _headline_section(data),
        _figures(fit, numbered, "Fit to the data" if data.targets is not None else "Over time"),
        _figures(landscape, numbered, "Loss landscape"),
        _sensitivity_section(data, sensitivity, numbered),
        _figures_section(data, others, numbered),
        _ranking_section(data),
        _summary_section(data),
        _noise_section(data, variance_share),
        _study_section(data),
        _failed_section(data),
        f'<p class="note">Files: {_e(str(data.store))}. Built by simstudy '
        f"{_e(data.study.get('versions', {}).get('simstudy', ''))}.</p>",
    ]
    return html_document(f"{name}: results", sections)


HEADLINE_SETS = 5
"""Best parameter sets in the headline; the ranking section lists more."""


def _grouped(data: ReportData, plots: Sequence[Plot]) -> tuple[list[Plot], list[Plot], list[Plot]]:
    """Split the figures: the fit to the targets (series, then scalar outputs with a target),
    the loss landscape, and the others in the order they were drawn."""
    observed = set(data.targets.column("output").to_pylist()) if data.targets is not None else set()
    fitted = {file_name("distribution", output) for output in observed}
    landscape_names = {file_name("loss-profiles"), file_name("loss-pairs")}
    # Series first: the fit over time is what a modeler looks at, then the scalar targets.
    fit = [p for p in plots if p.name.startswith("series-")] + [
        p for p in plots if p.name in fitted
    ]
    landscape = [p for p in plots if p.name in landscape_names]
    shown = {p.name for p in [*fit, *landscape]}
    return fit, landscape, [p for p in plots if p.name not in shown]


def _headline_section(data: ReportData) -> str:
    """Return the answer: the best sets with their loss and its 95% interval, or the counts."""
    study = data.study
    sets = len(study.get("parameter_sets", []))
    counts = study.get("counts") or {}
    done = ", ".join(f"{n:,} {status}" for status, n in sorted(counts.items())) or "none"
    status = study.get("status", "unknown")
    lead = (
        f"<p>{sets:,} parameter sets, replicates {_e(done)}; the study ended "
        f'<b class="{"failed" if status != "ok" else ""}">{_e(status)}</b>.'
    )
    if data.ranking is None or "loss" not in data.ranking.column_names:
        return f"<h2>Results</h2>\n{lead}</p>"
    rows = [
        r for r in data.ranking.slice(0, HEADLINE_SETS).to_pylist() if r.get("loss") is not None
    ]
    if not rows:
        return f"<h2>Best parameter sets</h2>\n{lead} No set has a loss.</p>"
    best = rows[0]
    lead += (
        f" The best set by loss is <code>{_e(str(best['param_id'])[:ID_CHARS])}</code> "
        f"({_e(format_parameters(data.params.get(best['param_id'], {}), data.varied))}), "
        f"loss {_e(format_number(best['loss']))}{_e(_interval(best))}.</p>"
    )
    table = [
        {
            "rank": row.get("rank"),
            "param_id": row["param_id"],
            "loss": row["loss"],
            "95% interval": _interval(row).removeprefix(", 95% interval ") or "-",
            **{name: data.params.get(row["param_id"], {}).get(name) for name in data.varied},
        }
        for row in rows
    ]
    columns = ["rank", "param_id", "loss", "95% interval", *data.varied]
    caption = (
        f"The {len(rows)} best parameter sets; the interval is the loss +- 1.96 of its standard "
        "error over replicates (see the ranking below for more)."
    )
    return "<h2>Best parameter sets</h2>\n" + lead + _table(columns, table, caption)


def _interval(row: dict[str, Any]) -> str:
    """Return ', 95% interval [low, high]' of a ranked row's loss, or '' without loss_se."""
    se = row.get("loss_se")
    if se is None or not isinstance(se, int | float) or not math.isfinite(se):
        return ""
    low, high = row["loss"] - Z_95 * se, row["loss"] + Z_95 * se
    return f", 95% interval [{format_number(low)}, {format_number(high)}]"


def _figures(plots: Sequence[Plot], numbered: _Figures, title: str) -> str:
    if not plots:
        return ""
    return f"<h2>{_e(title)}</h2>\n" + "\n".join(numbered.render(plot) for plot in plots)


def html_document(title: str, sections: Sequence[str]) -> str:
    """Return a whole page of the (escaped) title and the non-empty HTML sections."""
    body = "\n".join(section for section in sections if section)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        # No script, no network: the page is a document, safe to open from anywhere.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "img-src data:; style-src 'unsafe-inline'\">"
        f"<title>{title}</title><style>{CSS}</style></head>\n"
        f"<body>\n{body}\n</body></html>\n"
    )


class _Figures:
    """Numbers figures in the order they appear."""

    def __init__(self) -> None:
        self.count = 0

    def render(self, plot: Plot) -> str:
        self.count += 1
        uri = "data:image/png;base64," + base64.b64encode(plot.png).decode("ascii")
        return (
            f'<figure id="{_e(plot.name)}"><img src="{uri}" alt="{_e(plot.title)}">'
            f"<figcaption><b>Figure {self.count}.</b> {_e(plot.caption)} "
            f"(<code>plots/{_e(plot.name)}</code>)</figcaption></figure>"
        )


def _study_section(data: ReportData) -> str:
    study = data.study
    spec = study.get("study") or {}
    model = spec.get("model")
    if isinstance(model, dict):
        model = " ".join(str(part) for part in model.get("command") or []) or "a command"
    sets = len(study.get("parameter_sets", []))
    replicates = spec.get("replicates")
    counts = study.get("counts") or {}
    done = ", ".join(f"{n:,} {status}" for status, n in sorted(counts.items())) or "none"
    status = study.get("status", "unknown")
    sentences = [
        f"The study <b>{_e(study.get('name'))}</b> ran the model <code>{_e(model)}</code> on "
        f"{sets:,} parameter sets ({_e(_design(spec))}"
        + (f"; varied: {_e(', '.join(data.varied))}" if data.varied else "")
        + ")"
        + (f" with {_e(replicates)} replicates each" if replicates is not None else "")
        + (f", study seed {_e(spec.get('seed'))}." if spec.get("seed") is not None else "."),
        f'It ended <b class="{"failed" if status != "ok" else ""}">{_e(status)}</b>'
        + _when(study)
        + f". Replicates: {_e(done)}"
        + (
            f" ({study['reused_replicates']:,} reused from an earlier run)."
            if study.get("reused_replicates")
            else "."
        ),
    ]
    if data.fixed:
        sentences.append(f"Parameters shared by every set: {_e(format_parameters(data.fixed))}.")
    versions = study.get("versions") or {}
    if versions:
        shown = ", ".join(f"{k} {v}" for k, v in versions.items())
        sentences.append(f'<span class="note">Versions: {_e(shown)}.</span>')
    return "<h2>The study</h2>\n<p>" + " ".join(sentences) + "</p>"


def _design(spec: dict[str, Any]) -> str:
    parameters = spec.get("parameters") or {}
    for kind, value in parameters.items():
        if value is None:
            continue
        if kind == "sample" and isinstance(value, dict):
            return f"sampled by {value.get('method', '?')}, n = {value.get('n', '?')}"
        if kind == "file":
            return f"read from {value}"
        return f"a {kind}"
    return "design not recorded"


def _when(study: dict[str, Any]) -> str:
    """Return ' on <end time>, <n> s after it started' from study.json, or ''."""
    try:
        finished = datetime.fromisoformat(str(study.get("finished_at")))
    except ValueError:
        return ""
    text = f" on {finished.strftime('%Y-%m-%d %H:%M:%S %Z').strip()}"
    try:
        elapsed = finished - datetime.fromisoformat(str(study.get("started_at")))
    except (TypeError, ValueError):  # TypeError: one time with a zone, one without
        return text
    return text + f", {elapsed.total_seconds():,.0f} s after it started"


def _ranking_section(data: ReportData) -> str:
    if data.ranking is None:
        return ""
    table = data.ranking
    losses = [c for c in table.column_names if c.startswith("loss")]
    params = [c for c in data.varied if c in table.column_names]
    columns = ["rank", "param_id", "status", *losses, *params]
    columns = [c for c in columns if c in table.column_names]
    rows = table.slice(0, RANKED_ROWS).select(columns).to_pylist()
    targets = ""
    if data.targets is not None and data.targets.num_rows:
        outputs = sorted(set(data.targets.column("output").to_pylist()))
        targets = (
            f" against {data.targets.num_rows:,} observed values of {_e(', '.join(outputs))} "
            "(<code>targets.parquet</code>)"
        )
    spec = (data.study.get("study") or {}).get("targets") or {}
    loss = spec.get("loss")
    if isinstance(loss, dict):
        loss = ", ".join(f"{output}: {name}" for output, name in loss.items())
    if loss:
        targets += f" with the loss <code>{_e(loss)}</code>"
    intro = (
        f"<p>Parameter sets ordered by loss{targets}; the lower the better. "
        "<code>loss_se</code> is the standard error of the loss over replicates.</p>"
    )
    caption = f"The {len(rows)} best of {table.num_rows:,} parameter sets (all in ranking.parquet)."
    return "<h2>Ranking</h2>\n" + intro + _table(columns, rows, caption)


def _summary_section(data: ReportData) -> str:
    if data.aggregates is None:
        return ""
    rows = data.aggregates.to_pylist()
    by_set: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_set.setdefault(row["param_id"], []).append(row)
    spread = Spread.for_rows(rows)
    shown = [pid for pid in data.order if pid in by_set][:SUMMARY_SETS]
    header = ["parameter set", *data.varied, "output", "n_ok", "mean", spread.label]
    cells = []
    for pid in shown:
        params = data.params.get(pid, {})
        for k, row in enumerate(sorted(by_set[pid], key=lambda r: r["output"])):
            first = [
                data.label(pid) if k == 0 else "",
                *(params.get(n) if k == 0 else "" for n in data.varied),
            ]
            cells.append(
                dict(zip(header, [*first, row["output"], row.get("n_ok"), row.get("mean"),
                                  spread.format(row)], strict=True))
            )  # fmt: skip
    order = "best first" if data.ordered_by_loss else "in design order"
    caption = (
        f"Mean of each scalar output and {spread.description}, per parameter set ({order}); "
        f"{len(shown)} of {len(by_set):,} aggregated sets shown, all are in aggregates.parquet."
    )
    return "<h2>Summary</h2>\n" + _table(header, cells, caption)


def _figures_section(data: ReportData, plots: Sequence[Plot], numbered: _Figures) -> str:
    if not plots:
        return ""
    cut = [
        f"{len(names) - MAX_OUTPUTS} more {kind} outputs ({', '.join(names[MAX_OUTPUTS:][:5])}"
        + (", ..." if len(names) > MAX_OUTPUTS + 5 else "")
        + ")"
        for kind, names in (("scalar", data.scalar_outputs), ("series", data.series_outputs))
        if len(names) > MAX_OUTPUTS
    ]
    note = (
        f'<p class="note">Figures show the first {MAX_OUTPUTS} outputs of each kind by name; '
        f"{_e(' and '.join(cut))} are in the result files.</p>"
        if cut
        else ""
    )
    return "<h2>Distributions</h2>\n" + note + "\n".join(numbered.render(plot) for plot in plots)


def _sensitivity_section(data: ReportData, plots: Sequence[Plot], numbered: _Figures) -> str:
    if data.sensitivity is None or data.sensitivity.num_rows == 0:
        return ""
    table = data.sensitivity
    columns = [
        c
        for c in ("output", "method", "index", "parameter", "parameter_2", "value", "conf", "note")
        if c in table.column_names
    ]
    rows = table.slice(0, SENSITIVITY_ROWS).select(columns).to_pylist()
    methods = set(table.column("method").to_pylist()) if "method" in columns else set()
    intro = (
        "<p>How much each parameter drives each output's per-set mean (and the loss): "
        + (
            "Sobol indices S1 (the parameter alone) and ST (with its interactions); "
            if "sobol" in methods
            else ""
        )
        + (
            "Morris elementary effects mu_star (mean absolute effect) and sigma "
            "(non-linearity and interactions); "
            if "morris" in methods
            else ""
        )
        + "<code>conf</code> is SALib's 95% confidence half-width.</p>"
    )
    caption = f"{len(rows)} of {table.num_rows:,} indices (all in sensitivity.parquet)."
    figures = "\n".join(numbered.render(plot) for plot in plots)
    return "<h2>Sensitivity</h2>\n" + intro + _table(columns, rows, caption) + figures


def _noise_section(data: ReportData, share: VarianceShare | None) -> str:
    if share is None or data.aggregates is None:
        return ""
    table = share(data.aggregates)
    if table.num_rows == 0:
        return ""
    columns = ["output", "between_sets_variance", "within_sets_variance", "within_share"]
    rows = table.select([c for c in columns if c in table.column_names]).to_pylist()
    intro = (
        "<p>How much of each output's variance is replicate noise (within a parameter set) "
        "rather than the parameters (between sets): a share near 1 means the parameters "
        "barely move the output compared with chance.</p>"
    )
    return "<h2>Replicate noise</h2>\n" + intro + _table(columns, rows, "")


def _failed_section(data: ReportData) -> str:
    failed: dict[str, list[str]] = data.study.get("failed_parameter_sets") or {}
    if not failed:
        return ""
    items = []
    for pid, reasons in list(failed.items())[:FAILED_SETS]:
        params = format_parameters(data.params.get(pid, {}), data.varied or None)
        why = "; ".join(str(r) for r in reasons)
        items.append(f"<li><code>{_e(pid[:ID_CHARS])}</code> {_e(params)}: {_e(why)}</li>")
    more = len(failed) - FAILED_SETS
    tail = f'<p class="note">{more:,} more in study.json.</p>' if more > 0 else ""
    return (
        f'<h2>Failed parameter sets</h2>\n<p class="failed">{len(failed):,} parameter sets '
        f"had too few successful replicates and were not aggregated:</p>\n<ul>"
        + "".join(items)
        + "</ul>"
        + tail
    )


def _table(columns: Iterable[str], rows: Sequence[dict[str, Any]], caption: str) -> str:
    columns = list(columns)
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(_cell(column, row.get(column)) for column in columns) + "</tr>"
        for row in rows
    )
    shown = f"<caption>{_e(caption)}</caption>" if caption else ""
    return f"<table>{shown}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(column: str, value: Any) -> str:
    if column == "param_id" and isinstance(value, str):
        return f"<td><code>{_e(value[:ID_CHARS])}</code></td>"
    if isinstance(value, float) and not math.isnan(value) or isinstance(value, int):
        return f'<td class="num">{_e(format_number(value))}</td>'
    return f"<td>{_e(format_number(value) if value is not None else '')}</td>"


def _e(value: Any) -> str:
    # Control and bidirectional characters as escapes: U+202E would reorder what follows.
    return html.escape(visible(str(value)), quote=True)
