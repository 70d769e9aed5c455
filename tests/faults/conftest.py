"""Fixtures of the fault-injection suite: studies whose chosen replicates misbehave."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from distributed import Client, LocalCluster

from simstudy.design.expand import expand_parameters
from simstudy.design.identity import replicate_seed
from simstudy.spec.study import Study


@pytest.fixture
def faulty_study(
    make_study: Callable[..., Study], tmp_path: Path
) -> Callable[..., tuple[Study, list[str]]]:
    """Build a study and make the chosen (set index, replicate) pairs misbehave.

    Returns the study and its param ids in design order.
    """

    def build(faults: dict[tuple[int, int], str], **overrides: Any) -> tuple[Study, list[str]]:
        path = tmp_path / "faults.json"
        fixed = {"faults_file": str(path), **overrides.pop("fixed", {})}
        study = make_study(fixed=fixed, **overrides)
        ids = [ps.param_id for ps in expand_parameters(study)]
        seeds = {
            str(replicate_seed(study.seed, ids[s], r)): behavior
            for (s, r), behavior in faults.items()
        }
        path.write_text(json.dumps(seeds))
        return study, ids

    return build


@pytest.fixture
def cluster() -> Iterator[tuple[LocalCluster, Client]]:
    """A local cluster of 2 single-thread worker processes, started outside the flow."""
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
            dashboard_address=None,
        ) as local,
        Client(local, set_as_default=False) as client,
    ):  # fmt: skip
        yield local, client
