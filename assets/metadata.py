"""What assets tell the UI and write into their files: table metadata, lineage, Markdown tables, data versions and
the shared vector check."""
from __future__ import annotations

import hashlib
import socket
import time
from collections.abc import Mapping
from typing import Any

import dagster as dg
import numpy as np
import polars as pl

from storage import Store
from storage.schemas import COLUMN_DESCRIPTIONS


def column_schema(schema: Mapping[str, pl.DataType]) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(name, str(dtype), description=COLUMN_DESCRIPTIONS.get(name))
                                   for name, dtype in schema.items()])


def table_metadata(path: Any, schema: Mapping[str, pl.DataType], rows: int, **extra: Any) -> dict[str, Any]:
    return {
        # The standard keys the UI renders as row count and column schema (what TableMetadataSet would emit).
        "dagster/row_count": dg.MetadataValue.int(int(rows)),
        "dagster/column_schema": dg.MetadataValue.table_schema(column_schema(schema)),
        "path": dg.MetadataValue.path(str(path)),
        **extra,
    }


def lineage(context: dg.AssetExecutionContext | dg.OpExecutionContext, **extra: Any) -> dict[str, Any]:
    """File-level metadata written into every Parquet output: which run and code made it."""
    return {
        "run_id": context.run.run_id,
        "partition": context.partition_key if context.has_partition_key else None,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": socket.gethostname(),
        **extra,
    }


def vector_check(store: Store, dataset: str, table: str, column: str) -> dg.AssetCheckResult:
    """Shared by the embedding-like tables: one finite, non-degenerate vector (or stack of vectors) per item of
    `items`, in item order."""
    frame = store.read(dataset, table)
    ids = store.scan(dataset, "items").select("item_id").collect()["item_id"]
    x = frame[column].to_numpy().reshape(frame.height, -1).astype(np.float32, copy=False)
    finite = bool(np.isfinite(x).all())
    spread = float(x.std(axis=0).mean()) if frame.height > 1 else 0.0
    same_ids = frame["item_id"].equals(ids)
    return dg.AssetCheckResult(
        passed=finite and same_ids and spread > 0,
        description="every item present once, in item order; no NaN/inf; vectors not all identical",
        metadata={"items": ids.len(), "rows": frame.height, "finite": finite, "same_ids_in_order": same_ids,
                  "mean_std_per_dim": round(spread, 6), "values_per_item": int(x.shape[1]) if x.ndim == 2 else 0},
    )


def markdown_table(frame: pl.DataFrame) -> str:
    """A frame as a Markdown table (polars' own formatting: every row and column, nothing cut)."""
    with pl.Config(tbl_formatting="MARKDOWN", tbl_hide_column_data_types=True, tbl_hide_dataframe_shape=True,
                   tbl_rows=-1, tbl_cols=-1, fmt_str_lengths=10_000, tbl_width_chars=65_535,
                   fmt_table_cell_list_len=-1):
        return str(frame)


def frame_version(frame: pl.DataFrame) -> dg.DataVersion:
    """Data version of a small output table: a hash of its contents (polars' row hash, stable for one polars
    version), so an identical rerun does not make downstream assets stale."""
    h = hashlib.sha256()
    for column in frame.columns:
        h.update(column.encode())
        h.update(frame[column].hash(seed=0).to_numpy().tobytes())
    return dg.DataVersion(h.hexdigest()[:16])
