"""The tracker answers exactly which replicates and aggregations are missing."""

from __future__ import annotations

from collections.abc import Callable

from simstudy.design.expand import expand_parameters
from simstudy.design.plan import plan_batches
from simstudy.run.stall import StallReport, StuckTask, WorkerLoad
from simstudy.run.tracking import StudyTracker
from simstudy.spec.study import Study


def test_missing_replicates_and_aggregations(make_study: Callable[..., Study]) -> None:
    study = make_study(replicates=3)
    sets = expand_parameters(study)
    tracker = StudyTracker(plan_batches(study, sets), [s.param_id for s in sets])
    a, b = sets[0].param_id, sets[1].param_id
    for r in range(3):
        tracker.replicate_finished(a, r, "ok")
    tracker.replicate_finished(b, 0, "timed_out")
    tracker.replicate_finished(b, 0, "ok")  # a repeat report counts once, as it is now
    tracker.aggregate_finished(a, "ok")
    assert tracker.missing_replicates() == [(b, 1), (b, 2)]
    assert tracker.missing_aggregations() == [b]
    snapshot = tracker.snapshot()
    assert snapshot.replicates == {"ok": 4}
    assert (snapshot.replicates_done, snapshot.total_replicates) == (4, 6)
    assert (snapshot.sets_aggregated, snapshot.total_sets) == (1, 2)
    assert snapshot.seconds_since_progress < 5


def test_stall_report_names_the_stuck_task_and_worker() -> None:
    report = StallReport(
        study="s",
        created_at="2026-11-27T00:00:00+00:00",
        seconds_without_progress=31.0,
        stall_timeout_seconds=30.0,
        missing_replicates=[("p" * 64, 4)],
        missing_aggregations=["p" * 64],
        tasks=[
            StuckTask(key="k1", name="sim-pppppppppppp-r004-004", state="processing",
                      worker="tcp://127.0.0.1:1", running_seconds=40.0,
                      call_stack=['File "model.py", line 3, in simulate', "time.sleep(3600)"]),
            StuckTask(key="k2", name="agg-pppppppppppp", state="waiting", waiting_on=["k1"]),
            StuckTask(key="k3", name="agg-qqqqqqqqqqqq", state="no-worker",
                      resource_restrictions={"aggregation": 1.0}),
        ],
        workers=[WorkerLoad(address="tcp://127.0.0.1:1", nthreads=1, executing=1,
                            memory_bytes=2**27)],
    )  # fmt: skip
    headline = report.headline()
    assert "nothing finished for 31 s" in headline
    assert "sim-pppppppppppp-r004-004 on tcp://127.0.0.1:1" in headline
    markdown = report.to_markdown()
    assert "| agg-qqqqqqqqqqqq | no-worker |" in markdown and "{'aggregation': 1.0}" in markdown
    assert "time.sleep(3600)" in markdown
    assert f"- replicate 4 of {'p' * 64}" in markdown
