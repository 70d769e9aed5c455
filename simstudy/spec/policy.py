"""What a run of a deployment may do: models, commands, files, outputs, clusters.

Anyone who can create a flow run of a deployment chooses its parameters, and a study
names code to run (a Python model or a command) and files to read and write. A
`RunPolicy`, set by the deployment's owner, bounds that; the flow checks it before
anything is read, started or written.

```python
>>> from simstudy.spec.loading import load_study
>>> policy = RunPolicy(models=["simstudy.models.*:simulate"], output_roots=["results"])
>>> check_request(policy, study_path="examples/seir.yaml", study=None)
>>> check_study(policy, load_study("examples/seir.yaml"))  # raises PolicyError if refused
```

Paths are compared after resolving symlinks and `..` (`os.path.realpath`); relative
roots are taken from the working directory of the process that checks.
"""

from __future__ import annotations

import os
from fnmatch import fnmatchcase
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from simstudy.errors import StudyError, validation_problems
from simstudy.output.location import OutputStore
from simstudy.spec.study import CommandModel, Study

DEFAULT_MODELS = ["simstudy.models.seir:simulate"]
# Not '.': any YAML or JSON file under the working directory (a secrets file, a config)
# would be read as a study on a caller's request.
DEFAULT_ROOTS = ["examples"]


class PolicyError(StudyError):
    """A run asked for something its deployment's policy does not allow."""

    def __init__(self, source: str, problems: list[str]):
        super().__init__(source, problems)
        lines = "\n".join(f"  - {p}" for p in problems)
        self.args = (f"refused by the run policy ({source}):\n{lines}",)


class RunPolicy(BaseModel):
    """The deployment owner's rules for runs; the defaults allow only the shipped example."""

    model_config = ConfigDict(extra="forbid")

    models: list[str] = Field(
        default_factory=lambda: list(DEFAULT_MODELS),
        description="Python models a run may use: fnmatch patterns of 'module:function', "
        "e.g. 'mypackage.models.*:simulate' ('*' also matches dots).",
    )
    commands: list[list[str]] = Field(
        default_factory=list,
        description="Command models a run may use: each an argv pattern with one fnmatch "
        "pattern per argument, e.g. ['python3', 'models/*.py']; the command must have "
        "exactly as many arguments. An argument starting with '-' needs a pattern starting "
        "with '-', one containing '/' a pattern containing '/', an absolute path an absolute "
        "pattern; arguments with a '..' path segment are always refused.",
    )
    study_roots: list[str] = Field(
        default_factory=lambda: list(DEFAULT_ROOTS),
        description="Folders study files (study_path) and command working folders must lie in.",
    )
    parameter_roots: list[str] = Field(
        default_factory=lambda: list(DEFAULT_ROOTS),
        description="Folders parameter files (parameters.file) and observed data (targets.data) "
        "must lie in.",
    )
    output_roots: list[str] = Field(
        default_factory=lambda: ["results"],
        description="Local folders outputs must lie in, or URL prefixes such as "
        "'s3://bucket/studies/' for remote outputs.",
    )
    allow_inline_study: bool = Field(
        default=False,
        description="Whether a run may pass a whole study (the flow's `study` parameter) "
        "instead of a study file.",
    )
    dask_addresses: list[str] = Field(
        default_factory=list,
        description="Dask schedulers a run may use (execution.dask.address), as fnmatch "
        "patterns, e.g. 'tcp://10.0.0.5:8786'; none by default (a local cluster only).",
    )
    cluster_classes: list[str] = Field(
        default_factory=list,
        description="Dask cluster classes a run may start (execution.dask.cluster_class), as "
        "fnmatch patterns of import paths, e.g. 'dask_jobqueue.SLURMCluster'; none by "
        "default (a local cluster only). A class and its cluster_kwargs run in the flow "
        "process: allow only classes whose every argument you accept from a caller.",
    )


def parse_policy(text: str, source: str) -> RunPolicy:
    """Return the policy in YAML or JSON `text`, or raise `PolicyError` naming `source`."""
    try:
        document = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        raise PolicyError(source, [f"not valid YAML or JSON: {exc}"]) from exc
    if not isinstance(document, dict):
        raise PolicyError(source, ["the policy must be one mapping (models:, study_roots:, ...)"])
    try:
        return RunPolicy.model_validate(document)
    except ValidationError as exc:
        raise PolicyError(source, validation_problems(exc)) from exc


def policy_from_setting(value: str) -> RunPolicy:
    """Return the policy a setting names: inline JSON (starting with '{') or a file path."""
    if value.lstrip().startswith("{"):
        return parse_policy(value, "SIMSTUDY_POLICY")
    try:
        text = Path(value).read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(value, [f"cannot read the policy file: {exc.strerror}"]) from exc
    return parse_policy(text, value)


def check_request(policy: RunPolicy, study_path: str | None, study: Study | None) -> None:
    """Refuse flow parameters the policy forbids, before any file is read."""
    problems = []
    if study is not None:
        if not policy.allow_inline_study:
            problems.append(
                "allow_inline_study: this deployment does not accept a whole study as the "
                "`study` parameter; pass study_path to a study file instead"
            )
        if "base_dir" in study.model_fields_set:
            problems.append(
                f"study.base_dir: {study.base_dir!r} cannot be set by a flow run; relative "
                "paths resolve against the study file's folder (or the working directory)"
            )
    if study_path is not None and not under_roots(study_path, policy.study_roots):
        problems.append(outside("study_roots", "study_path", study_path, policy.study_roots))
    if problems:
        raise PolicyError("flow parameters", problems)


def check_study(policy: RunPolicy, study: Study) -> None:
    """Refuse a resolved study (overrides applied) that uses anything the policy forbids."""
    problems = model_problems(policy, study)
    if study.parameters.file is not None:
        path = str(study.resolve(study.parameters.file))
        if not under_roots(path, policy.parameter_roots):
            problems.append(
                outside("parameter_roots", "parameters.file", path, policy.parameter_roots)
            )
    problems += targets_problems(policy, study)
    problems += output_problems(policy, study.output_dir)
    address = study.execution.dask.address
    if address is not None and not any(fnmatchcase(address, p) for p in policy.dask_addresses):
        problems.append(
            f"dask_addresses: execution.dask.address {address!r} is not allowed "
            f"(allowed: {policy.dask_addresses or 'none, a local cluster only'})"
        )
    cluster_class = study.execution.dask.cluster_class
    if cluster_class is not None and not any(
        fnmatchcase(cluster_class, p) for p in policy.cluster_classes
    ):
        problems.append(
            f"cluster_classes: execution.dask.cluster_class {cluster_class!r} is not allowed "
            f"(allowed: {policy.cluster_classes or 'none, a local cluster only'})"
        )
    if problems:
        raise PolicyError(f"study {study.name}", problems)


def targets_problems(policy: RunPolicy, study: Study) -> list[str]:
    """Return why the study's observed data or loss functions are not allowed."""
    if study.targets is None:
        return []
    problems = []
    path = str(study.resolve(study.targets.data))
    if not under_roots(path, policy.parameter_roots):
        problems.append(outside("parameter_roots", "targets.data", path, policy.parameter_roots))
    losses = study.targets.loss
    for loss in losses.values() if isinstance(losses, dict) else [losses]:
        # A loss 'module:function' is code that runs on the workers, as a model is.
        if ":" in loss and not any(fnmatchcase(loss, pattern) for pattern in policy.models):
            problems.append(f"models: targets.loss {loss!r} matches none of {policy.models}")
    return problems


def model_problems(policy: RunPolicy, study: Study) -> list[str]:
    """Return why the study's model is not allowed (empty when it is)."""
    model = study.model
    if not isinstance(model, CommandModel):
        if any(fnmatchcase(model, pattern) for pattern in policy.models):
            return []
        return [f"models: model {model!r} matches none of {policy.models}"]
    problems = []
    if not any(command_matches(model.command, pattern) for pattern in policy.commands):
        problems.append(
            f"commands: model.command {model.command!r} matches none of "
            f"{policy.commands or 'no command is allowed'}"
        )
    cwd = str(study.resolve(model.cwd))
    if not under_roots(cwd, policy.study_roots):
        problems.append(outside("study_roots", "model.cwd", cwd, policy.study_roots))
    return problems


def command_matches(command: list[str], pattern: list[str]) -> bool:
    """Return True if every argument matches its pattern and none has a '..' segment."""
    if len(command) != len(pattern):
        return False
    if any(".." in Path(argument).parts for argument in command):
        return False
    return all(argument_matches(a, p) for a, p in zip(command, pattern, strict=True))


def argument_matches(argument: str, pattern: str) -> bool:
    """Return True if `argument` matches `pattern`, an option or a path only where it has one."""
    # fnmatch's '*' also matches a leading '-' and any '/': '*.py' would accept the option
    # '-cimport os;os.system(...)#.py' and '/tmp/evil.py'.
    if argument.startswith("-") and not pattern.startswith("-"):
        return False
    if "/" in argument and "/" not in pattern:
        return False
    if argument.startswith("/") and not pattern.startswith("/"):
        return False
    return fnmatchcase(argument, pattern)


def output_problems(policy: RunPolicy, output: str) -> list[str]:
    """Return why the output location is not allowed (empty when it is)."""
    # The store decides what is local ('file:/x' and 'local://x' are): judge what it opens.
    try:
        store = OutputStore(output)
    except (ValueError, ImportError) as exc:
        return [f"output_roots: output {output!r} cannot be opened: {exc}"]
    if store.local is not None:
        if under_roots(str(store.local), policy.output_roots):
            return []
        return [outside("output_roots", "output", str(store.local), policy.output_roots)]
    prefixes = [root.rstrip("/") + "/" for root in policy.output_roots if "://" in root]
    if ".." not in output.split("/") and any(output.startswith(p) for p in prefixes):
        return []
    return [
        f"output_roots: output {output!r} is a remote location outside the allowed "
        f"prefixes {prefixes or '(none)'}"
    ]


def under_roots(path: str, roots: list[str]) -> bool:
    """Return True if `path`, symlinks and '..' resolved, lies in one of the local `roots`."""
    resolved = Path(os.path.realpath(path))
    for root in roots:
        if "://" in root:
            continue
        real_root = Path(os.path.realpath(root))
        if resolved == real_root or real_root in resolved.parents:
            return True
    return False


def outside(rule: str, field: str, path: str, roots: list[str]) -> str:
    """Return the problem line for a path outside its allowed roots."""
    real = os.path.realpath(path)
    shown = path if real == path else f"{path} (resolves to {real})"
    return f"{rule}: {field} {shown} is outside the allowed folders {roots}"
