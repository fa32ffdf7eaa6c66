"""Ranking metrics for next-item recommendation: Recall@K and NDCG@K over the full catalog (no sampled negatives),
one held-out target per user, plus the seed and paired statistics every figure is reported with.

Tie-breaking is deterministic and documented: a target's rank is the number of items scored strictly higher plus
the number scored equally that have a *lower item index* (ties go to the lower index). A model that scores many
items equally (popularity, a collapsed code table) therefore gets no credit from the order ties happen to fall in.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

KS = (1, 5, 10, 20)
METRICS = ("recall", "ndcg")


def ranks_from_scores(scores: np.ndarray, targets: np.ndarray, exclude: np.ndarray | None = None) -> np.ndarray:
    """0-based rank of each user's target among all items. scores: users x items (higher is better); targets:
    item index per user; exclude: optional users x items bool, True = not a candidate (e.g. already in the
    history; the target itself is never excluded)."""
    scores = np.asarray(scores, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    if scores.ndim != 2 or len(targets) != scores.shape[0]:
        raise ValueError(f"scores must be users x items with one target per user, got {scores.shape} and "
                         f"{targets.shape}")
    if ((targets < 0) | (targets >= scores.shape[1])).any():
        raise ValueError("a target item index is outside the catalog")
    rows = np.arange(len(targets))
    target_score = scores[rows, targets][:, None]
    candidates = np.ones_like(scores, dtype=bool) if exclude is None else ~np.asarray(exclude, dtype=bool)
    candidates[rows, targets] = True
    higher = (scores > target_score) & candidates
    tied_before = (scores == target_score) & candidates & (np.arange(scores.shape[1])[None, :] < targets[:, None])
    return higher.sum(axis=1) + tied_before.sum(axis=1)


def ranks_from_shared_scores(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """`ranks_from_scores` where every user gets the same scores (a popularity ranking), without a users x items
    matrix: the catalog ordered once (score descending, ties by lower index), each target's place in that order."""
    scores = np.asarray(scores, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    if ((targets < 0) | (targets >= len(scores))).any():
        raise ValueError("a target item index is outside the catalog")
    order = np.lexsort((np.arange(len(scores)), -scores))
    place = np.empty(len(scores), dtype=np.int64)
    place[order] = np.arange(len(scores))
    return place[targets]


def ranks_from_lists(top: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Rank of each target in a ranked list per user (users x K item indices, -1 = empty slot); a target that is
    not in its list gets rank K (outside every cut-off up to K)."""
    top = np.asarray(top)
    hit = top == np.asarray(targets)[:, None]
    return np.where(hit.any(axis=1), hit.argmax(axis=1), top.shape[1])


def recall_ndcg(ranks: np.ndarray, ks: Sequence[int] = KS) -> dict[tuple[str, int], float]:
    """Mean Recall@K (target within the first K) and NDCG@K (1 / log2(rank + 2) within the first K, the ideal DCG
    of one relevant item being 1) over users."""
    per_user = per_user_metrics(ranks, ks)
    return {key: float(v.mean()) if len(v) else 0.0 for key, v in per_user.items()}


def per_user_metrics(ranks: np.ndarray, ks: Sequence[int] = KS) -> dict[tuple[str, int], np.ndarray]:
    ranks = np.asarray(ranks, dtype=np.float64)
    out: dict[tuple[str, int], np.ndarray] = {}
    for k in ks:
        inside = ranks < k
        out[("recall", k)] = inside.astype(np.float64)
        out[("ndcg", k)] = np.where(inside, 1.0 / np.log2(ranks + 2.0), 0.0)
    return out


@dataclass(frozen=True)
class Summary:
    mean: float
    std: float  # sample standard deviation over seeds (ddof = 1; 0 for one seed)
    ci95: tuple[float, float]  # Student t interval of the mean
    n: int


def summarize(values: Iterable[float]) -> Summary:
    """Mean ± std and a 95 % t interval over seeds."""
    from scipy import stats

    v = np.asarray(list(values), dtype=np.float64)
    if len(v) == 0:
        raise ValueError("no values to summarize")
    mean = float(v.mean())
    if len(v) == 1:
        return Summary(mean, 0.0, (mean, mean), 1)
    std = float(v.std(ddof=1))
    half = float(stats.t.ppf(0.975, len(v) - 1) * std / np.sqrt(len(v)))
    return Summary(mean, std, (mean - half, mean + half), len(v))


def paired_test(ours: Sequence[float] | np.ndarray, baseline: Sequence[float] | np.ndarray) -> float:
    """Two-sided p-value of a paired test over the same users (per-user metric values, e.g. averaged over
    seeds): Wilcoxon signed-rank, which assumes no normality of the 0/1 and 1/log2 values; 1.0 when the two are
    equal for every user."""
    from scipy import stats

    a, b = np.asarray(ours, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values need the same users: {a.shape} vs {b.shape}")
    if np.allclose(a, b):
        return 1.0
    return float(stats.wilcoxon(a, b, zero_method="wilcox", alternative="two-sided").pvalue)


def long_rows(values: Mapping[tuple[str, int], float], **keys: object) -> list[dict[str, object]]:
    """Metric values as rows of the long evaluation table (`metric`, `k`, `value` plus the given keys)."""
    return [{**keys, "metric": metric, "k": k, "value": value} for (metric, k), value in sorted(values.items())]
