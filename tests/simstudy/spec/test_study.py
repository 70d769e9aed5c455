"""The study file: every invalid field is named in the error."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from simstudy.design.expand import expand_parameters
from simstudy.errors import StudyError
from simstudy.spec.loading import load_study, validate_study
from simstudy.spec.study import (
    MAX_REPLICATES,
    MAX_RETRY_DELAY_SECONDS,
    MAX_TIMEOUT_SECONDS,
    MAX_WAIT_SECONDS,
)

VALID: dict[str, Any] = {
    "name": "demo",
    "model": "simstudy.models.seir:simulate",
    "parameters": {"grid": {"beta": [0.2, 0.3], "gamma": [0.1]}},
    "replicates": 4,
    "seed": 1,
}


def with_change(path: str, value: Any) -> dict[str, Any]:
    """Return VALID with the dotted `path` set to `value`."""
    document = json.loads(json.dumps(VALID))
    *parents, last = path.split(".")
    node = document
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return document


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        ("name", "has space", "name"),
        ("model", "no_colon", "model"),
        ("replicates", 0, "replicates"),
        ("seed", -1, "seed"),
        ("seed", 2**63, "seed"),
        ("execution.timeout_seconds", 0, "execution.timeout_seconds"),
        ("execution.retries", -1, "execution.retries"),
        ("execution.retry_delay_seconds", -2, "execution.retry_delay_seconds"),
        ("execution.batch_size", 0, "execution.batch_size"),
        ("execution.batch_size", "big", "execution.batch_size"),
        ("execution.min_success_fraction", 1.5, "execution.min_success_fraction"),
        ("execution.runner", "gpu", "execution.runner"),
        ("execution.dask.n_workers", 0, "execution.dask.n_workers"),
        ("execution.dask.threads_per_worker", 0, "execution.dask.threads_per_worker"),
        ("execution.dask.colour", "blue", "execution.dask.colour"),
        ("aggregate.quantiles", [0.5, 1.5], "aggregate.quantiles"),
        ("fixed", {"1bad": 1}, "fixed"),
        ("fixed", {"param_id": 1}, "fixed"),
        ("fixed", {"x": [1, 2]}, "fixed.x"),
        ("parameters.grid", {"beta": []}, "grid.beta is empty"),
        ("parameters.list", [{"beta": 0.1}], "exactly one of grid, list or file"),
        ("unknown_field", 1, "unknown_field"),
    ],
)
def test_invalid_field_is_named(path: str, value: Any, named: str) -> None:
    with pytest.raises(StudyError) as caught:
        validate_study(with_change(path, value))
    assert named in str(caught.value)


def test_address_with_local_cluster_settings_is_refused() -> None:
    document = with_change("execution.dask", {"address": "tcp://127.0.0.1:8786", "n_workers": 2})
    with pytest.raises(StudyError, match="address is set, so n_workers cannot be"):
        validate_study(document)


def test_runner_must_fit_the_model() -> None:
    with pytest.raises(StudyError, match="command models run with runner 'subprocess'"):
        validate_study(
            with_change("model", {"command": ["prog"]}) | {"execution": {"runner": "thread"}}
        )
    with pytest.raises(StudyError, match="runner is 'subprocess' but model is a Python callable"):
        validate_study(with_change("execution.runner", "subprocess"))


def test_default_runner_follows_the_model() -> None:
    assert validate_study(VALID).execution.runner == "process"
    command = validate_study(with_change("model", {"command": ["prog", "arg"]}))
    assert command.execution.runner == "subprocess"


def test_thread_runner_warns_that_it_cannot_time_out() -> None:
    with pytest.warns(UserWarning, match="cannot enforce timeout_seconds"):
        validate_study(with_change("execution.runner", "thread"))


def test_workers_cannot_write_parts_to_a_memory_url_only_the_flow_sees() -> None:
    document = with_change("execution.part_files", "workers") | {"output": "memory://demo"}
    with pytest.raises(StudyError, match="part_files is 'workers' but output is a memory://"):
        validate_study(document)
    assert validate_study(document | {"output": "file:///tmp/demo"}).execution.part_files == (
        "workers"
    )
    with pytest.raises(StudyError, match="part_files"):
        validate_study(with_change("execution.part_files", "scheduler"))


def test_fixed_and_varying_overlap_is_refused() -> None:
    with pytest.raises(StudyError, match="parameters.grid and fixed both set"):
        validate_study(VALID | {"fixed": {"beta": 0.1}})


def test_float_and_int_parameters_are_not_turned_into_bools() -> None:
    study = validate_study(VALID | {"fixed": {"days": 1.0, "flag": True, "n": 3}})
    assert study.fixed == {"days": 1.0, "flag": True, "n": 3}
    assert type(study.fixed["days"]) is float


def test_list_design_needs_the_same_names_in_every_set() -> None:
    study = validate_study(
        with_change("parameters", {"list": [{"beta": 0.1}, {"beta": 0.2, "gamma": 1}]})
    )
    with pytest.raises(StudyError, match=r"parameters \(set 1\): has parameters"):
        expand_parameters(study)


def test_duplicate_parameter_sets_are_refused_with_1_equal_to_1_0() -> None:
    study = validate_study(with_change("parameters", {"list": [{"beta": 1}, {"beta": 1.0}]}))
    with pytest.raises(StudyError, match=r"set 1\): same parameter set as set 0"):
        expand_parameters(study)


def test_nan_parameter_is_refused_by_name() -> None:
    study = validate_study(with_change("parameters", {"list": [{"beta": float("nan")}]}))
    with pytest.raises(StudyError, match=r"set 0\): parameter 'beta' is nan"):
        expand_parameters(study)


def test_empty_cell_in_parameter_file_is_named(tmp_path: Path) -> None:
    table = tmp_path / "params.csv"
    table.write_text("beta,gamma\n0.1,0.2\n,0.3\n")
    study = validate_study(with_change("parameters", {"file": str(table)}))
    with pytest.raises(StudyError, match=r"set 1\): no value for \['beta'\]"):
        expand_parameters(study)


def test_parameter_file_relative_to_study_file(tmp_path: Path) -> None:
    (tmp_path / "params.csv").write_text("beta,gamma\n0.1,0.2\n0.3,0.4\n")
    (tmp_path / "study.yaml").write_text(
        "name: f\nmodel: m:f\nparameters: {file: params.csv}\nreplicates: 2\nseed: 3\n"
    )
    sets = expand_parameters(load_study(tmp_path / "study.yaml"))
    assert [s.params for s in sets] == [{"beta": 0.1, "gamma": 0.2}, {"beta": 0.3, "gamma": 0.4}]


def test_missing_parameter_file_is_named(tmp_path: Path) -> None:
    study = validate_study(with_change("parameters", {"file": str(tmp_path / "nope.csv")}))
    with pytest.raises(StudyError, match="parameters.file"):
        expand_parameters(study)


def test_grid_expands_in_written_order() -> None:
    sets = expand_parameters(
        validate_study(with_change("parameters.grid", {"b": [1, 2], "a": [3]}))
    )
    assert [s.params for s in sets] == [{"b": 1, "a": 3}, {"b": 2, "a": 3}]
    assert [s.index for s in sets] == [0, 1]


def test_unreadable_yaml_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(StudyError, match="not valid YAML"):
        load_study(path)


def test_json_study_file(tmp_path: Path) -> None:
    path = tmp_path / "study.json"
    path.write_text(json.dumps(VALID))
    assert load_study(path).name == "demo"


def test_example_study_is_valid() -> None:
    study = load_study(Path(__file__).parents[3] / "examples" / "seir.yaml")
    assert len(expand_parameters(study)) * study.replicates == 300


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        ("execution.timeout_seconds", float("inf"), "execution.timeout_seconds"),
        ("execution.timeout_seconds", 1e308, "execution.timeout_seconds"),
        ("execution.timeout_seconds", float("nan"), "execution.timeout_seconds"),
        ("execution.retry_delay_seconds", float("inf"), "execution.retry_delay_seconds"),
        ("execution.retry_delay_seconds", 1e9, "execution.retry_delay_seconds"),
        ("execution.retries", 101, "execution.retries"),
        ("execution.stall_timeout_seconds", float("inf"), "execution.stall_timeout_seconds"),
        ("execution.worker_wait_seconds", 1e12, "execution.worker_wait_seconds"),
        ("execution.max_resubmits", -1, "execution.max_resubmits"),
        ("execution.max_resubmits", 11, "execution.max_resubmits"),
        ("execution.batch_size", 10**9, "execution.batch_size"),
        ("execution.aggregation_resources", {"gpu": float("inf")}, "aggregation_resources"),
        ("execution.dask.n_workers", 1000, "execution.dask.n_workers"),
        ("execution.dask.threads_per_worker", 1000, "execution.dask.threads_per_worker"),
        ("execution.dask.memory_limit", "banana", "execution.dask.memory_limit"),
        ("execution.dask.memory_limit", "1e400", "execution.dask.memory_limit"),
        ("execution.dask.memory_limit", "1kB", "execution.dask.memory_limit"),
        ("execution.dask.address", "tcp://", "execution.dask.address"),
        ("execution.dask.address", "tcp://host:99999", "execution.dask.address"),
        ("execution.dask.address", "has space:1", "execution.dask.address"),
        ("execution.dask.address", "tcp://[::1", "execution.dask.address"),
        ("execution.dask.address", "inproc://x", "execution.dask.address"),
        ("replicates", 10_000_000, "replicates"),
    ],
)
def test_values_that_could_not_run_are_refused_by_name(path: str, value: Any, named: str) -> None:
    with pytest.raises(StudyError) as caught:
        validate_study(with_change(path, value))
    assert named in str(caught.value)


@pytest.mark.parametrize("limit", ["auto", "4GiB", "500MB", "1e9"])
def test_memory_limits_dask_understands_are_accepted(limit: str) -> None:
    assert validate_study(with_change("execution.dask.memory_limit", limit)).execution.dask


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:8786", "tls://h.example:1", "h:8786", "h"])
def test_scheduler_addresses_are_accepted(address: str) -> None:
    study = validate_study(with_change("execution.dask", {"address": address}))
    assert study.execution.dask.address == address


def test_max_resubmits_defaults_to_two() -> None:
    assert validate_study(VALID).execution.max_resubmits == 2


def test_worst_cases_of_the_largest_settings_stay_waitable() -> None:
    largest = {
        "timeout_seconds": MAX_TIMEOUT_SECONDS,
        "retries": 100,
        "retry_delay_seconds": MAX_RETRY_DELAY_SECONDS,
    }
    execution = validate_study(with_change("execution", largest)).execution
    assert execution.replicate_worst_case_seconds() == 101 * 604800 + 100 * 86400
    assert execution.stall_timeout() == execution.replicate_worst_case_seconds() + 60
    assert execution.batch_worst_case_seconds(MAX_REPLICATES) == MAX_WAIT_SECONDS
    # Python's waits raise OverflowError beyond TIMEOUT_MAX (~9.2e9 s).
    assert execution.stall_timeout() * 2 < MAX_WAIT_SECONDS < threading.TIMEOUT_MAX


def test_replicate_worst_case_is_every_attempt_and_delay() -> None:
    settings = {"timeout_seconds": 2, "retries": 1, "retry_delay_seconds": 0.5}
    execution = validate_study(with_change("execution", settings)).execution
    assert execution.replicate_worst_case_seconds() == 4.5
    assert execution.batch_worst_case_seconds(10) == 45.0


def test_study_name_and_quantiles_are_bounded() -> None:
    with pytest.raises(StudyError, match="name: String should have at most 100 characters"):
        validate_study(with_change("name", "n" * 101))
    with pytest.raises(StudyError, match="aggregate.quantiles: List should have at most 100"):
        validate_study(with_change("aggregate.quantiles", [i / 200 for i in range(101)]))


def test_model_memory_limit_is_a_size_for_killable_runners() -> None:
    study = validate_study({**VALID, "execution": {"model_memory_limit": "2GiB"}})
    assert study.execution.model_memory_limit_bytes() == 2 * 2**30
    assert validate_study(VALID).execution.model_memory_limit_bytes() is None
    for value, expected in [
        ("banana", "'banana' is not a memory size"),
        ("64MiB", "give at least '128MiB'"),
    ]:
        with pytest.raises(StudyError, match=expected) as error:
            validate_study({**VALID, "execution": {"model_memory_limit": value}})
        assert "execution.model_memory_limit" in str(error.value)
    with pytest.raises(StudyError, match="cannot apply to runner 'thread'"):
        validate_study({**VALID, "execution": {"runner": "thread", "model_memory_limit": "1GiB"}})


CLUSTER = {"cluster_class": "dask_jobqueue.SLURMCluster", "cluster_kwargs": {"cores": 4}}


def test_cluster_class_kwargs_and_adapt_are_accepted() -> None:
    dask = {**CLUSTER, "adapt": {"minimum": 1, "maximum": 8}}
    settings = validate_study(with_change("execution.dask", dask)).execution.dask
    assert settings.cluster_class == "dask_jobqueue.SLURMCluster"
    assert settings.cluster_kwargs == {"cores": 4}
    assert settings.adapt is not None and (settings.adapt.minimum, settings.adapt.maximum) == (1, 8)
    # Adaptive scaling of the default local cluster needs no class.
    local = with_change("execution.dask", {"adapt": {"minimum": 1, "maximum": 2}})
    assert validate_study(local).execution.dask.cluster_class is None


@pytest.mark.parametrize(
    ("dask", "message"),
    [
        (
            {"address": "tcp://127.0.0.1:8786", **CLUSTER},
            "address is set, so cluster_class, cluster_kwargs cannot be",
        ),
        (
            {"address": "tcp://127.0.0.1:8786", "adapt": {"minimum": 1, "maximum": 2}},
            "address is set, so adapt cannot be",
        ),
        ({**CLUSTER, "n_workers": 2}, "give them to cluster_class in cluster_kwargs"),
        (
            {**CLUSTER, "threads_per_worker": 2, "memory_limit": "1GiB"},
            "so threads_per_worker, memory_limit cannot be",
        ),
        ({"cluster_kwargs": {"n_workers": 2}}, "name the class they are for"),
        ({"n_workers": 2, "adapt": {"minimum": 1, "maximum": 2}}, "remove n_workers"),
        ({"adapt": {"minimum": 3, "maximum": 2}}, "minimum 3 is above maximum 2"),
        ({"adapt": {"minimum": 0, "maximum": 2}}, "execution.dask.adapt.minimum"),
        ({"adapt": {"maximum": 2}}, "execution.dask.adapt.minimum"),
        ({"cluster_class": "SLURMCluster"}, "write it as package.module.Class"),
        ({"cluster_class": "os.system; rm"}, "write it as package.module.Class"),
        (
            {"cluster_class": "distributed.LocalCluster", "cluster_kwargs": {"asynchronous": 1}},
            "'asynchronous' is set by prefect-dask",
        ),
    ],
)
def test_contradictory_cluster_settings_are_refused_naming_the_fix(
    dask: dict[str, Any], message: str
) -> None:
    with pytest.raises(StudyError, match="execution.dask") as caught:
        validate_study(with_change("execution.dask", dask))
    assert message in str(caught.value)
