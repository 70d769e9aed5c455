"""One run per output folder at a time."""

from __future__ import annotations

from pathlib import Path

import pytest

from simstudy.errors import OutputDirError
from simstudy.output.location import OutputStore
from simstudy.output.locking import output_lock
from tests.support.hold_lock import start_lock_holder, stop_lock_holder


@pytest.mark.timeout(30)
def test_second_holder_is_refused_naming_the_first(tmp_path: Path) -> None:
    holder = start_lock_holder(tmp_path)
    try:
        with (
            pytest.raises(
                OutputDirError, match=f"in use by another simstudy run \\(pid {holder.pid}"
            ),
            output_lock(OutputStore(tmp_path)),
        ):
            pass
    finally:
        stop_lock_holder(holder)
    with output_lock(OutputStore(tmp_path)):  # a dead holder's lock is free again
        pass
