"""ops.quality on hand-made tables with known answers, and id_quality/<tokenizer> in Dagster: the report, the
comparison across tokenizers, and the blocking collapse check that stops what depends on a collapsed table."""
import dagster as dg
import numpy as np
import polars as pl
import pytest

from assets import quality, recommend
from ops.codetable import build_code_table
from ops.quality import (
    QualityConfig,
    attribute_nmi,
    collapse_check,
    neighbour_preservation,
    prefix_balance,
    quality_report,
)
from ops.recommend import REGISTRY as RECOMMENDERS
from ops.tokenizers import REGISTRY, TokenizerEntry
from ops.tokenizers.random import RandomCodes
from pipeline.resources import StorageResource
from storage import Store


def test_prefix_balance_counts_buckets_and_their_gini():
    rows = prefix_balance(np.array([[0, 0], [0, 1], [1, 0], [1, 0]]))
    assert rows[0] == {"depth": 1, "prefixes": 2, "largest_share": 0.5, "gini": 0.0}
    assert rows[1]["prefixes"] == 3 and rows[1]["largest_share"] == 0.5
    assert rows[1]["gini"] == pytest.approx(1 / 6, abs=1e-4)  # sizes 1, 1, 2


def _clusters(n_per=20, seed=0):
    rng = np.random.default_rng(seed)
    centers = np.array([[10.0, 0, 0], [0, 10.0, 0], [0, 0, 10.0]])
    x = np.concatenate([c + rng.normal(size=(n_per, 3)) * 0.1 for c in centers]).astype(np.float32)
    return x, np.repeat(np.arange(3), n_per)


def test_neighbour_preservation_is_one_when_ids_follow_the_clusters():
    x, cluster = _clusters()
    codes = np.stack([cluster, np.zeros(len(x), dtype=int)], axis=1)  # the deepest shared prefix = the cluster
    assert neighbour_preservation(x, codes, k=5) == 1.0
    halves = np.stack([cluster, np.arange(len(x)) % 2], axis=1)  # the second code splits each cluster at random
    assert 0.3 < neighbour_preservation(x, halves, k=5) < 0.7
    crossed = np.stack([np.arange(len(x)) % 3, np.zeros(len(x), dtype=int)], axis=1)  # every bucket mixes clusters
    assert neighbour_preservation(x, crossed, k=5) < 0.5


def test_attribute_nmi_finds_the_position_that_copies_a_label():
    x, cluster = _clusters()
    codes = np.stack([np.zeros(len(x), dtype=int), cluster], axis=1)
    (row,) = attribute_nmi(codes, pl.DataFrame({"topic": [f"t{c}" for c in cluster]}))
    assert row["nmi_per_position"] == [0.0, 1.0] and row["best_position"] == 1 and row["values"] == 3


def test_report_compares_with_random_codes_and_the_collapse_check_blocks():
    x, cluster = _clusters()
    ids = [f"i{i}" for i in range(len(x))]
    good, _ = build_code_table(ids, np.stack([cluster, cluster], axis=1), 4)
    labels = pl.DataFrame({"topic": [f"t{c}" for c in cluster]})
    report = quality_report(good, 4, x, labels, QualityConfig(neighbours=5))
    f = report.figures
    assert f["nmi_topic"] == 1.0 and f["random_nmi_topic"] < 0.5
    assert f["neighbour_preservation"] == 1.0 > f["random_neighbour_preservation"]
    assert f["collision_rate"] == pytest.approx(57 / 60) and report.balance.height == 2
    assert collapse_check(report, QualityConfig()).passed
    # one position stuck on a single code, and most items under one first code: blocked
    stuck = np.stack([np.where(np.arange(len(x)) < 50, 0, 1), np.zeros(len(x), dtype=int)], axis=1)
    collapsed, _ = build_code_table(ids, stuck, 4)
    outcome = collapse_check(quality_report(collapsed, 4, x, None, QualityConfig()), QualityConfig())
    assert not outcome.passed and outcome.blocks and outcome.metadata["collapsed_positions"] == [1]
    assert outcome.metadata["largest_first_bucket_share"] == pytest.approx(50 / 60, abs=1e-4)


def test_recommenders_on_a_code_table_wait_for_its_quality_check():
    entry = next(e for e in RECOMMENDERS.values() if e.per_tokenizer)
    asset = recommend.build_recommender_asset(entry, "pca_kmeans")
    assert quality.quality_key("pca_kmeans") in asset.asset_deps[asset.key]


class StuckCodes(RandomCodes):
    """Test only: random codes whose second position is always 0 (a collapsed codebook)."""

    def encode(self, x, item_ids):
        codes = super().encode(x, item_ids)
        codes[:, 1] = 0
        return codes


def test_a_collapsed_table_is_reported_and_blocks_what_depends_on_it(tmp_path, monkeypatch):
    from assets import codes as code_assets
    from assets import ingest
    from ops.sample import generate

    generate("mind", tmp_path / "raw" / "sample_mind", "tiny", seed=0)
    storage = StorageResource(raw_root=str(tmp_path / "raw"), storage_root=str(tmp_path / "store"))
    entry = TokenizerEntry("stuck", StuckCodes, "test only")
    monkeypatch.setitem(REGISTRY, "stuck", entry)
    table = code_assets.build_code_table_asset(entry)
    check = quality.build_quality_asset(entry)
    ran = []

    @dg.asset(key="trained_on_stuck", deps=[quality.quality_key("stuck")], partitions_def=quality.DATASETS)
    def downstream() -> None:
        ran.append(True)

    healthy = next(a for a in quality.ASSETS if a.key == quality.quality_key("random"))
    random_table = next(a for a in code_assets.ASSETS if a.key.path[-1] == "random")
    result = dg.materialize(
        [*ingest.ASSETS, table, check, random_table, healthy, quality.id_quality_comparison, downstream],
        partition_key="sample_mind", resources={"storage": storage}, raise_on_error=False,
        run_config={"ops": {"code_table__stuck": {"config": {"length": 2, "k": 16, "min_utilization": 0.0,
                                                             "collision_warn": 1.0, "collision_block": 1.0}}}})
    evaluations = {(e.asset_key.to_user_string(), e.check_name): e.passed for e in result.get_asset_check_evaluations()}
    assert evaluations[("id_quality/stuck", "codes_not_collapsed")] is False
    assert evaluations[("id_quality/random", "codes_not_collapsed")] is True
    assert ran == []  # the blocking check stopped the asset trained on the collapsed table
    comparison = Store(storage.storage_root).read("sample_mind", "id_quality")
    assert sorted(comparison["tokenizer"]) == ["random", "stuck"]
    stuck = comparison.filter(pl.col("tokenizer") == "stuck")
    assert stuck["collapsed"].item() is True and stuck["min_perplexity"].item() == 1.0
    assert "nmi_category" in comparison.columns and "random_nmi_category" in comparison.columns
