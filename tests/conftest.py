"""Shared fixtures: tiny studies, one Prefect API per test session, leak checks."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil
import pytest

from simstudy.spec.study import Study

FAULTY_MODEL = "tests.support.faulty:simulate"


@pytest.fixture
def make_study(tmp_path: Path) -> Callable[..., Study]:
    """Build a tiny study of the faulty test model; keyword arguments override fields."""

    def build(**overrides: Any) -> Study:
        execution = {"timeout_seconds": 10, "retries": 0, "dask": {"n_workers": 1}}
        execution.update(overrides.pop("execution", {}))
        document: dict[str, Any] = {
            "name": "tiny",
            "model": FAULTY_MODEL,
            "parameters": {"grid": {"a": [1.0, 2.0]}},
            "replicates": 3,
            "seed": 7,
            "execution": execution,
            "output": str(tmp_path / "out"),
        }
        document.update(overrides)
        return Study.model_validate(document)

    return build


# Python's own per-interpreter helpers (started once, live as long as the test process).
INTERPRETER_HELPERS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")


def descendants() -> list[psutil.Process]:
    """Return the live (non-zombie) descendants of the test process, but Python's helpers."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            helper = any(h in " ".join(child.cmdline()) for h in INTERPRETER_HELPERS)
            if child.status() != psutil.STATUS_ZOMBIE and not helper:
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


class DescendantWatcher:
    """Record every descendant seen alive while in use, so one re-parented away is not lost.

    A process that left the tree (a daemon double-forked with `setsid`, or the orphan of
    a killed parent) is re-parented to init and no longer shows up as a descendant: only
    a record made while it was still one can find it again.
    """

    def __init__(self, seen: set[int] | None = None, interval: float = 0.1):
        self.seen = seen if seen is not None else set()
        self.started: dict[int, float] = {}
        self.cmdlines: dict[int, str] = {}
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> DescendantWatcher:
        self.sample()
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        """Record the descendants alive now."""
        for child in descendants():
            with contextlib.suppress(psutil.Error):
                if child.pid not in self.started:
                    self.started[child.pid] = child.create_time()
                    self.cmdlines[child.pid] = " ".join(child.cmdline())
                self.seen.add(child.pid)

    def survivors(self, exclude: set[int]) -> list[psutil.Process]:
        """Return the recorded processes (but `exclude`) still alive, wherever they are now."""
        left = []
        for pid in self.seen - exclude:
            with contextlib.suppress(psutil.Error):
                process = psutil.Process(pid)
                # The same pid with another start time is a new process: pid reuse.
                if (
                    abs(process.create_time() - self.started[pid]) < 0.01
                    and process.status() != psutil.STATUS_ZOMBIE
                ):
                    left.append(process)
        return left


def assert_no_new_processes(
    before: set[int], watcher: DescendantWatcher | None = None, grace_seconds: float = 10.0
) -> None:
    """Fail if processes started during a test are still alive after a grace period."""
    deadline = time.monotonic() + grace_seconds
    while True:
        left = [p for p in descendants() if p.pid not in before]
        if watcher is not None:
            current = {p.pid for p in left}
            left += [p for p in watcher.survivors(before) if p.pid not in current]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    described = []
    for p in left:
        with contextlib.suppress(psutil.Error):
            described.append(f"{p.pid} {' '.join(p.cmdline())[:120]}")
    assert not described, "processes left behind:\n" + "\n".join(described)


@pytest.fixture
def no_leftover_processes() -> Iterator[None]:
    """Assert that the test leaves no process of its own behind, even re-parented away."""
    from simstudy.run.runners.process import close_shared_runners

    before = {p.pid for p in descendants()}
    with DescendantWatcher() as watcher:
        yield
        close_shared_runners()
    assert_no_new_processes(before, watcher)


@pytest.fixture(scope="session")
def prefect_api_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start one Prefect API (temporary home and database) for the whole test session."""
    from flows.api import prefect_api

    home = tmp_path_factory.mktemp("prefect-home")
    saved = {k: os.environ.get(k) for k in ("PREFECT_HOME", "PREFECT_API_URL")}
    os.environ["PREFECT_HOME"] = str(home)
    os.environ.pop("PREFECT_API_URL", None)
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    try:
        with prefect_api(log_path=home / "api.log") as url:
            yield url
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
