"""Run policies: what a deployment's runs may use, checked before anything is read."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from simstudy.spec.loading import load_study, validate_study
from simstudy.spec.policy import (
    PolicyError,
    RunPolicy,
    check_request,
    check_study,
    parse_policy,
    policy_from_setting,
)
from simstudy.spec.study import Study

REPO = Path(__file__).parents[3]
PWN_COMMAND = ["sh", "-c", "id > /tmp/pwned.txt"]


def study_of(**fields: Any) -> Study:
    document = {
        "name": "demo",
        "model": "simstudy.models.seir:simulate",
        "parameters": {"grid": {"beta": [0.2]}},
        "replicates": 1,
        "seed": 1,
        **fields,
    }
    return validate_study(document)


def refusal(call: Any, *args: Any) -> str:
    with pytest.raises(PolicyError) as caught:
        call(*args)
    return str(caught.value)


def command_policy(*patterns: list[str], **rules: Any) -> RunPolicy:
    """Return a policy allowing `patterns` as commands run in the working directory."""
    return RunPolicy(commands=list(patterns), study_roots=["."], **rules)


@pytest.fixture
def in_repo(monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(REPO)
    return REPO


def test_default_policy_allows_the_shipped_example(in_repo: Path) -> None:
    policy = RunPolicy()
    check_request(policy, "examples/seir.yaml", None)
    check_study(policy, load_study("examples/seir.yaml"))


@pytest.mark.parametrize("study_path", ["secrets.json", "config/db.yaml", "pyproject.toml"])
def test_default_policy_refuses_files_of_the_working_directory_outside_examples(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, study_path: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "examples").mkdir()
    message = refusal(check_request, RunPolicy(), study_path, None)
    assert f"study_roots: study_path {study_path}" in message and "['examples']" in message
    parameters = refusal(check_study, RunPolicy(), study_of(parameters={"file": study_path}))
    assert "parameter_roots: parameters.file" in parameters


@pytest.mark.parametrize("study_path", ["examples/seir.yaml", "examples/command-model/seir.yaml"])
def test_example_policy_file_allows_the_example_studies(in_repo: Path, study_path: str) -> None:
    policy = policy_from_setting("deployments/policy.example.yaml")
    check_request(policy, study_path, None)
    check_study(policy, load_study(study_path))
    assert "output_roots" in refusal(check_study, policy, study_of(output="/tmp/x"))


def test_inline_study_is_refused_by_default_naming_the_rule() -> None:
    inline = study_of(model={"command": PWN_COMMAND})
    message = refusal(check_request, RunPolicy(), None, inline)
    assert "allow_inline_study" in message and "study_path" in message


def test_shell_command_is_refused_even_when_inline_studies_are_allowed(in_repo: Path) -> None:
    policy = command_policy(["python3", "models/*.py"], allow_inline_study=True)
    inline = study_of(model={"command": PWN_COMMAND})
    check_request(policy, None, inline)
    message = refusal(check_study, policy, inline)
    assert "commands: model.command ['sh', '-c', 'id > /tmp/pwned.txt']" in message


@pytest.mark.parametrize(
    ("command", "allowed"),
    [
        (["python3", "models/seir.py"], True),
        (["python3", "models/seir.py", "--extra"], False),
        (["python3", "-c", "import os"], False),
        (["python3", "models/../../tmp/evil.py"], False),
        (["python3"], False),
    ],
)
def test_command_patterns_match_every_argument(
    in_repo: Path, command: list[str], allowed: bool
) -> None:
    policy = command_policy(["python3", "models/*.py"])
    study = study_of(model={"command": command})
    if allowed:
        check_study(policy, study)
    else:
        assert "commands:" in refusal(check_study, policy, study)


@pytest.mark.parametrize(
    ("command", "pattern"),
    [
        # '*' would match a leading '-': python3 runs the option as code.
        (["python3", "-cimport os;os.system('id')#.py"], ["python3", "*.py"]),
        (["python3", "-m", "http.server"], ["python3", "*", "*"]),
        # '*' would match '/': a file elsewhere, relative or absolute.
        (["python3", "/tmp/evil.py"], ["python3", "*.py"]),
        (["python3", "other/evil.py"], ["python3", "*.py"]),
        (["python3", "/tmp/models/evil.py"], ["python3", "*/models/*.py"]),
        (["/tmp/python3", "model.py"], ["*python3", "model.py"]),
        (["python3", "models/../evil.py"], ["python3", "models/*"]),
    ],
)
def test_an_option_or_a_path_is_refused_unless_its_pattern_has_one(
    in_repo: Path, command: list[str], pattern: list[str]
) -> None:
    policy = command_policy(pattern)
    study = study_of(model={"command": command})
    assert "commands: model.command" in refusal(check_study, policy, study)


@pytest.mark.parametrize(
    ("command", "pattern"),
    [
        (["python3", "-u", "model.py"], ["python3", "-u", "*.py"]),
        (["python3", "--seed-file=a.csv"], ["python3", "--seed-file=*"]),
        (["python3", "models/sub/seir.py"], ["python3", "models/*.py"]),
        (["/usr/bin/python3", "model.py"], ["/usr/bin/python*", "*.py"]),
    ],
)
def test_an_option_or_a_path_is_allowed_by_a_pattern_of_its_kind(
    in_repo: Path, command: list[str], pattern: list[str]
) -> None:
    check_study(command_policy(pattern), study_of(model={"command": command}))


def test_command_working_folder_must_lie_in_the_study_roots(in_repo: Path) -> None:
    policy = command_policy(["python3", "models/*.py"])
    study = study_of(model={"command": ["python3", "models/seir.py"], "cwd": "/tmp"})
    assert "study_roots: model.cwd /tmp" in refusal(check_study, policy, study)


@pytest.mark.parametrize(
    ("model", "allowed"),
    [
        ("simstudy.models.seir:simulate", True),
        ("simstudy.models.other:simulate", True),
        ("os:system", False),
        ("tests.support.faulty:hang", False),
    ],
)
def test_model_patterns(in_repo: Path, model: str, allowed: bool) -> None:
    policy = RunPolicy(models=["simstudy.models.*:simulate"])
    study = study_of(model=model)
    if allowed:
        check_study(policy, study)
    else:
        assert f"models: model {model!r} matches none of" in refusal(check_study, policy, study)


def test_parameter_file_outside_the_roots_is_refused_without_reading_it(in_repo: Path) -> None:
    study = study_of(parameters={"file": "/etc/passwd"})
    message = refusal(check_study, RunPolicy(), study)
    assert "parameter_roots: parameters.file /etc/passwd is outside" in message
    assert "root:" not in message


def test_relative_escape_and_symlink_out_of_a_root_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "ok.csv").write_text("beta\n0.2\n")
    (tmp_path / "data" / "link.csv").symlink_to("/etc/passwd")
    policy = RunPolicy(parameter_roots=["data"])
    check_study(policy, study_of(parameters={"file": "data/ok.csv"}))
    escape = refusal(check_study, policy, study_of(parameters={"file": "data/../ok.csv"}))
    assert f"data/../ok.csv (resolves to {tmp_path / 'ok.csv'}) is outside" in escape
    link = refusal(check_study, policy, study_of(parameters={"file": "data/link.csv"}))
    assert "data/link.csv (resolves to /etc/passwd) is outside" in link


def test_study_path_outside_the_roots_is_refused_before_it_is_read(in_repo: Path) -> None:
    message = refusal(check_request, RunPolicy(), "/etc/passwd", None)
    assert "study_roots: study_path /etc/passwd is outside" in message
    assert "root:" not in message


def test_base_dir_cannot_be_set_by_a_flow_caller() -> None:
    policy = RunPolicy(allow_inline_study=True)
    study = Study.model_validate({**study_of().model_dump(exclude_unset=True), "base_dir": "/"})
    assert "study.base_dir: '/' cannot be set" in refusal(check_request, policy, None, study)
    check_request(policy, None, study_of())


@pytest.mark.parametrize(
    ("output", "allowed"),
    [
        (None, True),  # results/<name>
        ("results/other", True),
        ("results/../flows", False),
        ("/tmp/elsewhere", False),
        ("file:/etc/cron.d", False),
        ("local:///etc", False),
        ("memory://anything", False),
        ("s3://bucket/studies/x", True),
        ("s3://bucket/studies/../private", False),
        ("s3://bucket/studies-private/x", False),
        ("simplecache::s3://bucket/studies/x", False),
    ],
)
def test_outputs_must_lie_in_the_output_roots(
    in_repo: Path, output: str | None, allowed: bool
) -> None:
    policy = RunPolicy(output_roots=["results", "s3://bucket/studies"])
    study = study_of(output=output)
    if allowed:
        # A remote store opens its filesystem class: only check what is installed here.
        if output and output.startswith("s3://"):
            pytest.importorskip("s3fs")
        check_study(policy, study)
    else:
        assert "output_roots: output" in refusal(check_study, policy, study)


def test_dask_address_needs_an_allowed_pattern(in_repo: Path) -> None:
    study = study_of(execution={"dask": {"address": "tcp://10.0.0.9:8786"}})
    assert "dask_addresses: execution.dask.address" in refusal(check_study, RunPolicy(), study)
    check_study(RunPolicy(dask_addresses=["tcp://10.0.0.*:8786"]), study)


def test_cluster_class_needs_an_allowed_pattern(in_repo: Path) -> None:
    # A class and its keyword arguments run in the flow process: a caller could otherwise
    # name any importable callable.
    study = study_of(
        execution={"dask": {"cluster_class": "dask_jobqueue.SLURMCluster", "cluster_kwargs": {}}}
    )
    message = refusal(check_study, RunPolicy(), study)
    assert "cluster_classes: execution.dask.cluster_class 'dask_jobqueue.SLURMCluster'" in message
    assert "none, a local cluster only" in message
    check_study(RunPolicy(cluster_classes=["dask_jobqueue.*"]), study)
    other = study_of(execution={"dask": {"cluster_class": "distributed.LocalCluster"}})
    assert "cluster_classes:" in refusal(
        check_study, RunPolicy(cluster_classes=["dask_jobqueue.*"]), other
    )


def test_every_broken_rule_is_listed(in_repo: Path) -> None:
    study = study_of(
        model="os:system",
        parameters={"file": "/etc/passwd"},
        output="/tmp/x",
        execution={"dask": {"address": "tcp://1.2.3.4:1"}},
    )
    message = refusal(check_study, RunPolicy(), study)
    for rule in ("models:", "parameter_roots:", "output_roots:", "dask_addresses:"):
        assert rule in message


def test_policy_from_a_yaml_file_or_inline_json(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("models: ['mine.*:run']\nallow_inline_study: true\n")
    assert policy_from_setting(str(path)).models == ["mine.*:run"]
    inline = policy_from_setting('{"output_roots": ["/srv/results"]}')
    assert inline.output_roots == ["/srv/results"] and not inline.allow_inline_study


def test_invalid_policy_names_the_field_and_the_source(tmp_path: Path) -> None:
    message = refusal(parse_policy, "allow_inline: true\n", "policy.yaml")
    assert "policy.yaml" in message and "allow_inline" in message
    missing = str(tmp_path / "absent.yaml")
    assert "cannot read the policy file" in refusal(policy_from_setting, missing)
    assert "must be one mapping" in refusal(parse_policy, "- a\n", "p")


def test_an_absolute_output_root_allows_folders_below_it(tmp_path: Path) -> None:
    os.makedirs(tmp_path / "results")
    policy = RunPolicy(output_roots=[str(tmp_path / "results")])
    check_study(policy, study_of(output=str(tmp_path / "results" / "demo")))


@pytest.mark.parametrize(
    "study_path", ["examples/seir-calibration.yaml", "examples/seir-calibrate.yaml"]
)
def test_default_policy_allows_the_shipped_analysis_examples(
    in_repo: Path, study_path: str
) -> None:
    check_study(RunPolicy(), load_study(study_path))


def test_observed_data_outside_the_roots_and_foreign_loss_code_are_refused(in_repo: Path) -> None:
    study = study_of(
        targets={
            "data": "/etc/passwd",
            "loss": {"attack_rate": "os:system", "peak_day": "mse_of_mean"},
        }
    )
    message = refusal(check_study, RunPolicy(), study)
    assert "parameter_roots: targets.data /etc/passwd is outside" in message
    assert "models: targets.loss 'os:system' matches none of" in message
    assert "root:" not in message
    allowed = RunPolicy(parameter_roots=["/etc"], models=["simstudy.*", "os:system"])
    check_study(allowed, study)
