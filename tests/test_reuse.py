"""ops.reuse: rows of a derived table are reused only from a table of the same producer, only for items whose
content_hash is unchanged, and the assembled table follows the items' order."""
import numpy as np
import polars as pl

from ops.reuse import assemble, plan_reuse, rows_version
from storage import write_frame


def _items(hashes):
    return pl.DataFrame({"item_id": [f"i{i}" for i in range(len(hashes))], "content_hash": hashes,
                         "title": [f"t{i}" for i in range(len(hashes))]})


def _table(items, producer, path, with_hash=True):
    frame = pl.DataFrame({"item_id": items["item_id"],
                          "embedding": pl.Series(np.arange(items.height * 2, dtype=np.float32).reshape(-1, 2),
                                                 dtype=pl.Array(pl.Float32, 2))})
    if with_hash:
        frame = frame.with_columns(items["content_hash"])
    write_frame(frame, path, {"fingerprint": producer})
    return frame


def _same(producer):
    return lambda meta: None if meta.get("fingerprint") == producer else "another producer"


def test_only_unchanged_items_of_the_same_producer_are_reused(tmp_path):
    path = tmp_path / "e.parquet"
    old = _table(_items(["a", "b", "c", "d"]), "m1", path)
    now = pl.concat([_items(["a", "B", "c"]), pl.DataFrame({"item_id": ["new"], "content_hash": ["n"],
                                                            "title": ["x"]})]).reverse()
    plan = plan_reuse(now, path, ["embedding"], _same("m1"))
    assert sorted(plan.todo["item_id"]) == ["i1", "new"] and sorted(plan.kept["item_id"]) == ["i0", "i2"]
    assert plan.todo["item_id"].to_list() == ["new", "i1"]  # in the items' order
    computed = pl.DataFrame({"item_id": ["new", "i1"], "embedding": pl.Series([[9.0, 9.0], [8.0, 8.0]],
                                                                              dtype=pl.Array(pl.Float32, 2))})
    table = assemble(now, plan, computed)
    assert table["item_id"].to_list() == now["item_id"].to_list()
    assert table.columns == ["item_id", "embedding", "content_hash"]
    rows = dict(zip(table["item_id"], table["embedding"].to_list()))
    assert rows["i0"] == old["embedding"][0].to_list() and rows["i1"] == [8.0, 8.0] and rows["new"] == [9.0, 9.0]
    assert plan_reuse(now, path, ["embedding"], _same("m2")).reused == 0  # another model: nothing reused
    assert plan_reuse(now, tmp_path / "none.parquet", ["embedding"], _same("m1")).todo.height == now.height
    _table(_items(["a", "b"]), "m1", tmp_path / "old.parquet", with_hash=False)  # made before content hashes
    assert "no content_hash" in plan_reuse(now, tmp_path / "old.parquet", ["embedding"], _same("m1")).reason


def test_rows_version_follows_producer_ids_and_hashes():
    items = _items(["a", "b"])
    assert rows_version("m", items) == rows_version("m", items.clone())
    assert rows_version("m", items) != rows_version("m2", items)
    assert rows_version("m", items) != rows_version("m", _items(["a", "c"]))
    assert rows_version("m", items.head(0))  # an empty table has a version too
