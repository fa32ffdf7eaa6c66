"""Helpers shared by the asset modules: partitions and metadata builders."""
from __future__ import annotations

import socket
import time
from collections.abc import Mapping
from typing import Any

import dagster as dg
import numpy as np
import polars as pl

from ops.datasets import load_registry
from storage import Store

DATASETS = dg.StaticPartitionsDefinition(sorted(load_registry()))
# Model-bound assets: the "gpu" concurrency pool (one at a time on a one-GPU host, pipeline/dagster.yaml) and the
# tag an executor routes to GPU workers. Spread into @dg.asset so that every such asset is routed the same way.
GPU_ASSET: dict[str, Any] = {"pool": "gpu", "op_tags": {"semid/resource": "gpu"}}

def column_schema(schema: Mapping[str, pl.DataType]) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(name, str(dtype)) for name, dtype in schema.items()])


def table_metadata(path: Any, schema: Mapping[str, pl.DataType], rows: int, **extra: Any) -> dict[str, Any]:
    return {
        # The standard keys the UI renders as row count and column schema (what TableMetadataSet would emit).
        "dagster/row_count": dg.MetadataValue.int(int(rows)),
        "dagster/column_schema": dg.MetadataValue.table_schema(column_schema(schema)),
        "path": dg.MetadataValue.path(str(path)),
        **extra,
    }


def lineage(context: dg.AssetExecutionContext, **extra: Any) -> dict[str, Any]:
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
    cols = frame.columns
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in frame.iter_rows():
        lines.append("| " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines)
