"""Where each table lives. One root per deployment; everything below it is derived from (dataset, table)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import polars as pl


@dataclass(frozen=True)
class Store:
    root: Path

    def __init__(self, root: str | os.PathLike[str]):
        object.__setattr__(self, "root", Path(root).expanduser().resolve())

    def table_path(self, dataset: str, table: str) -> Path:
        return self.root / dataset / f"{table}.parquet"

    def exists(self, dataset: str, table: str) -> bool:
        return self.table_path(dataset, table).is_file()

    def scan(self, dataset: str, table: str) -> pl.LazyFrame:
        path = self.table_path(dataset, table)
        if not path.is_file():
            raise FileNotFoundError(f"table '{table}' of dataset '{dataset}' not materialized yet: {path} is missing")
        return pl.scan_parquet(path)

    def read(self, dataset: str, table: str) -> pl.DataFrame:
        return self.scan(dataset, table).collect()
