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
    versions,
)
from simstudy import __version__
from simstudy.errors import SimstudyError
from simstudy.run.source_digest import source_digest
from simstudy.spec.study import Study


def test_missing_resource_names_it_and_the_workers() -> None:
    workers = {"tcp://a": {"resources": {}}, "tcp://b": {"resources": {"gpu": 1}}}
    check_resources({"gpu": 1}, workers)
    with pytest.raises(PreflightError, match=r"aggregation=1, but no worker offers it .*tcp://b"):
        check_resources({"aggregation": 1}, workers)


def test_version_mismatch_and_model_problems_are_errors() -> None:
    good = {**versions(), "problem": None}
    check_worker_reports({"tcp://a": good})
    with pytest.raises(PreflightError, match="tcp://b: python 3.0.0, flow process has"):
        check_worker_reports({"tcp://a": good, "tcp://b": {**good, "python": "3.0.0"}})
    with pytest.raises(PreflightError, match="tcp://a: cannot load model"):
        check_worker_reports({"tcp://a": {**good, "problem": "cannot load model 'x:y'"}})


def test_versions_name_python_simstudy_and_its_source() -> None:
    assert versions() == {
        "python": platform.python_version(),
        "simstudy": __version__,
        "simstudy_source": source_digest(),
    }


def test_a_worker_running_other_simstudy_code_of_the_same_version_is_refused() -> None:
    good = {**versions(), "problem": None}
    other_code = {**good, "simstudy_source": "0" * 32}
    with pytest.raises(PreflightError) as caught:
        check_worker_reports({"tcp://a": good, "tcp://b": other_code})
    message = str(caught.value)
    assert "tcp://a" not in message
    assert (
        f"tcp://b: runs different simstudy code than the flow process (same version {__version__}"
        in message
    )
    assert "install the same checkout on the flow's host and every worker" in message
    # A worker whose code predates the digest reports none: refused the same way.
    older = {key: value for key, value in good.items() if key != "simstudy_source"}
    with pytest.raises(PreflightError, match="tcp://c: runs different simstudy code"):
        check_worker_reports({"tcp://c": older})


def test_another_version_string_is_said_once() -> None:
    other = {**versions(), "simstudy": "0.0.1", "simstudy_source": "0" * 32, "problem": None}
    with pytest.raises(PreflightError) as caught:
        check_worker_reports({"tcp://a": other})
    assert f"tcp://a: simstudy 0.0.1, flow process has {__version__}" in str(caught.value)
    assert "different simstudy code" not in str(caught.value)


def test_a_worker_without_the_plugin_is_named_once() -> None:
    with pytest.raises(PreflightError) as caught:
        check_worker_reports({"tcp://a": {"problem": "simstudy worker plugin missing"}})
    assert str(caught.value).count("\n  - ") == 1


def test_a_preflight_refusal_is_a_user_error_of_the_environment() -> None:
    assert issubclass(PreflightError, SimstudyError) and issubclass(PreflightError, RuntimeError)
    assert PreflightError.exit_code == 3


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
