"""Parquet writes (zstd) with file-level key/value metadata, all atomic."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from storage.atomic import atomic_path, scratch_prefix

# zstd level 1, not polars' default 3: on our interactions tables (64-char hex user ids dominate) level 1 takes
# much less CPU to write, the files come out *smaller* and read back no slower; only the small text-heavy items
# tables grow a little. Measured by bench/codec.py (make bench-codec), figures in bench/RESULTS.md.
PARQUET_OPTIONS: dict[str, Any] = {"compression": "zstd", "compression_level": 1}
META_KEY = "semid"  # all our lineage metadata lives under this one JSON-valued key


def footer_metadata(metadata: Mapping[str, Any] | None) -> dict[str, str] | None:
    if not metadata:
        return None
    return {META_KEY: json.dumps(metadata, sort_keys=True, default=str)}


def write_parquet(frame: pl.DataFrame, path: str | os.PathLike[str], metadata: Mapping[str, Any] | None = None
                  ) -> None:
    """One in-memory frame to one Parquet file, lineage in the footer and in the Arrow schema's metadata: pyarrow
    (`pq.read_table(p).schema.metadata`) and pandas read the latter, and polars' writer keeps only the former, so
    the frame is written by pyarrow at the same codec setting."""
    table = frame.to_arrow()
    kv = footer_metadata(metadata)
    if kv:
        table = table.replace_schema_metadata(kv)
    pq.write_table(table, path, compression=PARQUET_OPTIONS["compression"],
                   compression_level=PARQUET_OPTIONS["compression_level"])


def write_frame(frame: pl.DataFrame, target: str | os.PathLike[str], metadata: Mapping[str, Any] | None = None) -> int:
    """Write an in-memory frame atomically; returns the row count."""
    return write_frames([frame], target, metadata)


def write_frames(frames: Iterable[pl.DataFrame], target: str | os.PathLike[str],
                 metadata: Mapping[str, Any] | None = None) -> int:
    """Frames of one schema written one after the other into one Parquet file (at least one frame: the first
    sets the schema), atomically: a table too large to hold as one frame of strings. Returns the row count."""
    rows = 0
    with atomic_path(target) as tmp:
        writer = None
        try:
            for frame in frames:
                table = frame.to_arrow()
                if writer is None:
                    schema = table.schema.with_metadata(footer_metadata(metadata) or {})
                    writer = pq.ParquetWriter(tmp, schema, compression=PARQUET_OPTIONS["compression"],
                                              compression_level=PARQUET_OPTIONS["compression_level"])
                writer.write_table(table.cast(writer.schema))
                rows += frame.height
            if writer is None:
                raise ValueError(f"write_frames({target}): no frame to write (the first sets the schema)")
        finally:
            if writer is not None:
                writer.close()
    return rows


Frame = pl.LazyFrame | pl.DataFrame


def sink_frames(
    frames: Mapping[str | os.PathLike[str], Frame | Sequence[Frame]],
    metadata: Mapping[str, Any] | None = None,
    before_commit: Callable[[dict[str, int]], None] | None = None,
) -> dict[str, int]:
    """Stream several lazy frames to Parquet in one pass over their shared sources, each file atomic.

    A target may be given as a list of parts (e.g. a small in-memory frame and a huge streamed one): each part
    is sunk on its own and the part files are merged by a streaming scan afterwards. (`pl.concat` of the parts
    inside the query would make polars materialise the streamed branch, multiplying the peak memory.)
    All targets are renamed only after every sink succeeded and `before_commit(rows per target)` (a caller's
    check of what was written) returned, so a failure or a refusal leaves no partial set behind.
    Returns rows written per target path. Lineage goes into the footer's key/value metadata only: polars'
    streaming writer cannot set the Arrow schema's metadata (`read_table_metadata` reads the footer).
    """
    # Every sink writes into a private scratch directory beside its target. On failure the directory is removed:
    # polars may still create a failed sink's file *after* collect_all has raised (seen in some runs), and
    # with its directory gone that late file cannot appear as litter next to the tables. Its name carries our pid,
    # so that a next start removes it when this process is killed (storage.atomic.remove_leftovers).
    scratch: dict[Path, Path] = {}

    def scratch_dir(target: Path) -> Path:
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.parent not in scratch:
            scratch[target.parent] = Path(tempfile.mkdtemp(prefix=scratch_prefix(), dir=target.parent))
        return scratch[target.parent]

    try:
        tmps: dict[str, Path] = {}
        parts: dict[str, list[Path]] = {}
        sinks = []
        for i, (target, value) in enumerate(frames.items()):
            tmp = scratch_dir(Path(target)) / f"{i}.parquet"
            tmps[str(target)] = tmp
            pieces = list(value) if isinstance(value, Sequence) else [value]
            paths = [tmp] if len(pieces) == 1 else [tmp.with_suffix(f".part{j}") for j in range(len(pieces))]
            if len(pieces) > 1:
                parts[str(target)] = paths
            for piece, path in zip(pieces, paths):
                lf = piece.lazy() if isinstance(piece, pl.DataFrame) else piece
                sinks.append(lf.sink_parquet(path, **PARQUET_OPTIONS, metadata=footer_metadata(metadata),
                                             lazy=True))
        # collect_all runs the sinks in one streaming query, so a shared CSV scan is read once. (Keep every
        # output a sink of rows: an extra aggregate branch on the shared scan makes polars buffer the whole scan.)
        with _early_writeback(list(tmps.values()) + [p for ps in parts.values() for p in ps]):
            pl.collect_all(sinks)
        for target, paths in parts.items():
            pl.scan_parquet(paths).sink_parquet(tmps[target], **PARQUET_OPTIONS,
                                                metadata=footer_metadata(metadata))
        rows = {t: pq.ParquetFile(p).metadata.num_rows for t, p in tmps.items()}
        if before_commit is not None:
            before_commit(rows)
        for tmp in tmps.values():
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        for target, tmp in tmps.items():  # only once every sink succeeded
            os.replace(tmp, target)
        return rows
    finally:
        for d in scratch.values():
            _remove_tree(d)


@contextmanager
def _early_writeback(paths: Sequence[Path], every_s: float = 1.0) -> Iterator[None]:
    """Start the disk writeback of the files being sunk while they grow, so the durability fsync at the end
    waits for the last second of output rather than all of it (the kernel's own writeback starts only at ~10 %
    of RAM dirty or after 30 s). `POSIX_FADV_DONTNEED` queues writeback of dirty pages without waiting for it."""
    if not hasattr(os, "posix_fadvise"):  # not on macOS / Windows: the final fsync does all the work there
        yield
        return
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every_s):
            for path in paths:
                try:
                    fd = os.open(path, os.O_RDONLY)
                except OSError:  # not created yet
                    continue
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)

    thread = threading.Thread(target=loop, name="writeback", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _remove_tree(path: Path, attempts: int = 5) -> None:
    for _ in range(attempts):  # a late polars write can race one rmtree; the next attempt catches it
        try:
            shutil.rmtree(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.05)
    shutil.rmtree(path, ignore_errors=True)


def read_table_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Our lineage metadata of a Parquet file (empty dict when none)."""
    kv = pq.ParquetFile(Path(path)).metadata.metadata or {}  # file-level key/value metadata
    raw = kv.get(META_KEY.encode())
    return json.loads(raw) if raw else {}
