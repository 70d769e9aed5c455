"""Process trees that die with their owner: subreapers, tree kills, memory limits, lifelines.

```python
>>> from simstudy.run.runners import reaper
>>> reaper.become_subreaper()  # orphans of our descendants now re-parent to us
True
>>> reaper.kill_tree(pid)  # stop pid, SIGKILL every descendant, then pid itself
```

A model process that double-forks a daemon with `setsid` leaves both its process group
and its parent: killing the group misses it, and once its parent is gone it is re-parented
to the nearest *child subreaper* above it (`prctl(PR_SET_CHILD_SUBREAPER)`, Linux >= 3.4),
or to init. So every process that supervises a model is a subreaper: whatever the model
starts stays its descendant, and is killed with it. Descendants are found from `/proc`
(parent pid of every process), so this module needs the standard library only and also
runs as a script (`python -I -S reaper.py ...`) in front of a command model or as a
lifeline next to a Dask worker, started in tens of milliseconds.

Run as a script:
- `reaper.py run [--memory-limit BYTES] -- PROGRAM ARGS...`: become a subreaper, run the
  program with its address space limited, and exit the way it exited; when it exits,
  anything it left running is killed, and if our parent dies, the program and everything
  it started are killed.
- `reaper.py lifeline WATCHED_PID TARGET_PID`: when WATCHED_PID dies, kill TARGET_PID and
  all its descendants; exit quietly when TARGET_PID exits first.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import select
import signal
import sys
import time
from collections.abc import Iterable

PR_SET_CHILD_SUBREAPER = 36
PR_SET_PDEATHSIG = 1
KILL_ROUNDS_SECONDS = 5.0
"""How long a tree kill keeps sweeping for new descendants (a fork bomb) before giving up."""
POLL_SECONDS = 0.2
"""Wake-up interval where no pidfd can be had (old kernels, some sandboxes)."""
EXEC_FAILED_EXIT_CODE = 127
SCRIPT = os.path.abspath(__file__)


def become_subreaper() -> bool:
    """Make orphaned descendants re-parent to this process; False where Linux prctl is missing."""
    return _prctl(PR_SET_CHILD_SUBREAPER, 1)


def parent_death_signal(signum: int) -> bool:
    """Have `signum` sent to this process when the thread that forked it ends (Linux)."""
    return _prctl(PR_SET_PDEATHSIG, signum)


def die_with_parent(parent: int) -> bool:
    """SIGKILL this process when its parent (a single-threaded `parent`) dies."""
    # The signal follows the *thread* that forked us, so only a single-threaded parent
    # (the supervisor) can ask for it safely.
    if not parent_death_signal(signal.SIGKILL):
        return False
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGKILL)
    return True


def _prctl(option: int, value: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(option, value, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def set_memory_limit(limit_bytes: int | None) -> None:
    """Limit this process's address space (RLIMIT_AS), inherited by what it starts."""
    if limit_bytes:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            limit_bytes = min(limit_bytes, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, hard))


def memory_limit_message(limit_bytes: int) -> str:
    """Return how a replicate over its memory limit is described."""
    return f"exceeded its memory limit of {limit_bytes / 2**20:g} MiB"


def exit_description(returncode: int) -> str:
    """Return a readable reason for a child's exit status, with the shell-style code."""
    if returncode < 0:
        number = -returncode
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        return f"killed by {name} (exit code {128 + number})"
    return f"exited with code {returncode}"


def _process_table() -> dict[int, tuple[int, str]]:
    """Return pid -> (parent pid, state letter) of every process visible in /proc."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        # The command name (2nd field) may hold spaces and parentheses: split after the last ')'.
        fields = stat[stat.rfind(b")") + 2 :].split()
        table[int(name)] = (int(fields[1]), fields[0].decode())
    return table


def descendants(pid: int) -> list[int]:
    """Return the live (non-zombie) descendants of `pid`, parents before children."""
    if not os.path.isdir("/proc/self"):
        return []
    children: dict[int, list[int]] = {}
    state = {}
    for child, (parent, letter) in _process_table().items():
        children.setdefault(parent, []).append(child)
        state[child] = letter
    found, todo = [], list(children.get(pid, []))
    while todo:
        child = todo.pop()
        if state.get(child) not in ("Z", "X"):
            found.append(child)
        todo.extend(children.get(child, []))
    return found


def direct_children(pid: int) -> list[int]:
    """Return the children of a single-threaded process (cheap: one /proc read)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(c) for c in handle.read().split()]
    except (OSError, ValueError):
        return []


def _signal(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def kill_descendants(pid: int, exclude: Iterable[int] = (), reap: bool = False) -> list[int]:
    """SIGKILL every descendant of `pid` until none is left; return those that could not be."""
    spared = set(exclude)
    deadline = time.monotonic() + KILL_ROUNDS_SECONDS
    while True:
        if reap:
            reap_children()
        alive = [p for p in descendants(pid) if p not in spared]
        if not alive or time.monotonic() > deadline:
            return alive
        # Killed processes cannot fork any more; what they started before is re-parented
        # to the nearest subreaper (pid, or one of its descendants) and found next round.
        _signal(alive, signal.SIGKILL)
        time.sleep(0.001)


def kill_tree(pid: int, exclude: Iterable[int] = ()) -> None:
    """Freeze `pid`, SIGKILL all its descendants, then `pid` (which its parent must reap)."""
    # Stopped, a subreaper keeps adopting the orphans of its dying descendants (so they
    # stay findable under it) but can neither reap them nor start anything new.
    _signal([pid], signal.SIGSTOP)
    kill_descendants(pid, exclude)
    _signal([pid], signal.SIGKILL)


def reap_children() -> list[tuple[int, int]]:
    """Reap every exited child of this process; return (pid, wait status) pairs."""
    reaped: list[tuple[int, int]] = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return reaped
        if pid == 0:
            return reaped
        reaped.append((pid, status))


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _wait_for(child: int, parent: int) -> int | None:
    """Wait until `child` exits (return its wait status) or `parent` dies (return None)."""
    child_fd, parent_fd = _pidfd(child), _pidfd(parent)
    try:
        poller = select.poll()
        for fd in (child_fd, parent_fd):
            if fd is not None:
                poller.register(fd, select.POLLIN)
        # Pidfds wake us at once; without them, poll at POLL_SECONDS.
        timeout_ms = 1000 if None not in (child_fd, parent_fd) else int(POLL_SECONDS * 1000)
        while True:
            # Orphans adopted from the model's tree become our zombies when they exit.
            for pid, status in reap_children():
                if pid == child:
                    return status
            if os.getppid() != parent:
                return None
            poller.poll(timeout_ms)
    finally:
        for fd in (child_fd, parent_fd):
            if fd is not None:
                os.close(fd)


def supervise(child: int, parent: int) -> int:
    """Wait for `child`, then kill what it left; if `parent` dies, kill everything first."""
    status = _wait_for(child, parent)
    kill_descendants(os.getpid(), reap=True)
    if status is None:
        _, status = os.waitpid(child, 0)
    return status


def exit_like(status: int) -> None:
    """Exit this process the way a child with wait status `status` exited."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        # Dying of the same signal keeps the child's cause (SIGSEGV, SIGKILL) for our
        # parent, without writing a core file of our own.
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        with contextlib.suppress(ValueError, OSError):
            signal.signal(number, signal.SIG_DFL)  # impossible (and needless) for SIGKILL
        with contextlib.suppress(ValueError, OSError):
            signal.pthread_sigmask(signal.SIG_UNBLOCK, [number])
            os.kill(os.getpid(), number)
        os._exit(128 + number)
    os._exit(os.waitstatus_to_exitcode(status))


def lifeline(watched: int, target: int) -> None:
    """When `watched` dies, kill `target` and its descendants; return when `target` exits."""
    watched_fd, target_fd = _pidfd(watched), _pidfd(target)
    poller = select.poll()
    for fd in (watched_fd, target_fd):
        if fd is not None:
            poller.register(fd, select.POLLIN)
    timeout_ms = -1 if None not in (watched_fd, target_fd) else int(POLL_SECONDS * 1000)
    while True:
        if not _alive(target):
            return
        if not _alive(watched):
            kill_tree(target, exclude=[os.getpid()])
            return
        poller.poll(timeout_ms)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] not in (b"Z", b"X")


def start_lifeline(watched: int, target: int | None = None) -> int:
    """Start a lifeline process that kills `target` (default: us) when `watched` dies."""
    target = os.getpid() if target is None else target
    argv = [sys.executable, "-I", "-S", SCRIPT, "lifeline", str(watched), str(target)]
    # A fork would copy this (possibly large, multithreaded) process; posix_spawn does not.
    return os.posix_spawn(sys.executable, argv, dict(os.environ))


def run_command(argv: list[str], memory_limit: int | None) -> None:
    """Run a program as our child under the memory limit; exit the way it exited."""
    become_subreaper()
    parent = os.getppid()
    ready_read, ready_write = os.pipe2(os.O_CLOEXEC)
    child = os.fork()
    if child == 0:
        os.close(ready_read)
        try:
            set_memory_limit(memory_limit)
            os.execvp(argv[0], argv)
        except OSError as exc:
            os.write(ready_write, f"{exc.strerror}".encode())
        os._exit(EXEC_FAILED_EXIT_CODE)
    os.close(ready_write)
    with os.fdopen(ready_read, "rb") as ready:
        failure = ready.read().decode()  # empty: the exec closed the pipe
    if failure:
        sys.stderr.write(f"cannot start {argv[0]!r} in {os.getcwd()}: {failure}\n")
        sys.stderr.flush()
    exit_like(supervise(child, parent))


def main(args: list[str]) -> None:
    """Dispatch the script's two roles (see the module docstring)."""
    if args[:1] == ["lifeline"] and len(args) == 3:
        lifeline(int(args[1]), int(args[2]))
        return
    if args[:1] == ["run"] and "--" in args:
        split = args.index("--")
        options, command = args[1:split], args[split + 1 :]
        limit = int(options[1]) if options[:1] == ["--memory-limit"] else None
        run_command(command, limit)
    sys.exit(f"usage: {SCRIPT} run [--memory-limit BYTES] -- PROGRAM ... | lifeline PID PID")


if __name__ == "__main__":
    main(sys.argv[1:])
