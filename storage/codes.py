"""Versioned, immutable code tables (DESIGN §4): the artifact store (storage.artifacts) at
`<root>/<dataset>/code_tables/<tokenizer>/`, one version per materialization:

    v20261123T101500Z-1a2b3c4d/
        codes.parquet       the contract table (lineage in the Parquet footer)
        tokenizer/          the fitted tokenizer (ops.tokenizers), which assigns codes to new items without a refit
        MANIFEST.json       written last
    latest -> v20261123T101500Z-1a2b3c4d   moved only after every check passed
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import polars as pl

from storage.artifacts import ArtifactStore
from storage.parquet import write_parquet
from storage.paths import safe_join

CODES_FILE = "codes.parquet"


class CodeTableStore(ArtifactStore):
    def __init__(self, root: str | os.PathLike[str], dataset: str, tokenizer: str):
        super().__init__(safe_join(root, ("dataset", dataset), ("directory", "code_tables"), ("tokenizer", tokenizer)))

    def table_path(self, version: str) -> Path:
        return self.path(version) / CODES_FILE

    def write_table(self, version: str, frame: pl.DataFrame, metadata: Mapping[str, Any],
                    extra: Callable[[Path], None] | None = None) -> Path:
        """A new version: codes.parquet, then whatever `extra(version_dir)` adds (the fitted tokenizer), manifest
        last."""
        def write(tmp: Path) -> None:
            write_parquet(frame, tmp / CODES_FILE, metadata)
            if extra is not None:
                extra(tmp)

        return self.write(version, write, {**metadata, "rows": frame.height}) / CODES_FILE

    def read(self, version: str | None = None) -> pl.DataFrame:
        return pl.read_parquet(self.table_path(version) if version else self.latest_path() / CODES_FILE)
