"""What a process may use: a Slurm job's allocation, a cgroup's limits, or the machine."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from simstudy import allocation as allocation_module
from simstudy.allocation import (
    cgroup_cpu_limit,
    cgroup_memory_limit,
    current_allocation,
    slurm_memory_bytes,
)

MACHINE_MEMORY = psutil.virtual_memory().total


def test_outside_any_job_the_machine_s_cpus_and_memory() -> None:
    found = current_allocation({})
    assert found.cpus >= 1 and found.memory_bytes <= MACHINE_MEMORY


def test_a_slurm_job_s_cpus_and_memory_per_cpu_limit_the_process() -> None:
    environ = {"SLURM_JOB_ID": "7", "SLURM_CPUS_ON_NODE": "1", "SLURM_MEM_PER_CPU": "700"}
    found = current_allocation(environ)
    assert (found.cpus, found.memory_bytes, found.source) == (1, 700 * 2**20, "slurm")
    assert "1 CPU and 0.7 GiB (from the Slurm allocation)" in found.describe()


def test_memory_per_node_wins_over_memory_per_cpu() -> None:
    environ = {"SLURM_JOB_ID": "7", "SLURM_MEM_PER_NODE": "2048", "SLURM_MEM_PER_CPU": "1"}
    assert slurm_memory_bytes(environ, cpus=4) == 2048 * 2**20


def test_slurm_variables_outside_a_job_and_malformed_values_are_ignored() -> None:
    assert current_allocation({"SLURM_CPUS_ON_NODE": "1"}).source in {"machine", "cgroup"}
    environ = {"SLURM_JOB_ID": "7", "SLURM_CPUS_ON_NODE": "lots", "SLURM_MEM_PER_NODE": "-5"}
    assert current_allocation(environ).source in {"machine", "cgroup"}


def test_a_job_larger_than_the_machine_is_held_to_the_machine() -> None:
    environ = {"SLURM_JOB_ID": "7", "SLURM_CPUS_ON_NODE": "4096", "SLURM_MEM_PER_NODE": "9" * 12}
    found = current_allocation(environ)
    assert found.cpus <= psutil.cpu_count() and found.memory_bytes <= MACHINE_MEMORY


def test_cgroup_v2_quota_and_memory_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocation_module, "_cgroup_dir", lambda root: root)
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    (tmp_path / "memory.max").write_text(f"{2**30}\n")
    assert cgroup_cpu_limit(tmp_path) == 2
    assert cgroup_memory_limit(tmp_path) == 2**30
    (tmp_path / "cpu.max").write_text("max 100000\n")
    (tmp_path / "memory.max").write_text("max\n")
    assert cgroup_cpu_limit(tmp_path) is None and cgroup_memory_limit(tmp_path) is None


def test_cgroup_v1_quota(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocation_module, "_cgroup_dir", lambda root: root / "unified")
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(tmp_path) == 3
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_limit(tmp_path) is None
