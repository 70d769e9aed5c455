"""The live progress bar fits an 80-column terminal."""

from __future__ import annotations

import io
import time

import pytest
from rich.console import Console

from flows.progress import publish
from flows.progress_bar import progress_bar
from simstudy.run.tracking import TrackerSnapshot


@pytest.mark.timeout(30)
def test_progress_fits_80_columns_with_every_count_whole() -> None:
    console = Console(file=io.StringIO(), width=80, soft_wrap=True, color_system=None)
    snapshot = TrackerSnapshot(
        replicates={"ok": 12345, "failed": 120, "timed_out": 3},
        total_replicates=100000,
        sets_aggregated=12,
        sets_failed=2,
        total_sets=1000,
        seconds_since_progress=0.0,
        reused=500,
    )
    with progress_bar(console):
        time.sleep(0.05)
        publish(snapshot)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    last = text.rsplit("replicates", 1)[-1]
    assert "…" not in last
    assert max(len(line) for line in text.splitlines()) <= 80
    for shown in ("12468/100000", "12%", "ok 12345", "failed 123", "reused 500", "12/1000"):
        assert shown in last
    assert "failed 2" in last
