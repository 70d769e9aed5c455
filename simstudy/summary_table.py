"""Human-readable summaries of a study's results (terminal tables).

The table grows downwards, not sideways, so it fits any terminal: one row per parameter
set and output, with the set's id, status and varied parameters in its first rows, and
the parameters every set shares stated once below the table.
"""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text

from simstudy.display import (
    Spread,
    format_number,
    format_parameters,
    split_parameters,
    visible,
)
from simstudy.output.location import OutputStore
from simstudy.output.reading import read_finished_study, read_result_table
from simstudy.output.results import AGGREGATES_FILE, RANKING_FILE
from simstudy.terminal import plain

MAX_OUTPUTS = 6
"""Outputs shown per parameter set; all of them are in aggregates.parquet."""
MAX_SETS = 40
"""Parameter sets shown; all of them are in aggregates.parquet and study.json."""
ID_CHARS = 12
BEST_SETS = 10
"""Parameter sets of the ranking shown; all of them are in ranking.parquet."""
RANKING_COLUMNS = ("rank", "param_id", "index", "status", "loss", "loss_se")
"""Columns of ranking.parquet before the per-output losses and the parameters."""


def summary_table(store: OutputStore) -> Table:
    """Return a table of a finished study: each set's key outputs with mean and spread."""
    study = read_finished_study(store)
    aggregates = (
        read_result_table(store, AGGREGATES_FILE) if store.exists(AGGREGATES_FILE) else None
    )
    rows = aggregates.to_pylist() if aggregates is not None else []
    by_set: dict[tuple[str, str], dict[str, Any]] = {(r["param_id"], r["output"]): r for r in rows}
    all_outputs = sorted({r["output"] for r in rows})
    outputs = all_outputs[:MAX_OUTPUTS]
    spread = Spread.for_rows(rows)
    failed: dict[str, list[str]] = study.get("failed_parameter_sets") or {}
    sets: list[dict[str, Any]] = study["parameter_sets"]
    varied, fixed = split_parameters([ps["params"] for ps in sets])

    table = Table(title=_wrapped(f"{study['name']}: {study.get('status', 'unknown')}"))
    # Rich shrinks the widest wrappable columns first, so numbers stay whole at any usual
    # width; below that every column folds (never cut, never '…'). A column min_width
    # would make the table wider than the terminal instead.
    table.add_column("parameter set", overflow="fold", ratio=1)
    table.add_column("output", overflow="fold")
    table.add_column("mean", justify="right", overflow="fold")
    table.add_column(spread.label, justify="right", overflow="fold")
    for ps in sets[:MAX_SETS]:
        pid = ps["param_id"]
        described = [f"{pid[:ID_CHARS]} {'FAILED' if pid in failed else 'ok'}"]
        if varied:
            described.append(format_parameters(ps["params"], varied))
        described += failed.get(pid, [])
        cells = [
            (name, format_number(by_set[(pid, name)]["mean"]), spread.format(by_set[(pid, name)]))
            for name in outputs
            if (pid, name) in by_set
        ]
        for line in range(max(len(described), len(cells), 1)):
            output = cells[line] if line < len(cells) else ("", "", "")
            first = described[line] if line < len(described) else ""
            table.add_row(*(plain(cell) for cell in (first, *output)))
        table.add_section()
    table.caption = _caption(store, study, fixed, len(sets), len(all_outputs))
    table.caption_justify = "default"  # left, without padding every line to the width
    return table


def ranking_summary(store: OutputStore, best: int = BEST_SETS) -> Table | None:
    """Return the best parameter sets by loss (rank, loss +- se, parameters), None unranked."""
    if not store.exists(RANKING_FILE):
        return None
    ranking = read_result_table(store, RANKING_FILE)
    names = [
        name
        for name in ranking.column_names
        if name not in RANKING_COLUMNS and not name.startswith("loss_")
    ]
    rows = ranking.slice(0, best).to_pylist()
    table = Table(title=_wrapped(f"best {len(rows)} of {ranking.num_rows} parameter sets by loss"))
    table.add_column("rank", justify="right")
    table.add_column("loss", justify="right", overflow="fold")
    table.add_column("parameter set", overflow="fold", ratio=1)
    for row in rows:
        se = f" +- {format_number(row['loss_se'])}" if row["loss_se"] is not None else ""
        described = f"{row['param_id'][:ID_CHARS]} {format_parameters(row, names)}".rstrip()
        cells = (str(row["rank"] or "-"), f"{format_number(row['loss'])}{se}", described)
        table.add_row(*(plain(cell) for cell in cells))
    table.caption = _wrapped(f"all in {store.path(RANKING_FILE)}")
    table.caption_justify = "default"
    return table


def _caption(
    store: OutputStore, study: dict[str, Any], fixed: dict[str, Any], n_sets: int, n_outputs: int
) -> Text:
    counts = study.get("counts") or {}
    lines = ["replicates: " + (", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "-")]
    if fixed:
        lines.append(f"fixed parameters: {format_parameters(fixed)}")
    hidden = [
        f"{n - shown} more {what}"
        for n, shown, what in (
            (n_sets, MAX_SETS, "parameter sets"),
            (n_outputs, MAX_OUTPUTS, "outputs"),
        )
        if n > shown
    ]
    if hidden:
        lines.append(f"{' and '.join(hidden)} in {AGGREGATES_FILE}")
    lines.append(f"output: {store}")
    return _wrapped("\n".join(lines))


def _wrapped(text: str) -> Text:
    # The CLI's console soft-wraps (log lines stay whole); title and caption must still
    # fit the terminal, so they wrap on their own.
    return Text(visible(text), no_wrap=False, overflow="fold")
