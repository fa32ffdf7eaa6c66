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


def _split_units(units: pl.DataFrame, cfg: ImpressionConfig) -> pl.DataFrame:
    """`units` (one row per unit, in chronological order) with `split`: the last test_fraction test, the
    valid_fraction before them valid, the rest train; each at least one unit when there are three or more."""
    n = units.height

    def size(fraction: float) -> int:
        k = int(round(n * fraction))
        return max(k, 1) if fraction > 0 and n >= 3 else k

    n_test = size(cfg.test_fraction)
    n_valid = min(size(cfg.valid_fraction), n - n_test)
    rank = pl.int_range(pl.len(), dtype=pl.Int64)
    return units.with_columns(
        pl.when(rank >= n - n_test).then(pl.lit("test"))
        .when(rank >= n - n_test - n_valid).then(pl.lit("valid"))
        .otherwise(pl.lit("train")).alias("split"))


def logged_impressions(interactions: pl.LazyFrame, shown: pl.LazyFrame, cfg: ImpressionConfig = ImpressionConfig()
                       ) -> tuple[pl.DataFrame, ImpressionStats]:
    """MIND: clicks (the `click` events of interactions, label 1) and impressions shown but not clicked (label 0).
    A unit is one impression: (timestamp, user, impression id) — the impression id alone repeats across split
    files."""
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
    return out, _stats(out, units.height, 0)


def sampled_impressions(interactions: pl.LazyFrame, item_ids: pl.Series, cfg: ImpressionConfig = ImpressionConfig()
                        ) -> tuple[pl.DataFrame, ImpressionStats]:
    """Amazon / H&M: every interaction a positive, `cfg.negatives` uniform catalog items per positive that the
    user never interacted with (rejection sampling, vectorised in rounds; a user who interacted with every item
    gets no negatives, counted)."""
    pos = (interactions.select("user_id", "item_id", "timestamp", "seq")
           .sort("timestamp", "seq", nulls_last=False, maintain_order=True).collect())
    catalog = item_ids.to_list()
    n_items = len(catalog)
    item_index = pl.DataFrame({"item_id": catalog, "_item": np.arange(n_items, dtype=np.int64)})
    users = pos.select(pl.col("user_id").unique(maintain_order=True)).with_row_index("_user")
    pos = pos.join(users, on="user_id", how="left", maintain_order="left").join(
        item_index, on="item_id", how="left", maintain_order="left")
    if pos["_item"].null_count():
        raise KeyError(f"{pos['_item'].null_count()} interactions name items that are not in the catalog")
    units = _split_units(pos.select(pl.int_range(pl.len(), dtype=pl.Int64).alias("_unit")), cfg)
    pos = pos.with_columns(units["_unit"], units["split"])
    seen = np.unique(pos["_user"].cast(pl.Int64).to_numpy() * n_items + pos["_item"].to_numpy())
    per_user = pos.group_by("_user").agg(pl.col("_item").n_unique().alias("n"))
    full = set(per_user.filter(pl.col("n") >= n_items)["_user"].to_list())
    k = cfg.negatives
    owner = np.repeat(np.arange(pos.height), k)  # the positive each negative belongs to
    if full:
        owner = owner[~np.isin(pos["_user"].to_numpy()[owner], list(full))]
    user_of = pos["_user"].cast(pl.Int64).to_numpy()[owner]
    rng = np.random.default_rng(cfg.seed)
    drawn = rng.integers(0, n_items, size=owner.size) if n_items else np.zeros(0, np.int64)
    todo = np.arange(owner.size)
    while todo.size:  # redraw the draws that hit one of their user's items, in rounds
        bad = todo[_member(seen, user_of[todo] * n_items + drawn[todo])]
        if bad.size:
            drawn[bad] = rng.integers(0, n_items, size=bad.size)
        todo = bad
    negs = pl.DataFrame({"_row": owner, "_k": _positions(owner), "_item": drawn})
    negs = negs.join(pos.select(pl.int_range(pl.len(), dtype=pl.Int64).alias("_row"), "user_id", "timestamp",
                                "_unit", "split"), on="_row", how="left", maintain_order="left")
    negs = negs.with_columns(pl.Series("item_id", catalog, pl.String).gather(negs["_item"]))
    both = pl.concat([
        pos.select("user_id", "item_id", pl.lit(1, pl.Int8).alias("label"), "timestamp", "_unit",
                   pl.lit(-1, pl.Int64).alias("_k"), pl.lit("impression").alias("source"), "split"),
        negs.select("user_id", "item_id", pl.lit(0, pl.Int8).alias("label"), "timestamp", "_unit",
                    pl.col("_k").cast(pl.Int64), pl.lit("sampled").alias("source"), "split")])
    out = (both.sort("_unit", "_k").with_columns(pl.lit(None, pl.String).alias("impression_id"))
           .select(list(IMPRESSION_SCHEMA)).cast(IMPRESSION_SCHEMA))
    return out, _stats(out, pos.height, len(full))


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


def impression_figures(frame: pl.DataFrame) -> pl.DataFrame:
    """Rows per split and label and the CTR (share of label 1) per split, in split order."""
    return (frame.group_by("split").agg(pl.len().alias("rows"), (pl.col("label") == 1).sum().alias("label_1"),
                                        (pl.col("label") == 0).sum().alias("label_0"),
                                        pl.col("label").cast(pl.Float64).mean().round(4).alias("ctr"))
            .with_columns(pl.col("split").replace_strict({s: i for i, s in enumerate(SPLITS)}, default=len(SPLITS))
                          .alias("_order")).sort("_order").drop("_order"))


def impression_problems(frame: pl.DataFrame, item_ids: pl.Series) -> list[str]:
    """What breaks the table's contract: labels outside {0, 1}, items not in the catalog, empty user ids, a split
    that is empty or lacks a label."""
    problems = []
    bad_labels = frame.filter(~pl.col("label").is_in([0, 1]) | pl.col("label").is_null()).height
    if bad_labels:
        problems.append(f"{bad_labels} labels outside {{0, 1}}")
    unknown = frame.filter(~pl.col("item_id").is_in(item_ids.implode())).height
    if unknown:
        problems.append(f"{unknown} rows with items not in items")
    empty_users = frame.filter(pl.col("user_id").fill_null("") == "").height
    if empty_users:
        problems.append(f"{empty_users} rows without a user")
    for split in SPLITS:
        labels = set(frame.filter(pl.col("split") == split)["label"].unique().to_list())
        if not labels:
            problems.append(f"split {split} is empty")
        elif not {0, 1} <= labels:
            problems.append(f"split {split} lacks label {({0, 1} - labels).pop()}")
    other = set(frame["split"].unique().to_list()) - set(SPLITS)
    if other:
        problems.append(f"unknown splits {sorted(map(str, other))}")
    return problems
