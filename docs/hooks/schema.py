"""MkDocs hook: the study-file reference, generated from the pydantic JSON Schema.

The page `reference/study-file.md` holds the marker below; at build time it becomes one
table per model of the schema (field, type, default, description), so the reference is
the code's and cannot drift from it.
"""

from __future__ import annotations

import json
from typing import Any

MARKER = "<!-- study-schema -->"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Replace the marker of the reference page by the schema's tables."""
    if MARKER not in markdown:
        return markdown
    from simstudy.spec.study import Study

    return markdown.replace(MARKER, schema_markdown(Study.model_json_schema()))


def schema_markdown(schema: dict[str, Any]) -> str:
    """Return a section per model: the study first, then every model it refers to."""
    models = {"Study": schema, **schema.get("$defs", {})}
    return "\n\n".join(_model(name, model) for name, model in models.items())


def _model(name: str, model: dict[str, Any]) -> str:
    lines = [f"### {name}", ""]
    if model.get("description"):
        lines += [_cell(model["description"]), ""]
    properties = model.get("properties", {})
    if not properties:
        return "\n".join([*lines, f"Type: {_type(model)}."])
    required = set(model.get("required", []))
    lines += ["| field | type | default | description |", "| --- | --- | --- | --- |"]
    for field, spec in properties.items():
        default = "required" if field in required else _default(spec)
        lines.append(
            f"| `{field}` | {_type(spec)} | {default} | {_cell(spec.get('description', ''))} |"
        )
    return "\n".join(lines)


def _type(spec: dict[str, Any]) -> str:
    if "$ref" in spec:
        target = spec["$ref"].rsplit("/", 1)[-1]
        return f"[{target}](#{target.lower()})"
    if "anyOf" in spec:
        return " or ".join(dict.fromkeys(_type(option) for option in spec["anyOf"]))
    if "enum" in spec:
        return " \\| ".join(f"`{json.dumps(v)}`" for v in spec["enum"])
    if "const" in spec:
        return f"`{json.dumps(spec['const'])}`"
    kind = spec.get("type", "any")
    if kind == "array":
        return f"list of {_type(spec.get('items', {}))}"
    if kind == "object":
        values = spec.get("additionalProperties")
        return f"mapping to {_type(values)}" if isinstance(values, dict) else "mapping"
    return str(kind)


def _default(spec: dict[str, Any]) -> str:
    if "default" not in spec:
        return ""
    return f"`{json.dumps(spec['default'])}`"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")
