"""Reading study files: bounded input, YAML 1.2 numbers, one loader with overrides."""

from __future__ import annotations

import json
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import yaml

from simstudy.errors import StudyError
from simstudy.spec.loading import (
    StudyYamlLoader,
    apply_overrides,
    load_study,
    parse_yaml,
    resolve_study,
    study_yaml_loader,
)
from simstudy.spec.study import MAX_STUDY_FILE_BYTES

EXAMPLE = Path(__file__).parents[3] / "examples" / "seir.yaml"
HEADER = "name: s\nmodel: simstudy.models.seir:simulate\nreplicates: 1\nseed: 1\n"
LEVELS = "abcdefghi"
BILLION_LAUGHS = (
    HEADER
    + 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    + "".join(f"{b}: &{b} [{','.join([f'*{a}'] * 9)}]\n" for a, b in pairwise(LEVELS))
    + "parameters: {grid: {x: *i}}\n"
)


def test_billion_laughs_is_refused_within_a_second(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(BILLION_LAUGHS)
    assert len(BILLION_LAUGHS) < 500
    started = time.monotonic()
    with pytest.raises(StudyError, match=r"aliases \(\*name\) expand to more than 1,000,000"):
        load_study(path)
    assert time.monotonic() - started < 1.0


PURE_PYTHON_LOADER = study_yaml_loader(yaml.SafeLoader)
LOADERS = [StudyYamlLoader, PURE_PYTHON_LOADER]


@pytest.mark.parametrize("loader", LOADERS)
def test_alias_bomb_is_refused_by_either_parser(loader: type[yaml.SafeLoader]) -> None:
    started = time.monotonic()
    with pytest.raises(ValueError, match="expand to more than 1,000,000 values"):
        parse_yaml(BILLION_LAUGHS, loader)
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize("loader", LOADERS)
def test_recursive_alias_is_refused(loader: type[yaml.SafeLoader]) -> None:
    with pytest.raises(ValueError, match="refers to a node that contains it"):
        parse_yaml("a: &a [1, *a]\n", loader)


def test_aliases_within_the_bound_load() -> None:
    data = parse_yaml("v: &v [1, 2, 3]\ngrid: {a: *v, b: *v}\nbase: &b {x: 1}\nm: {<<: *b, y: 2}\n")
    assert data["grid"] == {"a": [1, 2, 3], "b": [1, 2, 3]}
    assert data["m"] == {"x": 1, "y": 2}


def test_yaml_uses_libyaml_when_available() -> None:
    assert issubclass(StudyYamlLoader, getattr(yaml, "CSafeLoader", yaml.SafeLoader))


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1e-3", 0.001),
        ("1e4", 10000.0),
        ("-2E+5", -200000.0),
        ("2.5e3", 2500.0),
        ("+1.5E-2", 0.015),
        (".5", 0.5),
        ("1.0", 1.0),
        ("7", 7),
        ("'1e4'", "1e4"),
        ("1e", "1e"),
        ("e5", "e5"),
    ],
)
def test_yaml_numbers_follow_yaml_1_2(text: str, value: Any) -> None:
    for loader in LOADERS:
        loaded = parse_yaml(f"x: {text}\n", loader)["x"]
        assert loaded == value
        assert type(loaded) is type(value)
    assert parse_yaml("x: 1\n", yaml.SafeLoader)["x"] == 1  # the base loader is unchanged
    assert yaml.safe_load("x: 1e4\n")["x"] == "1e4"


def test_exponent_floats_reach_the_study(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(HEADER + "fixed: {tol: 1e-3}\nparameters: {grid: {beta: [1e4, 2e4]}}\n")
    study = load_study(path)
    assert study.fixed == {"tol": 0.001}
    assert study.parameters.grid == {"beta": [10000.0, 20000.0]}


@pytest.mark.timeout(30)
def test_three_million_entry_list_is_refused_fast(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("w") as handle:
        handle.write(HEADER + "parameters:\n  list:\n")
        handle.writelines(f"    - {{beta: {i}}}\n" for i in range(3_000_000))
    started = time.monotonic()
    with pytest.raises(StudyError, match=f"more than the maximum of {MAX_STUDY_FILE_BYTES:,}"):
        load_study(path)
    assert time.monotonic() - started < 1.0


def test_file_that_is_not_regular_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StudyError, match="not a regular file"):
        load_study(tmp_path)
    with pytest.raises(StudyError, match="not a regular file"):
        load_study("/dev/zero")


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(StudyError, match="cannot read the file: No such file"):
        load_study(tmp_path / "nope.yaml")


def test_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "latin.yaml"
    path.write_bytes(HEADER.encode() + b"fixed: {place: M\xfcnchen}\n")
    with pytest.raises(StudyError, match=r"not UTF-8 text \(byte \d+\)"):
        load_study(path)


def test_deeply_nested_json_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(StudyError, match="nested too deeply"):
        load_study(path)


def test_deeply_nested_yaml_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("x: " + "[" * 100_000 + "]" * 100_000)
    with pytest.raises(StudyError, match="not valid YAML"):
        load_study(path)


def test_execution_overrides_merge_and_the_rest_replaces() -> None:
    document = {
        "output": "a",
        "execution": {"retries": 3, "dask": {"n_workers": 2, "threads_per_worker": 2}},
    }
    merged = apply_overrides(
        document, {"output": "b", "seed": None, "execution": {"dask": {"n_workers": 4}}}
    )
    assert merged == {
        "output": "b",
        "execution": {"retries": 3, "dask": {"n_workers": 4, "threads_per_worker": 2}},
    }
    assert document["execution"]["dask"]["n_workers"] == 2  # the input is not changed


@pytest.mark.parametrize(
    "cluster",
    [{"address": "tcp://h:1"}, {"cluster_class": "distributed.LocalCluster"}],
    ids=["address", "cluster_class"],
)
def test_another_cluster_override_replaces_the_local_cluster_settings(
    cluster: dict[str, str],
) -> None:
    document = {"execution": {"dask": {"n_workers": 2, "memory_limit": "1GiB"}}}
    merged = apply_overrides(document, {"execution": {"dask": cluster}})
    assert merged["execution"]["dask"] == cluster


def test_load_study_with_overrides_keeps_the_file_folder() -> None:
    study = load_study(EXAMPLE, {"replicates": 5, "execution": {"retries": 0}})
    assert (study.replicates, study.execution.retries) == (5, 0)
    assert study.execution.timeout_seconds == 60
    assert Path(study.base_dir) == EXAMPLE.parent


def test_invalid_override_names_the_field_and_the_overrides() -> None:
    with pytest.raises(StudyError, match=r"with overrides \(replicates\)") as caught:
        load_study(EXAMPLE, {"replicates": 0})
    assert "replicates: Input should be greater than or equal to 1" in str(caught.value)


def test_resolve_study_from_a_study_or_a_mapping() -> None:
    study = load_study(EXAMPLE)
    assert resolve_study(None, study) is study
    assert resolve_study(None, study, {"seed": 9}).seed == 9
    document = json.loads(json.dumps(yaml.safe_load(EXAMPLE.read_text())))
    assert resolve_study(None, document, {"replicates": 3}).replicates == 3
    with pytest.raises(StudyError, match="exactly one of study_path or study"):
        resolve_study(None, None)
    with pytest.raises(StudyError, match="exactly one of study_path or study"):
        resolve_study(str(EXAMPLE), study)
