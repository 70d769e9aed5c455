"""One run per output folder at a time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from simstudy.errors import OutputDirError
from simstudy.locking import output_lock
from simstudy.store import OutputStore

REPO = Path(__file__).parents[2]


@pytest.mark.timeout(30)
def test_second_holder_is_refused_naming_the_first(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-m", "tests.support.hold_lock", str(tmp_path)],
        stdout=subprocess.PIPE,
        cwd=REPO,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        with (
            pytest.raises(
                OutputDirError, match=f"in use by another simstudy run \\(pid {holder.pid}"
            ),
            output_lock(OutputStore(tmp_path)),
        ):
            pass
    finally:
        holder.kill()
        holder.wait()
        assert holder.stdout is not None
        holder.stdout.close()
    with output_lock(OutputStore(tmp_path)):  # a dead holder's lock is free again
        pass
