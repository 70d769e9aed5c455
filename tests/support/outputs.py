"""Read a finished study's result files the way the fault tests check them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from simstudy.spec.study import Study

FaultyStudy = Callable[..., tuple[Study, list[str]]]
"""The `faulty_study` fixture: build a study whose chosen replicates misbehave."""


def rows_by_replicate(study: Study) -> dict[tuple[str, int], dict[str, Any]]:
    """Return replicates.parquet keyed by (param_id, replicate); each replicate once."""
    table = pq.read_table(Path(study.output_dir) / "replicates.parquet").to_pylist()
    keyed = {(r["param_id"], r["replicate"]): r for r in table}
    assert len(keyed) == len(table), "a replicate appears more than once"
    return keyed
