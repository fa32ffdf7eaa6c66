"""One versioned artifact store for everything trained or derived: code tables, model checkpoints, and the
models of later stages.

    <dir>/                              one store per (dataset, artifact), e.g. <root>/<dataset>/code_tables/pca_kmeans
        v20261123T101500Z-1a2b3c4d/     one immutable version directory
            ...                         what the writer puts there (codes.parquet, adapter/, optimizer.safetensors …)
            MANIFEST.json               written last; a version without it is incomplete and ignored
        latest -> v20261123T101500Z-1a2b3c4d   symlink, replaced atomically (os.replace) by `publish`:
                                        the pointer of record, what `latest()` reads
        LATEST                          the same version name as text, for object stores without symlinks
        .publish.lock                   `publish` moves both pointers under this lock, so they never disagree

A version directory is assembled under a temporary name and renamed into place in one step, so readers see a
whole version or none, and an existing version is never replaced. `latest` moves only when the caller publishes,
i.e. after its checks passed. Nothing here rewrites or deletes a complete version.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from storage.atomic import atomic_dir, atomic_write_text, temp_name
from storage.paths import check_name, inside

MANIFEST = "MANIFEST.json"
LATEST_LINK = "latest"
LATEST_FILE = "LATEST"
PUBLISH_LOCK = ".publish.lock"


def new_version(run_id: str) -> str:
    """`v<UTC time to the microsecond>-<first 8 hex of the run id>`: sorts by creation time (two versions of the
    same second too: the run-id part is random), names the run that made it."""
    now = time.time()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"
    return f"v{stamp}-{run_id.replace('-', '')[:8]}"


class ArtifactStore:
    def __init__(self, directory: str | os.PathLike[str]):
        self.dir = Path(directory).expanduser().resolve()

    def path(self, version: str) -> Path:
        return inside(self.dir, self.dir / check_name("version", version))

    def versions(self, prefix: str = "") -> list[str]:
        """Complete versions whose name starts with `prefix`, in name order (= creation order for the names
        `new_version` and zero-padded step numbers give)."""
        if not self.dir.is_dir():
            return []
        return sorted(p.name for p in self.dir.iterdir() if p.name.startswith(prefix) and p.is_dir()
                      and not p.is_symlink() and (p / MANIFEST).is_file())

    def newest(self, prefix: str = "") -> str | None:
        found = self.versions(prefix)
        return found[-1] if found else None

    def latest(self) -> str | None:
        """The published version (the one downstream reads), or None before the first publish: the `latest`
        symlink where there is one (what readers of `latest/` follow), else the LATEST file."""
        link = self.dir / LATEST_LINK
        if link.is_symlink():
            return os.readlink(link).rstrip("/")
        f = self.dir / LATEST_FILE
        return f.read_text().strip() if f.is_file() else None

    def latest_path(self) -> Path:
        version = self.latest()
        if version is None:
            raise FileNotFoundError(f"nothing published under {self.dir} yet")
        return self.path(version)

    def manifest(self, version: str) -> dict[str, Any]:
        return json.loads((self.path(version) / MANIFEST).read_text())

    def write(self, version: str, writer: Callable[[Path], None], metadata: Mapping[str, Any] | None = None) -> Path:
        """Create `version`: `writer(tmp_dir)` fills a temporary directory beside the final one, the manifest
        (file list + metadata) goes in last, and one rename makes the version appear whole."""
        final = self.path(version)
        if final.exists():
            raise FileExistsError(f"version {final} already exists; versions are immutable")
        with atomic_dir(final) as tmp:  # one rename: the version appears whole (fails if it appeared meanwhile)
            writer(tmp)
            files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
            manifest = {"version": version, "files": files, "metadata": dict(metadata or {})}
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
        return final

    def publish(self, version: str) -> None:
        """Point `latest` at a complete version: the symlink, then the LATEST file, each replaced atomically, both
        under one exclusive lock so that concurrent publishers cannot leave them naming different versions (the
        last publisher wins both)."""
        if not (self.path(version) / MANIFEST).is_file():
            raise FileNotFoundError(f"no complete version {version} under {self.dir}")
        with self._publish_lock():
            link_tmp = self.dir / temp_name(LATEST_LINK)
            os.symlink(version, link_tmp, target_is_directory=True)
            os.replace(link_tmp, self.dir / LATEST_LINK)
            atomic_write_text(self.dir / LATEST_FILE, version + "\n")

    @contextlib.contextmanager
    def _publish_lock(self) -> Iterator[None]:
        # flock: released by the kernel when the holder dies, so a killed publisher never blocks the next one
        with open(self.dir / PUBLISH_LOCK, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
