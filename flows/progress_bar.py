"""A live terminal progress bar fed by the flow's progress updates."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from flows.progress import add_listener, remove_listener
from simstudy.tracking import TrackerSnapshot


@contextmanager
def progress_bar(console: Console, enabled: bool = True) -> Iterator[None]:
    """Show replicates ok / failed / total, parameter sets aggregated, rate and ETA."""
    if not enabled:
        yield
        return
    columns = (
        TextColumn("[bold]replicates"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[detail]}"),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task("replicates", total=None, detail="starting", rate="")

        def update(state: TrackerSnapshot) -> None:
            failed = state.replicates.get("failed", 0) + state.replicates.get("timed_out", 0)
            elapsed = progress.tasks[bar].elapsed or 0.0
            rate = f"{state.replicates_done / elapsed:.1f}/s" if elapsed > 0 else ""
            progress.update(
                bar,
                total=state.total_replicates,
                completed=state.replicates_done,
                detail=(
                    f"ok {state.replicates.get('ok', 0)} failed {failed}"
                    + (f" (reused {state.reused})" if state.reused else "")
                    + " | sets "
                    f"{state.sets_aggregated}/{state.total_sets} aggregated"
                    + (f", {state.sets_failed} failed" if state.sets_failed else "")
                ),
                rate=rate,
            )

        add_listener(update)
        try:
            yield
        finally:
            remove_listener(update)
