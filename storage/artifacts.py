"""One versioned artifact store for everything trained or derived: code tables, model checkpoints, and the
models of later stages.

    <dir>/                              one store per (dataset, artifact), e.g. <root>/<dataset>/code_tables/pca_kmeans
        v20261123T101500Z-1a2b3c4d/     one immutable version directory
            ...                         whatever the writer puts there (codes.parquet, adapter/, optimizer.safetensors …)
            MANIFEST.json               written last; a version without it is incomplete and ignored
        latest -> v20261123T101500Z-1a2b3c4d   symlink, replaced atomically (os.replace) by `publish`
        LATEST                          the same version name as text, for object stores without symlinks

A version directory is assembled under a temporary name and renamed into place in one step, so readers see a
whole version or none, and an existing version is never replaced. `latest` moves only when the caller publishes,
i.e. after its checks passed. Nothing here rewrites or deletes a complete version.
"""
from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from storage.atomic import atomic_dir, atomic_write_text

MANIFEST = "MANIFEST.json"
LATEST_LINK = "latest"
LATEST_FILE = "LATEST"


def new_version(run_id: str) -> str:
    """`v<UTC time>-<first 8 hex of the run id>`: sorts by creation time, names the run that made it."""
    return f"v{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{run_id.replace('-', '')[:8]}"


class ArtifactStore:
    def __init__(self, directory: str | os.PathLike[str]):
        self.dir = Path(directory).expanduser().resolve()

    def path(self, version: str) -> Path:
        return self.dir / version

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
        """The published version (the one downstream reads), or None before the first publish."""
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
        """Point `latest` at a complete version (the symlink and the LATEST file, each replaced atomically)."""
        if not (self.path(version) / MANIFEST).is_file():
            raise FileNotFoundError(f"no complete version {version} under {self.dir}")
        link_tmp = self.dir / f".{LATEST_LINK}.tmp-{uuid.uuid4().hex[:8]}"
        os.symlink(version, link_tmp, target_is_directory=True)
        os.replace(link_tmp, self.dir / LATEST_LINK)
        atomic_write_text(self.dir / LATEST_FILE, version + "\n")
