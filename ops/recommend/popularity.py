"""The popularity baseline: every user gets the items ranked by how often they occur in the train split."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from ops.metrics import ranks_from_shared_scores
from ops.recommend.base import RecData, Recommender, SeedRun, ranking_run


def popularity_scores(sequences: pl.DataFrame, item_index: dict[str, int]) -> np.ndarray:
    """Count per item (length of the catalog) of its occurrences in the train rows of `user_sequences`, history
    and target: the train split's interactions, nothing from valid or test. Ties are broken by the metric code
    (lower item index first), items never seen in training score 0."""
    train = sequences.filter(pl.col("split") == "train")
    seen = pl.concat([train.select(pl.col("history").explode().alias("item")),
                      train.select(pl.col("target").alias("item"))]).drop_nulls()
    counts = seen.group_by("item").len()
    scores = np.zeros(len(item_index), dtype=np.float64)
    for item, n in counts.iter_rows():
        if item in item_index:
            scores[item_index[item]] = n
    return scores


class Popularity(Recommender):
    """Deterministic: the same ranking for every user (its entry fixes the seed). No configs."""

    def prepare(self, data: RecData) -> None:
        from ops.recommend.sasrec import item_sequences

        index = data.item_index()
        self.data = data
        sequences = data.needed(data.sequences, "sequences")
        self.test_rows = item_sequences(sequences, index, "test")
        self.scores = popularity_scores(sequences, index)

    def run(self, seed: int) -> SeedRun:
        return ranking_run(ranks_from_shared_scores(self.scores, self.test_rows.targets), self.test_rows.users,
                           self.data, self.name, seed)

    def metadata(self, runs: Sequence[SeedRun]) -> dict[str, object]:
        return {"test_rows": len(self.test_rows)}
