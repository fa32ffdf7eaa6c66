"""Atomic writes of files and directories: write beside the target under a temporary name, then rename.

Readers never see a half-written file: either the old version or the new one. Temporary names carry the writer's
host (a short hash) and pid, `.<name>.tmp-<host>-<pid>-<random>`, so that what a killed writer left behind can be
told from what a live one is writing: `remove_leftovers` deletes only the former.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]
# `.<name>.tmp-<host>-<pid>-<hex>` (atomic_path, atomic_dir) and `.sink-<host>-<pid>-<random>` (storage.parquet)
_LEFTOVER = re.compile(r"^\.(?:.+\.tmp|sink)-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[0-9a-z_]+$")


def temp_name(name: str) -> str:
    """A hidden temporary name for `name` that says which process on which host owns it."""
    return f".{name}.tmp-{HOST}-{os.getpid()}-{uuid.uuid4().hex[:12]}"


def scratch_prefix() -> str:
    """Prefix of a scratch directory (tempfile.mkdtemp adds the random part)."""
    return f".sink-{HOST}-{os.getpid()}-"


def pid_alive(pid: int) -> bool:
    """Is a process with this pid running on this host? (A reused pid counts as alive: the safe side.)"""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_leftovers(directory: str | os.PathLike[str], recursive: bool = False) -> list[Path]:
    """Delete the temporary files and directories that writers on this host left when they were killed (their pid
    is no longer alive); a live writer's, another host's and anything not named by this module are kept.
    Returns what was removed."""
    directory = Path(directory)
    removed: list[Path] = []
    if not directory.is_dir():
        return removed
    for root, dirs, files in os.walk(directory):  # never follows symlinks (`latest`)
        for name in [*dirs, *files]:
            m = _LEFTOVER.match(name)
            if m is None or m["host"] != HOST or pid_alive(int(m["pid"])):
                continue
            path = Path(root) / name
            if name in dirs:
                dirs.remove(name)
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
        if not recursive:
            break
    return removed


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success it is renamed onto `target`, on error removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Same directory => same filesystem => os.replace is atomic.
    tmp = target.with_name(temp_name(target.name))
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
    tmp = target.with_name(temp_name(target.name))
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
