"""The evaluation table and what is read off it: one long table (`dataset`, `recommender`, `tokenizer`, `seed`,
`metric`, `k`, `value`) for every recommender x code table x seed, a comparison (mean ± std over seeds, 95 %
interval) and paired per-user tests against the best ID baseline."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import numpy as np
import polars as pl

from ops.config import Checked, NonEmpty, PositiveInt, Seed
from ops.metrics import KS, paired_test, per_user_metrics, summarize

EVALUATION_SCHEMA = {"dataset": pl.String, "recommender": pl.String, "tokenizer": pl.String, "seed": pl.Int64,
                     "metric": pl.String, "k": pl.Int64, "value": pl.Float64}
PER_USER_SCHEMA = {"recommender": pl.String, "tokenizer": pl.String, "seed": pl.Int64, "user_id": pl.String,
                   "ndcg_10": pl.Float64}
BASELINES = ("popularity", "sasrec")  # ID models: the bar semantic IDs must clear
RANDOM_CODES = "random"  # the tokenizer a learned code table must beat with the same recommender
CTR_METRICS = ("auc", "logloss")  # CTR models' rows (k null); every other metric is a ranking metric at k
UNIT_METRICS = ("recall", "ndcg", "auc")  # values in [0, 1]; logloss is >= 0
CTR_MODELS = ("deepfm", "dcnv2")


@dataclass
class EvalConfig(Checked):
    """How a recommender is evaluated: trained once per seed, ranked on the test split."""

    seeds: Annotated[list[Seed], NonEmpty] = field(default_factory=lambda: [0, 1, 2])
    decoder: Literal["beam", "exact"] = "beam"  # generative recommenders: constrained beam search or exact scoring
    beam_width: PositiveInt = 20  # >= the largest K


@dataclass
class ExpectedConfig(Checked):
    """Which recommenders the evaluation check requires: every recommender asset's (family, tokenizer) except
    those in `skip`, each as `family` or `family/tokenizer` (e.g. `generative_llm` where no pretrained LM ran)."""

    seeds: Annotated[list[Seed], NonEmpty] = field(default_factory=lambda: [0, 1, 2])
    skip: list[str] = field(default_factory=list)
    seeds_of: dict[str, list[int]] = field(default_factory=dict)  # family -> its seeds, where not `seeds`
    # the recommenders each CTR asset (`recommender/ctr/<tokenizer>`, `recommender/ctr/ids`) writes
    ctr_models: list[str] = field(default_factory=lambda: list(CTR_MODELS))
    # further ID-only CTR recommenders of `recommender/ctr/ids` (its `me_embeddings`, e.g. deepfm_me4)
    ctr_id_models: list[str] = field(default_factory=list)


def expected_models(models: Iterable[tuple[str, str | None] | tuple[str, str | None, str]], skip: Sequence[str]
                    ) -> list[tuple[str, str | None]]:
    """The (recommender, tokenizer) pairs not skipped by name: `recommender`, `recommender/tokenizer`
    (`recommender/ids` for an ID model) or, where a model is given as (recommender, tokenizer, asset) with the
    asset's key after `recommender/` (e.g. `ctr/random`), that asset or its family (`ctr`)."""
    out = []
    for model in models:
        r, t = model[0], model[1]
        names = {r, f"{r}/{t}", f"{r}/{t or 'ids'}"}
        if len(model) > 2:
            asset = str(model[2])
            names |= {asset, asset.split("/")[0]}
        if not names & set(skip):
            out.append((r, t))
    return out


def architecture(recommender: str) -> str:
    """A CTR recommender's model (deepfm_me4+concat -> deepfm): its ID-only counterpart is (that, no tokenizer)."""
    return recommender.split("+")[0].split("_me")[0]


def rows_for(ranks: np.ndarray, users: Sequence[str], dataset: str, recommender: str, tokenizer: str | None,
             seed: int, ks: Sequence[int] = KS) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Long metric rows and per-user NDCG@10 of one trained model (one seed) on the test split."""
    per_user = per_user_metrics(ranks, sorted(set(ks) | {10}))
    long = pl.DataFrame([{"dataset": dataset, "recommender": recommender, "tokenizer": tokenizer, "seed": seed,
                          "metric": metric, "k": k, "value": float(v.mean())}
                         for (metric, k), v in sorted(per_user.items()) if k in ks], schema=EVALUATION_SCHEMA)
    users_frame = pl.DataFrame({"recommender": recommender, "tokenizer": tokenizer, "seed": seed,
                                "user_id": list(users), "ndcg_10": per_user[("ndcg", 10)]}, schema=PER_USER_SCHEMA)
    return long, users_frame


def comparison(long: pl.DataFrame, per_user: pl.DataFrame, metrics: Iterable[tuple[str, int]] = (
        ("recall", 10), ("ndcg", 10), ("ndcg", 5))) -> pl.DataFrame:
    """One row per (recommender, tokenizer): mean ± std over seeds of each metric (the best of each column in
    bold), its 95 % interval for NDCG@10, and the p-values of paired Wilcoxon tests of per-user NDCG@10 (averaged
    over seeds) against the best ID baseline and, for a learned code table, against the same recommender on random
    codes."""
    metrics = list(metrics)
    long = long.filter(~pl.col("metric").is_in(CTR_METRICS))  # CTR models: ctr_comparison
    user_means = per_user.group_by("recommender", "tokenizer", "user_id").agg(pl.col("ndcg_10").mean())
    models = long.select("recommender", "tokenizer").unique().sort("recommender", "tokenizer", nulls_last=False)
    best_baseline = None
    base_scores = {r: long.filter(pl.col("recommender") == r, pl.col("metric") == "ndcg", pl.col("k") == 10)
                   ["value"].mean() for r in BASELINES if r in long["recommender"].to_list()}
    if base_scores:
        best_baseline = max(base_scores, key=lambda r: base_scores[r] or 0.0)
    rows = []
    for recommender, tokenizer in models.iter_rows():
        mine = long.filter(pl.col("recommender") == recommender, pl.col("tokenizer").eq_missing(tokenizer))
        row: dict[str, object] = {"recommender": recommender, "tokenizer": tokenizer or "-",
                                  "seeds": mine["seed"].n_unique()}
        for metric, k in metrics:
            s = summarize(mine.filter(pl.col("metric") == metric, pl.col("k") == k)["value"].to_list())
            row[f"{metric}@{k}"] = f"{s.mean:.4f} ± {s.std:.4f}"
            row[f"_{metric}@{k}"] = s.mean
            if (metric, k) == ("ndcg", 10):
                row["ndcg@10 95% CI"] = f"[{s.ci95[0]:.4f}, {s.ci95[1]:.4f}]"
        if best_baseline is not None and recommender != best_baseline:
            a = user_means.filter(pl.col("recommender") == recommender, pl.col("tokenizer").eq_missing(tokenizer))
            b = user_means.filter(pl.col("recommender") == best_baseline)
            joined = a.join(b, on="user_id", suffix="_base")
            row[f"p vs {best_baseline}"] = round(paired_test(joined["ndcg_10"].to_numpy(),
                                                             joined["ndcg_10_base"].to_numpy()), 6)
        if tokenizer is not None and tokenizer != RANDOM_CODES:  # do the codes beat random codes, same recommender?
            a = user_means.filter(pl.col("recommender") == recommender, pl.col("tokenizer") == tokenizer)
            b = user_means.filter(pl.col("recommender") == recommender, pl.col("tokenizer") == RANDOM_CODES)
            if b.height:
                joined = a.join(b, on="user_id", suffix="_random")
                row["p vs random codes"] = round(paired_test(joined["ndcg_10"].to_numpy(),
                                                             joined["ndcg_10_random"].to_numpy()), 6)
        rows.append(row)
    frame = pl.DataFrame(rows)
    # the best mean of every metric column in bold (Markdown), ties all marked
    names = [f"{metric}@{k}" for metric, k in metrics]
    return frame.with_columns([
        pl.when(pl.col(f"_{n}") == pl.col(f"_{n}").max()).then(pl.lit("**") + pl.col(n) + pl.lit("**"))
        .otherwise(pl.col(n)).alias(n) for n in names]).drop([f"_{n}" for n in names])


def ctr_comparison(long: pl.DataFrame) -> pl.DataFrame:
    """One row per CTR (recommender, tokenizer): mean ± std over seeds of test AUC and logloss, and against the
    ID-only model of the same architecture (e.g. deepfm+concat / pca_kmeans vs deepfm / ids) the mean AUC gain and
    the p-value of a paired t-test over the seeds both ran (scipy ttest_rel; null below 2 common seeds)."""
    from scipy import stats

    ctr = long.filter(pl.col("metric").is_in(CTR_METRICS))
    if not ctr.height:
        return pl.DataFrame()
    auc = {(r, t): dict(zip(part["seed"].to_list(), part["value"].to_list())) for (r, t), part in
           ctr.filter(pl.col("metric") == "auc").group_by("recommender", "tokenizer", maintain_order=True)}
    rows = []
    for recommender, tokenizer in ctr.select("recommender", "tokenizer").unique().sort(
            "recommender", "tokenizer", nulls_last=False).iter_rows():
        mine = ctr.filter(pl.col("recommender") == recommender, pl.col("tokenizer").eq_missing(tokenizer))
        row: dict[str, object] = {"recommender": recommender, "tokenizer": tokenizer or "ids",
                                  "seeds": mine["seed"].n_unique()}
        for metric in CTR_METRICS:
            s = summarize(mine.filter(pl.col("metric") == metric)["value"].to_list())
            row[metric] = f"{s.mean:.4f} ± {s.std:.4f}"
        base = (architecture(recommender), None)
        row["vs"], row["auc gain"], row["p (paired t, seeds)"] = None, None, None
        if (recommender, tokenizer) != base and base in auc:
            ours = auc.get((recommender, tokenizer), {})
            seeds = sorted(set(ours) & set(auc[base]))
            if seeds:
                a, b = np.array([ours[x] for x in seeds]), np.array([auc[base][x] for x in seeds])
                row["vs"], row["auc gain"] = f"{base[0]}/ids", round(float((a - b).mean()), 5)
                if len(seeds) >= 2 and np.ptp(a - b) > 0:
                    row["p (paired t, seeds)"] = round(float(stats.ttest_rel(a, b).pvalue), 6)
        rows.append(row)
    return pl.DataFrame(rows, schema_overrides={"vs": pl.String, "auc gain": pl.Float64,
                                                "p (paired t, seeds)": pl.Float64})


def check_evaluation(long: pl.DataFrame, expected: Iterable[tuple[str, str | None, Sequence[int]]]
                     ) -> tuple[bool, dict[str, Any]]:
    """Every configured (recommender, tokenizer, seeds) present; every ranking model with the same metric rows
    (every metric and K) and every CTR model likewise (auc, logloss); recall / ndcg / auc in [0, 1], logloss
    finite and >= 0."""
    have = {(r, t, s) for r, t, s in long.select("recommender", "tokenizer", "seed").unique().iter_rows()}
    missing = [f"{r}/{t or '-'}/seed {s}" for r, t, seeds in expected for s in seeds if (r, t, s) not in have]
    kinds = long.with_columns(pl.col("metric").is_in(CTR_METRICS).alias("ctr"))
    per_model = {("ctr" if ctr else "ranking"): part["len"].unique().sort().to_list() for (ctr,), part in
                 kinds.group_by("recommender", "tokenizer", "seed", "ctr").len().group_by("ctr")}
    value, unit = pl.col("value"), pl.col("metric").is_in(UNIT_METRICS)
    bad = ~value.is_finite() | (value < 0) | (unit & (value > 1))
    out_of_range = int(long.select(bad.sum()).item() or 0)
    passed = not missing and out_of_range == 0 and all(len(v) <= 1 for v in per_model.values())
    return passed, {"missing": ", ".join(missing) or "none", "out_of_range": out_of_range,
                    "rows": long.height, "metric_rows_per_model": per_model}
