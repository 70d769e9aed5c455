"""Task runs and batches: the automatic size rule, runs across sets, readable labels."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from simstudy.design.expand import expand_parameters
from simstudy.design.identity import replicate_seed
from simstudy.design.plan import (
    aggregation_groups,
    auto_batch_size,
    plan_batches,
    plan_runs,
    run_label,
)
from simstudy.spec.study import Study


@pytest.mark.parametrize(
    ("n_sets", "replicates", "expected"),
    [
        (20, 200, 100),
        (6, 50, 25),
        (1, 10, 10),
        (1, 10_000, 250),
        (1000, 4, 100),
        (10_000, 1, 250),
        (1000, 1000, 5000),
        (20, 30, 25),
        (2, 1, 1),  # one run per set up to 40 sets, for small studies of slow replicates
        (8, 10, 10),
    ],
)
def test_auto_batch_size(n_sets: int, replicates: int, expected: int) -> None:
    assert auto_batch_size(n_sets, replicates) == expected


@pytest.mark.parametrize(
    ("n_sets", "replicates"),
    [(20, 200), (100, 1000), (5, 100_000), (300, 50), (1000, 4), (10_000, 1), (1000, 1000)],
)
def test_auto_keeps_task_runs_in_the_hundreds(n_sets: int, replicates: int) -> None:
    runs = -(-n_sets * replicates // auto_batch_size(n_sets, replicates))
    assert runs <= 200, (n_sets, replicates, runs)


def test_batches_cover_every_replicate_once(make_study: Callable[..., Study]) -> None:
    study = make_study(replicates=7, execution={"batch_size": 3})
    batches = plan_batches(study, expand_parameters(study))
    covered = [(b.param_id, r) for b in batches for r in range(b.start, b.stop)]
    assert len(covered) == len(set(covered)) == 2 * 7
    assert batches[0].label == f"sim-{batches[0].param_id[:12]}-r000-002"
    assert batches[2].label.endswith("-r006-006")


def test_runs_hold_consecutive_replicates_across_sets(make_study: Callable[..., Study]) -> None:
    study = make_study(
        parameters={"grid": {"a": [1.0, 2.0, 3.0, 4.0]}}, replicates=3, execution={"batch_size": 5}
    )
    batches = plan_batches(study, expand_parameters(study))
    runs = plan_runs(batches)
    sizes = [sum(batches[i].size for i in run) for run in runs]
    assert sizes == [5, 5, 2]  # 12 replicates in runs of 5, whatever the sets
    # Run 0: set 0 replicates 0-2, set 1 replicates 0-1; run 1 starts with set 1's third.
    assert [(batches[i].set_index, batches[i].start, batches[i].stop) for i in runs[0]] == [
        (0, 0, 3),
        (1, 0, 2),
    ]
    assert (batches[runs[1][0]].set_index, batches[runs[1][0]].start) == (1, 2)
    assert run_label([batches[i] for i in runs[0]]) == "sim-s0000.r0-s0001.r1"
    assert run_label([batches[0]]) == batches[0].label


def test_seeds_do_not_depend_on_the_layout(make_study: Callable[..., Study]) -> None:
    seeds = []
    for size in (1, 2, 5, "auto"):
        study = make_study(replicates=4, execution={"batch_size": size})
        batches = plan_batches(study, expand_parameters(study))
        seeds.append(
            sorted(
                (b.param_id, r, replicate_seed(study.seed, b.param_id, r))
                for b in batches
                for r in range(b.start, b.stop)
            )
        )
    assert all(found == seeds[0] for found in seeds)


@pytest.mark.parametrize(("n_sets", "groups"), [(1, 1), (20, 20), (40, 40), (41, 21), (10_000, 40)])
def test_aggregation_groups_cover_every_set_once(n_sets: int, groups: int) -> None:
    found = aggregation_groups(n_sets)
    assert len(found) == groups
    assert [s for group in found for s in group] == list(range(n_sets))
