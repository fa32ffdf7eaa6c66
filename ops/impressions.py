"""Labelled CTR rows (`impressions`): who was shown what, and whether they clicked, with a chronological split.

- MIND logs impressions: every labelled token of behaviors.tsv is a row, `NEWS-1` (the `click` events of
  `interactions`) with label 1 and `NEWS-0` (ingestion's `shown_not_clicked` side table) with label 0, at the
  impression's time, `source` = "impression".
- Amazon and H&M log no impressions: every interaction is a positive (label 1), and `negatives` items per positive
  are drawn uniformly from the catalog (seeded, with replacement), never an item that user interacted with; a
  sampled row takes its positive's timestamp and split, `source` = "sampled", `impression_id` null.

Split: chronological over units ordered by (timestamp, then file order) — a unit is one MIND impression (all its
rows stay together) or one positive (with its sampled negatives): the last `test_fraction` of the units are test,
the `valid_fraction` before them valid, the rest train. A row without timestamp is not dropped: it sorts first
(train) and is counted.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import polars as pl

from ops.config import Checked, ConfigError, OpenFraction, PositiveInt, Seed
from storage.schemas import IMPRESSION_SCHEMA

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class ImpressionConfig(Checked):
    negatives: PositiveInt = 4  # sampled negatives per positive (sources without logged impressions)
    valid_fraction: OpenFraction = 0.1
    test_fraction: OpenFraction = 0.1
    seed: Seed = 0

    def check(self) -> None:
        if self.valid_fraction + self.test_fraction >= 1:
            raise ConfigError(f"valid_fraction + test_fraction = {self.valid_fraction + self.test_fraction}: must "
                              "be < 1 (the rest trains)")


@dataclass(frozen=True)
class ImpressionStats:
    positives: int
    negatives: int
    units: int  # impressions (MIND) or positives (sampled)
    rows_without_timestamp: int
    users_without_negatives: int  # sampled: users who interacted with every item of the catalog
    rows_per_split: dict[str, int]


def _split_sizes(n: int, cfg: ImpressionConfig) -> tuple[int, int]:
    """Units (valid, test) of `n`: the last test_fraction test, the valid_fraction before them valid, the rest
    train; each at least one unit when there are three or more."""

    def size(fraction: float) -> int:
        k = int(round(n * fraction))
        return max(k, 1) if fraction > 0 and n >= 3 else k

    n_test = size(cfg.test_fraction)
    return min(size(cfg.valid_fraction), n - n_test), n_test


def _split_units(units: pl.DataFrame, cfg: ImpressionConfig) -> pl.DataFrame:
    """`units` (one row per unit, in chronological order) with `split` (_split_sizes)."""
    n = units.height
    n_valid, n_test = _split_sizes(n, cfg)
    rank = pl.int_range(pl.len(), dtype=pl.Int64)
    return units.with_columns(
        pl.when(rank >= n - n_test).then(pl.lit("test"))
        .when(rank >= n - n_test - n_valid).then(pl.lit("valid"))
        .otherwise(pl.lit("train")).alias("split"))


def logged_impressions(interactions: pl.LazyFrame, shown: pl.LazyFrame, cfg: ImpressionConfig = ImpressionConfig()
                       ) -> tuple[Iterator[pl.DataFrame], ImpressionStats]:
    """MIND: clicks (the `click` events of interactions, label 1) and impressions shown but not clicked (label 0).
    A unit is one impression: (timestamp, user, impression id) — the impression id alone repeats across split
    files. The rows as one frame (MIND-small: 5.8 M rows), in the shape of `sampled_impressions`."""
    clicks = interactions.filter(pl.col("event") == "click").select(
        "user_id", "item_id", pl.lit(1, pl.Int8).alias("label"), "timestamp", "impression_id")
    rows = pl.concat([clicks, shown.select("user_id", "item_id", pl.lit(0, pl.Int8).alias("label"), "timestamp",
                                           "impression_id")]).collect()
    key = ["timestamp", "user_id", "impression_id"]
    # chronological; equal times in impression-id order (numeric where the ids are, as MIND's are), then by user
    units = (rows.select(key).unique()
             .with_columns(pl.col("impression_id").cast(pl.Int64, strict=False).alias("_imp"))
             .sort("timestamp", "_imp", "impression_id", "user_id", nulls_last=False).drop("_imp"))
    units = _split_units(units, cfg).with_row_index("_unit")
    out = (rows.join(units, on=key, how="left", nulls_equal=True)
           .sort("_unit", "label", "item_id", descending=[False, True, False], maintain_order=True)
           .with_columns(pl.lit("impression").alias("source"))
           .select(list(IMPRESSION_SCHEMA)).cast(IMPRESSION_SCHEMA))
    return iter([out]), _stats(out, units.height, 0)


def sampled_impressions(interactions: pl.LazyFrame, item_ids: pl.Series, cfg: ImpressionConfig = ImpressionConfig(),
                        chunk_units: int = 1 << 18) -> tuple[Iterator[pl.DataFrame], ImpressionStats]:
    """Amazon / H&M: every interaction a positive, `cfg.negatives` uniform catalog items per positive that the
    user never interacted with (rejection sampling, vectorised in rounds; a user who interacted with every item
    gets no negatives, counted). The rows come as frames of `chunk_units` positives with their negatives each,
    in table order, to be written one after the other: the sampling runs on integer indices, and user and item ids
    are strings only inside one frame (real-size H&M: 159 M rows, ~12 GB as one frame of strings)."""
    catalog = pl.Series("item_id", item_ids.to_list(), pl.String)
    n_items = len(catalog)
    events = interactions.select("user_id", "item_id", "timestamp", "seq").with_row_index("_row")
    users = events.select(pl.col("user_id").unique()).collect(engine="streaming")["user_id"].sort()
    pos = (events.join(pl.LazyFrame({"user_id": users, "_user": np.arange(len(users), dtype=np.int64)}),
                       on="user_id", how="left")
           .join(pl.LazyFrame({"item_id": catalog, "_item": np.arange(n_items, dtype=np.int64)}), on="item_id",
                 how="left")
           .select("_user", "_item", "timestamp", "seq", "_row").collect(engine="streaming")
           .sort("timestamp", "seq", "_row", nulls_last=False))  # chronological, ties in file order
    if pos["_item"].null_count():
        raise KeyError(f"{pos['_item'].null_count()} interactions name items that are not in the catalog")
    n_pos = pos.height
    user, item = pos["_user"].to_numpy(), pos["_item"].to_numpy()
    n_valid, n_test = _split_sizes(n_pos, cfg)
    split = np.zeros(n_pos, dtype=np.int8)  # index into SPLITS, per positive
    split[n_pos - n_test - n_valid: n_pos - n_test] = 1
    split[n_pos - n_test:] = 2
    seen = np.unique(user * n_items + item)
    distinct = np.bincount(seen // max(n_items, 1), minlength=len(users)) if n_items else np.zeros(len(users))
    full = np.flatnonzero(distinct >= n_items)  # users holding the whole catalog: no negatives to draw
    owner = np.repeat(np.arange(n_pos, dtype=np.int32), cfg.negatives)  # the positive each negative belongs to
    if full.size:
        owner = owner[~np.isin(user[owner], full)]
    rng = np.random.default_rng(cfg.seed)
    drawn = rng.integers(0, n_items, size=owner.size) if n_items else np.zeros(0, np.int64)
    _redraw_seen(drawn, owner, user, seen, n_items, rng)
    del seen
    per_unit = 1 + np.bincount(owner, minlength=n_pos)  # rows per positive: itself and its negatives
    timestamps = pos["timestamp"]
    stats = ImpressionStats(
        positives=n_pos, negatives=int(owner.size), units=n_pos,
        rows_without_timestamp=int(per_unit[timestamps.is_null().to_numpy()].sum()),
        users_without_negatives=int(full.size),
        rows_per_split={s: int(per_unit[split == i].sum()) for i, s in enumerate(SPLITS)})
    names = pl.Series(SPLITS)

    def frames() -> Iterator[pl.DataFrame]:
        for a in range(0, max(n_pos, 1), chunk_units):  # one (perhaps empty) frame at least: the schema
            b = min(n_pos, a + chunk_units)
            lo, hi = np.searchsorted(owner, [a, b])
            unit = np.concatenate([np.arange(a, b), owner[lo:hi]]).astype(np.int64)
            chunk = pl.DataFrame({
                "_unit": unit, "_k": np.concatenate([np.full(b - a, -1), _positions(owner[lo:hi])]),
                "_item": np.concatenate([item[a:b], drawn[lo:hi]])}).sort("_unit", "_k")
            rows = chunk["_unit"].to_numpy()
            positive = chunk["_k"].to_numpy() < 0
            yield pl.DataFrame({
                "user_id": users.gather(user[rows]), "item_id": catalog.gather(chunk["_item"].to_numpy()),
                "label": positive.astype(np.int8), "timestamp": timestamps.gather(rows),
                "impression_id": pl.repeat(None, len(rows), dtype=pl.String, eager=True),
                "source": np.where(positive, "impression", "sampled"),
                "split": names.gather(split[rows])}).cast(IMPRESSION_SCHEMA)

    return frames(), stats


def _redraw_seen(drawn: np.ndarray, owner: np.ndarray, user: np.ndarray, seen: np.ndarray, n_items: int,
                 rng: np.random.Generator, step: int = 1 << 22) -> None:
    """Redraw, in rounds, every draw that hit an item its positive's user has (`seen`: sorted user x item keys),
    `step` draws at a time: the keys of all draws at once would be another 8 bytes per negative."""
    todo: np.ndarray | None = None  # None: every draw
    while True:
        total = owner.size if todo is None else todo.size
        parts = []
        for s in range(0, total, step):
            t = np.arange(s, min(s + step, total)) if todo is None else todo[s: s + step]
            parts.append(t[_member(seen, user[owner[t]] * n_items + drawn[t])])
        bad = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        if not bad.size:
            return
        drawn[bad] = rng.integers(0, n_items, size=bad.size)
        todo = bad


def _member(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    if not sorted_keys.size:
        return np.zeros(keys.shape, bool)
    at = np.searchsorted(sorted_keys, keys).clip(max=sorted_keys.size - 1)
    return sorted_keys[at] == keys


def _positions(owner: np.ndarray) -> np.ndarray:
    """0, 1, ..., per run of equal owners (owner is sorted)."""
    starts = np.r_[0, np.flatnonzero(np.diff(owner)) + 1]
    return np.arange(owner.size) - np.repeat(starts, np.diff(np.r_[starts, owner.size]))


def _stats(out: pl.DataFrame, units: int, users_without_negatives: int) -> ImpressionStats:
    counts = dict(out.group_by("split").len().iter_rows())
    return ImpressionStats(positives=int((out["label"] == 1).sum()), negatives=int((out["label"] == 0).sum()),
                           units=units, rows_without_timestamp=out["timestamp"].null_count(),
                           users_without_negatives=users_without_negatives,
                           rows_per_split={s: int(counts.get(s, 0)) for s in SPLITS})


def impression_figures(frame: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """Rows per split and label and the CTR (share of label 1) per split, in split order."""
    return (frame.lazy().group_by("split").agg(pl.len().alias("rows"), (pl.col("label") == 1).sum().alias("label_1"),
                                        (pl.col("label") == 0).sum().alias("label_0"),
                                        pl.col("label").cast(pl.Float64).mean().round(4).alias("ctr"))
            .with_columns(pl.col("split").replace_strict({s: i for i, s in enumerate(SPLITS)}, default=len(SPLITS))
                          .alias("_order")).sort("_order").drop("_order").collect(engine="streaming"))


def impression_problems(frame: pl.DataFrame | pl.LazyFrame, item_ids: pl.Series) -> list[str]:
    """What breaks the table's contract: labels outside {0, 1}, items not in the catalog, empty user ids, a split
    that is empty or lacks a label. One streaming query (the table may not fit in memory as a frame)."""
    counts = frame.lazy().select(
        (~pl.col("label").is_in([0, 1]) | pl.col("label").is_null()).sum().alias("bad_labels"),
        (~pl.col("item_id").is_in(item_ids.implode())).sum().alias("unknown"),
        (pl.col("user_id").fill_null("") == "").sum().alias("empty_users")).collect(engine="streaming").row(0)
    labels_by_split = (frame.lazy().group_by("split", "label").len().collect(engine="streaming")
                       .group_by("split").agg(pl.col("label")))
    labels_of = {split: set(labels) for split, labels in labels_by_split.iter_rows()}
    problems = []
    bad_labels, unknown, empty_users = counts
    if bad_labels:
        problems.append(f"{bad_labels} labels outside {{0, 1}}")
    if unknown:
        problems.append(f"{unknown} rows with items not in items")
    if empty_users:
        problems.append(f"{empty_users} rows without a user")
    for split in SPLITS:
        labels = labels_of.get(split, set()) - {None}
        if not labels:
            problems.append(f"split {split} is empty")
        elif not {0, 1} <= labels:
            problems.append(f"split {split} lacks label {({0, 1} - labels).pop()}")
    other = set(labels_of) - set(SPLITS)
    if other:
        problems.append(f"unknown splits {sorted(map(str, other))}")
    return problems
