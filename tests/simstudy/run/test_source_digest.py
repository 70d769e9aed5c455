"""The source digest: one per checkout, stable, and changed by any edit of a .py file."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import simstudy
from simstudy.run.source_digest import package_roots, source_digest


def copy_of_simstudy(to: Path) -> Path:
    """Return a copy of the installed simstudy package's .py files under `to`."""
    root = to / "simstudy"
    shutil.copytree(Path(simstudy.__file__).parent, root, ignore=shutil.ignore_patterns("*.pyc"))
    return root


def test_the_installed_digest_is_stable_and_covers_the_three_packages() -> None:
    started = time.perf_counter()
    digest = source_digest()
    assert time.perf_counter() - started < 0.5  # ~20 ms; the bound is for a loaded machine
    assert source_digest() == digest
    assert len(digest) == 32 and int(digest, 16) >= 0
    assert [root.name for root in package_roots()] == ["simstudy", "flows", "tasks"]
    assert source_digest(package_roots()) == digest


def test_a_copy_has_the_same_digest_and_an_edit_changes_it(tmp_path: Path) -> None:
    root = copy_of_simstudy(tmp_path / "a")
    same = source_digest([root])
    assert source_digest([copy_of_simstudy(tmp_path / "b")]) == same
    (root / "__init__.py").write_text((root / "__init__.py").read_text() + "\n# edited\n")
    edited = source_digest([root])
    assert edited != same
    (root / "notes.txt").write_text("not code")  # only .py files count
    assert source_digest([root]) == edited


def test_a_renamed_or_added_file_changes_the_digest(tmp_path: Path) -> None:
    root = copy_of_simstudy(tmp_path)
    before = source_digest([root])
    (root / "errors.py").rename(root / "errors_old.py")
    renamed = source_digest([root])
    assert renamed != before
    (root / "extra.py").write_text("")
    assert source_digest([root]) not in (before, renamed)
