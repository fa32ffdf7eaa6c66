import hashlib

import numpy as np
import polars as pl

from ops.datasets import get
from ops.ingest import ingest
from ops.sample import SIZES, generate
from storage import sink_frames


def _digest(directory):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def test_generator_is_deterministic(tmp_path):
    for source in ("mind", "amazon", "hm"):
        a = generate(source, tmp_path / "a" / source, "tiny", seed=3)
        b = generate(source, tmp_path / "b" / source, "tiny", seed=3)
        c = generate(source, tmp_path / "c" / source, "tiny", seed=4)
        assert _digest(a) == _digest(b)
        assert _digest(a) != _digest(c)


def test_amazon_versions_and_gzip_round_trip(tmp_path):
    for version in ("2014", "2018", "2023"):
        d = generate("amazon", tmp_path / version, "tiny", seed=0, corrupt=False, version=version, gz=True)
        assert all(p.suffix in (".gz", ".csv") for p in d.iterdir())
        from ops.ingest.amazon import load_amazon

        res = load_amazon(d, "t", "Beauty", version)
        assert res.quarantine.height == 0 and res.interactions.height > 100


def test_planted_structure_shows_in_sequences_and_text(tmp_path):
    """Consecutive items of a user share the planted primary aspect far more often than chance, and the
    aspect's vocabulary is in the item text: the signal a good tokenizer should capture."""
    raw = tmp_path / "raw"
    generate("mind", raw / "sample_mind", SIZES["small"], seed=0, corrupt=False)
    res = ingest(get("sample_mind"), raw)
    planted = pl.read_csv(raw / "sample_mind" / "planted_aspects.csv", schema_overrides={"item_id": pl.String})
    topic = dict(zip(planted["item_id"], planted["topic"]))
    inter = res.interactions.sort(["user_id", "seq"])
    same = []
    for _, grp in inter.group_by("user_id", maintain_order=True):
        t = [topic[i] for i in grp["item_id"]]
        same += [a == b for a, b in zip(t, t[1:])]
    chance = float(((planted["topic"].value_counts()["count"] / planted.height) ** 2).sum())
    assert np.mean(same) > 3 * chance
    items = res.items.join(planted, on="item_id")
    sports = items.filter(pl.col("category") == "sports")
    assert sports["topic"].n_unique() == 1  # category text is the planted topic


def test_corrupt_sample_goes_to_quarantine(tmp_path):
    raw = tmp_path / "raw"
    generate("mind", raw / "sample_mind", "tiny", seed=0, corrupt=True)
    res = ingest(get("sample_mind"), raw)
    assert res.quarantine.height == 5
    assert all(a.balanced for a in res.accounts)


def test_the_vectorized_draw_of_a_real_size_hm_sample_keeps_its_formats_and_planted_structure(tmp_path, monkeypatch):
    """Above LARGE_EVENTS (real-size H&M) the events are drawn for all users at once and written by polars: the
    files ingest without a quarantined row, every line is counted, consecutive purchases share the planted
    product type far above chance, nothing repeats back to back, and the draw is deterministic."""
    import ops.sample as sample

    monkeypatch.setattr(sample, "LARGE_EVENTS", 0)
    raw = tmp_path / "raw"
    generate("hm", raw / "sample_hm", SIZES["small"], seed=0, corrupt=False)
    again = generate("hm", tmp_path / "again" / "sample_hm", SIZES["small"], seed=0, corrupt=False)
    assert _digest(raw / "sample_hm") == _digest(again)
    lines = (raw / "sample_hm" / "transactions_train.csv").read_text().splitlines()
    assert lines[0] == "t_dat,customer_id,article_id,price,sales_channel_id"
    assert [len(v) for v in lines[1].split(",")] == [10, 64, 10, 18, 1]  # the per-row writer's formats
    (tmp_path / "work").mkdir()
    res = ingest(get("sample_hm"), raw, tmp_path / "work")
    tables = {name: tmp_path / f"{name}.parquet" for name in ("interactions", "quarantine")}
    written = sink_frames({tables["interactions"]: res.interactions, tables["quarantine"]: res.quarantine})
    res.finalize({name: written[str(path)] for name, path in tables.items()})
    interactions = pl.read_parquet(tables["interactions"])
    assert written[str(tables["quarantine"])] == 0 and all(a.balanced for a in res.accounts)
    assert interactions.height == len(lines) - 1
    assert interactions["user_id"].n_unique() == SIZES["small"].n_users
    planted = pl.read_csv(raw / "sample_hm" / "planted_aspects.csv", schema_overrides={"item_id": pl.String})
    ptype = dict(zip(planted["item_id"], planted["product_type"]))
    same, repeats = [], 0
    for _, grp in interactions.sort(["user_id", "seq"]).group_by("user_id", maintain_order=True):
        items = grp["item_id"].to_list()
        assert len(items) >= 3
        same += [ptype[a] == ptype[b] for a, b in zip(items, items[1:])]
        repeats += sum(a == b for a, b in zip(items, items[1:]))
    chance = float(((planted["product_type"].value_counts()["count"] / planted.height) ** 2).sum())
    assert np.mean(same) > 3 * chance and repeats == 0
    # corrupt=True plants the per-row writer's bad lines at its places: each quarantined with its reason
    generate("hm", tmp_path / "bad" / "sample_hm", SIZES["small"], seed=0, corrupt=True)
    res = ingest(get("sample_hm"), tmp_path / "bad", tmp_path / "work")
    quarantine = pl.concat([pl.LazyFrame(q) if isinstance(q, pl.DataFrame) else q for q in res.quarantine]).collect()
    tx = quarantine.filter(pl.col("source_file") == "transactions_train.csv")
    assert tx["line"].to_list() == [4, 6, 8, 10] and quarantine.height == 5  # + the broken article
