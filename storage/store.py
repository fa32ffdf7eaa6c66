"""Where each table lives. One root per deployment; everything below it is derived from (dataset, table)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from storage.artifacts import ArtifactStore
from storage.codes import CodeTableStore
from storage.parquet import read_table_metadata
from storage.paths import check_name, inside, safe_join
from storage.serving import ServingIndexStore

# The tables one ingest step writes, in the order they become visible; the row accounting goes last and so marks the
# set complete. They are separate files (their documented paths), so a killed ingest can leave some replaced and
# some not: every read of one of them first checks that all carry the same run id (`check_ingest`).
INGEST_TABLES = ("interactions", "quarantine", "shown_not_clicked", "items", "ingest_accounting")


class MixedIngestError(RuntimeError):
    """The ingest tables of a dataset come from different runs (or the set is incomplete)."""


@dataclass(frozen=True)
class Store:
    root: Path

    def __init__(self, root: str | os.PathLike[str]):
        if "://" in str(root):  # a local Path of "s3://b/x" would quietly become a directory named "s3:"
            raise ValueError(f"storage root {root}: a URL, and the store needs a POSIX directory (versions are "
                             "published by atomic rename and symlink under an flock); mount shared storage (NFS, "
                             "EFS, Filestore, CephFS) and give its path")
        object.__setattr__(self, "root", Path(root).expanduser().resolve())

    def table_path(self, dataset: str, table: str) -> Path:
        # one resolve of the whole path: a dataset directory symlinked elsewhere is caught with the file
        path = self.root / check_name("dataset", dataset) / f"{check_name('table', table)}.parquet"
        return inside(self.root, path)

    def code_tables(self, dataset: str, tokenizer: str) -> CodeTableStore:
        return CodeTableStore(self.root, dataset, tokenizer)

    def serving_indexes(self, dataset: str, tokenizer: str) -> ServingIndexStore:
        return ServingIndexStore(self.root, dataset, tokenizer)

    def artifacts(self, dataset: str, *names: str) -> ArtifactStore:
        """A dataset's versioned artifacts (a model's checkpoints, …) at <root>/<dataset>/<name>/<name>…/."""
        return ArtifactStore(safe_join(self.root, ("dataset", dataset), *(("artifact", n) for n in names)))

    def workdir(self, dataset: str) -> Path:
        """Scratch space on the same disk as the tables (e.g. for decompressing a large .gz)."""
        path = inside(self.root, self.root / "_work" / check_name("dataset", dataset))  # no dataset starts with _
        path.mkdir(parents=True, exist_ok=True)
        return path

    def exists(self, dataset: str, table: str) -> bool:
        return self.table_path(dataset, table).is_file()

    def scan(self, dataset: str, table: str) -> pl.LazyFrame:
        path = self.table_path(dataset, table)
        if not path.is_file():
            raise FileNotFoundError(f"table '{table}' of dataset '{dataset}' not materialized yet: {path} is missing")
        if table in INGEST_TABLES:
            self.check_ingest(dataset)
        return pl.scan_parquet(path)

    def check_ingest(self, dataset: str) -> str:
        """The run id that wrote the dataset's ingest tables; raises MixedIngestError, naming the tables and runs,
        when they are not all from one run or the accounting (written last) is missing."""
        runs = {t: read_table_metadata(p).get("run_id") if p.is_file() else None
                for t in INGEST_TABLES for p in [self.table_path(dataset, t)]}
        last = INGEST_TABLES[-1]
        run = runs[last]
        odd = [t for t in INGEST_TABLES if runs[t] != run]
        if run is None or odd:
            found = ", ".join(f"{t}.parquet is from run {runs[t]}" if runs[t] else f"{t}.parquet is missing"
                              for t in (*odd, last))
            raise MixedIngestError(f"dataset '{dataset}': {found}: an ingest was interrupted; rematerialize "
                                   f"ingest_raw for '{dataset}'")
        return run

    def read(self, dataset: str, table: str) -> pl.DataFrame:
        return self.scan(dataset, table).collect()
