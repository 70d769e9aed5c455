"""Checks before anything is submitted: workers, resources, output, model, versions.

Each check fails in seconds with an error naming what is wrong and where, instead of
letting a study wait forever (a task asking for a Dask resource no worker offers waits
silently; a model that cannot be imported fails every replicate; workers on other hosts
cannot write into a folder on this host's disk).
"""

from __future__ import annotations

import logging
import os
import platform
from dataclasses import dataclass
from typing import Any

import distributed
from distributed.diagnostics.plugin import WorkerPlugin

from flows.watchdog import silent_workers
from simstudy import __version__ as simstudy_version
from simstudy.errors import SimstudyError
from simstudy.run.deadlines import CLUSTER_ANSWER_SECONDS, call_with_deadline
from simstudy.run.memory import return_freed_memory
from simstudy.run.runners import make_runner
from simstudy.run.runners.process import STARTUP_TIMEOUT_SECONDS, ProcessRunner
from simstudy.run.source_digest import source_digest
from simstudy.spec.readiness import command_problem, local_output_problem, remote_hosts
from simstudy.spec.study import CommandModel, Study

logger = logging.getLogger(__name__)


class PreflightError(SimstudyError, RuntimeError):
    """The cluster cannot run this study; the message says why and where."""

    exit_code = 3
    """The command line's exit code for it: 3, the environment (not the study)."""


SOURCE_MISMATCH = (
    "runs different simstudy code than the flow process (same version {version}, other "
    "source files): install the same checkout on the flow's host and every worker"
)


def versions() -> dict[str, str]:
    """Return the versions every worker must share with the flow process."""
    # The version string is the same across commits; the source digest tells them apart.
    return {
        "python": platform.python_version(),
        "simstudy": simstudy_version,
        "simstudy_source": source_digest(),
    }


class StudyWorkerPlugin(WorkerPlugin):
    """On every worker (also ones that join later): warm the runner, record versions.

    Dask gives a registered plugin to every worker that joins afterwards (adaptive
    scaling, a restarted or replaced worker), before it takes tasks.
    """

    def __init__(self, study: Study, log_dir: str):
        self.study = study
        self.log_dir = log_dir
        self.flow_versions = versions()
        self.report: dict[str, Any] = {}

    def setup(self, worker: distributed.Worker) -> None:
        """Check the model on this worker and start its model processes."""
        # Workers handle a large buffer per run (its outputs as columns, a set's values),
        # as the flow does: freed ones go back to the system (see simstudy/run/memory.py).
        return_freed_memory()
        self.report = {
            **versions(),
            "problem": model_problem(self.study, self.log_dir, worker.state.nthreads),
        }
        # A worker joining mid-study is checked by no one else: its log says it.
        problems = report_problems(self.report, self.flow_versions)
        if problems:
            logger.error("study %s cannot run here: %s", self.study.name, "; ".join(problems))

    def teardown(self, worker: distributed.Worker) -> None:
        """Stop this study's model processes on this worker (not another study's)."""
        runner = make_runner(self.study, self.log_dir)
        if isinstance(runner, ProcessRunner):
            runner.close()


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


@dataclass(frozen=True)
class WorkerThreads:
    """The threads of the workers that had joined when preflight ran."""

    joined: int
    per_worker: int


def preflight(
    client: distributed.Client, study: Study, plugin_name: str, log_dir: str
) -> WorkerThreads:
    """Run every check; return the joined workers' threads, or raise `PreflightError`."""
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
    if not execution.dask.shared_output:
        check_output_reachable(study.output_dir, workers)
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
        check_worker_reports(reports)
    except BaseException as exc:
        # A cluster at an address outlives the study: its workers must not keep the
        # plugin and the model processes it started.
        remove_study_plugin(client, plugin_name)
        if isinstance(exc, TimeoutError):
            raise PreflightError(
                f"the model did not start on every worker within {starting:g} s (model "
                "processes start one by one; a very slow import, or a worker that stopped "
                "answering)"
            ) from exc
        raise
    each = [int(info.get("nthreads", 1)) for info in workers.values()]
    return WorkerThreads(joined=sum(each), per_worker=max(each, default=1))


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


def check_output_reachable(output: str, workers: dict[str, Any]) -> None:
    """Raise if workers on other hosts would need a folder on this host's disk."""
    hosts = remote_hosts([str(info.get("host", "")) for info in workers.values()])
    if not hosts:
        return
    remote = [addr for addr, info in sorted(workers.items()) if info.get("host") in hosts]
    more = f" and {len(remote) - 1} more" if len(remote) > 1 else ""
    problem = local_output_problem(output, f"workers {remote[0]}{more} (hosts {', '.join(hosts)})")
    if problem:
        raise PreflightError(problem)


def report_problems(report: dict[str, Any], expected: dict[str, str]) -> list[str]:
    """Return what keeps a worker from running the study: its model, its versions."""
    problems = [str(report["problem"])] if report.get("problem") else []
    if "python" not in report:  # no versions at all: the plugin is missing, said above
        return problems
    found = (version_problem(name, report, expected) for name in expected)
    return problems + [problem for problem in found if problem]


def version_problem(name: str, report: dict[str, Any], expected: dict[str, str]) -> str | None:
    """Return how a worker's `name` differs from the flow process's, or None."""
    if report.get(name) == expected[name]:
        return None
    if name != "simstudy_source":
        return f"{name} {report.get(name)}, flow process has {expected[name]}"
    # A worker whose code predates the digest reports none: other code too. Another
    # version string is said once, by its own line.
    if report.get("simstudy") != expected.get("simstudy"):
        return None
    return SOURCE_MISMATCH.format(version=expected.get("simstudy"))


def check_worker_reports(reports: dict[str, dict[str, Any]]) -> None:
    """Raise if the model fails on a worker or versions differ from this process's."""
    here = versions()
    problems = [
        f"{addr}: {problem}"
        for addr, report in sorted(reports.items())
        for problem in report_problems(report, here)
    ]
    if problems:
        raise PreflightError("preflight failed on the workers:\n  - " + "\n  - ".join(problems))
