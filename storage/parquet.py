"""Parquet writes (zstd) with file-level key/value metadata, all atomic."""
from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from storage.atomic import atomic_path

COMPRESSION = "zstd"
META_KEY = "semid"  # all our lineage metadata lives under this one JSON-valued key


def footer_metadata(metadata: Mapping[str, Any] | None) -> dict[str, str] | None:
    if not metadata:
        return None
    return {META_KEY: json.dumps(metadata, sort_keys=True, default=str)}


def write_frame(frame: pl.DataFrame, target: str | os.PathLike[str], metadata: Mapping[str, Any] | None = None) -> int:
    """Write an in-memory frame atomically; returns the row count."""
    with atomic_path(target) as tmp:
        frame.write_parquet(tmp, compression=COMPRESSION, metadata=footer_metadata(metadata))
    return frame.height


Frame = pl.LazyFrame | pl.DataFrame


def sink_frames(
    frames: Mapping[str | os.PathLike[str], Frame | Sequence[Frame]],
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, int]:
    """Stream several lazy frames to Parquet in one pass over their shared sources, each file atomic.

    A target may be given as a list of parts (e.g. a small in-memory frame and a huge streamed one): each part
    is sunk on its own and the part files are merged by a streaming scan afterwards. (`pl.concat` of the parts
    inside the query would make polars materialise the streamed branch: 2x the peak memory at 3 M rows.)
    All targets are renamed only after every sink succeeded, so a failure leaves no partial set behind.
    Returns rows written per target path.
    """
    with ExitStack() as stack:
        tmps = {str(t): stack.enter_context(atomic_path(t)) for t in frames}
        parts: dict[str, list[Path]] = {}
        sinks = []
        for target, value in frames.items():
            pieces = list(value) if isinstance(value, Sequence) else [value]
            if len(pieces) == 1:
                paths = [tmps[str(target)]]
            else:
                paths = [Path(f"{tmps[str(target)]}.part{i}") for i in range(len(pieces))]
                parts[str(target)] = paths
                stack.callback(lambda ps=paths: [p.unlink(missing_ok=True) for p in ps])  # scratch, always removed
            for piece, path in zip(pieces, paths):
                lf = piece.lazy() if isinstance(piece, pl.DataFrame) else piece
                sinks.append(lf.sink_parquet(path, compression=COMPRESSION, metadata=footer_metadata(metadata), lazy=True))
        # collect_all runs the sinks in one streaming query, so a shared CSV scan is read once. (Keep every
        # output a sink of rows: an extra aggregate branch on the shared scan makes polars buffer the whole scan.)
        pl.collect_all(sinks)
        for target, paths in parts.items():
            pl.scan_parquet(paths).sink_parquet(tmps[target], compression=COMPRESSION, metadata=footer_metadata(metadata))
        return {t: pq.ParquetFile(p).metadata.num_rows for t, p in tmps.items()}


def read_table_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Our lineage metadata of a Parquet file (empty dict when none)."""
    kv = pq.ParquetFile(Path(path)).metadata.metadata or {}  # file-level key/value metadata
    raw = kv.get(META_KEY.encode())
    return json.loads(raw) if raw else {}
