"""A digest of the simstudy code a process runs, so the flow and each worker compare theirs.

`__version__` stays "0.1.0" across every commit: two checkouts with the same version
string may run different code (a worker installed from an older clone). The digest is
of the source files themselves.

```python
>>> source_digest()  # the same on every process that runs the same checkout
'3f1c...'
```
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from collections.abc import Sequence
from pathlib import Path

PACKAGES = ("simstudy", "flows", "tasks")
"""The packages of this project whose code the flow and the workers must share."""


def source_digest(roots: Sequence[Path] | None = None) -> str:
    """Return the BLAKE2b digest of every .py file of the installed packages (or `roots`)."""
    if roots is None:
        return _installed_digest()
    return tree_digest(tuple(Path(root) for root in roots))


@functools.cache
def _installed_digest() -> str:
    # The code of a process does not change while it runs: read it once (~80 files).
    return tree_digest(package_roots())


def package_roots() -> tuple[Path, ...]:
    """Return the folders of the installed packages, found without importing them."""
    roots = []
    for name in PACKAGES:
        # find_spec does not run the package: `flows` would import Prefect.
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin is not None:
            roots.append(Path(spec.origin).parent)
    return tuple(roots)


def tree_digest(roots: Sequence[Path]) -> str:
    """Return the digest of the .py files under `roots`: each relative path, then its bytes."""
    digest = hashlib.blake2b(digest_size=16)
    for root in roots:
        for relative in sorted(
            path.relative_to(root.parent).as_posix() for path in root.rglob("*.py")
        ):
            data = (root.parent / relative).read_bytes()
            # Lengths first: no two different trees give the same stream of bytes.
            digest.update(f"{len(relative)}:{relative}:{len(data)}:".encode())
            digest.update(data)
    return digest.hexdigest()
