"""Versioned serving indexes (ops.serving): `<root>/<dataset>/serving_index/<tokenizer>/`, one version per code-table
version and under the same name, so that a service pins both at once:

    v20261123T101500.123456Z-1a2b3c4d/      the code table's version name
        prefixes.parquet    depth, prefix, allowed_next, and the item rows under each prefix and each next code
        items.parquet       semantic_id -> item_id, sorted by path
        MANIFEST.json       written last
    latest -> ...           moved after the index was checked against its code table
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl

from storage.artifacts import ArtifactStore
from storage.parquet import write_parquet
from storage.paths import safe_join

PREFIXES_FILE = "prefixes.parquet"
ITEMS_FILE = "items.parquet"


class ServingIndexStore(ArtifactStore):
    def __init__(self, root: str | os.PathLike[str], dataset: str, tokenizer: str):
        super().__init__(safe_join(root, ("dataset", dataset), ("directory", "serving_index"),
                                   ("tokenizer", tokenizer)))

    def write_index(self, version: str, prefixes: pl.DataFrame, items: pl.DataFrame,
                    metadata: Mapping[str, Any]) -> Path:
        def write(tmp: Path) -> None:
            write_parquet(prefixes, tmp / PREFIXES_FILE, metadata)
            write_parquet(items, tmp / ITEMS_FILE, metadata)

        return self.write(version, write, {**metadata, "prefixes": prefixes.height, "items": items.height})

    def read(self, version: str | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
        """(prefixes, items) of `version` (default: latest)."""
        folder = self.path(version) if version else self.latest_path()
        if not (folder / PREFIXES_FILE).is_file():
            raise FileNotFoundError(f"no serving index at {folder}: materialize serving_index for this code table "
                                    "version")
        return pl.read_parquet(folder / PREFIXES_FILE), pl.read_parquet(folder / ITEMS_FILE)
