"""Output locations: where a study's files and its model logs live."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from simstudy.errors import OutputDirError
from simstudy.output.location import OutputStore

REMOTE = "memory://studies/demo"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def refusal() -> str:
    with pytest.raises(OutputDirError) as caught:
        OutputStore(REMOTE).local_log_dir("demo")
    return str(caught.value)


def test_a_local_output_keeps_its_logs_in_its_own_folder(tmp_path: Path, cache: Path) -> None:
    assert OutputStore(tmp_path / "out").local_log_dir("demo") == tmp_path / "out" / "logs"
    assert not cache.exists()


def test_a_remote_output_logs_to_a_folder_only_its_user_can_use(cache: Path) -> None:
    found = OutputStore(REMOTE).local_log_dir("demo")
    assert found == cache / "simstudy" / "logs" / "demo"
    for folder in (found, found.parent, found.parent.parent):
        assert mode(folder) == 0o700 and folder.stat().st_uid == os.getuid()
    assert OutputStore(REMOTE).local_log_dir("demo") == found  # used again as it is


def test_without_xdg_cache_home_the_logs_go_under_the_home_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    found = OutputStore(REMOTE).local_log_dir("demo")
    assert found == tmp_path / ".cache" / "simstudy" / "logs" / "demo"


def test_a_planted_symlink_is_refused_and_nothing_is_written_through_it(
    tmp_path: Path, cache: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    OutputStore(REMOTE).local_log_dir("demo")
    (cache / "simstudy" / "logs" / "demo").rmdir()
    (cache / "simstudy" / "logs").rmdir()
    (cache / "simstudy" / "logs").symlink_to(elsewhere)
    message = refusal()
    assert f"{cache / 'simstudy' / 'logs'} is a symlink" in message
    assert "remove it" in message and "XDG_CACHE_HOME" in message
    assert list(elsewhere.iterdir()) == []


def test_a_folder_open_to_other_users_is_refused(cache: Path) -> None:
    shared = OutputStore(REMOTE).local_log_dir("demo")
    shared.chmod(0o777)
    assert f"{shared} has mode 0777, open to other users" in refusal()


@pytest.mark.skipif(os.getuid() != 0, reason="giving a folder to another user needs root")
def test_a_folder_created_by_another_user_is_refused(cache: Path) -> None:
    planted = cache / "simstudy"
    planted.mkdir(parents=True)
    planted.chmod(0o700)
    os.chown(planted, 65534, 65534)
    assert f"{planted} belongs to user id 65534, not to this user (0)" in refusal()


def test_a_file_in_place_of_the_folder_is_refused(cache: Path) -> None:
    (cache / "simstudy").mkdir(parents=True)
    (cache / "simstudy").chmod(0o700)
    (cache / "simstudy" / "logs").write_text("")
    assert "logs is not a folder" in refusal()
