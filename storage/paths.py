"""Names that become path components (datasets, tables, tokenizers, versions) and the one way a path under a
store root is built from them.

A name comes from a user's registry file, run config or command line, so it is checked before it touches the
file system: letters, digits, `_`, `-`, `.`, starting with a letter or digit (no `..`, no `/`, nothing absolute).
Every path is then resolved, symlinks followed, and must still lie under the resolved root: a dataset directory
that is a symlink to elsewhere is refused too, since writes through it would land outside the store.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+\-]{0,127}")


class UnsafePathError(ValueError):
    """A name that is no plain path component, or a path that leaves its store root."""


def check_name(kind: str, name: str) -> str:
    """`name` itself when it is a safe single path component, else UnsafePathError naming `kind`."""
    if not isinstance(name, str) or not SAFE_NAME.fullmatch(name) or ".." in name:
        raise UnsafePathError(f"{kind} name {name!r} is not allowed: use 1-128 letters, digits, '_', '-' or '.', "
                              "starting with a letter or digit, without '..'")
    return name


def inside(root: str | os.PathLike[str], path: str | os.PathLike[str]) -> Path:
    """`path` when it resolves (symlinks followed) to a place under `root` (resolved too), else UnsafePathError."""
    base = Path(root).resolve()
    resolved = Path(path).resolve()
    if resolved != base and not resolved.is_relative_to(base):
        raise UnsafePathError(f"{path} resolves to {resolved}, outside the store root {base}")
    return Path(path)


def safe_join(root: str | os.PathLike[str], *parts: tuple[str, str]) -> Path:
    """root / name / name …, each part given as (kind, name) and checked, the result checked to stay under root."""
    path = Path(root)
    for kind, name in parts:
        path = path / check_name(kind, name)
    return inside(root, path)
