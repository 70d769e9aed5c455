"""Checks of a valid study against this machine, before anything starts or is written.

```python
>>> from simstudy.spec.loading import load_study
>>> from simstudy.spec.readiness import check_ready
>>> check_ready(load_study("examples/seir.yaml"), import_model=True)  # or StudyError
```

Each problem names the field: `output` on a kernel pseudo filesystem (/proc, /sys) or
not writable (or a local folder that workers on other hosts would need),
`execution.dask.address` with nothing answering, an `execution.dask.cluster_class` that
does not import (naming the extra to install), a `model` that does not import or a
command that is not found. The same study would otherwise fail much later
(a scheduler connection waits 30 s, then a traceback) or after the output folder was
already touched.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import shutil
import socket
import time
from pathlib import Path

from simstudy.analysis.targets import load_targets
from simstudy.errors import StudyError
from simstudy.run.deadlines import call_with_deadline
from simstudy.spec.study import CommandModel, Study

ADDRESS_CONNECT_SECONDS = 5.0
"""How long the scheduler at `execution.dask.address` has to accept a TCP connection."""
REFUSED_GRACE_SECONDS = 2.0
"""How long a refused scheduler address is tried again before it counts as nothing there."""
DEFAULT_SCHEDULER_PORT = 8786
PSEUDO_FILESYSTEMS = frozenset(
    {
        "proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "debugfs", "tracefs",
        "securityfs", "configfs", "pstore", "bpf", "efivarfs", "fusectl", "mqueue",
        "binfmt_misc", "autofs", "rpc_pipefs", "nsfs", "hugetlbfs",
    }
)  # fmt: skip
"""Kernel filesystems that look writable (to root) but cannot hold files."""
SHARED_FILESYSTEMS = frozenset(
    {
        "nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "beegfs", "ceph", "cephfs",
        "glusterfs", "fuse.glusterfs", "fuse.cephfs", "fuse.sshfs", "fuse.s3fs", "fuse.gcsfuse",
        "fuse.juicefs", "fuse.mount-s3", "panfs", "orangefs", "pvfs2", "afs", "ocfs2", "gfs2",
        "wekafs", "9p",
    }
)  # fmt: skip
"""Filesystems every host of a cluster can mount: a local output there reaches all workers."""
CLUSTER_EXTRAS = {"dask_jobqueue": "slurm", "dask_kubernetes": "kubernetes"}
"""The simstudy extra that installs each cluster package (docs/guides/clusters.md)."""
PSEUDO_ROOTS = ("/proc", "/sys", "/dev")
"""Used where the mount table cannot be read; /dev/shm is a tmpfs and is not refused."""


def check_ready(study: Study, *, import_model: bool) -> None:
    """Raise `StudyError` naming each field this machine cannot run the study with.

    `import_model` imports a Python model (the command line does); otherwise the module
    is only looked up (`importlib.util.find_spec`), so nothing of the model runs here.
    """
    problems = [
        problem
        for problem in (
            output_problem(study.output_dir),
            address_problem(study.execution.dask.address),
            cluster_class_problem(study.execution.dask.cluster_class),
            cluster_output_problem(study),
            model_problem(study, import_model=import_model),
        )
        if problem
    ]
    problems += targets_problems(study)
    if problems:
        raise StudyError(study.name, problems)


def targets_problems(study: Study) -> list[str]:
    """Return what is wrong with the study's targets (file, columns, rows), empty if nothing."""
    try:
        targets = load_targets(study)
    except StudyError as exc:
        return [f"{exc.source}: {problem}" for problem in exc.problems]
    problems = []
    local = not (study.execution.dask.address or study.execution.dask.cluster_class)
    user_losses = {t.loss for t in targets.outputs if ":" in t.loss} if targets else set()
    for loss in sorted(user_losses) if local else []:
        module = loss.partition(":")[0]
        try:  # looked up only, as a model is: importing runs the user's code
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            problems.append(f"targets.loss: no module named {module!r} ({loss}); {_PATH_HINT}")
    return problems


def output_problem(location: str) -> str | None:
    """Return why results cannot be written at `location`, or None."""
    # The store is imported here: fsspec is only needed once a study is about to run.
    from simstudy.output.location import OutputStore

    try:
        store = OutputStore(location)
    except (ImportError, ValueError, OSError) as exc:
        return f"output: cannot open {location!r}: {exc}"
    if store.local is None:
        return None  # an object store: permissions show at the first write
    path = Path(os.path.abspath(store.local))
    fstype = filesystem_type(path)
    if fstype in PSEUDO_FILESYSTEMS or (fstype is None and _under_pseudo_root(path)):
        return (
            f"output: {path} is on a kernel pseudo filesystem ({fstype or path.parts[1]}) "
            "that cannot hold result files; choose a folder on a disk"
        )
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing == path and not path.is_dir():
        return f"output: {path} is a file, not a folder; choose another output"
    if not existing.is_dir():
        return f"output: cannot create {path}: {existing} is a file; choose another output"
    if not os.access(existing, os.W_OK | os.X_OK):
        return (
            f"output: cannot write in {existing} (read-only filesystem or no permission); "
            "choose another output"
        )
    return None


def filesystem_type(path: Path) -> str | None:
    """Return the type of the filesystem holding `path` (from /proc/self/mounts), or None."""
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return None
    best, best_type = "", None
    real = os.path.realpath(path)
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        # Spaces and tabs in mount points are written as octal escapes (\040).
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[1])
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, best_type = point, fields[2]
    return best_type


def _under_pseudo_root(path: Path) -> bool:
    real = os.path.realpath(path)
    on_pseudo = any(real == root or real.startswith(root + "/") for root in PSEUDO_ROOTS)
    return on_pseudo and not real.startswith("/dev/shm")


def address_problem(address: str | None, timeout: float = ADDRESS_CONNECT_SECONDS) -> str | None:
    """Return why nothing answers at a scheduler address within `timeout` s, or None."""
    if not address:
        return None
    match = re.match(
        r"^(?:(?P<scheme>[a-z]+)://)?(?P<host>\[[^\]]*\]|[^:/]+)(?::(?P<port>\d+))?", address
    )
    if match is None or (match["scheme"] or "tcp") not in ("tcp", "tls", "ws", "wss"):
        return None  # inproc:// and ucx:// are not TCP: the connection shows them
    host = match["host"].strip("[]")
    port = int(match["port"] or DEFAULT_SCHEDULER_PORT)

    def connect() -> None:
        # A refused connection is tried again for a moment: a scheduler started just
        # before the study may not listen yet (Dask's own client retries for 30 s).
        refused_until = time.monotonic() + REFUSED_GRACE_SECONDS
        while True:
            try:
                socket.create_connection((host, port), timeout=timeout).close()
                return
            except ConnectionRefusedError:
                if time.monotonic() >= refused_until:
                    raise
                time.sleep(0.1)

    # With a deadline of its own, because name resolution is not bound by the socket
    # timeout: a resolver that never answers cannot hold this process.
    try:
        call_with_deadline(connect, timeout)
        return None
    except TimeoutError:
        reason = f"no answer within {timeout:g} s"
    except OSError as error:
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return (
        f"execution.dask.address: nothing answers at {address} ({reason}); start the "
        "scheduler (`dask scheduler`), fix the address, or remove it to use a local cluster"
    )


def import_cluster_class(path: str) -> type:
    """Return the Dask cluster class at `path`, or raise ValueError naming the fix."""
    module_name, _, name = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        extra = CLUSTER_EXTRAS.get(path.split(".")[0])
        fix = f"pip install 'simstudy[{extra}]'" if extra else f"install {module_name!r}"
        raise ValueError(f"cannot import {path!r} ({exc}); {fix}") from exc
    found = getattr(module, name, None)
    # distributed is imported only here, when a study names a cluster class.
    from distributed.deploy import Cluster

    if not (isinstance(found, type) and issubclass(found, Cluster)):
        raise ValueError(
            f"{path!r} is not a Dask cluster class (a subclass of "
            "distributed.deploy.Cluster); e.g. dask_jobqueue.SLURMCluster"
        )
    return found


def cluster_class_problem(path: str | None) -> str | None:
    """Return why `execution.dask.cluster_class` is not an importable Dask cluster, or None."""
    if path is None:
        return None
    try:
        import_cluster_class(path)
    except ValueError as exc:
        return f"execution.dask.cluster_class: {exc}"
    return None


def cluster_output_problem(study: Study) -> str | None:
    """Return why the workers of a cluster class on other hosts cannot reach a local output."""
    path = study.execution.dask.cluster_class
    if path is None or study.execution.dask.shared_output:
        return None
    from distributed import LocalCluster

    try:
        if issubclass(import_cluster_class(path), LocalCluster):
            return None
    except ValueError:
        return None  # cluster_class_problem names it
    return local_output_problem(study.output_dir, f"the workers of {path}")


def local_output_problem(location: str, workers: str) -> str | None:
    """Return why `workers` on other hosts cannot use the output, or None if they can.

    A local output holds the model logs the workers write (`output/logs`); a folder on a
    local disk is another folder on every other host.
    """
    from simstudy.output.location import OutputStore

    try:
        store = OutputStore(location)
    except (ImportError, ValueError, OSError):
        return None  # output_problem names it
    if store.local is None:
        return None
    path = Path(os.path.abspath(store.local))
    fstype = filesystem_type(path)
    if fstype in SHARED_FILESYSTEMS:
        return None
    return (
        f"output: {path} is a folder on this host's {fstype or 'local'} filesystem, but "
        f"{workers} run on other hosts and write model logs under it (and part files, "
        "with execution.part_files: workers); use a shared "
        "fsspec URL (e.g. s3://bucket/prefix) or a folder on a filesystem every host "
        "mounts (NFS, Lustre, GPFS, CephFS, ...); if every worker sees this folder at the "
        "same path (they run on this node, or the filesystem is shared), set "
        "execution.dask.shared_output: true"
    )


def remote_hosts(worker_hosts: list[str]) -> list[str]:
    """Return the worker hosts that are not this machine (loopback or one of its addresses)."""
    import psutil

    here = {socket.gethostname(), socket.getfqdn(), "localhost"}
    here |= {a.address for addrs in psutil.net_if_addrs().values() for a in addrs}
    return sorted(
        {
            host
            for host in worker_hosts
            if host not in here and not host.startswith("127.") and host != "::1"
        }
    )


def model_problem(study: Study, *, import_model: bool) -> str | None:
    """Return why the study's model cannot run on a local cluster, or None.

    Skipped for a scheduler at an address or a cluster class: the model must exist on
    their workers, which preflight checks, not necessarily here.
    """
    if study.execution.dask.address or study.execution.dask.cluster_class:
        return None
    if isinstance(study.model, CommandModel):
        return command_problem(study)
    module, function = study.model.split(":")
    if not import_model:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError) as exc:
            return f"model: cannot find module {module!r}: {exc}"
        return None if found else f"model: no module named {module!r}; {_PATH_HINT}"
    try:
        loaded = importlib.import_module(module)
    except (Exception, SystemExit) as exc:  # a model's import may fail in any way
        return f"model: cannot import {module!r}: {type(exc).__name__}: {exc}; {_PATH_HINT}"
    if not callable(getattr(loaded, function, None)):
        return f"model: module {module!r} has no function {function!r}"
    return None


_PATH_HINT = "check the name, and that the module is installed or on PYTHONPATH"


def command_problem(study: Study) -> str | None:
    """Return why a command model's program cannot be started here, or None."""
    assert isinstance(study.model, CommandModel)
    program = study.model.command[0]
    cwd = study.resolve(study.model.cwd)
    if not cwd.is_dir():
        return f"model.cwd: {cwd} is not a folder"
    local = cwd / program
    if shutil.which(program) or (local.is_file() and os.access(local, os.X_OK)):
        return None
    return f"model.command: {program!r} is not found or not executable (PATH, or in {cwd})"
