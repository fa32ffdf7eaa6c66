"""Versioned, immutable code tables (DESIGN §4) with a `latest` pointer that only moves on request.

    <root>/<dataset>/code_tables/<tokenizer>/
        v20261123T101500Z-1a2b3c4d/     one immutable version per materialization
            codes.parquet               the contract table (lineage in the Parquet footer)
            quantizer.npz               optional: what assigns codes to new items without a refit
            MANIFEST.json               written last; a version without it is incomplete and ignored
        latest -> v20261123T101500Z-1a2b3c4d   symlink, replaced atomically (os.replace) by `publish`
        LATEST                          the same version name as text, for object stores without symlinks

A version directory is assembled under a temporary name and renamed into place in one step, so readers see
a whole version or none. Nothing here ever rewrites or deletes a published version.
"""
from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import polars as pl

from storage.atomic import atomic_write_text
from storage.parquet import PARQUET_OPTIONS, footer_metadata

CODES_FILE = "codes.parquet"
MANIFEST = "MANIFEST.json"
LATEST_LINK = "latest"
LATEST_FILE = "LATEST"


class CodeTableStore:
    def __init__(self, root: str | os.PathLike[str], dataset: str, tokenizer: str):
        self.dir = Path(root).expanduser().resolve() / dataset / "code_tables" / tokenizer

    @staticmethod
    def new_version(run_id: str) -> str:
        return f"v{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{run_id.replace('-', '')[:8]}"

    def path(self, version: str) -> Path:
        return self.dir / version / CODES_FILE

    def versions(self) -> list[str]:
        """Complete versions, oldest first."""
        if not self.dir.is_dir():
            return []
        return sorted(p.name for p in self.dir.iterdir()
                      if p.is_dir() and not p.is_symlink() and (p / MANIFEST).is_file())

    def latest(self) -> str | None:
        f = self.dir / LATEST_FILE
        return f.read_text().strip() if f.is_file() else None

    def write(self, version: str, frame: pl.DataFrame, metadata: Mapping[str, Any],
              extra: Mapping[str, Callable[[Path], None]] | None = None) -> Path:
        """Write a new version: codes.parquet (+ extra files, each written by its callback), manifest last."""
        final = self.dir / version
        if final.exists():
            raise FileExistsError(f"code table version {final} already exists; versions are immutable")
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".{version}.tmp-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            frame.write_parquet(tmp / CODES_FILE, **PARQUET_OPTIONS, metadata=footer_metadata(metadata))
            for name, writer in (extra or {}).items():
                writer(tmp / name)
            manifest = {"version": version, "files": sorted(p.name for p in tmp.iterdir()), "rows": frame.height,
                        "metadata": dict(metadata)}
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
            os.rename(tmp, final)  # one step: the version appears whole
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
        return final / CODES_FILE

    def publish(self, version: str) -> None:
        """Point `latest` at a complete version (both the symlink and the LATEST file, each replaced atomically)."""
        if version not in self.versions():
            raise FileNotFoundError(f"no complete code table version {version} under {self.dir}")
        link_tmp = self.dir / f".{LATEST_LINK}.tmp-{uuid.uuid4().hex[:8]}"
        os.symlink(version, link_tmp, target_is_directory=True)
        os.replace(link_tmp, self.dir / LATEST_LINK)
        atomic_write_text(self.dir / LATEST_FILE, version + "\n")

    def read(self, version: str | None = None) -> pl.DataFrame:
        version = version or self.latest()
        if version is None:
            raise FileNotFoundError(f"no published code table under {self.dir}")
        return pl.read_parquet(self.path(version))
