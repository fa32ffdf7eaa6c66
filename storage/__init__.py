"""Storage: paths, Parquet schemas and atomic writes. The only package that opens files for writing."""
from storage.atomic import atomic_path, atomic_write_bytes, atomic_write_stream, atomic_write_text
from storage.parquet import read_table_metadata, sink_frames, write_frame, write_frames
from storage.store import Store

__all__ = [
    "Store",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_stream",
    "atomic_write_text",
    "read_table_metadata",
    "sink_frames",
    "write_frame",
    "write_frames",
]
