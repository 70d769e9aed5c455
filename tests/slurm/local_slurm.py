"""A real single-node Slurm (munged, slurmctld, slurmd) in a scratch folder, for tests.

    slurm = LocalSlurm(tmp_path)
    slurm.start()                      # returns once the node is idle
    try:
        job_id = slurm.sbatch(script)
        ...
    finally:
        slurm.stop()                   # cancels every job, stops the daemons

Everything lives in the scratch folder: slurm.conf, a MUNGE key and socket of its own (so
neither /etc/munge nor /etc/slurm is read or changed), state, spool, logs and pid files. The
daemons run in the foreground as children of this process (`-D`, `-F`), logging to files, so
`stop()` can wait for them. Jobs run as the submitting user (root here: slurmd must be root to
start jobs) on this very machine, under the node name `localhost` (slurmd is told `-N
localhost`, so the machine's own host name does not matter).

Debian's packages `slurm-wlm` and `munge` provide the binaries: `.ci/slurm-setup` installs
them. `slurm_unavailable_reason()` says why Slurm cannot run here, for `pytest.skip`.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

NODE_NAME = "localhost"
PARTITION = "debug"
# The environment variable that marks the daemons and every job submitted with `env` (and so
# whatever such a job leaves behind): `stop()` finds stragglers by it.
MARKER = "SIMSTUDY_LOCAL_SLURM"
# Daemons live in /usr/sbin, which a non-login PATH may lack.
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin", "/sbin"])
# What this module runs: MUNGE's daemon and tools, Slurm's daemons and client commands.
REQUIRED = (
    *("munged", "mungekey", "munge"),
    *("slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scancel", "scontrol"),
)
COMMAND_TIMEOUT = 30.0


def find_binary(name: str) -> str | None:
    """Return the path of a Slurm or MUNGE binary, looking in /usr/sbin too."""
    return shutil.which(name, path=SEARCH_PATH)


def slurm_unavailable_reason() -> str | None:
    """Return why a local Slurm cannot run on this machine, or None when it can."""
    if not sys.platform.startswith("linux"):
        return f"Slurm needs Linux, not {sys.platform}"
    missing = [name for name in REQUIRED if find_binary(name) is None]
    if missing:
        return (
            f"Slurm or MUNGE is not installed ({', '.join(missing)} not found): "
            "run .ci/slurm-setup (Debian packages slurm-wlm and munge)"
        )
    if os.geteuid() != 0:
        return "a local Slurm needs root: slurmd starts jobs as their submitting user"
    return None


def free_port() -> int:
    """Return a TCP port free on 127.0.0.1 now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class SlurmJob:
    """One line of `squeue`: the job's id, name and state (`PENDING`, `RUNNING`, ...)."""

    job_id: int
    name: str
    state: str


class SlurmError(RuntimeError):
    """The local Slurm did not start, or a command of it failed."""


class LocalSlurm:
    """A single-node Slurm cluster rooted in a scratch folder.

    Args:
        root: an empty folder of its own (a test's tmp dir); created if missing.
        cluster_name: the `ClusterName` of slurm.conf.
        memory_mb: the node's `RealMemory`; by default the machine's memory less 1 GiB
            (or less 10 % when that is larger), so slurmd never finds less than configured.
        cpus: the node's `CPUs`, by default `os.cpu_count()`.

    After `start()`, `startup_seconds` is the time it took until the node was idle.
    """

    def __init__(
        self,
        root: Path | str,
        *,
        cluster_name: str = "simstudy",
        memory_mb: int | None = None,
        cpus: int | None = None,
    ) -> None:
        self.root = Path(root).resolve()
        self.cluster_name = cluster_name
        total_mb = psutil.virtual_memory().total // 2**20
        self.memory_mb = memory_mb or max(256, total_mb - max(1024, total_mb // 10))
        self.cpus = cpus or os.cpu_count() or 1
        self.conf_path = self.root / "etc" / "slurm.conf"
        self.munge_socket = self.root / "munge" / "munge.socket"
        self.log_dir = self.root / "log"
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self._started_at = 0.0
        self.startup_seconds: float | None = None

    # The environment

    @property
    def env_overlay(self) -> dict[str, str]:
        """The variables that point Slurm's commands (and jobs) at this cluster."""
        return {"SLURM_CONF": str(self.conf_path), MARKER: str(self.root)}

    @property
    def env(self) -> dict[str, str]:
        """The environment for a child process that uses this cluster (has SLURM_CONF)."""
        return {**os.environ, **self.env_overlay}

    # Configuration

    def write_config(self) -> None:
        """Write slurm.conf and a MUNGE key of its own into the scratch folder."""
        for name in ("etc", "munge", "state", "spool", "log", "run"):
            (self.root / name).mkdir(parents=True, exist_ok=True)
        # munged refuses a key folder others can write, and warns about a socket folder
        # others cannot enter.
        (self.root / "etc").chmod(0o700)
        (self.root / "munge").chmod(0o711)
        key = self.root / "etc" / "munge.key"
        if not key.exists():
            run_checked([binary("mungekey"), "--create", f"--keyfile={key}"], env=self.env)
        key.chmod(0o600)
        ctld_port, slurmd_port = free_port(), free_port()
        while slurmd_port == ctld_port:
            slurmd_port = free_port()
        self.conf_path.write_text(
            slurm_conf(
                cluster_name=self.cluster_name,
                root=self.root,
                munge_socket=self.munge_socket,
                cpus=self.cpus,
                memory_mb=self.memory_mb,
                slurmctld_port=ctld_port,
                slurmd_port=slurmd_port,
            )
        )

    # Life cycle

    def start(self, timeout: float = 60.0) -> LocalSlurm:
        """Write the config, start munged, slurmctld and slurmd; return once the node is idle."""
        reason = slurm_unavailable_reason()
        if reason:
            raise SlurmError(reason)
        self._started_at = time.monotonic()
        deadline = self._started_at + timeout
        atexit.register(self.stop)
        try:
            self.write_config()
            self._start_munged(deadline)
            # -c: start clean, ignoring any saved state; -i: ignore unreadable state files.
            self._spawn("slurmctld", ["-D", "-c", "-i", "-f", str(self.conf_path)])
            self._spawn("slurmd", ["-D", "-N", NODE_NAME, "-f", str(self.conf_path)])
            self.wait_idle(deadline)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - self._started_at
        return self

    def _start_munged(self, deadline: float) -> None:
        munge = self.root / "munge"
        self._spawn(
            "munged",
            [
                "-F",  # stay in the foreground, a child of ours
                "--force",  # start even over a stale socket, or with a warning about perms
                f"--socket={self.munge_socket}",
                f"--key-file={self.root / 'etc' / 'munge.key'}",
                f"--pid-file={munge / 'munged.pid'}",
                f"--seed-file={munge / 'munged.seed'}",
                f"--log-file={self.log_dir / 'munged.log'}",
                "--num-threads=2",
            ],
        )
        while True:
            self._check_alive()
            if self.munge_socket.exists():
                probe = subprocess.run(
                    [binary("munge"), "-n", f"--socket={self.munge_socket}"],
                    capture_output=True,
                    timeout=COMMAND_TIMEOUT,
                    check=False,
                )
                if probe.returncode == 0:
                    return
            if time.monotonic() > deadline:
                raise SlurmError("munged did not answer in time\n" + self.log_tails())
            time.sleep(0.1)

    def _spawn(self, name: str, args: list[str]) -> None:
        with open(self.log_dir / f"{name}.out", "ab") as out:
            self._processes[name] = subprocess.Popen(
                [binary(name), *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.root,
            )

    def _check_alive(self) -> None:
        for name, process in self._processes.items():
            code = process.poll()
            if code is not None:
                raise SlurmError(f"{name} exited with code {code}\n" + self.log_tails())

    def wait_idle(self, deadline: float) -> None:
        """Wait until the node is idle (`deadline` is a `time.monotonic()` value)."""
        state = ""
        while True:
            self._check_alive()
            with contextlib.suppress(SlurmError, subprocess.TimeoutExpired):
                state = self.sinfo_state()
                if state == "idle":
                    return
            if time.monotonic() > deadline:
                raise SlurmError(
                    f"node {NODE_NAME} is not idle in time (state {state!r}, "
                    f"reason {self._node_reason()!r})\n" + self.log_tails()
                )
            time.sleep(0.25)

    def stop(self, timeout: float = 30.0) -> None:
        """Cancel every job, stop slurmd, slurmctld and munged; wait for them to exit."""
        atexit.unregister(self.stop)
        if not self._processes:
            return
        deadline = time.monotonic() + timeout
        if self._alive("slurmctld"):
            with contextlib.suppress(SlurmError, subprocess.TimeoutExpired):
                jobs = self.squeue_jobs()
                if jobs:
                    self.command(["scancel", *(str(job.job_id) for job in jobs)])
                    self.wait_no_jobs(min(deadline, time.monotonic() + timeout / 2))
        # slurmd before slurmctld (it would otherwise retry), munged last (both need it).
        for name in ("slurmd", "slurmctld", "munged"):
            process = self._processes.pop(name, None)
            if process is not None:
                stop_process(process, deadline)
        self._processes.clear()
        kill_marked(self.root)

    def _alive(self, name: str) -> bool:
        process = self._processes.get(name)
        return process is not None and process.poll() is None

    def __enter__(self) -> LocalSlurm:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # Commands

    def command(self, args: list[str], timeout: float = COMMAND_TIMEOUT) -> str:
        """Run a Slurm client command against this cluster; return its standard output."""
        return run_checked([binary(args[0]), *args[1:]], env=self.env, timeout=timeout)

    def sinfo_state(self) -> str:
        """Return the node's state as `sinfo %t` prints it: `idle`, `alloc`, `mix`, `down*`."""
        return self.command(["sinfo", "-h", "-n", NODE_NAME, "-o", "%t"]).strip()

    def _node_reason(self) -> str:
        with contextlib.suppress(SlurmError, subprocess.TimeoutExpired):
            return self.command(["sinfo", "-h", "-n", NODE_NAME, "-o", "%E"]).strip()
        return "?"

    def squeue_jobs(self) -> list[SlurmJob]:
        """Return the jobs Slurm still lists (pending, running, completing)."""
        out = self.command(["squeue", "-h", "-o", "%i|%T|%j"])
        jobs = []
        for line in out.splitlines():
            if line.strip():
                job_id, state, name = line.split("|", 2)
                jobs.append(SlurmJob(int(job_id), name, state))
        return jobs

    def sbatch(self, script: Path | str, *args: str, cwd: Path | str | None = None) -> int:
        """Submit a batch script (extra `sbatch` options in `args`); return the job id."""
        out = run_checked(
            [binary("sbatch"), "--parsable", *args, str(script)],
            env=self.env,
            cwd=cwd or self.root,
        )
        return int(out.strip().split(";")[0])

    def wait_no_jobs(self, deadline: float) -> None:
        """Wait until `squeue` lists no job (`deadline` is a `time.monotonic()` value)."""
        while True:
            jobs = self.squeue_jobs()
            if not jobs:
                return
            if time.monotonic() > deadline:
                raise SlurmError(f"jobs still queued: {jobs}")
            time.sleep(0.25)

    def wait_job_gone(self, job_id: int, deadline: float) -> None:
        """Wait until `squeue` no longer lists the job."""
        while True:
            if all(job.job_id != job_id for job in self.squeue_jobs()):
                return
            if time.monotonic() > deadline:
                raise SlurmError(f"job {job_id} still queued: {self.squeue_jobs()}")
            time.sleep(0.25)

    def log_tails(self, lines: int = 15) -> str:
        """The last lines of every daemon log, for an error message."""
        parts = []
        for path in sorted(self.log_dir.glob("*")):
            with contextlib.suppress(OSError):
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {path.name}\n" + "\n".join(tail))
        return "\n".join(parts)


def slurm_conf(
    *,
    cluster_name: str,
    root: Path,
    munge_socket: Path,
    cpus: int,
    memory_mb: int,
    slurmctld_port: int,
    slurmd_port: int,
) -> str:
    """Return a minimal slurm.conf for one node, `localhost`, and one partition."""
    return f"""\
# A single-node Slurm for tests, written by tests/slurm/local_slurm.py.
ClusterName={cluster_name}
SlurmctldHost={NODE_NAME}(127.0.0.1)
SlurmctldPort={slurmctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={root / "state"}
SlurmdSpoolDir={root / "spool"}
SlurmctldPidFile={root / "run" / "slurmctld.pid"}
SlurmdPidFile={root / "run" / "slurmd.pid"}
SlurmctldLogFile={root / "log" / "slurmctld.log"}
SlurmdLogFile={root / "log" / "slurmd.log"}
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups (none usable without systemd here): processes tracked through /proc.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
# A job without --mem gets its CPUs' share of the memory, not the whole node's.
DefMemPerCPU={memory_mb // cpus}
# The configured CPUs and memory win over what slurmd finds, so a node never drains for a
# hardware mismatch.
SlurmdParameters=config_overrides
ReturnToService=2
# Short timeouts: a finished job leaves squeue within seconds, a cancelled one dies fast.
MinJobAge=2
KillWait=2
InactiveLimit=0
Waittime=0
SlurmctldTimeout=30
SlurmdTimeout=30
MessageTimeout=10
NodeName={NODE_NAME} NodeAddr=127.0.0.1 NodeHostname={NODE_NAME} CPUs={cpus} \
RealMemory={memory_mb} State=UNKNOWN
PartitionName={PARTITION} Nodes={NODE_NAME} Default=YES MaxTime=INFINITE State=UP
"""


def binary(name: str) -> str:
    """Return the path of a Slurm or MUNGE binary, or raise SlurmError."""
    path = find_binary(name)
    if path is None:
        raise SlurmError(f"{name} not found: run .ci/slurm-setup")
    return path


def run_checked(
    args: list[str],
    *,
    env: dict[str, str],
    timeout: float = COMMAND_TIMEOUT,
    cwd: Path | str | None = None,
) -> str:
    """Run a command (no shell) with a timeout; return its output or raise SlurmError."""
    result = subprocess.run(
        args,
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if result.returncode != 0:
        raise SlurmError(
            f"{' '.join(args)} exited with {result.returncode}: {result.stderr.strip()}"
        )
    return result.stdout


def stop_process(process: subprocess.Popen[bytes], deadline: float) -> None:
    """SIGTERM a daemon, wait until the deadline (at least 2 s), then SIGKILL it."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=max(2.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def kill_marked(root: Path) -> None:
    """Kill what this Slurm left running: a job's processes (found by MARKER) and their
    slurmstepd. This process and its own children are left alone: they are not jobs."""
    own = {os.getpid()}
    with contextlib.suppress(psutil.Error):
        own |= {child.pid for child in psutil.Process().children(recursive=True)}
    found: dict[int, psutil.Process] = {}
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if process.pid not in own and process.environ().get(MARKER) == str(root):
                found[process.pid] = process
                # slurmstepd clears its own environment: find it as the job's parent.
                for parent in process.parents():
                    if parent.name() == "slurmstepd":
                        found[parent.pid] = parent
    for process in found.values():
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(list(found.values()), timeout=10)
