"""Which policy a flow run gets: its deployment's, the safe default, or none."""

from __future__ import annotations

from pathlib import Path
from uuid import uuid4

import pytest

from flows.run_policy import policy_for
from simstudy.spec.policy import PolicyError, RunPolicy


def test_runs_outside_deployments_are_not_restricted() -> None:
    assert policy_for(None, None) is None
    assert policy_for(None, '{"allow_inline_study": true}') is None


def test_a_deployment_without_a_policy_gets_the_default() -> None:
    assert policy_for(uuid4(), None) == RunPolicy()
    assert policy_for(uuid4(), "") == RunPolicy()


def test_a_deployment_reads_its_owner_s_policy(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("models: ['mine:run']\n")
    found = policy_for(uuid4(), str(path))
    assert found is not None and found.models == ["mine:run"]


def test_an_unreadable_policy_refuses_the_run(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read the policy file"):
        policy_for(uuid4(), str(tmp_path / "missing.yaml"))
