"""Replicate progress from a real Dask worker reaches the flow, throttled but complete."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from distributed import Client, LocalCluster

from simstudy.run.columns import records_from_bytes
from simstudy.run.records import ReplicateRecord
from tasks.simulate import replicate_reporter

TOPIC = "test-progress"


def report_on_worker(
    replicates: int,
    then_hang: float,
    duration_s: float = 0.0,
    careful: bool = False,
    topic: str = TOPIC,
    with_outputs: bool = True,
) -> None:
    """Report `replicates` finished replicates at once, then block like a hung replicate."""
    reporter = replicate_reporter(topic, careful=careful, with_outputs=with_outputs)
    assert reporter is not None
    for r in range(replicates):
        reporter.started("p", r)
        reporter(
            ReplicateRecord(
                param_id="p", replicate=r, seed=r, status="ok", attempts=1,
                duration_s=duration_s, worker="w", outputs={"x": float(r)},
            )
        )  # fmt: skip
    time.sleep(then_hang)


def reported(events: list[dict[str, Any]]) -> list[int]:
    batches = [records_from_bytes(e["records"]) for e in list(events) if "records" in e]
    return [record.replicate for records in batches for record in records]


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
        # A fresh worker first imports Prefect (~1-3 s on a busy machine): the "hang" is
        # long enough for that, and the loop stops as soon as everything has arrived.
        future = client.submit(report_on_worker, 200, then_hang=6.0, pure=False)
        deadline = time.monotonic() + 5.5
        while len(reported(events)) < 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        # Everything reported before the "hang" has arrived, with the outputs, before the
        # task ends: a lost batch keeps these results.
        assert not future.done()
        assert sorted(reported(events)) == list(range(200))
        records = [e for e in events if "records" in e]
        assert records_from_bytes(records[0]["records"])[0].outputs == {"x": 0.0}
        assert len(records) <= 2
        # Only the run's beginning is reported (acknowledged), not every start.
        assert [e["started"] for e in events if "started" in e] == [0]
        future.result()
    finally:
        client.unsubscribe_topic(TOPIC)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["slow replicates", "careful"])
def test_records_leave_at_once_when_acknowledged(client: Client, how: str) -> None:
    events: list[dict[str, Any]] = []
    topic = f"{TOPIC}-{how}"
    client.subscribe_topic(topic, lambda event: events.append(event[1]))
    try:
        careful = how == "careful"
        duration = 0.0 if careful else 0.3
        client.submit(report_on_worker, 3, 0.0, duration, careful, topic, pure=False).result()
        # Each acknowledged send has reached the scheduler before the task went on, so
        # every record arrives in its own event, without waiting for the coalescing delay.
        deadline = time.monotonic() + 2
        while len(reported(events)) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert reported(events) == [0, 1, 2]
        assert len([e for e in events if "records" in e]) == 3
        starts = [e["started"] for e in events if "started" in e]
        assert starts == ([0, 1, 2] if careful else [0])
    finally:
        client.unsubscribe_topic(topic)


@pytest.mark.timeout(60)
def test_records_of_a_run_that_writes_its_part_travel_without_outputs(client: Client) -> None:
    events: list[dict[str, Any]] = []
    topic = f"{TOPIC}-part"
    client.subscribe_topic(topic, lambda event: events.append(event[1]))
    try:
        client.submit(report_on_worker, 3, 0.0, 0.3, False, topic, False, pure=False).result()
        deadline = time.monotonic() + 2
        while len(reported(events)) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        # Counted by the flow, but provisional: the outputs go to the run's part file.
        sent = [e for e in events if "records" in e]
        assert reported(events) == [0, 1, 2]
        assert all(e["provisional"] for e in sent)
        assert all(r.outputs == {} for e in sent for r in records_from_bytes(e["records"]))
    finally:
        client.unsubscribe_topic(topic)


def test_no_reporter_outside_a_worker() -> None:
    assert replicate_reporter(TOPIC) is None
    assert replicate_reporter(None) is None
