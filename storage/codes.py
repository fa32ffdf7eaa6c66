"""Versioned, immutable code tables (DESIGN §4): the artifact store (storage.artifacts) at
`<root>/<dataset>/code_tables/<tokenizer>/`, one version per materialization:

    v20261123T101500.123456Z-1a2b3c4d/
        codes.parquet       the contract table (lineage in the Parquet footer)
        retired.parquet     IDs this lineage issued and took back (removed items, changed items whose ID moved):
                            reserved, never given to another item by an incremental run
        id_migration.parquet  every item of this version or the one before: old and new semantic_id, change, moved
        tokenizer files     the fitted tokenizer (ops.tokenizers), which assigns codes to new items without a refit
        MANIFEST.json       written last
    latest -> v20261123T101500.123456Z-1a2b3c4d   moved only after every check passed
    versions.parquet    one row per complete version (created, mode, code version, upstream, items, churn, latest),
                        rewritten after every write and publish: what a reader pins a version from
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import polars as pl

from storage.artifacts import ArtifactStore
from storage.parquet import write_frame, write_parquet
from storage.paths import safe_join

CODES_FILE = "codes.parquet"
RETIRED_FILE = "retired.parquet"
MIGRATION_FILE = "id_migration.parquet"
VERSIONS_FILE = "versions.parquet"
CHURN_KEYS = ("added", "changed", "unchanged", "removed", "moved", "moved_unchanged")
VERSIONS_SCHEMA: dict[str, pl.DataType] = {
    "version": pl.String(), "created_at": pl.String(), "mode": pl.String(), "code_version": pl.String(),
    "upstream": pl.String(), "items": pl.Int64(), "retired": pl.Int64(),
    **{key: pl.Int64() for key in CHURN_KEYS}, "based_on": pl.String(), "latest": pl.Boolean(),
}


class CodeTableStore(ArtifactStore):
    def __init__(self, root: str | os.PathLike[str], dataset: str, tokenizer: str):
        super().__init__(safe_join(root, ("dataset", dataset), ("directory", "code_tables"), ("tokenizer", tokenizer)))

    def table_path(self, version: str) -> Path:
        return self.path(version) / CODES_FILE

    def write_table(self, version: str, frame: pl.DataFrame, metadata: Mapping[str, Any],
                    extra: Callable[[Path], None] | None = None, retired: pl.DataFrame | None = None,
                    migration: pl.DataFrame | None = None) -> Path:
        """A new version: codes.parquet, retired.parquet and id_migration.parquet (where given), then whatever
        `extra(version_dir)` adds (the fitted tokenizer), manifest last; then the versions table."""
        def write(tmp: Path) -> None:
            write_parquet(frame, tmp / CODES_FILE, metadata)
            for name, table in ((RETIRED_FILE, retired), (MIGRATION_FILE, migration)):
                if table is not None:
                    write_parquet(table, tmp / name, {"version": version, "dataset": metadata.get("dataset"),
                                                      "tokenizer": metadata.get("tokenizer")})
            if extra is not None:
                extra(tmp)

        final = self.write(version, write, {**metadata, "rows": frame.height,
                                            "retired": retired.height if retired is not None else 0})
        self.write_versions_table()
        return final / CODES_FILE

    def publish(self, version: str) -> None:
        super().publish(version)
        self.write_versions_table()

    def read(self, version: str | None = None) -> pl.DataFrame:
        return pl.read_parquet(self.table_path(version) if version else self.latest_path() / CODES_FILE)

    def _read_beside(self, name: str, version: str | None) -> pl.DataFrame | None:
        path = (self.path(version) if version else self.latest_path()) / name
        return pl.read_parquet(path) if path.is_file() else None

    def read_retired(self, version: str | None = None) -> pl.DataFrame | None:
        """The IDs this lineage retired up to `version` (default latest); None for a version without the file."""
        return self._read_beside(RETIRED_FILE, version)

    def read_migration(self, version: str | None = None) -> pl.DataFrame | None:
        """`id_migration` of `version` (default latest) against the version it was made from."""
        return self._read_beside(MIGRATION_FILE, version)

    def versions_table(self) -> pl.DataFrame:
        """One row per complete version, from the manifests (the record of truth); `latest` marks the published
        one."""
        latest = self.latest()
        rows = []
        for version in self.versions():
            meta = self.manifest(version)["metadata"]
            churn = meta.get("churn") or {}
            upstream = {table: source.get("data_version") or source.get("fingerprint") or source.get("run_id")
                        for table, source in (meta.get("sources") or {}).items()}
            rows.append({"version": version, "created_at": meta.get("created_at"), "mode": meta.get("mode"),
                         "code_version": meta.get("code_version"), "upstream": json.dumps(upstream, sort_keys=True),
                         "items": meta.get("rows"), "retired": meta.get("retired", 0),
                         **{key: churn.get(key) for key in CHURN_KEYS}, "based_on": meta.get("based_on"),
                         "latest": version == latest})
        return pl.DataFrame(rows, schema=VERSIONS_SCHEMA)

    def write_versions_table(self) -> Path:
        """Rewrite `versions.parquet` (atomically, under the publish lock: concurrent writers serialize)."""
        with self._publish_lock():
            path = self.dir / VERSIONS_FILE
            write_frame(self.versions_table(), path)
        return path
