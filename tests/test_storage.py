import os
import time

import polars as pl
import pyarrow.parquet as pq
import pytest

from storage import atomic_path, read_table_metadata, sink_frames, write_frame
from storage.parquet import _early_writeback


def test_atomic_path_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "t.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["t.txt"]  # no temp file left behind


def test_write_frame_metadata_and_zstd(tmp_path):
    df = pl.DataFrame({"a": [1, 2, 3]})
    write_frame(df, tmp_path / "x.parquet", {"dataset": "d", "run_id": "r"})
    assert read_table_metadata(tmp_path / "x.parquet") == {"dataset": "d", "run_id": "r"}
    meta = pq.ParquetFile(tmp_path / "x.parquet").metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"


def test_sink_frames_all_or_nothing(tmp_path):
    good = pl.LazyFrame({"a": [1, 2]})
    bad = pl.LazyFrame({"s": ["x"]}).select(pl.col("s").cast(pl.Int64, strict=True))
    for attempt in range(30):  # polars sometimes creates the failed sink's file late: none may be left behind
        with pytest.raises(Exception):
            sink_frames({tmp_path / "g.parquet": good, tmp_path / "b.parquet": bad})
        time.sleep(0.01)
        assert list(tmp_path.iterdir()) == [], attempt
    rows = sink_frames({tmp_path / "g.parquet": good, tmp_path / "h.parquet": good.filter(pl.col("a") > 1)})
    assert rows == {str(tmp_path / "g.parquet"): 2, str(tmp_path / "h.parquet"): 1}


@pytest.mark.skipif(not hasattr(os, "posix_fadvise"), reason="no posix_fadvise on this platform")
def test_early_writeback_advises_existing_files_until_the_sink_ends(tmp_path, monkeypatch):
    calls = []

    def record(fd, offset, length, advice):
        calls.append((os.fstat(fd).st_ino, offset, length, advice))

    monkeypatch.setattr(os, "posix_fadvise", record)
    growing, not_yet = tmp_path / "growing.parquet", tmp_path / "later.parquet"
    growing.write_bytes(b"x" * 4096)
    with _early_writeback([growing, not_yet], every_s=0.01):
        deadline = time.monotonic() + 5
        while len(calls) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    done = len(calls)
    time.sleep(0.05)
    assert done >= 3 and len(calls) == done  # the loop ran, and stopped with the block
    assert set(calls) == {(growing.stat().st_ino, 0, 0, os.POSIX_FADV_DONTNEED)}  # the missing file is skipped


def test_lineage_is_in_the_arrow_schema_for_plain_pyarrow_readers(tmp_path):
    import json

    frame = pl.DataFrame({"item_id": ["a", "b"], "v": [[1.0, 2.0], [3.0, 4.0]]},
                         schema={"item_id": pl.String, "v": pl.Array(pl.Float32, 2)})
    path = tmp_path / "t.parquet"
    write_frame(frame, path, {"run_id": "r1", "table": "t"})
    table = pq.read_table(path)
    assert json.loads(table.schema.metadata[b"semid"]) == {"run_id": "r1", "table": "t"}
    assert read_table_metadata(path) == {"run_id": "r1", "table": "t"}  # the footer key as before
    assert pl.read_parquet(path).equals(frame)  # the same table back, fixed-size arrays included


def test_an_object_store_url_is_refused_as_a_storage_root():
    import pytest

    from storage import Store

    with pytest.raises(ValueError, match="s3://bucket/store: a URL, and the store needs a POSIX directory"):
        Store("s3://bucket/store")
