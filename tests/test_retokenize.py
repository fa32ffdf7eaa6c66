"""ops.retokenize: incremental re-tokenization keeps every unchanged item's ID, extends dedup digits without
renumbering, retires IDs for good; a refit's id_migration accounts for every item; the ids_stable gate."""
import dataclasses

import numpy as np
import polars as pl
import pytest

from ops.retokenize import (
    IncompatibleVersion,
    RetokenizeConfig,
    next_dedup,
    retokenize,
    stability_check,
)
from ops.tokenizers.pca_kmeans import PcaKMeans, PcaKMeansConfig
from ops.tokenizers.random import RandomCodes, RandomConfig
from storage.codes import CodeTableStore

CFG = PcaKMeansConfig(length=2, k=4, d=2, seed=0)


def _items(n: int, changed: dict[int, str] | None = None) -> pl.DataFrame:
    hashes = [f"h{i}" for i in range(n)]
    for i, h in (changed or {}).items():
        hashes[i] = h
    return pl.DataFrame({"item_id": [f"i{i:03d}" for i in range(n)], "content_hash": hashes})


def _vectors(n: int, seed: int = 0) -> np.ndarray:
    """Eight well-separated clusters in 6-D, so that codes are stable under a frozen quantizer."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(8, 6)) * 10
    return (centers[np.arange(n) % 8] + rng.normal(size=(n, 6)) * 0.1).astype(np.float32)


def _publish(tables, items, rows, plan, version, config=CFG, tokenizer=PcaKMeans, sources=None):
    tok, result = retokenize(tokenizer, tables, tables.latest(), items, rows, config, plan, sources or {}, version)
    meta = {"schema_version": 2, "mode": plan.mode, "churn": result.churn, "sources": sources or {},
            "based_on": tables.latest()}
    tables.write_table(version, result.frame, meta, tok.save, retired=result.retired, migration=result.migration)
    tables.publish(version)
    return tok, result


@pytest.fixture
def first(tmp_path):
    tables = CodeTableStore(tmp_path, "ds", "pca_kmeans")
    items, x = _items(40), _vectors(40)
    _, result = _publish(tables, items, x, RetokenizeConfig(), "v1")
    return tables, items, x, result


def test_first_version_is_a_fit_with_every_item_added(first):
    tables, items, _, result = first
    assert result.churn == {"unchanged": 0, "changed": 0, "added": 40, "removed": 0, "moved": 0,
                            "moved_unchanged": 0, "assigned": 40}
    assert result.frame["content_hash"].to_list() == items["content_hash"].to_list()
    assert tables.read_migration("v1")["change"].unique().to_list() == ["added"]


def test_incremental_keeps_unchanged_ids_and_reports_churn_exactly(first):
    tables, items, x, before = first
    # items 3, 11 and 20 change text (and vectors: 3 and 11 move to another cluster, 20 stays in its own), item 7
    # leaves, three items arrive (one into an occupied cluster)
    now = _items(40, {3: "x3", 11: "x11", 20: "x20"}).filter(pl.col("item_id") != "i007")
    now = pl.concat([now, pl.DataFrame({"item_id": ["n1", "n2", "n3"], "content_hash": ["a", "b", "c"]})])
    x2 = np.delete(x.copy(), 7, axis=0)
    x2[3], x2[10] = x[4], x[12]  # rows 3 and 10 (= i003, i011 after the removal) take other clusters' vectors
    x2 = np.vstack([x2, x[[0, 1, 2]] + 0.01])
    _, result = _publish(tables, now, x2, RetokenizeConfig(), "v2")
    old = before.frame.filter(~pl.col("item_id").is_in(["i003", "i011", "i020", "i007"]))
    new = result.frame.filter(pl.col("item_id").is_in(old["item_id"].implode()))
    assert new.equals(old)  # every untouched row byte-identical: codes, dedup, semantic_id, content_hash
    assert result.frame["item_id"].to_list() == now["item_id"].to_list()  # rows in item order
    assert result.churn == {"unchanged": 36, "changed": 3, "added": 3, "removed": 1, "moved": 2,
                            "moved_unchanged": 0, "assigned": 6}
    assert result.frame["semantic_id"].n_unique() == result.frame.height
    sid = dict(zip(result.frame["item_id"], result.frame["semantic_id"]))
    old_sid = dict(zip(before.frame["item_id"], before.frame["semantic_id"]))
    assert sid["i020"] == old_sid["i020"]  # changed text, same codes: the ID stays, the hash is the new one
    assert result.frame.filter(pl.col("item_id") == "i020")["content_hash"].item() == "x20"
    retired = tables.read_retired("v2")
    assert sorted(retired["item_id"]) == ["i003", "i007", "i011"]
    assert dict(zip(retired["item_id"], retired["retire_reason"])) == {"i003": "changed", "i007": "removed",
                                                                     "i011": "changed"}
    assert set(retired["retired_in"]) == {"v2"}
    # no ID ever issued is given to another item
    issued = set(before.frame["semantic_id"])
    for item, s in sid.items():
        assert s not in issued or old_sid.get(item) == s
    # the new arrivals share code tuples with items 0-2: their dedup is one past the largest issued
    for new_item, twin in (("n1", "i000"), ("n2", "i001"), ("n3", "i002")):
        row = result.frame.filter(pl.col("item_id") == new_item)
        twin_codes = before.frame.filter(pl.col("item_id") == twin)["codes"].to_list()
        assert row["codes"].to_list() == twin_codes
        same = before.frame.filter(pl.col("codes") == pl.lit(pl.Series(twin_codes, dtype=row["codes"].dtype)))
        assert row["dedup"].item() == same["dedup"].max() + 1
    migration = tables.read_migration("v2")
    assert migration.height == 43 and set(migration["item_id"]) == set(before.frame["item_id"]) | set(now["item_id"])
    assert dict(migration.group_by("change").len().iter_rows()) == {"unchanged": 36, "changed": 3, "added": 3,
                                                                    "removed": 1}
    assert sorted(migration.filter("moved")["item_id"]) == ["i003", "i011"]
    versions = tables.versions_table()
    assert versions["version"].to_list() == ["v1", "v2"] and versions["latest"].to_list() == [False, True]
    assert versions.filter(pl.col("version") == "v2").select("added", "changed", "removed", "moved").row(0) == (
        3, 3, 1, 2)
    assert (tables.dir / "versions.parquet").is_file()
    # a later run keeps reserving what v2 retired, even when the same codes come back
    again = pl.concat([now, pl.DataFrame({"item_id": ["n4"], "content_hash": ["d"]})])
    _, third = _publish(tables, again, np.vstack([x2, x[[3]]]), RetokenizeConfig(), "v3")
    n4 = third.frame.filter(pl.col("item_id") == "n4")["semantic_id"].item()
    assert n4 not in set(retired["semantic_id"]) | issued and third.churn["unchanged"] == now.height
    assert tables.read_retired("v3").height == 3


def test_an_unchanged_rerun_reproduces_the_table(first):
    tables, items, x, before = first
    _, result = _publish(tables, items, x, RetokenizeConfig(), "v2")
    assert result.frame.equals(before.frame) and result.churn["assigned"] == 0 and result.retired.height == 0


def test_refit_writes_a_migration_row_for_every_item_and_the_gate_holds_latest(first):
    tables, items, x, before = first
    now = items.filter(pl.col("item_id") != "i000")
    plan = RetokenizeConfig(mode="refit")
    cfg = dataclasses.replace(CFG, seed=5, k=3)
    tok, result = retokenize(PcaKMeans, tables, "v1", now, x[1:], cfg, plan, {}, "v2")
    moves = result.migration
    assert moves.height == 40 and set(moves["item_id"]) == set(items["item_id"])
    assert moves.filter(pl.col("change") == "removed")["item_id"].to_list() == ["i000"]
    assert moves.filter(pl.col("change") == "removed")["new_semantic_id"].to_list() == [None]
    moved = int(moves.filter(pl.col("change") == "unchanged")["moved"].sum())
    assert result.churn["moved_unchanged"] == moved > 0  # K 4 -> 3: IDs move
    blocked = stability_check(result.churn, plan)
    assert not blocked.passed and blocked.blocks
    accepted = stability_check(result.churn, dataclasses.replace(plan, accept_moved_ids=True))
    assert not accepted.passed and not accepted.blocks  # a warning: the run said it ships moved IDs
    assert stability_check(result.churn, dataclasses.replace(plan, max_moved_share=1.0)).passed


def test_incremental_keeps_the_fitted_settings_and_refuses_another_source_model(first):
    tables, items, x, before = first
    _, result = retokenize(PcaKMeans, tables, "v1", items, x, dataclasses.replace(CFG, k=8), RetokenizeConfig(), {},
                           "v2")
    assert result.frame.equals(before.frame)  # the frozen tokenizer, not a new one with K = 8
    assert len(result.notes) == 1 and "k = 4 there, 8 in this run" in result.notes[0]
    tables2 = CodeTableStore(tables.dir.parent, "ds", "pk2")
    _publish(tables2, items, x, RetokenizeConfig(), "v1", sources={"item_embeddings": {"fingerprint": "aaa"}})
    with pytest.raises(IncompatibleVersion, match="item_embeddings now comes from another model"):
        retokenize(PcaKMeans, tables2, "v1", items, x, CFG, RetokenizeConfig(),
                   {"item_embeddings": {"fingerprint": "bbb"}}, "v2")


def test_random_codes_follow_the_item_id_so_changed_text_keeps_its_id(tmp_path):
    tables = CodeTableStore(tmp_path, "ds", "random")
    cfg = RandomConfig(length=2, k=2, seed=1)  # 4 tuples for 30 items: many collisions, many dedup digits
    items = _items(30)
    _, first = _publish(tables, items, None, RetokenizeConfig(), "v1", cfg, RandomCodes)
    now = pl.concat([_items(30, {5: "x"}).filter(pl.col("item_id") != "i009"),
                     pl.DataFrame({"item_id": ["n1", "n2"], "content_hash": ["a", "b"]})])
    _, second = _publish(tables, now, None, RetokenizeConfig(), "v2", cfg, RandomCodes)
    kept = second.frame.join(first.frame, on="item_id", suffix="_old")
    assert (kept["semantic_id"] == kept["semantic_id_old"]).all()
    assert second.churn["moved"] == 0 and second.frame["semantic_id"].n_unique() == 31
    # the removed item's ID is reserved: a newcomer on its tuple gets a digit past it
    gone = first.frame.filter(pl.col("item_id") == "i009")["semantic_id"].item()
    assert gone not in set(second.frame["semantic_id"])


def test_next_dedup_counts_past_every_issued_digit():
    taken = np.array([[1, 2], [1, 2], [3, 3]])
    out = next_dedup(np.array([[1, 2], [3, 3], [1, 2], [0, 0]]), taken, np.array([0, 4, 0]))
    assert out.tolist() == [5, 1, 6, 0]
    assert next_dedup(np.zeros((0, 2), dtype=np.int64), taken, np.array([0, 1, 0])).tolist() == []
