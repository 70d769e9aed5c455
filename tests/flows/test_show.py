"""`simstudy show` prints a summary that fits the terminal."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from simstudy.location import OutputStore
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
