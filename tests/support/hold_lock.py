"""Hold an output folder's lock for a minute: `python -m tests.support.hold_lock PATH`."""

import sys
import time

from simstudy.locking import output_lock
from simstudy.store import OutputStore

if __name__ == "__main__":
    with output_lock(OutputStore(sys.argv[1])):
        print("held", flush=True)
        time.sleep(60)
