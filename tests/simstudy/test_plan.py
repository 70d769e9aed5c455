"""Batches: the automatic size rule and readable labels."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from simstudy.design import expand_parameters
from simstudy.plan import auto_batch_size, plan_batches
from simstudy.spec import Study


@pytest.mark.parametrize(
    ("n_sets", "replicates", "expected"),
    [(20, 200, 100), (6, 50, 25), (1, 10, 10), (1, 10_000, 250), (1000, 1000, 1000), (20, 30, 30)],
)
def test_auto_batch_size(n_sets: int, replicates: int, expected: int) -> None:
    assert auto_batch_size(n_sets, replicates) == expected


def test_auto_keeps_task_runs_in_the_hundreds() -> None:
    for n_sets, replicates in [(20, 200), (100, 1000), (5, 100_000), (300, 50)]:
        size = auto_batch_size(n_sets, replicates)
        runs = n_sets * -(-replicates // size)
        assert runs <= max(200, n_sets), (n_sets, replicates, runs)


def test_batches_cover_every_replicate_once(make_study: Callable[..., Study]) -> None:
    study = make_study(replicates=7, execution={"batch_size": 3})
    batches = plan_batches(study, expand_parameters(study))
    covered = [(b.param_id, r) for b in batches for r in range(b.start, b.stop)]
    assert len(covered) == len(set(covered)) == 2 * 7
    assert batches[0].label == f"sim-{batches[0].param_id[:12]}-r000-002"
    assert batches[2].label.endswith("-r006-006")
