"""ops.impressions: MIND's logged impressions (clicks and shown-not-clicked) with exact rows and accounting, the
sampled negatives of sources without impressions, the chronological split and the table's contract."""
import numpy as np
import polars as pl
import pytest

from ops.impressions import (
    ImpressionConfig,
    impression_figures,
    impression_problems,
    logged_impressions,
    sampled_impressions,
)
from ops.ingest.mind import load_mind, parse_time
from tests.reference_mind import load_mind_line_by_line

NEWS = [f"N{i}\tsports\tfootball\tTitle {i}\tAbstract {i}\thttps://a/N{i}.html\t[]\t[]" for i in (1, 2, 3)]
BEHAVIORS = [
    "1\tU1\t11/11/2019 9:00:00 AM\tN1\tN2-1 N3-0 N1-0",  # one click, two shown and not clicked
    "2\tU2\t11/11/2019 8:00:00 AM\tN2\tN9-0 N1-1 N3-0",  # an unknown item (quarantined), earlier in time
    "3\tU1\t11/12/2019 9:00:00 AM\tN1\tN3-1",  # the same history again: repeated, filtered
    "4\tU3\t11/13/2019 9:00:00 AM\t\tN1 N2",  # test split: unlabeled, filtered
    "5\tU2\t11/14/2019 9:00:00 AM\tN2\tN2-0 N1-1",
]


def test_mind_impressions_are_every_labelled_token_with_exact_accounting(tmp_path, lines_writer):
    lines_writer(tmp_path / "news.tsv", NEWS)
    lines_writer(tmp_path / "behaviors.tsv", BEHAVIORS)
    res = load_mind(tmp_path, "t")
    entries = next(a for a in res.accounts if a.unit.startswith("history"))
    # 4 history tokens (2 first seen, 2 repeats), 11 impression tokens: 4 clicks, 4 shown, 1 unknown, 2 unlabeled
    assert entries.rows_in == 4 + 11 and entries.balanced
    assert entries.kept == 2 + 4 and entries.kept_elsewhere == {"shown_not_clicked": 4}
    assert entries.quarantined == 1 and entries.filtered == {
        "history entry repeated on a later impression line": 2, "unlabeled impression": 2}
    assert res.quarantine.select("line", "reason", "detail").rows() == [(2, "unknown item in impressions", "N9")]
    assert res.accounts == load_mind_line_by_line(tmp_path, "t").accounts  # the line-by-line specification agrees
    shown = res.shown_not_clicked.collect()
    assert shown.select("user_id", "item_id", "impression_id").rows() == [
        ("U1", "N3", "1"), ("U1", "N1", "1"), ("U2", "N3", "2"), ("U2", "N2", "5")]

    frames, stats = logged_impressions(res.interactions.lazy(), shown.lazy(),
                                      ImpressionConfig(valid_fraction=0.25, test_fraction=0.25))
    frame = pl.concat(list(frames))
    t = [parse_time(x) for x in ("11/11/2019 8:00:00 AM", "11/11/2019 9:00:00 AM", "11/12/2019 9:00:00 AM",
                                 "11/14/2019 9:00:00 AM")]
    # four impressions in time order (line 2 is earlier than line 1); each stays whole in one split
    assert frame.rows() == [
        ("U2", "N1", 1, t[0], "2", "impression", "train"), ("U2", "N3", 0, t[0], "2", "impression", "train"),
        ("U1", "N2", 1, t[1], "1", "impression", "train"), ("U1", "N1", 0, t[1], "1", "impression", "train"),
        ("U1", "N3", 0, t[1], "1", "impression", "train"),
        ("U1", "N3", 1, t[2], "3", "impression", "valid"),
        ("U2", "N1", 1, t[3], "5", "impression", "test"), ("U2", "N2", 0, t[3], "5", "impression", "test")]
    assert (stats.positives, stats.negatives, stats.units) == (4, 4, 4)
    assert stats.positives == res.interactions.filter(pl.col("event") == "click").height  # clicks stay interactions
    assert stats.rows_per_split == {"train": 5, "valid": 1, "test": 2}
    assert impression_problems(frame, res.items["item_id"]) == ["split valid lacks label 0"]


def _interactions(n_users=30, n_items=40, per_user=6, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        for j, i in enumerate(rng.choice(n_items, per_user, replace=False)):
            rows.append({"user_id": f"u{u}", "item_id": f"i{i}", "timestamp": int(rng.integers(0, 10_000)),
                         "event": "review", "seq": len(rows)})
    return pl.DataFrame(rows), pl.Series([f"i{i}" for i in range(n_items)])


def _sampled(inter, items, cfg, chunk_units=1 << 20):
    frames, stats = sampled_impressions(inter.lazy(), items, cfg, chunk_units)
    return pl.concat(list(frames)), stats


def test_sampled_negatives_are_seeded_exclude_the_users_items_and_number_negatives_per_positive():
    inter, items = _interactions()
    cfg = ImpressionConfig(negatives=3, seed=7)
    frame, stats = _sampled(inter, items, cfg)
    again, _ = _sampled(inter, items, cfg, chunk_units=7)  # written in frames of 7 positives: the same rows
    other, _ = _sampled(inter, items, ImpressionConfig(negatives=3, seed=8))
    assert frame.equals(again) and not frame.equals(other)  # same seed, same rows
    pos, neg = frame.filter(pl.col("label") == 1), frame.filter(pl.col("label") == 0)
    assert pos.height == inter.height and neg.height == 3 * inter.height == stats.negatives
    assert set(neg["source"]) == {"sampled"} and set(pos["source"]) == {"impression"}
    assert neg["impression_id"].null_count() == neg.height
    assert neg.join(inter, on=["user_id", "item_id"], how="semi").height == 0  # never an item the user has
    assert set(neg["item_id"]) <= set(items) and neg["item_id"].n_unique() > 20  # uniform over the catalog
    # every negative follows its positive, with its timestamp and split
    labels = frame["label"].to_numpy().reshape(-1, 4)
    assert (labels[:, 0] == 1).all() and (labels[:, 1:] == 0).all()
    grouped = frame.with_columns((pl.int_range(pl.len()) // 4).alias("g")).group_by("g").agg(
        pl.col("timestamp").n_unique(), pl.col("split").n_unique(), pl.col("user_id").n_unique())
    assert (grouped["timestamp"] == 1).all() and (grouped["split"] == 1).all() and (grouped["user_id"] == 1).all()
    assert impression_problems(frame, items) == []


def test_the_split_is_chronological_by_positive_and_ties_follow_file_order():
    inter, items = _interactions(n_users=20, per_user=5, seed=3)
    inter = inter.with_columns((pl.col("timestamp") // 500).alias("timestamp"))  # many ties
    frame, stats = _sampled(inter, items, ImpressionConfig(negatives=1))
    pos = frame.filter(pl.col("label") == 1)
    assert stats.rows_per_split == {"train": 160, "valid": 20, "test": 20}
    order = inter.sort("timestamp", "seq", maintain_order=True)
    assert pos.select("user_id", "item_id").rows() == order.select("user_id", "item_id").rows()
    last_train = pos.filter(pl.col("split") == "train")["timestamp"].max()
    assert pos.filter(pl.col("split") == "test")["timestamp"].min() >= last_train
    assert impression_figures(frame)["ctr"].to_list() == [0.5, 0.5, 0.5]


def test_rows_without_timestamp_are_kept_and_a_user_with_every_item_gets_no_negatives():
    inter = pl.DataFrame({"user_id": ["a", "a", "b", "c", "c"], "item_id": ["i0", "i1", "i0", "i1", "i0"],
                          "timestamp": [None, 5, 3, 4, 9], "seq": [0, 1, 2, 3, 4], "event": "review"})
    frame, stats = _sampled(inter, pl.Series(["i0", "i1"]), ImpressionConfig(negatives=2))
    assert stats.positives == 5 and stats.users_without_negatives == 2  # a and c hold the whole catalog
    assert frame.filter(pl.col("label") == 0)["user_id"].to_list() == ["b", "b"]
    assert frame.filter(pl.col("label") == 0)["item_id"].to_list() == ["i1", "i1"]
    assert frame.row(0)[:4] == ("a", "i0", 1, None) and frame.row(0)[-1] == "train"
    with pytest.raises(KeyError, match="not in the catalog"):
        sampled_impressions(inter.lazy(), pl.Series(["i0"]), ImpressionConfig())
