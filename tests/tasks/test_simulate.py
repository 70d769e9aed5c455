"""Replicate progress from a real Dask worker reaches the flow, throttled but complete."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from distributed import Client, LocalCluster

from simstudy.records import ReplicateRecord
from tasks.simulate import replicate_reporter

TOPIC = "test-progress"


def report_on_worker(replicates: int, then_hang: float) -> None:
    """Report `replicates` finished replicates at once, then block like a hung replicate."""
    reporter = replicate_reporter(TOPIC)
    assert reporter is not None
    for r in range(replicates):
        reporter(
            ReplicateRecord(
                param_id="p", replicate=r, seed=r, status="ok", attempts=1, duration_s=0.0,
                worker="w",
            )
        )  # fmt: skip
    time.sleep(then_hang)


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address=None)
        as cluster,
        Client(cluster) as client,
    ):  # fmt: skip
        yield client


@pytest.mark.timeout(60)
def test_finished_replicates_arrive_in_few_events_while_the_task_still_runs(
    client: Client,
) -> None:
    events: list[dict[str, Any]] = []
    client.subscribe_topic(TOPIC, lambda event: events.append(event[1]))
    try:
        future = client.submit(report_on_worker, 200, then_hang=3.0, pure=False)
        deadline = time.monotonic() + 2.5
        while sum(len(e["done"]) for e in events) < 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        # Everything reported before the "hang" has arrived, before the task ends.
        assert not future.done()
        assert sorted(r for e in events for _, r, _ in e["done"]) == list(range(200))
        assert len(events) <= 2
        future.result()
    finally:
        client.unsubscribe_topic(TOPIC)


def test_no_reporter_outside_a_worker() -> None:
    assert replicate_reporter(TOPIC) is None
    assert replicate_reporter(None) is None
