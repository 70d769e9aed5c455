"""A warm child of the process runner: imports the model once, runs replicates on request.

Run as `python -m simstudy.runners._child MODULE:FUNCTION`. Requests arrive on stdin;
replies leave on a private copy of stdout, while fd 1 itself is pointed at stderr so that
a model's prints can never corrupt the protocol (they go to the runner's log file).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Any

from simstudy.records import OutputError, normalize_outputs
from simstudy.runners._wire import WireClosed, read_frame, write_frame
from simstudy.runners.base import load_callable, short_traceback

PARENT_POLL_SECONDS = 0.5


def _die_with_parent(parent_pid: int) -> None:
    # A child whose Dask worker died (SIGKILL, OOM) would otherwise live on as an orphan,
    # possibly stuck in a hung model forever: kill our whole process group instead.
    while True:
        time.sleep(PARENT_POLL_SECONDS)
        if os.getppid() != parent_pid:
            os.killpg(os.getpgrp(), signal.SIGKILL)


def main() -> None:
    """Serve replicate requests until stdin closes."""
    reply_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    request_fd = sys.stdin.fileno()
    threading.Thread(target=_die_with_parent, args=(os.getppid(),), daemon=True).start()
    try:
        model = load_callable(sys.argv[1])
    except BaseException as exc:
        write_frame(reply_fd, ("import_error", short_traceback(exc)))
        return
    write_frame(reply_fd, ("ready", os.getpid()))
    while True:
        try:
            params, seed = read_frame(request_fd)
        except WireClosed:
            return
        reply: tuple[str, Any]
        try:
            reply = ("ok", normalize_outputs(model(params, seed)))
        except OutputError as exc:
            reply = ("error", str(exc))
        except BaseException as exc:
            reply = ("error", short_traceback(exc))
        sys.stderr.flush()
        write_frame(reply_fd, reply)


if __name__ == "__main__":
    main()
