"""What every tokenizer's code table shares (DESIGN §4): the collision (dedup) index, the semantic_id rendering,
the code figures, the frame itself and the checks that must pass before it becomes `latest`."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import polars as pl

from ops.config import Checked, ConfigError, Fraction
from storage.schemas import code_table_schema


def codes_array(frame: pl.DataFrame, length: int = 0) -> np.ndarray:
    """A code table's `codes` column as an items x L int64 array (items x `length` zeros for an empty table)."""
    if not frame.height:
        return np.zeros((0, length), dtype=np.int64)
    return np.stack(list(frame["codes"].to_numpy())).astype(np.int64)


def dedup_index(codes: np.ndarray) -> np.ndarray:
    """0 for the first item (in row order) with a code tuple, then 1, 2, … for later items sharing it."""
    if len(codes) == 0:
        return np.zeros(0, dtype=np.int64)
    _, group = np.unique(np.asarray(codes), axis=0, return_inverse=True)
    frame = pl.DataFrame({"g": np.asarray(group).ravel()})
    return frame.select(pl.int_range(pl.len()).over("g").alias("dedup"))["dedup"].to_numpy().astype(np.int64)


def semantic_ids(codes: np.ndarray, dedup: np.ndarray) -> list[str]:
    """`c1-c2-…-cL/dedup`, e.g. `12-200-3-45/0`: the codes in position order, then the collision index."""
    frame = pl.DataFrame({f"c{i}": codes[:, i] for i in range(codes.shape[1])} | {"dedup": dedup})
    joined = pl.concat_str([pl.col(f"c{i}") for i in range(codes.shape[1])], separator="-")
    return frame.select(pl.concat_str([joined, pl.col("dedup")], separator="/").alias("sid"))["sid"].to_list()


def code_figures(codes: np.ndarray, dedup: np.ndarray, k: int) -> dict[str, Any]:
    """Utilization (used codes / K), entropy (bits), perplexity and largest bucket share per position; collision
    rate = share of items whose code tuple an earlier item already has (dedup > 0); position agreement = mean
    adjusted mutual information between the codes of two different positions (chance-adjusted: 0 = independent
    positions, as random codes; 1 = the same partition L times, the copies that make code tuples collide)."""
    from sklearn.metrics import adjusted_mutual_info_score

    n, length = codes.shape
    util, entropy, perplexity, largest = [], [], [], []
    for i in range(length):
        counts = np.bincount(codes[:, i], minlength=k).astype(np.float64)
        p = counts[counts > 0] / n
        h = float(-(p * np.log2(p)).sum())
        util.append(round(float((counts > 0).sum() / k), 4))
        entropy.append(round(h, 4))
        perplexity.append(round(2.0 ** h, 2))
        largest.append(round(float(counts.max() / n), 4))
    return {
        "items": n, "length": length, "k": k,
        "collision_rate": round(float((dedup > 0).mean()), 6) if n else 0.0,
        "max_dedup": int(dedup.max()) if n else 0,
        "unique_code_tuples": int((dedup == 0).sum()),
        "utilization": util, "entropy_bits": entropy, "perplexity": perplexity, "largest_bucket_share": largest,
        # Balance of the first position's prefixes: perplexity over K (1.0 = perfectly even).
        "prefix_balance": round(perplexity[0] / k, 4) if length else 0.0,
        "position_agreement_ami": round(float(np.mean(
            [adjusted_mutual_info_score(codes[:, i], codes[:, j])
             for i in range(length) for j in range(i + 1, length)])), 4) if length > 1 and n else 0.0,
    }


def build_code_table(item_ids: Sequence[str], codes: np.ndarray, k: int,
                     content_hashes: Sequence[str | None] | None = None) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Rows in item order; `dedup` makes every (codes, dedup) unique; figures describe the codes before dedup;
    `content_hashes` (the items' content_hash) records which text each ID was computed from."""
    codes = np.asarray(codes, dtype=np.int64)
    if codes.ndim != 2 or codes.shape[0] != len(item_ids):
        raise ValueError(f"codes must be items x L with {len(item_ids)} rows, got shape {codes.shape}")
    dedup = dedup_index(codes)
    frame = pl.DataFrame(
        {"item_id": list(item_ids), "codes": codes.astype(np.int32), "dedup": dedup.astype(np.int32),
         "semantic_id": semantic_ids(codes, dedup),
         "content_hash": list(content_hashes) if content_hashes is not None else [None] * len(item_ids)},
        schema=code_table_schema(codes.shape[1]),
    )
    return frame, code_figures(codes, dedup, k)


@dataclass
class CheckOutcome:
    name: str
    passed: bool
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)
    blocking: bool = True  # a failed non-blocking outcome is a warning: `latest` still moves

    @property
    def blocks(self) -> bool:
        return self.blocking and not self.passed


def check_code_table(frame: pl.DataFrame, item_ids: Sequence[str], k: int, length: int,
                     min_utilization: float) -> list[CheckOutcome]:
    """The gate for moving `latest`: uniqueness, code range, coverage of `items`, no collapsed codebook."""
    n = frame.height
    dup_items = n - frame["item_id"].n_unique()
    dup_sids = n - frame["semantic_id"].n_unique()
    flat = frame["codes"].arr.explode() if n else pl.Series([], dtype=pl.Int32)
    out_of_range = int(((flat < 0) | (flat >= k)).sum()) if n else 0
    expected = pl.Series(list(item_ids), dtype=pl.String)
    missing = int((~expected.is_in(frame["item_id"].implode())).sum())
    extra = int((~frame["item_id"].is_in(expected.implode())).sum())
    util = []
    for i in range(length):
        used = frame["codes"].arr.get(i).n_unique() if n else 0
        util.append(round(used / min(k, max(n, 1)), 4))  # against the K actually usable
    worst = min(util) if util else 0.0
    return [
        CheckOutcome("unique_item_id", dup_items == 0, "every item_id appears once", {"duplicates": dup_items}),
        CheckOutcome("unique_semantic_id", dup_sids == 0, "every semantic_id maps to exactly one item",
                     {"duplicates": dup_sids}),
        CheckOutcome("codes_in_range", out_of_range == 0 and frame["codes"].dtype == pl.Array(pl.Int32, length),
                     f"codes are int32[{length}] within [0, {k})", {"out_of_range": out_of_range}),
        CheckOutcome("covers_all_items", missing == 0 and extra == 0,
                     "exactly the items of the items table", {"missing": missing, "unknown": extra}),
        CheckOutcome("utilization_above_floor", worst >= min_utilization,
                     f"every position uses at least {min_utilization:.0%} of its codes (codebook collapse check)",
                     {"utilization": util, "floor": min_utilization}),
    ]


def check_collisions(figures: dict[str, Any], warn: float, block: float) -> CheckOutcome:
    """Collision rate before dedup (items whose code tuple an earlier item already has) against two limits: above
    `warn` a warning, above `block` a blocking failure. Dedup keeps the IDs unique either way, but a table where
    most items are told apart only by the dedup index says little about them."""
    # numbers, as quantize / the tokenizers report them (figures is typed object for its other entries)
    rate, worst = float(cast(float, figures["collision_rate"])), int(cast(int, figures["max_dedup"]))
    return CheckOutcome(
        "collision_rate_within_limits", rate <= warn,
        f"collision rate before dedup at most {warn:.0%} (a warning above, blocking above {block:.0%})",
        {"collision_rate": rate, "max_dedup": worst, "warn_above": warn, "block_above": block},
        blocking=rate > block)


def aspect_scores(codes: pl.DataFrame, truth: pl.DataFrame) -> pl.DataFrame:
    """How well code positions recover known aspects (e.g. the bundled samples' planted_aspects.csv: item_id +
    one column per aspect). Per aspect: NMI (sklearn, arithmetic mean) of the best position and which one, and
    the homogeneity of that position (1 = every code holds one aspect value). NMI is not chance-adjusted: with
    K codes even random codes score above 0, so compare tokenizers on the same items and K."""
    from sklearn.metrics import homogeneity_score, normalized_mutual_info_score

    joined = codes.select("item_id", "codes").join(truth, on="item_id")
    length = cast(pl.Array, joined["codes"].dtype).size  # a code table's codes are an Array (code_table_schema)
    rows = []
    for aspect in truth.columns[1:]:
        y = joined[aspect].to_numpy()
        scores = [normalized_mutual_info_score(y, joined["codes"].arr.get(p).to_numpy()) for p in range(length)]
        best = int(np.argmax(scores))
        rows.append({"aspect": aspect, "best_nmi": round(float(scores[best]), 4), "position": best,
                     "homogeneity": round(float(homogeneity_score(y, joined["codes"].arr.get(best).to_numpy())), 4),
                     "nmi_per_position": [round(float(s), 4) for s in scores], "items": joined.height})
    return pl.DataFrame(rows)


@dataclass(frozen=True)
class CodeTableChecks(Checked):
    """Settings of the checks every code table passes before `latest` moves."""

    min_utilization: Fraction = 0.1  # the collapse floor: each position uses at least this share of its K codes
    collision_warn: Fraction = 0.05  # collision rate before dedup above which the table is published with a warning
    collision_block: Fraction = 0.5  # ... and above which it is not published (more than half the items collide)

    def check(self) -> None:
        if self.collision_warn > self.collision_block:
            raise ConfigError(f"collision_warn = {self.collision_warn} must be <= collision_block = "
                              f"{self.collision_block}")
