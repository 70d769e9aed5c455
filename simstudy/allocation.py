"""The CPUs and memory this process may use: its Slurm allocation, its cgroup, or the machine.

```python
>>> allocation = current_allocation()
>>> allocation.cpus, allocation.memory_bytes, allocation.source
(2, 25769803776, 'machine')
```

A study run inside a Slurm job (`sbatch` a script that runs `simstudy run`) starts its local
cluster on the job's node. The node's CPU count and memory are not the study's: the job may
hold 4 of 64 CPUs and 8 GiB of 256, and a Slurm without cgroup enforcement does not stop a
process from using more (then the job is killed, or shares CPUs with other users' jobs).
Slurm tells a job its share in environment variables; a container tells it in its cgroup.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import psutil

CGROUP_ROOT = Path("/sys/fs/cgroup")
MEBIBYTE = 2**20


@dataclass(frozen=True)
class Allocation:
    """What this process may use, and where that was read."""

    cpus: int
    memory_bytes: int
    source: str  # "slurm", "cgroup" or "machine"; "slurm+cgroup" when both limit it

    def describe(self) -> str:
        """Return e.g. '4 CPUs and 8.0 GiB (from the Slurm allocation)'."""
        where = {
            "slurm": "the Slurm allocation",
            "cgroup": "the cgroup's limits",
            "slurm+cgroup": "the Slurm allocation and the cgroup's limits",
            "machine": "the machine",
        }[self.source]
        cpus = "1 CPU" if self.cpus == 1 else f"{self.cpus} CPUs"
        return f"{cpus} and {self.memory_bytes / 2**30:.1f} GiB (from {where})"


def current_allocation(environ: dict[str, str] | None = None) -> Allocation:
    """Return the CPUs and memory this process may use: the smallest limit that applies."""
    environ = dict(os.environ if environ is None else environ)
    cpus_found = [("machine", _affinity_cpus())]
    memory_found = [("machine", int(psutil.virtual_memory().total))]
    slurm_cpus = slurm_cpus_on_node(environ)
    if slurm_cpus is not None:
        cpus_found.append(("slurm", slurm_cpus))
    slurm_memory = slurm_memory_bytes(environ, slurm_cpus)
    if slurm_memory is not None:
        memory_found.append(("slurm", slurm_memory))
    cgroup_cpus = cgroup_cpu_limit()
    if cgroup_cpus is not None:
        cpus_found.append(("cgroup", cgroup_cpus))
    cgroup_memory = cgroup_memory_limit()
    if cgroup_memory is not None:
        memory_found.append(("cgroup", cgroup_memory))
    cpu_source, cpus = min(cpus_found, key=lambda found: found[1])
    memory_source, memory = min(memory_found, key=lambda found: found[1])
    sources = {cpu_source, memory_source} - {"machine"}
    source = "+".join(sorted(sources)) if sources else "machine"
    return Allocation(cpus=max(1, cpus), memory_bytes=memory, source=source)


def slurm_cpus_on_node(environ: dict[str, str]) -> int | None:
    """Return the CPUs the Slurm job holds on this node (SLURM_CPUS_ON_NODE), if in a job."""
    if "SLURM_JOB_ID" not in environ:
        return None  # a stray variable outside a job says nothing
    return _positive_int(environ.get("SLURM_CPUS_ON_NODE"))


def slurm_memory_bytes(environ: dict[str, str], cpus: int | None) -> int | None:
    """Return the job's memory on this node: SLURM_MEM_PER_NODE, or per CPU x its CPUs (MB)."""
    if "SLURM_JOB_ID" not in environ:
        return None
    per_node = _positive_int(environ.get("SLURM_MEM_PER_NODE"))
    if per_node is not None:
        return per_node * MEBIBYTE
    per_cpu = _positive_int(environ.get("SLURM_MEM_PER_CPU"))
    if per_cpu is not None and cpus is not None:
        return per_cpu * cpus * MEBIBYTE
    return None


def cgroup_cpu_limit(root: Path = CGROUP_ROOT) -> int | None:
    """Return the CPUs this process's cgroup grants (its quota over its period), if limited."""
    v2 = _cgroup_dir(root) / "cpu.max"
    try:
        quota, period = v2.read_text().split()[:2]
        if quota == "max":
            return None
        return max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    try:
        quota_v1 = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_v1 = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return max(1, math.ceil(quota_v1 / period_v1)) if quota_v1 > 0 and period_v1 > 0 else None


def cgroup_memory_limit(root: Path = CGROUP_ROOT) -> int | None:
    """Return the memory limit of this process's cgroup in bytes, if limited."""
    for path in (_cgroup_dir(root) / "memory.max", root / "memory" / "memory.limit_in_bytes"):
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text == "max" or not text.isdigit():
            return None
        limit = int(text)
        # cgroup v1 says "no limit" with a number near 2**63.
        return limit if limit < psutil.virtual_memory().total else None
    return None


def _cgroup_dir(root: Path) -> Path:
    """Return this process's own cgroup (v2) folder, or the root when unknown."""
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                own = root / line[3:].strip().lstrip("/")
                if own.is_dir():
                    return own
    except OSError:
        pass
    return root


def _affinity_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _positive_int(text: str | None) -> int | None:
    """Return a positive integer from an environment variable such as '4' or '4(x2)'."""
    if not text:
        return None
    head = text.split("(", 1)[0].split(",", 1)[0].strip()
    return int(head) if head.isdigit() and int(head) > 0 else None
