"""Checks before anything is submitted: workers, resources, model, versions.

Each check fails in seconds with an error naming what is wrong and where, instead of
letting a study wait forever (a task asking for a Dask resource no worker offers waits
silently; a model that cannot be imported fails every replicate).
"""

from __future__ import annotations

import logging
import os
import platform
from typing import Any

import distributed
from distributed.diagnostics.plugin import WorkerPlugin

from flows.watchdog import silent_workers
from simstudy import __version__ as simstudy_version
from simstudy.deadlines import CLUSTER_ANSWER_SECONDS, call_with_deadline
from simstudy.readiness import command_problem
from simstudy.runners import make_runner
from simstudy.runners.process import (
    STARTUP_TIMEOUT_SECONDS,
    ProcessRunner,
    close_shared_runners,
)
from simstudy.spec import CommandModel, Study

logger = logging.getLogger(__name__)


class PreflightError(RuntimeError):
    """The cluster cannot run this study; the message says why and where."""


class StudyWorkerPlugin(WorkerPlugin):
    """On every worker (also ones that join later): warm the runner, record versions."""

    def __init__(self, study: Study, log_dir: str):
        self.study = study
        self.log_dir = log_dir
        self.report: dict[str, Any] = {}

    def setup(self, worker: distributed.Worker) -> None:
        """Check the model on this worker and start its model processes."""
        self.report = {
            "python": platform.python_version(),
            "simstudy": simstudy_version,
            "problem": model_problem(self.study, self.log_dir, worker.state.nthreads),
        }

    def teardown(self, worker: distributed.Worker) -> None:
        """Stop the model processes of this worker."""
        close_shared_runners()


def model_problem(study: Study, log_dir: str, threads: int) -> str | None:
    """Return why the model cannot run here, or None; warms process-runner children."""
    model = study.model
    if isinstance(model, CommandModel):
        return command_problem(study)
    try:
        runner = make_runner(study, log_dir)
        if isinstance(runner, ProcessRunner):
            runner.warm(threads)
    except Exception as exc:
        return f"cannot load model {model!r}: {exc}"
    return None


def _plugin_report(dask_worker: distributed.Worker, name: str) -> dict[str, Any]:
    plugin = dask_worker.plugins.get(name)
    return getattr(plugin, "report", {}) or {"problem": "simstudy worker plugin missing"}


def preflight(client: distributed.Client, study: Study, plugin_name: str, log_dir: str) -> int:
    """Run every check; return the number of worker threads, or raise `PreflightError`."""
    execution = study.execution
    try:
        client.wait_for_workers(1, timeout=execution.worker_wait_seconds)
    except (TimeoutError, distributed.TimeoutError) as exc:
        raise PreflightError(
            f"no Dask worker joined the scheduler within {execution.worker_wait_seconds:g} s "
            "(execution.worker_wait_seconds); start workers or check execution.dask.address"
        ) from exc
    seconds = CLUSTER_ANSWER_SECONDS
    assert client.scheduler is not None
    try:
        identity = client.sync(client.scheduler.identity, n_workers=-1, callback_timeout=seconds)
        workers = identity["workers"]
        # Every worker answers a trivial question first, so that a slow model start below
        # is not mistaken for a worker that cannot answer, nor the other way round.
        client.run(os.getpid, callback_timeout=seconds)
    except TimeoutError as exc:
        silent = ", ".join(silent_workers(client)) or "a worker"
        raise PreflightError(
            f"{silent} did not answer within {seconds:g} s: stopped, or a task holding its "
            "GIL; restart it or check execution.dask"
        ) from exc
    check_resources(execution.aggregation_resources, workers)
    # The plugin starts each worker's model processes one by one, each with its own
    # startup deadline.
    threads = max((int(info.get("nthreads", 1)) for info in workers.values()), default=1)
    starting = seconds + threads * STARTUP_TIMEOUT_SECONDS
    try:
        call_with_deadline(
            lambda: client.register_plugin(StudyWorkerPlugin(study, log_dir), name=plugin_name),
            starting,
        )
        reports = client.run(_plugin_report, name=plugin_name, callback_timeout=seconds)
    except TimeoutError as exc:
        raise PreflightError(
            f"the model did not start on every worker within {starting:g} s (model processes "
            "start one by one; a very slow import, or a worker that stopped answering)"
        ) from exc
    check_worker_reports(reports)
    return sum(int(info.get("nthreads", 1)) for info in workers.values())


def remove_study_plugin(client: distributed.Client, plugin_name: str) -> None:
    """Unregister the study's worker plugin (its model processes stop); never raises."""
    try:
        call_with_deadline(
            lambda: client.unregister_worker_plugin(plugin_name), CLUSTER_ANSWER_SECONDS
        )
    except Exception as exc:  # a worker that does not answer keeps it until it restarts
        logger.warning("could not remove the worker plugin %s: %s", plugin_name, exc)


def check_resources(needed: dict[str, float], workers: dict[str, Any]) -> None:
    """Raise unless some worker offers each needed resource amount."""
    for name, amount in needed.items():
        if not any(info.get("resources", {}).get(name, 0) >= amount for info in workers.values()):
            offered = {addr: info.get("resources", {}) for addr, info in workers.items()}
            raise PreflightError(
                f"execution.aggregation_resources asks for {name}={amount:g}, but no worker "
                f"offers it (workers' resources: {offered}); start workers with "
                f"`--resources {name}={amount:g}` or remove it from the study"
            )


def check_worker_reports(reports: dict[str, dict[str, Any]]) -> None:
    """Raise if the model fails on a worker or versions differ from this process's."""
    problems = [f"{a}: {r['problem']}" for a, r in sorted(reports.items()) if r.get("problem")]
    here = {"python": platform.python_version(), "simstudy": simstudy_version}
    for addr, report in sorted(reports.items()):
        for name, version in here.items():
            if report.get(name) not in (None, version):
                problems.append(f"{addr}: {name} {report.get(name)}, flow process has {version}")
    if problems:
        raise PreflightError("preflight failed on the workers:\n  - " + "\n  - ".join(problems))
