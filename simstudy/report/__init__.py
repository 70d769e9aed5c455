"""Plots and the HTML report of a finished study, built from its output files alone.

```python
>>> build_report(OutputStore("results/seir-demo"))
'results/seir-demo/report.html'
```

The same function serves the flow (at the end of a study) and `simstudy report DIR`
(rebuilding from the files), so both give the same report.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from simstudy.errors import OutputDirError
from simstudy.output.location import OutputStore
from simstudy.output.results import PLOTS_DIR, REPORT_FILE, write_text
from simstudy.report.data import load_report_data
from simstudy.report.page import render_page
from simstudy.report.plots import all_plots, sensitivity_plots

__all__ = ["build_report"]


def build_report(store: OutputStore) -> str:
    """Write plots/*.png and report.html of a finished study; return the report's path or URL."""
    data = load_report_data(store)
    plots = all_plots(data)
    sensitivity = sensitivity_plots(data)
    page = render_page(data, plots, sensitivity)
    with report_writes(store):
        # Plots of an earlier build that this one does not draw (an output gone) must go.
        drawn = {f"{PLOTS_DIR}/{plot.name}" for plot in [*plots, *sensitivity]}
        for name in store.names(PLOTS_DIR, ".png"):
            if name not in drawn:
                store.delete(name)
        for plot in [*plots, *sensitivity]:
            store.write_bytes(f"{PLOTS_DIR}/{plot.name}", plot.png)
        write_text(store, REPORT_FILE, page)
    return report_location(store)


@contextmanager
def report_writes(store: OutputStore) -> Iterator[None]:
    """Turn a failed write of plots/ or report.html into an `OutputDirError` naming it."""
    try:
        yield
    except OSError as exc:
        # plots/ made a file, report.html a folder, a full disk, a read-only folder.
        where = exc.filename or store.path(REPORT_FILE)
        raise OutputDirError(
            f"cannot write the report in {store}: {exc.strerror or exc} ({where}); make "
            f"{PLOTS_DIR}/ a folder and {REPORT_FILE} a file (or remove them), or free space"
        ) from exc


def report_location(store: OutputStore) -> str:
    """Return where report.html is: a local path, or the store's URL joined with the name."""
    if store.local is not None:
        return str(store.local / REPORT_FILE)
    return f"{store.location.rstrip('/')}/{REPORT_FILE}"
