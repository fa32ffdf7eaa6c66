"""The ID quality report of a code table (`id_quality/<tokenizer>`): what a team asks before it spends GPU hours on
a recommender over these IDs. Is the collision rate acceptable, did a codebook collapse, are the prefixes balanced,
do items that share a prefix resemble each other, do positions recover the catalog's known attributes, do the
positions say different things?

Every figure is computed for the table and, where chance matters, for uniform random codes of the same L and K on
the same items (ops.tokenizers.random), so that the report says where the learned IDs beat random ones.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from ops.codetable import CheckOutcome, code_figures, codes_array, dedup_index
from ops.config import Checked, Fraction, PositiveInt, Seed
from ops.tokenizers.random import random_codes

COLLAPSED_PERPLEXITY = 1.5  # a position this concentrated is collapsed whatever its K


@dataclass(frozen=True)
class QualityConfig(Checked):
    """Settings of the report and of its blocking collapse check."""

    neighbours: PositiveInt = 10  # k of the nearest-neighbour preservation figure
    # collapse floor: every position's perplexity at least this share of the codes it could use (min(K, items))
    min_perplexity_share: Fraction = 0.02
    max_bucket_share: Fraction = 0.5  # ceiling: no first-position code holds more than this share of the items
    seed: Seed = 0  # of the random codes compared against


def prefix_balance(codes: np.ndarray) -> list[dict[str, Any]]:
    """Per depth d = 1..L, the buckets of items sharing their first d codes: how many, the largest one's share of
    the items, and the Gini coefficient of their sizes (0 = even, towards 1 = one bucket holds almost all)."""
    n, length = codes.shape
    rows = []
    for depth in range(1, length + 1):
        _, sizes = np.unique(codes[:, :depth], axis=0, return_counts=True)
        sizes = np.sort(sizes).astype(np.float64)
        gini = float(1 - 2 * np.sum(np.cumsum(sizes)) / (len(sizes) * sizes.sum()) + 1 / len(sizes)) if n else 0.0
        rows.append({"depth": depth, "prefixes": int(len(sizes)), "largest_share": round(float(sizes[-1] / n), 4)
                     if n else 0.0, "gini": round(gini, 4)})
    return rows


def _deepest_shared(codes: np.ndarray) -> list[np.ndarray]:
    """For each item, the other items in the deepest prefix bucket it shares with at least one other item (empty
    when even its first code is its own)."""
    n, length = codes.shape
    groups: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * n
    for depth in range(1, length + 1):
        _, inverse, counts = np.unique(codes[:, :depth], axis=0, return_inverse=True, return_counts=True)
        inverse = np.asarray(inverse).ravel()
        order = np.argsort(inverse, kind="stable")
        starts = np.concatenate([[0], np.cumsum(counts)])
        for bucket in np.flatnonzero(counts >= 2):
            members = order[starts[bucket]:starts[bucket + 1]]
            for item in members:
                groups[item] = members
    return groups


def neighbour_preservation(x: np.ndarray, codes: np.ndarray, k: int) -> float:
    """Mean over items of |kNN(item) ∩ P(item)| / min(k, |P(item)|), where kNN are the item's k nearest neighbours
    in embedding space (cosine) and P the other items of the deepest prefix bucket it shares: 1 = the items an ID
    groups together are each other's neighbours; random codes give about k / n per item."""
    import faiss

    n = len(x)
    if n < 2:
        return 0.0
    k = min(k, n - 1)
    v = np.ascontiguousarray(x, dtype=np.float32).reshape(n, -1).copy()
    faiss.normalize_L2(v)
    index = faiss.IndexFlatIP(v.shape[1])
    index.add(v)
    _, nn = index.search(v, k + 1)
    scores = []
    for item, members in enumerate(_deepest_shared(codes)):
        others = members[members != item]
        if len(others) == 0:
            continue
        neighbours = nn[item][nn[item] != item][:k]
        scores.append(len(np.intersect1d(neighbours, others)) / min(k, len(others)))
    return round(float(np.mean(scores)), 4) if scores else 0.0


def attribute_nmi(codes: np.ndarray, labels: pl.DataFrame) -> list[dict[str, Any]]:
    """NMI (arithmetic) of each position's codes with each label column (rows aligned with `codes`; nulls are
    their own value), and the best position per label."""
    from sklearn.metrics import normalized_mutual_info_score

    rows = []
    for column in labels.columns:
        y = labels[column].fill_null("∅").cast(pl.String).to_numpy()
        per = [round(float(normalized_mutual_info_score(y, codes[:, p])), 4) for p in range(codes.shape[1])]
        rows.append({"label": column, "values": int(labels[column].n_unique()), "nmi_per_position": per,
                     "best_nmi": max(per) if per else 0.0, "best_position": int(np.argmax(per)) if per else -1})
    return rows


@dataclass
class QualityReport:
    figures: dict[str, Any]  # the table's figures (and `random_*` for random codes of the same shape)
    positions: pl.DataFrame  # per position: utilization, perplexity, entropy, largest bucket (table and random)
    balance: pl.DataFrame  # per depth: prefixes, largest share, Gini (table and random)
    labels: pl.DataFrame  # per label: NMI per position, best (table and random)


def quality_report(table: pl.DataFrame, k: int, embeddings: np.ndarray | None, labels: pl.DataFrame | None,
                   config: QualityConfig) -> QualityReport:
    """The report of a code table (item_id, codes, dedup, ...) with K codes per position; `embeddings` (rows in
    the table's item order) for neighbour preservation, `labels` (rows in the same order) for the NMI."""
    codes = codes_array(table)
    n, length = codes.shape
    ids: Sequence[str] = table["item_id"].to_list()
    rand = random_codes(ids, length, k, config.seed) if n else codes
    figures = code_figures(codes, table["dedup"].to_numpy().astype(np.int64), k)
    rand_figures = code_figures(rand, dedup_index(rand), k)
    out: dict[str, Any] = {
        "items": n, "length": length, "k": k,
        "collision_rate": figures["collision_rate"], "random_collision_rate": rand_figures["collision_rate"],
        "max_items_per_tuple": int(figures["max_dedup"]) + 1 if n else 0,
        "mean_items_per_colliding_tuple": _mean_colliding(codes),
        "position_agreement_ami": figures["position_agreement_ami"],
        "min_perplexity": min(figures["perplexity"]) if length else 0.0,
    }
    if embeddings is not None and n:
        out["neighbour_preservation"] = neighbour_preservation(embeddings, codes, config.neighbours)
        out["random_neighbour_preservation"] = neighbour_preservation(embeddings, rand, config.neighbours)
    positions = pl.DataFrame({
        "position": list(range(length)),
        **{name: figures[name] for name in ("utilization", "perplexity", "entropy_bits", "largest_bucket_share")},
        "random_perplexity": rand_figures["perplexity"]})
    ours, theirs = prefix_balance(codes), prefix_balance(rand)
    balance = pl.DataFrame([{**a, "random_prefixes": b["prefixes"], "random_largest_share": b["largest_share"],
                             "random_gini": b["gini"]} for a, b in zip(ours, theirs)])
    label_rows = []
    if labels is not None and labels.width and n:
        for a, b in zip(attribute_nmi(codes, labels), attribute_nmi(rand, labels)):
            label_rows.append({**a, "random_best_nmi": b["best_nmi"]})
            out[f"nmi_{a['label']}"] = a["best_nmi"]
            out[f"random_nmi_{a['label']}"] = b["best_nmi"]
    out["largest_first_bucket_share"] = ours[0]["largest_share"] if ours else 0.0
    return QualityReport(out, positions, balance, pl.DataFrame(label_rows))


def _mean_colliding(codes: np.ndarray) -> float:
    """Mean number of items per code tuple that more than one item has (1.0 when nothing collides)."""
    if not len(codes):
        return 0.0
    _, counts = np.unique(codes, axis=0, return_counts=True)
    colliding = counts[counts > 1]
    return round(float(colliding.mean()), 4) if len(colliding) else 1.0


def collapse_check(report: QualityReport, config: QualityConfig) -> CheckOutcome:
    """Blocking: a position whose perplexity is below `min_perplexity_share` of the codes it could use (and never
    below COLLAPSED_PERPLEXITY), or a
    first-position code holding more than `max_bucket_share` of the items, is a collapsed codebook; recommenders
    are not trained on it."""
    n, k = report.figures["items"], report.figures["k"]
    usable = max(1, min(k, n))
    # at least COLLAPSED_PERPLEXITY whatever K: below it nearly every item carries the same code
    floor = max(COLLAPSED_PERPLEXITY, config.min_perplexity_share * usable)
    low = [int(p) for p, v in zip(report.positions["position"], report.positions["perplexity"]) if v < floor]
    share = report.figures["largest_first_bucket_share"]
    return CheckOutcome(
        "codes_not_collapsed", not low and share <= config.max_bucket_share,
        f"every position's perplexity at least {floor:.1f} ({config.min_perplexity_share:.0%} of min(K, items), "
        f"at least {COLLAPSED_PERPLEXITY}), "
        f"no first code holding more than {config.max_bucket_share:.0%} of the items",
        {"collapsed_positions": low, "perplexity_floor": round(floor, 2),
         "largest_first_bucket_share": share, "max_bucket_share": config.max_bucket_share})
