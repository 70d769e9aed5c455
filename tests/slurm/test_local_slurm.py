"""Smoke tests of the local Slurm: a batch job, and a dask-jobqueue SLURMCluster end to end."""

from __future__ import annotations

import os
import shlex
import sys
import time
from pathlib import Path

import pytest

from tests.slurm import local_slurm as local_slurm_module
from tests.slurm.local_slurm import LocalSlurm, slurm_conf, slurm_unavailable_reason


def wait_for_file(path: Path, deadline: float) -> None:
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear in time"
        time.sleep(0.2)


def test_the_config_describes_one_local_node_without_cgroups(tmp_path: Path) -> None:
    text = slurm_conf(
        cluster_name="c",
        root=tmp_path,
        munge_socket=tmp_path / "munge.socket",
        cpus=2,
        memory_mb=2000,
        slurmctld_port=6001,
        slurmd_port=6002,
    )
    lines = set(text.splitlines())
    assert "NodeName=localhost NodeAddr=127.0.0.1 NodeHostname=localhost CPUs=2 " in text
    assert f"AuthInfo=socket={tmp_path / 'munge.socket'}" in lines
    assert {"ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none"} <= lines
    assert {"SlurmctldPort=6001", "SlurmdPort=6002", "DefMemPerCPU=1000"} <= lines


def test_missing_binaries_are_a_reason_to_skip(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_slurm_module, "find_binary", lambda name: None)
    reason = slurm_unavailable_reason()
    assert reason is not None
    assert "slurmctld" in reason and ".ci/slurm-setup" in reason


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_the_node_is_idle_and_the_queue_empty(local_slurm: LocalSlurm) -> None:
    assert local_slurm.sinfo_state() == "idle"
    assert local_slurm.squeue_jobs() == []
    assert os.environ["SLURM_CONF"] == str(local_slurm.conf_path)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_batch_job_writes_its_file_and_leaves_the_queue(
    local_slurm: LocalSlurm, tmp_path: Path
) -> None:
    written = tmp_path / "written.txt"
    script = tmp_path / "job.sh"
    script.write_text(
        "#!/bin/bash\n"
        "#SBATCH --job-name=simstudy-file\n"
        f"#SBATCH --output={tmp_path}/job-%j.out\n"
        "#SBATCH --time=00:01:00\n"
        "#SBATCH --cpus-per-task=1\n"
        "#SBATCH --mem=64M\n"
        'echo "job $SLURM_JOB_ID cpus $SLURM_CPUS_ON_NODE mem $SLURM_MEM_PER_NODE"\n'
        f"echo done > {shlex.quote(str(written))}\n"
    )
    job_id = local_slurm.sbatch(script)
    deadline = time.monotonic() + 60
    wait_for_file(written, deadline)
    local_slurm.wait_job_gone(job_id, deadline)
    assert written.read_text() == "done\n"
    # A job learns its allocation from Slurm's variables (task/none pins no CPU).
    output = (tmp_path / f"job-{job_id}.out").read_text()
    assert output == f"job {job_id} cpus 1 mem 64\n"


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_slurm_cluster_runs_a_task_in_a_job_and_cancels_it(
    local_slurm: LocalSlurm, tmp_path: Path
) -> None:
    dask_jobqueue = pytest.importorskip("dask_jobqueue")
    from distributed import Client

    with (
        dask_jobqueue.SLURMCluster(
            cores=1,
            processes=1,
            memory="1GiB",
            walltime="00:10:00",
            job_name="simstudy-smoke",
            # The scheduler, in this process, and the worker, in the job on this same
            # machine, both on the loopback.
            scheduler_options={"host": "127.0.0.1", "port": 0, "dashboard_address": None},
            worker_extra_args=["--host", "127.0.0.1"],
            death_timeout=30,
            python=sys.executable,
            log_directory=str(tmp_path / "logs"),
            local_directory=str(tmp_path / "worker"),
            job_extra_directives=[f"--chdir={tmp_path}"],
        ) as cluster,
        Client(cluster) as client,
    ):
        cluster.scale(1)
        client.wait_for_workers(1, timeout=60)
        assert client.submit(lambda: 1 + 1).result(timeout=30) == 2
        jobs = local_slurm.squeue_jobs()
        assert [(job.name, job.state) for job in jobs] == [("simstudy-smoke", "RUNNING")]
        # The worker really runs inside that job.
        in_job = client.run(lambda: os.environ.get("SLURM_JOB_ID"))
        assert list(in_job.values()) == [str(jobs[0].job_id)]
    local_slurm.wait_no_jobs(time.monotonic() + 30)
