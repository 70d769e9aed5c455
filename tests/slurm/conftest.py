"""A real single-node Slurm for the whole test session, or a skip saying why there is none."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.slurm.local_slurm import LocalSlurm, slurm_unavailable_reason


@pytest.fixture(scope="session")
def local_slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSlurm]:
    """Start munged, slurmctld and slurmd in a scratch folder; stop them after the session.

    While it runs, SLURM_CONF points this process (and so dask-jobqueue's sbatch and
    scancel, and the jobs they submit) at it; the jobs also inherit the marker by which
    `stop()` finds what they leave behind.
    """
    reason = slurm_unavailable_reason()
    if reason:
        pytest.skip(reason)
    # Four CPUs on a 2-core machine: the tests' jobs mostly wait, and three one-core
    # worker jobs at once show an adaptive cluster growing past two.
    slurm = LocalSlurm(tmp_path_factory.mktemp("slurm"), cpus=max(4, os.cpu_count() or 1))
    slurm.start(timeout=60)
    saved = {name: os.environ.get(name) for name in slurm.env_overlay}
    os.environ.update(slurm.env_overlay)
    try:
        yield slurm
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        slurm.stop()
