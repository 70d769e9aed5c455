"""A live terminal progress bar fed by the flow's progress updates."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from flows.progress import add_listener, remove_listener
from simstudy.display import format_number
from simstudy.run.tracking import TrackerSnapshot


class _StudyProgress(Progress):
    """A progress bar line and, below it, a line of counts that wraps instead of being cut."""

    detail = Text("starting")

    def get_renderables(self) -> Iterable[RenderableType]:
        """Yield the bar, then the counts."""
        yield self.make_tasks_table(self.tasks)
        yield self.detail


@contextmanager
def progress_bar(console: Console, enabled: bool = True) -> Iterator[None]:
    """Show replicates done / total, rate and ETA; below, ok / failed and sets aggregated."""
    if not enabled:
        yield
        return
    # One line of columns is cut at 80 terminal columns: the counts get a line of their own.
    columns = (
        TextColumn("[bold]replicates"),
        BarColumn(bar_width=None),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with _StudyProgress(*columns, console=console, transient=False, expand=True) as progress:
        bar = progress.add_task("replicates", total=None, rate="")

        def update(state: TrackerSnapshot) -> None:
            elapsed = progress.tasks[bar].elapsed or 0.0
            rate = f"{format_number(state.replicates_done / elapsed)}/s" if elapsed > 0 else ""
            progress.detail = Text(counts_line(state), no_wrap=False, overflow="fold")
            progress.update(
                bar, total=state.total_replicates, completed=state.replicates_done, rate=rate
            )

        add_listener(update)
        try:
            yield
        finally:
            remove_listener(update)


def counts_line(state: TrackerSnapshot) -> str:
    """Return replicates ok / failed (reused) and parameter sets aggregated / failed."""
    failed = state.replicates.get("failed", 0) + state.replicates.get("timed_out", 0)
    line = f"ok {state.replicates.get('ok', 0)}, failed {failed}"
    if state.reused:
        line += f" (reused {state.reused})"
    line += f" | sets aggregated {state.sets_aggregated}/{state.total_sets}"
    if state.sets_failed:
        line += f", failed {state.sets_failed}"
    return line
