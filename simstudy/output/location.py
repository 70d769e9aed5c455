"""Where a study's files live: a local folder (default) or an fsspec URL.

```python
>>> store = OutputStore("results/seir-demo")        # local: atomic temp file + rename
>>> store = OutputStore("memory://studies/demo")    # or s3://bucket/prefix, file:///abs
>>> store.write_bytes("study.json", b"{}")
```

Local files are written atomically (temp file + rename), so a reader never sees half a
file; on object stores a write is a single PUT, which is atomic too.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import fsspec
from fsspec.implementations.local import LocalFileSystem

from simstudy.errors import OutputDirError, StorageError


class OutputStore:
    """A study's output location, local or remote."""

    def __init__(self, location: str | Path):
        self.location = str(location)
        self.fs, self.root = fsspec.core.url_to_fs(self.location)
        self.local: Path | None = Path(self.root) if isinstance(self.fs, LocalFileSystem) else None

    def __str__(self) -> str:
        return self.location

    def path(self, name: str) -> str:
        """Return the full path of a file in the store."""
        return f"{self.root.rstrip('/')}/{name}"

    def entries(self) -> set[str]:
        """Return the names at the top of the store (empty if it does not exist)."""
        if not self.fs.exists(self.root):
            return set()
        return {p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self.root, detail=False)}

    def is_file_location(self) -> bool:
        """Return True if the location itself is a file, not a folder."""
        return bool(self.fs.isfile(self.root))

    def exists(self, name: str) -> bool:
        """Return True if the named file exists."""
        return bool(self.fs.exists(self.path(name)))

    def names(self, folder: str, suffix: str) -> list[str]:
        """Return the sorted names (relative to the store) of a folder's files ending in suffix."""
        base = self.path(folder)
        if not self.fs.exists(base):
            return []
        found = [p.rsplit("/", 1)[-1] for p in self.fs.ls(base, detail=False)]
        return sorted(f"{folder}/{name}" for name in found if name.endswith(suffix))

    def read_bytes(self, name: str) -> bytes:
        """Return a file's content."""
        return bytes(self.fs.cat_file(self.path(name)))

    def write_bytes(self, name: str, data: bytes) -> None:
        """Write a file whole: atomically on a local disk, as one PUT elsewhere."""
        if self.local is not None:
            with atomic_file(self.local / name) as handle:
                handle.write(data)
            return
        self.fs.makedirs(self.path(name).rsplit("/", 1)[0], exist_ok=True)
        self.fs.pipe_file(self.path(name), data)

    @contextmanager
    def open_write(self, name: str) -> Iterator[IO[bytes]]:
        """Yield a file to write in pieces: it appears whole (temp + rename) or not at all."""
        if self.local is not None:
            with atomic_file(self.local / name) as handle:
                yield handle
            return
        self.fs.makedirs(self.path(name).rsplit("/", 1)[0], exist_ok=True)
        # Object stores upload in parts and publish the object when it is closed.
        with self.fs.open(self.path(name), "wb") as handle:
            yield handle

    def delete(self, name: str) -> None:
        """Delete a file or folder if it exists."""
        if self.exists(name):
            self.fs.rm(self.path(name), recursive=True)

    def makedirs(self) -> None:
        """Create the store's folder."""
        self.fs.makedirs(self.root, exist_ok=True)

    def local_log_dir(self, study_name: str) -> Path:
        """Return a local folder for model logs (model processes need real files)."""
        if self.local is not None:
            return self.local / "logs"
        return private_log_dir(study_name)


def private_log_dir(study_name: str) -> Path:
    """Return this user's private log folder of a study with a remote output, created 0700."""
    # Not a shared temporary folder: another local user could create it first, or plant a
    # symlink where logs are appended, and read or redirect them.
    cache = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(cache) if os.path.isabs(cache) else Path.home() / ".cache"
    try:
        base.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputDirError(
            f"cannot create the folder for model logs {base}: {exc.strerror or exc}; "
            "set XDG_CACHE_HOME to a folder of yours"
        ) from exc
    folder = base
    for part in ("simstudy", "logs", study_name):
        folder = private_folder(folder / part)
    return folder


def private_folder(path: Path) -> Path:
    """Create `path` with mode 0700 if missing; raise unless only this user can use it."""
    try:
        with contextlib.suppress(FileExistsError):  # judged below, whatever it is
            os.mkdir(path, 0o700)
        info = path.lstat()
    except OSError as exc:
        raise OutputDirError(
            f"cannot create the private folder {path}: {exc.strerror or exc}; "
            "set XDG_CACHE_HOME to a folder of yours"
        ) from exc
    problem = None
    if stat.S_ISLNK(info.st_mode):
        problem = "is a symlink"
    elif not stat.S_ISDIR(info.st_mode):
        problem = "is not a folder"
    elif info.st_uid != os.getuid():
        problem = f"belongs to user id {info.st_uid}, not to this user ({os.getuid()})"
    elif stat.S_IMODE(info.st_mode) & 0o077:
        problem = f"has mode {stat.S_IMODE(info.st_mode):04o}, open to other users"
    if problem is not None:
        raise OutputDirError(
            f"the private folder for model logs {path} {problem}: remove it (a new one is "
            "created with mode 0700) or set XDG_CACHE_HOME to a folder of yours"
        )
    return path


STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})
"""Errors of the storage itself, not of a path: nothing written there can succeed."""


@contextmanager
def atomic_file(path: Path) -> Iterator[IO[bytes]]:
    """Yield a temporary file that replaces `path` only once it is complete.

    A full disk, a quota or a read-only folder is a `StorageError` naming the path.
    """
    with storage_errors(path), _atomic_file(path) as handle:
        yield handle


@contextmanager
def storage_errors(where: Path | str) -> Iterator[None]:
    """Raise a full disk, a quota or a read-only folder met inside as a `StorageError`."""
    try:
        yield
    except StorageError:
        raise
    except OSError as exc:
        if exc.errno not in STORAGE_ERRNOS:
            raise
        raise StorageError(
            f"cannot write {where}: {exc.strerror}; make room there (or choose another "
            "output) and run the same command again: the finished replicates it kept are "
            "reused"
        ) from exc


@contextmanager
def _atomic_file(path: Path) -> Iterator[IO[bytes]]:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not a `with` block: the file must outlive its handle until it is renamed into place.
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115
        dir=path.parent, prefix=f".{path.name}.", delete=False
    )
    try:
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        # NamedTemporaryFile creates 0600 files; results get the usual umask permissions.
        os.chmod(handle.name, 0o666 & ~_umask())
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
