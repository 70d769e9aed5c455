"""Read a study (a YAML or JSON file, or a mapping) into a validated `Study`, with overrides.

```python
>>> from simstudy.spec.loading import load_study
>>> study = load_study("examples/seir.yaml", {"replicates": 5, "execution": {"retries": 0}})
>>> (study.replicates, study.execution.retries, study.execution.timeout_seconds)
(5, 0, 60.0)
```

Input is bounded before it is built: a study file is at most `MAX_STUDY_FILE_BYTES`, and a
YAML document at most `MAX_YAML_NODES` nodes once its aliases are expanded, so a small
file of nested anchors (an alias bomb) is refused in milliseconds instead of filling memory.
"""

from __future__ import annotations

import json
import re
import stat
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from simstudy.errors import SimstudyError, StudyError, validation_problems
from simstudy.spec.study import MAX_STUDY_FILE_BYTES, MAX_YAML_NODES, Study

# libyaml when PyYAML was built with it: the pure-Python parser is ~10x slower.
_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# YAML 1.2 floats that YAML 1.1 (PyYAML) reads as strings: an exponent without a dot or
# without a sign (1e-3, 1e4, 2.5E3). PyYAML's own float pattern covers the rest.
YAML12_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")


def study_yaml_loader(base: type[yaml.SafeLoader]) -> type[yaml.SafeLoader]:
    """Return a subclass of a safe loader that reads 1e-3 and 1e4 as numbers."""

    class StudyLoader(base):  # type: ignore[valid-type,misc]
        """Safe YAML loader reading 1e-3 and 1e4 as numbers (YAML 1.2)."""

    # On the subclass only: PyYAML copies the resolver table before adding to it.
    StudyLoader.add_implicit_resolver(
        "tag:yaml.org,2002:float", YAML12_FLOAT, list("-+0123456789.")
    )
    return StudyLoader


StudyYamlLoader = study_yaml_loader(_SafeLoader)
"""The loader of study files: libyaml's safe loader if available, with YAML 1.2 floats."""


class DocumentTooLarge(SimstudyError, ValueError):
    """A YAML document whose aliases expand beyond `MAX_YAML_NODES` nodes, or into a cycle."""


def parse_yaml(text: str, loader_class: type[yaml.SafeLoader] = StudyYamlLoader) -> Any:
    """Return the data of one YAML document, refusing alias expansion beyond MAX_YAML_NODES."""
    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        # Aliases share nodes, so composing is linear in the text; everything that walks
        # the data afterwards (validation, design expansion) pays the expanded size.
        expanded_node_count(node, MAX_YAML_NODES)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _children(node: yaml.Node) -> Iterator[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        yield from node.value
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            yield key
            yield value


def expanded_node_count(root: yaml.Node, limit: int) -> int:
    """Return the node count of `root` with every alias expanded; raise beyond `limit`."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    # Iterative and memoised: each distinct node is visited once, however often aliased.
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            on_path.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in _children(node))
            if sizes[key] > limit:
                raise DocumentTooLarge(
                    f"its aliases (*name) expand to more than {limit:,} values; write the "
                    "values out, or put a large design in parameters.file"
                )
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise DocumentTooLarge("an alias (*name) refers to a node that contains it")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)
    return sizes[id(root)]


def read_text_bounded(path: Path, limit: int = MAX_STUDY_FILE_BYTES) -> str:
    """Return a regular file's UTF-8 text, refusing files over `limit` bytes."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise StudyError(str(path), ["not a regular file: give the path of a study file"])
        if info.st_size > limit:
            raise StudyError(
                str(path),
                [
                    f"the file has {info.st_size:,} bytes, more than the maximum of {limit:,}; "
                    "put a large design in parameters.file (CSV or Parquet)"
                ],
            )
        with path.open("rb") as handle:
            data = handle.read(limit + 1)  # the file may have grown since stat
    except OSError as exc:
        raise StudyError(str(path), [f"cannot read the file: {exc.strerror or exc}"]) from exc
    if len(data) > limit:
        raise StudyError(str(path), [f"the file has more than the maximum of {limit:,} bytes"])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StudyError(
            str(path), [f"not UTF-8 text (byte {exc.start}): save the file as UTF-8"]
        ) from exc


def read_study_document(path: Path) -> dict[str, Any]:
    """Return the raw mapping of a YAML or JSON study file."""
    text = read_text_bounded(path)
    kind = "JSON" if path.suffix == ".json" else "YAML"
    try:
        document = json.loads(text) if kind == "JSON" else parse_yaml(text)
    except (json.JSONDecodeError, yaml.YAMLError, DocumentTooLarge) as exc:
        raise StudyError(str(path), [f"not valid {kind}: {exc}"]) from exc
    except RecursionError as exc:
        raise StudyError(str(path), [f"not valid {kind}: nested too deeply"]) from exc
    if not isinstance(document, dict):
        raise StudyError(str(path), ["the file must hold one mapping (name:, model:, ...)"])
    return document


def validate_study(document: Mapping[str, Any], source: str = "<study>") -> Study:
    """Return the validated study or raise `StudyError` listing every invalid field."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            return Study.model_validate(document)
    except ValidationError as exc:
        raise StudyError(source, validation_problems(exc)) from exc


CLUSTER_CHOICES = frozenset({"address", "cluster_class"})
"""`execution.dask` override fields that name another cluster: it replaces the study's."""


def apply_overrides(
    document: Mapping[str, Any], overrides: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Return the study document with overrides applied; overrides that are None are ignored.

    `execution` merges into the study's (the settings given win), and so does
    `execution.dask`, unless it names an `address` or a `cluster_class`: another cluster
    replaces the study's. Every other field replaces the study's.
    """
    merged = dict(document)
    for name, value in (overrides or {}).items():
        if value is None:
            continue
        current = merged.get(name)
        if name == "execution" and isinstance(value, Mapping) and isinstance(current, Mapping):
            merged[name] = _merge_execution(current, value)
        else:
            merged[name] = value
    return merged


def _merge_execution(current: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    merged = {**current, **given}
    dask, study_dask = given.get("dask"), current.get("dask")
    other_cluster = isinstance(dask, Mapping) and bool(CLUSTER_CHOICES & dask.keys())
    if isinstance(dask, Mapping) and isinstance(study_dask, Mapping) and not other_cluster:
        merged["dask"] = {**study_dask, **dask}
    return merged


def load_study(path: str | Path, overrides: Mapping[str, Any] | None = None) -> Study:
    """Read and validate a study file with overrides; its relative paths resolve to its folder."""
    path = Path(path)
    document = read_study_document(path)
    document.setdefault("base_dir", str(path.resolve().parent))
    given = {name: value for name, value in (overrides or {}).items() if value is not None}
    source = f"{path} with overrides ({', '.join(given)})" if given else str(path)
    return validate_study(apply_overrides(document, given), source)


def resolve_study(
    study_path: str | None,
    study: Study | Mapping[str, Any] | None,
    overrides: Mapping[str, Any] | None = None,
) -> Study:
    """Return the study from a file or a study (exactly one), with overrides validated."""
    if (study_path is None) == (study is None):
        raise StudyError("flow parameters", ["give exactly one of study_path or study"])
    if study_path is not None:
        return load_study(study_path, overrides)
    given = {name: value for name, value in (overrides or {}).items() if value is not None}
    if isinstance(study, Study):
        if not given:
            return study
        name, document = study.name, study.model_dump(mode="json", exclude_unset=True)
    else:
        assert study is not None
        name, document = str(study.get("name", "<study>")), dict(study)
    source = f"{name} with overrides ({', '.join(given)})" if given else name
    return validate_study(apply_overrides(document, given), source)
