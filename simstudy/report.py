"""Human-readable summaries of a study's results (terminal tables)."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from simstudy.storage import AGGREGATES_FILE, read_study_json, read_table
from simstudy.store import OutputStore

MAX_OUTPUT_COLUMNS = 4


def summary_table(store: OutputStore) -> Table:
    """Return a table of a finished study: one row per parameter set, key output means."""
    study = read_study_json(store)
    rows = read_table(store, AGGREGATES_FILE).to_pylist() if store.exists(AGGREGATES_FILE) else []
    means: dict[tuple[str, str], float] = {(r["param_id"], r["output"]): r["mean"] for r in rows}
    outputs = sorted({r["output"] for r in rows})[:MAX_OUTPUT_COLUMNS]
    failed: dict[str, list[str]] = study.get("failed_parameter_sets") or {}
    varying = _varying_names(study)

    table = Table(title=f"{study['name']}: {study.get('status', 'unknown')} ({store})")
    table.add_column("param_id")
    for name in varying:
        table.add_column(name, justify="right")
    table.add_column("status")
    for name in outputs:
        table.add_column(f"mean {name}", justify="right")
    for ps in study["parameter_sets"]:
        pid = ps["param_id"]
        status = "failed: " + "; ".join(failed[pid])[:80] if pid in failed else "ok"
        cells = [pid[:12], *[_fmt(ps["params"][n]) for n in varying], status]
        cells += [_fmt(means.get((pid, name))) for name in outputs]
        table.add_row(*cells)
    counts = study.get("counts") or {}
    table.caption = "replicates: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    return table


def _varying_names(study: dict[str, Any]) -> list[str]:
    sets = study["parameter_sets"]
    names = list(sets[0]["params"]) if sets else []
    return [n for n in names if len({repr(ps["params"][n]) for ps in sets}) > 1]


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
