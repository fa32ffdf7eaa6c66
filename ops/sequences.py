"""User sequences with a train / valid / test split (DESIGN §3).

Events are ordered per user by (timestamp, seq) — missing timestamps (MIND click history) first, in file order.
Two protocols:
- `user` (LAMIA's): the last item of each user is the target; users are split at random (seeded) into train /
  valid / test, test and valid sized by fraction and capped (paper: 5 k test users, 40 k fine-tuning users).
- `leave_one_out` (TIGER's): every user gives three rows — test target = last item, valid = second to last,
  train = third to last — each with the items before its target as history.
Users with fewer than `min_interactions` events are dropped and counted.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal, get_args

import numpy as np
import polars as pl
from annotated_types import Ge

from ops.config import Checked, ConfigError, OpenFraction, PositiveInt, Seed
from storage.schemas import USER_SEQUENCE_SCHEMA

Protocol = Literal["user", "leave_one_out"]


@dataclass(frozen=True)
class SplitConfig(Checked):
    protocol: Protocol = "user"
    max_history: PositiveInt = 20
    min_interactions: Annotated[int, Ge(2)] = 2  # a history of at least one item before the target
    valid_fraction: OpenFraction = 0.1
    test_fraction: OpenFraction = 0.1
    max_valid_users: PositiveInt | None = 5000
    max_test_users: PositiveInt | None = 5000
    max_train_users: PositiveInt | None = None  # paper: 40_000
    seed: Seed = 0

    def check(self) -> None:
        if self.valid_fraction + self.test_fraction >= 1:
            raise ConfigError(f"valid_fraction + test_fraction = {self.valid_fraction + self.test_fraction}: must "
                              "be < 1 (the rest trains)")


@dataclass(frozen=True)
class SequenceStats:
    users_total: int
    users_kept: int
    users_dropped_short: int
    events_used: int
    rows_per_split: dict[str, int]


def ordered_events(interactions: pl.LazyFrame) -> pl.LazyFrame:
    return interactions.select("user_id", "item_id", "timestamp", "seq").sort(
        ["user_id", "timestamp", "seq"], nulls_last=False, maintain_order=True)


def _cap(n: int, fraction: float, cap: int | None) -> int:
    k = int(round(n * fraction))
    if fraction > 0 and n >= 3:
        k = max(k, 1)
    return min(k, cap) if cap is not None else k


def build_user_sequences(interactions: pl.LazyFrame, config: SplitConfig = SplitConfig()
                         ) -> tuple[pl.DataFrame, SequenceStats]:
    if config.protocol not in get_args(Protocol):
        raise ValueError(f"unknown split protocol {config.protocol!r}")
    min_n = max(config.min_interactions, 3 if config.protocol == "leave_one_out" else 2)
    per_user = ordered_events(interactions).group_by("user_id", maintain_order=True).agg(pl.col("item_id")).collect()
    lengths = per_user["item_id"].list.len()
    total = per_user.height
    per_user = per_user.filter(lengths >= min_n).sort("user_id")
    h = config.max_history

    def rows_for(offset: int, split: pl.Expr | pl.Series | str) -> pl.DataFrame:
        # target = item at position len-offset; history = up to h items before it.
        n = pl.col("item_id").list.len().cast(pl.Int64)  # list.len() is UInt32: subtraction would wrap
        target_pos = n - offset
        return per_user.select(
            "user_id",
            pl.col("item_id").list.slice(pl.max_horizontal(target_pos - h, 0), pl.min_horizontal(target_pos, h))
            .alias("history"),
            pl.col("item_id").list.get(target_pos).alias("target"),
            (pl.lit(split) if isinstance(split, str) else split).alias("split"),
        )

    if config.protocol == "leave_one_out":
        out = pl.concat([rows_for(3, "train"), rows_for(2, "valid"), rows_for(1, "test")])
    else:
        n = per_user.height
        rng = np.random.default_rng(config.seed)
        order = rng.permutation(n)
        n_test = _cap(n, config.test_fraction, config.max_test_users)
        n_valid = _cap(n - n_test, config.valid_fraction, config.max_valid_users)
        labels = np.full(n, "train", dtype=object)
        labels[order[:n_test]] = "test"
        labels[order[n_test:n_test + n_valid]] = "valid"
        if config.max_train_users is not None:
            train_idx = order[n_test + n_valid:]
            labels[train_idx[config.max_train_users:]] = "unused"
        out = rows_for(1, pl.Series(labels.tolist(), dtype=pl.String)).filter(pl.col("split") != "unused")
    out = out.sort(["split", "user_id"]).cast(USER_SEQUENCE_SCHEMA)
    counts = dict(out.group_by("split").len().iter_rows())
    stats = SequenceStats(
        users_total=total,
        users_kept=per_user.height,
        users_dropped_short=total - per_user.height,
        events_used=int(per_user["item_id"].list.len().sum() or 0),
        rows_per_split={k: int(counts.get(k, 0)) for k in ("train", "valid", "test")},
    )
    return out, stats
