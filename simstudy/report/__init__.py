"""Plots and the HTML report of a finished study, built from its output files alone.

```python
>>> build_report(OutputStore("results/seir-demo"))
'results/seir-demo/report.html'
```

The same function serves the flow (at the end of a study) and `simstudy report DIR`
(rebuilding from the files), so both give the same report.
"""

from __future__ import annotations

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
    # Plots of an earlier build that this one does not draw (an output gone) must not stay.
    drawn = {f"{PLOTS_DIR}/{plot.name}" for plot in [*plots, *sensitivity]}
    for name in store.names(PLOTS_DIR, ".png"):
        if name not in drawn:
            store.delete(name)
    for plot in [*plots, *sensitivity]:
        store.write_bytes(f"{PLOTS_DIR}/{plot.name}", plot.png)
    write_text(store, REPORT_FILE, render_page(data, plots, sensitivity))
    return report_location(store)


def report_location(store: OutputStore) -> str:
    """Return where report.html is: a local path, or the store's URL joined with the name."""
    if store.local is not None:
        return str(store.local / REPORT_FILE)
    return f"{store.location.rstrip('/')}/{REPORT_FILE}"
