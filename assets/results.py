"""The metric rows every recommender asset writes and `evaluation` reads: one table of long rows per
(recommender, tokenizer), `metrics__<recommender>__<tokenizer|ids>`, and for ranking models the per-user NDCG@10
that the paired tests need, `per_user__<…>`."""
from typing import Any, cast

import dagster as dg
import polars as pl

from assets.metadata import markdown_table
from storage import Store, write_frame

GROUP = "recommend"  # the asset group of stage 5
EVALUATE = "evaluate"  # its job tag


def metrics_tables(recommender: str, tokenizer: str | None) -> tuple[str, str]:
    name = f"{recommender}__{tokenizer or 'ids'}"
    return f"metrics__{name}", f"per_user__{name}"


def write_metrics(store: Store, ds: str, recommender: str, tokenizer: str | None, longs: list[pl.DataFrame],
           users: list[pl.DataFrame], meta: dict) -> pl.DataFrame:
    """The metric rows of one (recommender, tokenizer) and, for ranking models, their per-user NDCG@10 (CTR
    models have none: `users` empty)."""
    long = pl.concat(longs)
    metrics, per_user = metrics_tables(recommender, tokenizer)
    write_frame(long, store.table_path(ds, metrics), meta)
    if users:
        write_frame(pl.concat(users), store.table_path(ds, per_user), meta)
    return long


def summary(long: pl.DataFrame) -> dict[str, Any]:
    ndcg = long.filter(pl.col("metric") == "ndcg", pl.col("k") == 10)["value"]
    recall = long.filter(pl.col("metric") == "recall", pl.col("k") == 10)["value"]
    mean = cast(float, ndcg.mean())  # polars types a Series' mean as any scalar
    return {"ndcg@10_mean": round(float(mean), 5), "ndcg@10_std": round(float(cast(float, ndcg.std()) or 0.0), 5),
            "recall@10_mean": round(float(cast(float, recall.mean())), 5),
            "per_seed": dg.MetadataValue.md(markdown_table(long.filter(pl.col("k") == 10).pivot(
                "metric", index="seed", values="value")))}
