"""Hold an output folder's lock for a minute: `python -m tests.support.hold_lock PATH`."""

import subprocess
import sys
import time
from pathlib import Path

from simstudy.output.location import OutputStore
from simstudy.output.locking import output_lock

REPO = Path(__file__).parents[2]


def start_lock_holder(output: Path) -> subprocess.Popen[bytes]:
    """Start a process holding the lock of `output`; return once it holds it."""
    holder = subprocess.Popen(
        [sys.executable, "-m", "tests.support.hold_lock", str(output)],
        stdout=subprocess.PIPE,
        cwd=REPO,
    )
    assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
    return holder


def stop_lock_holder(holder: subprocess.Popen[bytes]) -> None:
    """Kill the holder (its lock is released by the kernel)."""
    holder.kill()
    holder.wait()
    if holder.stdout is not None:
        holder.stdout.close()


if __name__ == "__main__":
    with output_lock(OutputStore(sys.argv[1])):
        print("held", flush=True)
        time.sleep(60)
