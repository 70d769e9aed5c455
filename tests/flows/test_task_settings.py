"""Task runs get the flow's Prefect settings built only where workers would rebuild the same."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
from distributed import Client, LocalCluster
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext, SettingsContext
from prefect.settings import PREFECT_TASKS_DEFAULT_RETRIES, Settings, temporary_settings
from prefect_dask import DaskTaskRunner

from flows.task_settings import (
    BuiltSettingsContext,
    SettingsProbe,
    check_workers,
    differing_keys,
    task_settings_context,
)

RETRIES_ENV = "PREFECT_TASKS_DEFAULT_RETRIES"


def test_built_context_sends_its_objects_but_redacts_like_prefect() -> None:
    current = SettingsContext.get()
    assert current is not None
    built = BuiltSettingsContext(profile=current.profile, settings=current.settings)
    sent = built.serialize()
    assert sent["settings"] is current.settings and sent["profile"] is current.profile
    # What a worker does with it: the same settings, without rebuilding them.
    assert SettingsContext(**sent).settings is current.settings
    assert built.serialize(include_secrets=False) == current.serialize(include_secrets=False)


def test_probe_names_what_a_worker_would_rebuild_differently(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(RETRIES_ENV, raising=False)
    probe = SettingsProbe.of_current_context()
    assert probe.mismatch() is None
    monkeypatch.setenv(RETRIES_ENV, "7")
    assert probe.mismatch() == "Prefect settings differ: tasks.default_retries"
    monkeypatch.delenv(RETRIES_ENV)
    assert "platform" in str(dataclasses.replace(probe, platform="win32").mismatch())
    assert "flow process has 0.0.1" in str(
        dataclasses.replace(probe, prefect_version="0.0.1").mismatch()
    )


def test_differing_keys_are_dotted_names() -> None:
    assert differing_keys({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}, "d": 1}) == ["a.c", "d"]
    assert differing_keys({"a": 1}, {"a": 1}) == []


class FailingProbe(SettingsProbe):
    """A probe whose check raises on the worker."""

    def mismatch(self) -> str | None:
        raise OSError("no disk")


@task(cache_policy=NO_CACHE, persist_result=False)
def default_retries_here() -> int:
    settings = SettingsContext.get()
    assert settings is not None
    return settings.settings.tasks.default_retries


@pytest.fixture
def cluster_with_worker_env(request: pytest.FixtureRequest) -> Iterator[Client]:
    """A 1-worker local cluster whose worker has the environment given by the test."""
    with (
        LocalCluster(
            n_workers=1,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address=None,
            env=request.param,
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        yield client


@flow
def retries_flow() -> tuple[bool, int]:
    runner = FlowRunContext.get().task_runner  # type: ignore[union-attr]
    with task_settings_context(runner.client) as decision:
        return decision.shipped, default_retries_here.submit().result()


def retries_seen_by_a_task_run(client: Client) -> tuple[bool, int]:
    """Return whether settings were sent built, and the default retries a task run sees."""
    runner = DaskTaskRunner(address=client.scheduler.address)
    return retries_flow.with_options(task_runner=runner)()


@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest.mark.usefixtures("prefect_api_url", "no_leftover_processes")
@pytest.mark.parametrize("cluster_with_worker_env", [{}], indirect=True)
def test_identical_workers_get_the_flows_settings_built(cluster_with_worker_env: Client) -> None:
    decision = check_workers(cluster_with_worker_env)
    assert decision.shipped and decision.mismatches == {}
    # A check that fails on a worker counts as a difference, never as a failed study.
    failing = check_workers(cluster_with_worker_env, FailingProbe.of_current_context())
    assert not failing.shipped
    assert list(failing.mismatches.values()) == ["settings check failed: OSError('no disk')"]
    # A setting of the flow's context reaches the task run on the worker.
    with temporary_settings(updates={PREFECT_TASKS_DEFAULT_RETRIES: 4}):
        assert retries_seen_by_a_task_run(cluster_with_worker_env) == (True, 4)


@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest.mark.usefixtures("prefect_api_url", "no_leftover_processes")
@pytest.mark.parametrize("cluster_with_worker_env", [{RETRIES_ENV: "7"}], indirect=True)
def test_a_worker_with_other_settings_rebuilds_them_as_prefect_does(
    cluster_with_worker_env: Client,
) -> None:
    decision = check_workers(cluster_with_worker_env)
    assert not decision.shipped
    assert list(decision.mismatches.values()) == ["Prefect settings differ: tasks.default_retries"]
    assert "tasks.default_retries" in decision.describe()
    # Prefect's own behaviour is kept: the worker's environment fills what the flow left unset.
    assert Settings().tasks.default_retries == 0
    assert retries_seen_by_a_task_run(cluster_with_worker_env) == (False, 7)
