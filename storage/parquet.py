"""Parquet writes (zstd) with file-level key/value metadata, all atomic."""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from storage.atomic import atomic_path

COMPRESSION = "zstd"
META_KEY = "semid"  # all our lineage metadata lives under this one JSON-valued key


def _meta(metadata: Mapping[str, Any] | None) -> dict[str, str] | None:
    if not metadata:
        return None
    return {META_KEY: json.dumps(metadata, sort_keys=True, default=str)}


def write_frame(frame: pl.DataFrame, target: str | os.PathLike[str], metadata: Mapping[str, Any] | None = None) -> int:
    """Write an in-memory frame atomically; returns the row count."""
    with atomic_path(target) as tmp:
        frame.write_parquet(tmp, compression=COMPRESSION, metadata=_meta(metadata))
    return frame.height


def sink_frames(
    frames: Mapping[str | os.PathLike[str], pl.LazyFrame | pl.DataFrame],
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, int]:
    """Stream several lazy frames to Parquet in one pass over their shared sources, each file atomic.

    All targets are renamed only after every sink succeeded, so a failure leaves no partial set behind.
    Returns rows written per target path.
    """
    with ExitStack() as stack:
        tmps = {str(t): stack.enter_context(atomic_path(t)) for t in frames}
        sinks = []
        for target, frame in frames.items():
            lf = frame.lazy() if isinstance(frame, pl.DataFrame) else frame
            sinks.append(
                lf.sink_parquet(tmps[str(target)], compression=COMPRESSION, metadata=_meta(metadata), lazy=True)
            )
        # collect_all runs the sinks in one streaming query, so a shared CSV scan is read once.
        pl.collect_all(sinks)
        rows = {t: pq.ParquetFile(p).metadata.num_rows for t, p in tmps.items()}
    return rows


def read_table_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Our lineage metadata of a Parquet file (empty dict when none)."""
    kv = pq.ParquetFile(Path(path)).metadata.metadata or {}  # file-level key/value metadata
    raw = kv.get(META_KEY.encode())
    return json.loads(raw) if raw else {}
