"""Atomic writes of files and directories: write beside the target under a temporary name, then rename.

Readers never see a half-written file: either the old version or the new one.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success it is renamed onto `target`, on error removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Same directory => same filesystem => os.replace is atomic.
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:12]}")
    try:
        yield tmp
        if tmp.is_file():
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary directory beside `target`; on success it is renamed to `target` in one step (which fails
    if `target` exists: a directory is never replaced), on error removed. Readers see the whole directory or none."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:12]}")
    tmp.mkdir()
    try:
        yield tmp
        os.rename(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def atomic_write_bytes(target: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def atomic_write_text(target: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(target, text.encode("utf-8"))


def atomic_write_stream(target: str | os.PathLike[str], source: BinaryIO) -> Path:
    """Copy a readable binary stream to `target` (constant memory), atomically."""
    with atomic_path(target) as tmp, open(tmp, "wb") as dst:
        shutil.copyfileobj(source, dst, length=16 << 20)
    return Path(target)
