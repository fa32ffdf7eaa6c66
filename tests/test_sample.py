import hashlib

import numpy as np
import polars as pl

from ops.datasets import get
from ops.ingest import ingest
from ops.sample import SIZES, generate


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
