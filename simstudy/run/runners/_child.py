"""A warm child of the process runner: imports the model once, runs replicates on request.

Run as `python -m simstudy.run.runners._child MODULE:FUNCTION [--memory-limit BYTES]`. The
process started is a supervisor: a child subreaper that forks the *model process* and
waits. Whatever the model starts (even a daemon double-forked with `setsid`) stays a
descendant of the supervisor; when the model process exits, the supervisor kills what is
left and exits the way the model process did, and when the runner's process dies (even
by SIGKILL, even while the model holds the GIL) the supervisor kills the whole tree.

The model process receives requests on a private copy of stdin and replies on a private
copy of stdout; fd 0 is /dev/null and fd 1 points at stderr, so neither a model reading
stdin nor a model printing can corrupt the protocol (prints go to the runner's log file).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from simstudy.run.records import OutputError, normalize_outputs
from simstudy.run.runners import reaper
from simstudy.run.runners._wire import PROTOCOL_LOST_EXIT_CODE, WireClosed, read_frame, write_frame
from simstudy.run.runners.base import load_callable, short_traceback

STANDARD_NAMES = {0: "stdin", 1: "stdout", 2: "stderr"}


def main() -> None:
    """Supervise a model process that serves replicate requests until stdin closes."""
    model_ref = sys.argv[1]
    memory_limit = int(sys.argv[3]) if sys.argv[2:3] == ["--memory-limit"] else None
    reaper.become_subreaper()
    parent, supervisor = os.getppid(), os.getpid()
    model_pid = os.fork()
    if model_pid == 0:
        # A model that kills its supervisor takes itself down too, not only its replicate.
        reaper.die_with_parent(supervisor)
        serve(model_ref, memory_limit)
        return
    # Only the model process may hold the protocol pipes: the runner must see EOF the
    # moment it dies.
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    reaper.exit_like(reaper.supervise(model_pid, parent))


def serve(model_ref: str, memory_limit: int | None) -> None:
    """Import the model, then answer (params, seed) requests with (kind, value) replies."""
    request_fd, reply_fd = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    protocol = {fd: _identity(fd) for fd in (request_fd, reply_fd)}
    reaper.set_memory_limit(memory_limit)
    try:
        model = load_callable(model_ref)
    except BaseException as exc:
        write_frame(reply_fd, ("import_error", _describe(exc, memory_limit)))
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
            reply = ("error", _describe(exc, memory_limit))
        damage = _damaged_descriptors(protocol)
        if damage:
            # Charge the damage to this replicate, not to the next one that would find
            # its pipes or its stderr gone.
            if reply_fd in damage:
                os._exit(PROTOCOL_LOST_EXIT_CODE)
            write_frame(reply_fd, ("retire", _damage_message(damage, request_fd)))
            return
        sys.stderr.flush()
        write_frame(reply_fd, reply)


def _describe(exc: BaseException, memory_limit: int | None) -> str:
    if isinstance(exc, MemoryError) and memory_limit:
        return f"model {reaper.memory_limit_message(memory_limit)}: {short_traceback(exc)}"
    return short_traceback(exc)


def _identity(fd: int) -> tuple[int, int] | None:
    try:
        stat = os.fstat(fd)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def _damaged_descriptors(protocol: dict[int, tuple[int, int] | None]) -> list[int]:
    """Return the protocol fds closed or replaced and the standard fds closed by the model."""
    damaged = [fd for fd, identity in protocol.items() if _identity(fd) != identity]
    return damaged + [fd for fd in STANDARD_NAMES if _identity(fd) is None]


def _damage_message(damage: list[int], request_fd: int) -> str:
    names = [
        f"{fd} ({STANDARD_NAMES.get(fd) or ('request pipe' if fd == request_fd else 'pipe')})"
        for fd in sorted(damage)
    ]
    return (
        f"the model closed file descriptor(s) {', '.join(names)} of its process; a model "
        "must leave the descriptors it did not open alone (the process was replaced)"
    )


if __name__ == "__main__":
    main()
