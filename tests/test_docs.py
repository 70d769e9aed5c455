"""The docs: every command they show parses, every example study they name validates, every
`python -m` module they name exists; the site builds in strict mode (in CI, `.ci/run`)."""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest

from flows.cli import build_parser
from simstudy.spec.loading import load_study

REPO = Path(__file__).parents[1]
PAGES = sorted((REPO / "docs").rglob("*.md")) + [REPO / "README.md"]
BLOCK = re.compile(r"```(?:bash|sh|console|shell)?\n(.*?)```", re.S)
# A code span naming a whole command: `simstudy run X`, not the name `simstudy run` in prose.
INLINE = re.compile(r"(?<!`)`((?:simstudy \w+|python3? -m) [^`]+|simstudy schema)`(?!`)")
PLACEHOLDERS = {"N": "2", "STUDY": "study.yaml", "DIR": "out", "ADDR": "tcp://127.0.0.1:8786"}


def shown_commands() -> list[tuple[str, str]]:
    """Return (page, command) for each command in a shell block or a code span of the docs."""
    found = []
    for page in PAGES:
        text = page.read_text()
        found += [(str(page.relative_to(REPO)), c.strip()) for c in INLINE.findall(text)]
        for block in BLOCK.findall(text):
            joined = block.replace("\\\n", " ")
            for line in joined.splitlines():
                line = line.split(" #", 1)[0].strip().removeprefix("$ ")
                for command in line.split("&&"):
                    command = command.strip()
                    if command.startswith(("simstudy ", "python -m ", "python3 -m ")):
                        found.append((str(page.relative_to(REPO)), command))
    return found


COMMANDS = shown_commands()


def test_the_docs_show_commands() -> None:
    assert len([c for _, c in COMMANDS if c.startswith("simstudy ")]) >= 10


@pytest.mark.parametrize(("page", "command"), COMMANDS)
def test_a_command_in_the_docs_parses_and_names_what_exists(page: str, command: str) -> None:
    shown = command.replace("[", "").replace("]", "").replace("...", "")
    words = [PLACEHOLDERS.get(word, word) for word in shlex.split(shown)]
    if words[0] == "simstudy":
        try:
            args = build_parser().parse_args(words[1:])
        except SystemExit as exc:  # argparse's way of refusing
            raise AssertionError(f"{page}: {command!r} does not parse") from exc
        study = getattr(args, "study", "")
        if study.startswith("examples/"):
            load_study(REPO / study)  # raises naming the field if the example is invalid
        return
    module = words[words.index("-m") + 1]
    if module in ("venv", "pip", "pytest"):
        return
    assert importlib.util.find_spec(module) is not None, f"{page}: no module {module}"


YAML_BLOCK = re.compile(r"```yaml\n(.*?)```", re.S)


def shown_dask_settings() -> list[tuple[str, str]]:
    """Return (page, block) for each YAML block of the docs that sets execution.dask whole."""
    return [
        (str(page.relative_to(REPO)), block)
        for page in PAGES
        for block in YAML_BLOCK.findall(page.read_text())
        if block.startswith("execution:\n  dask:")
    ]


@pytest.mark.parametrize(("page", "block"), shown_dask_settings())
def test_a_cluster_configuration_in_the_docs_validates(page: str, block: str) -> None:
    import yaml

    from simstudy.spec.study import DaskSettings

    DaskSettings.model_validate(yaml.safe_load(block)["execution"]["dask"])


def test_the_docs_show_the_tested_slurm_configuration() -> None:
    assert any("dask_jobqueue.SLURMCluster" in block for _, block in shown_dask_settings())
