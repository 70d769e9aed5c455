"""The terminal summary table: every value readable at 80 columns."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from rich.console import Console

from simstudy.display import format_number
from simstudy.output.location import OutputStore
from simstudy.summary_table import MAX_SETS, summary_table
from tests.support.aggregates import sample_aggregates, write_finished_study


def render(store: OutputStore, width: int = 80) -> str:
    """Render the summary table as `simstudy run` and `show` print it (soft wrap on)."""
    console = Console(file=io.StringIO(), width=width, soft_wrap=True, color_system=None)
    console.print(summary_table(store))
    output = console.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(output, str)
    return output


@pytest.mark.parametrize("quantiles", [True, False])
@pytest.mark.parametrize("width", [80, 60])
def test_every_value_is_complete_in_a_narrow_terminal(
    tmp_path: Path, quantiles: bool, width: int
) -> None:
    aggregates = sample_aggregates(quantiles=quantiles)
    store = OutputStore(tmp_path)
    write_finished_study(store, aggregates)
    text = render(store, width)
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= width
    header = "5-95% of replicates" if quantiles else "95% CI of mean"
    assert header.split()[0] in text
    for aggregate in aggregates:
        assert aggregate.param_id[:12] in text
        assert f"beta={format_number(aggregate.params['beta'])}" in text
        for row in aggregate.scalars:
            # The output and its mean on one line of the table, both whole.
            mean = re.escape(format_number(row["mean"]))
            assert re.search(rf"│ {row['output']} +│ +{mean} │", text), row
    assert "1.018e+05" in text
    band = "[8.146e+04, 1.222e+05]" if quantiles else "[9.551e+04, 1.081e+05]"
    assert band in text or width < 80
    assert band.split()[0] in text and band.split()[1] in text
    assert "0.30000000000000004" not in text and "beta=0.3" in text


def test_fixed_parameters_are_stated_once_and_failures_explained(tmp_path: Path) -> None:
    aggregates = sample_aggregates()
    store = OutputStore(tmp_path)
    write_finished_study(store, aggregates)
    text = render(store)
    assert text.count("gamma=0.1") == 1
    assert text.count("population=1000000") == 1
    assert "FAILED" in text
    assert "2/10 replicates ok," in text
    assert "replicates: 8 failed, 32 ok" in text


def test_sets_beyond_the_limit_are_counted_not_shown(tmp_path: Path) -> None:
    aggregates = sample_aggregates(betas=MAX_SETS + 4)
    store = OutputStore(tmp_path)
    write_finished_study(store, aggregates)
    text = render(store, width=120)
    assert aggregates[MAX_SETS - 1].param_id[:12] in text
    assert aggregates[MAX_SETS].param_id[:12] not in text
    assert "5 more parameter sets in aggregates.parquet" in text


def test_a_very_narrow_terminal_folds_cells_but_never_cuts_them(tmp_path: Path) -> None:
    store = OutputStore(tmp_path)
    write_finished_study(store, sample_aggregates())
    text = render(store, width=40)
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 40
