"""`simstudy show` prints a summary that fits the terminal."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from simstudy.output.location import OutputStore
from tests.support.aggregates import sample_aggregates, write_finished_study

REPO = Path(__file__).parents[2]


@pytest.mark.timeout(60)
def test_show_fits_80_columns_with_every_value_whole(tmp_path: Path) -> None:
    write_finished_study(OutputStore(tmp_path), sample_aggregates())
    shown = subprocess.run(
        [sys.executable, "-m", "flows.cli", "show", str(tmp_path)],
        capture_output=True, text=True, cwd=REPO, timeout=50,
        env={**os.environ, "COLUMNS": "80", "TERM": "xterm"},
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    text = shown.stderr
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text
    for value in ("attack_rate", "peak_infected", "1.018e+05", "[8.146e+04, 1.222e+05]"):
        assert value in text


@pytest.mark.timeout(60)
def test_show_prints_the_ten_best_sets_by_loss_with_their_parameters(tmp_path: Path) -> None:
    from simstudy.analysis.ranking import ranking_table
    from simstudy.output.results import RANKING_FILE, write_table

    aggregates = [
        a.model_copy(update={"loss": 10.0 - a.index, "loss_se": 0.25, "target_losses": {}})
        if a.status == "ok"
        else a
        for a in sample_aggregates(betas=12)
    ]
    store = OutputStore(tmp_path)
    write_finished_study(store, aggregates)
    write_table(store, RANKING_FILE, ranking_table(aggregates, ["beta"]))
    shown = subprocess.run(
        [sys.executable, "-m", "flows.cli", "show", str(tmp_path)],
        capture_output=True, text=True, cwd=REPO, timeout=50,
        env={**os.environ, "COLUMNS": "100", "TERM": "xterm"},
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    text = shown.stderr + shown.stdout
    best = text[text.index("best 10 of 13 parameter sets by loss") :]
    lines = [line for line in best.splitlines() if "+- 0.25" in line]
    assert len(lines) == 10
    assert "beta=1.2" in lines[0] and "-1 +- 0.25" in lines[0]  # set 11: loss 10 - 11
    assert "beta=0.3" in lines[-1]
