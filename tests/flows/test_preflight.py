"""Preflight checks that need no cluster: resources, worker reports, the model."""

from __future__ import annotations

import platform
from collections.abc import Callable
from pathlib import Path

import pytest

from flows.preflight import (
    PreflightError,
    check_output_reachable,
    check_resources,
    check_worker_reports,
    model_problem,
)
from simstudy import __version__
from simstudy.spec import Study


def test_missing_resource_names_it_and_the_workers() -> None:
    workers = {"tcp://a": {"resources": {}}, "tcp://b": {"resources": {"gpu": 1}}}
    check_resources({"gpu": 1}, workers)
    with pytest.raises(PreflightError, match=r"aggregation=1, but no worker offers it .*tcp://b"):
        check_resources({"aggregation": 1}, workers)


def test_version_mismatch_and_model_problems_are_errors() -> None:
    good = {"python": platform.python_version(), "simstudy": __version__, "problem": None}
    check_worker_reports({"tcp://a": good})
    with pytest.raises(PreflightError, match="tcp://b: python 3.0.0, flow process has"):
        check_worker_reports({"tcp://a": good, "tcp://b": {**good, "python": "3.0.0"}})
    with pytest.raises(PreflightError, match="tcp://a: cannot load model"):
        check_worker_reports({"tcp://a": {**good, "problem": "cannot load model 'x:y'"}})


def test_workers_on_other_hosts_need_a_shared_output(tmp_path: Path) -> None:
    here = {"tcp://127.0.0.1:4001": {"host": "127.0.0.1"}}
    check_output_reachable(str(tmp_path / "out"), here)
    elsewhere = {
        **here,
        "tcp://192.0.2.7:4001": {"host": "192.0.2.7"},
        "tcp://192.0.2.8:4001": {"host": "192.0.2.8"},
    }
    check_output_reachable("memory://shared-out", elsewhere)
    with pytest.raises(PreflightError) as caught:
        check_output_reachable(str(tmp_path / "out"), elsewhere)
    message = str(caught.value)
    assert message.startswith(f"output: {tmp_path / 'out'} is a folder on this host's")
    assert "workers tcp://192.0.2.7:4001 and 1 more (hosts 192.0.2.7, 192.0.2.8)" in message
    assert "use a shared fsspec URL (e.g. s3://bucket/prefix)" in message


@pytest.mark.usefixtures("no_leftover_processes")
def test_model_problems(make_study: Callable[..., Study], tmp_path: Path) -> None:
    assert model_problem(make_study(model="tests.support.faulty:nothing"), str(tmp_path), 1)
    command = make_study(model={"command": ["no-such-program-here"]})
    assert "not found or not executable" in (model_problem(command, str(tmp_path), 1) or "")
    assert (
        model_problem(make_study(model={"command": ["python3", "-c", "1"]}), str(tmp_path), 1)
        is None
    )
