"""ops.quantize and ops.codetable: PCA + K-Means per position, collisions, figures, checks."""
import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from ops.codetable import build_code_table, check_code_table, code_figures, dedup_index, semantic_ids
from ops.quantize import QuantizeConfig, Quantizer, pca_subspaces, quantize, quantize_pooled
from ops.tokenizers.random import random_codes


def planted(n=800, clusters=8, dim=32, positions=2, seed=0):
    """items x L x D with an independent planted cluster label per position."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, clusters, (n, positions))
    centers = rng.normal(0, 10, (positions, clusters, dim))
    x = np.stack([centers[p, labels[:, p]] for p in range(positions)], axis=1)
    return (x + rng.normal(0, 0.5, x.shape)).astype(np.float32), labels


@pytest.mark.parametrize("backend,init", [("faiss", "afkmc2"), ("faiss", "greedy_kmeans++"), ("sklearn", "afkmc2")])
def test_recovers_planted_clusters_per_position(backend, init):
    x, labels = planted()
    res = quantize(x, QuantizeConfig(d=8, k=8, backend=backend, init=init))
    assert res.codes.shape == (800, 2) and res.k == 8
    for p in range(2):
        assert adjusted_rand_score(labels[:, p], res.codes[:, p]) > 0.99


def test_faiss_agrees_with_sklearn_reference():
    x, _ = planted(seed=1)
    a = quantize(x, QuantizeConfig(d=8, k=8, backend="faiss"))
    b = quantize(x, QuantizeConfig(d=8, k=8, backend="sklearn"))
    for p in range(2):
        assert adjusted_rand_score(a.codes[:, p], b.codes[:, p]) > 0.99
        assert a.figures["inertia"][p] == pytest.approx(b.figures["inertia"][p], rel=0.01)
    assert a.figures["explained_variance"] == pytest.approx(b.figures["explained_variance"], abs=1e-3)


def test_same_seed_same_codes_and_quantizer_roundtrip(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(600, 48)).astype(np.float32)
    cfg = QuantizeConfig(d=8, k=16, seed=7)
    a, b = quantize_pooled(x, 3, cfg), quantize_pooled(x, 3, cfg)
    np.testing.assert_array_equal(a.codes, b.codes)
    a.quantizer.save(tmp_path / "q.npz")
    loaded = Quantizer.load(tmp_path / "q.npz")
    # a saved quantizer gives every item (and any new one) its codes without refitting
    np.testing.assert_array_equal(loaded.assign(x), a.codes)
    assert loaded.assign(x[:5] + 1e-4).shape == (5, 3)


def test_k_is_capped_with_a_warning():
    x = np.random.default_rng(0).normal(size=(50, 16)).astype(np.float32)
    res = quantize(x, QuantizeConfig(d=4, k=256))
    assert res.k == 50 and res.codes.max() < 50
    assert res.warnings == ["K capped from 256 to 50: only 50 items to cluster"]


def test_small_samples_keep_faiss_centroids_without_its_stderr_advice(capfd):
    import faiss

    y = np.random.default_rng(0).normal(size=(500, 8)).astype(np.float32)  # ~8 points per centroid, < faiss's 39
    cfg = QuantizeConfig(k=64, d=8, init="random")
    ours = quantize(y[:, None, :], cfg)
    assert "WARNING clustering" not in capfd.readouterr().err
    plain = faiss.Kmeans(8, 64, niter=cfg.niter, nredo=cfg.nredo, seed=cfg.seed, verbose=False,
                         max_points_per_centroid=cfg.max_points_per_centroid,
                         init_method=faiss.ClusteringInitMethod_RANDOM)
    plain.train(ours.quantizer.positions[0].project(y))
    assert "WARNING clustering 500 points to 64 centroids" in capfd.readouterr().err  # faiss's default prints it
    np.testing.assert_array_equal(ours.quantizer.positions[0].centroids, plain.centroids)


def test_pca_subspaces_are_decorrelated_and_ordered():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(2000, 24)) @ rng.normal(size=(24, 24))).astype(np.float32)
    views, mean, comps = pca_subspaces(x, 3, 4, QuantizeConfig())
    assert views.shape == (2000, 3, 4) and comps.shape == (12, 24)
    flat = views.reshape(2000, -1)
    corr = np.corrcoef(flat.T)
    off = corr - np.diag(np.diag(corr))
    assert np.abs(off).max() < 1e-3
    var = flat.var(0).reshape(3, 4).sum(1)
    assert var[0] > var[1] > var[2]  # coarse to fine


def test_forced_duplicates_get_dedup_0_1_2():
    codes = np.array([[1, 2], [1, 2], [3, 4], [1, 2], [3, 4], [0, 0]])
    dedup = dedup_index(codes)
    assert dedup.tolist() == [0, 1, 0, 2, 1, 0]
    sids = semantic_ids(codes, dedup)
    assert sids == ["1-2/0", "1-2/1", "3-4/0", "1-2/2", "3-4/1", "0-0/0"]
    assert len(set(sids)) == len(sids)


def test_code_figures_on_hand_made_codes():
    codes = np.array([[0, 1], [0, 1], [1, 1], [2, 1]])
    figs = code_figures(codes, dedup_index(codes), k=4)
    assert figs["utilization"] == [0.75, 0.25]
    assert figs["entropy_bits"] == [1.5, 0.0]  # shares 1/2, 1/4, 1/4
    assert figs["perplexity"] == [2.83, 1.0]
    assert figs["collision_rate"] == 0.25 and figs["max_dedup"] == 1 and figs["unique_code_tuples"] == 3
    assert figs["largest_bucket_share"] == [0.5, 1.0]


def test_random_codes_are_per_item_and_uniform():
    ids = [f"item{i}" for i in range(4000)]
    a = random_codes(ids, 3, 16, seed=1)
    b = random_codes(list(reversed(ids)), 3, 16, seed=1)[::-1]
    np.testing.assert_array_equal(a, b)  # an item's codes do not depend on the others
    assert a.min() == 0 and a.max() == 15
    counts = np.bincount(a[:, 0], minlength=16)
    assert counts.min() > 180 and counts.max() < 320  # ~250 each
    assert not np.array_equal(a, random_codes(ids, 3, 16, seed=2))


def test_checks_catch_each_contract_violation():
    ids = ["a", "b", "c", "d"]
    codes = np.array([[0, 1], [1, 1], [0, 1], [2, 0]])
    frame, _ = build_code_table(ids, codes, k=4)
    ok = {o.name: o.passed for o in check_code_table(frame, ids, 4, 2, min_utilization=0.5)}
    assert all(ok.values()), ok
    assert frame["dedup"].to_list() == [0, 0, 1, 0]
    bad = {o.name: o for o in check_code_table(frame, ["a", "b", "c", "e"], 2, 2, min_utilization=0.0)}
    assert not bad["covers_all_items"].passed and bad["covers_all_items"].metadata == {"missing": 1, "unknown": 1}
    assert not bad["codes_in_range"].passed and bad["codes_in_range"].metadata["out_of_range"] == 1
    collapsed = {o.name: o for o in check_code_table(frame, ids, 4, 2, min_utilization=0.8)}
    assert not collapsed["utilization_above_floor"].passed  # position 0 uses 3 of 4 codes, position 1 two
    assert collapsed["utilization_above_floor"].metadata["utilization"] == [0.75, 0.5]
    dup = build_code_table(["a", "a"], np.array([[0, 0], [0, 0]]), k=2)[0]
    dup = dup.with_columns(dup["semantic_id"].head(1).extend(dup["semantic_id"].head(1)))
    names = {o.name: o.passed for o in check_code_table(dup, ["a"], 2, 2, 0.0)}
    assert names["unique_item_id"] is False and names["unique_semantic_id"] is False


def test_pooled_quantizer_assigns_narrow_embeddings_as_the_fit_did(tmp_path):
    """D <= L x d: the raw dims are split without a PCA, and a saved quantizer must split new rows the same way."""
    x = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
    res = quantize_pooled(x, 4, QuantizeConfig(k=8, d=64))
    res.quantizer.save(tmp_path / "q.npz")
    np.testing.assert_array_equal(Quantizer.load(tmp_path / "q.npz").assign(x), res.codes)


def test_collision_check_passes_warns_then_blocks():
    from ops.codetable import check_collisions

    def outcome(rate):
        return check_collisions({"collision_rate": rate, "max_dedup": 3}, warn=0.05, block=0.5)

    ok, warn, block = outcome(0.01), outcome(0.2), outcome(0.7)
    assert ok.passed and not ok.blocks
    assert not warn.passed and not warn.blocking and not warn.blocks  # published with a warning
    assert not block.passed and block.blocks
    assert block.metadata == {"collision_rate": 0.7, "max_dedup": 3, "warn_above": 0.05, "block_above": 0.5}


def test_fewer_items_than_dimensions_quantize_and_assign(tmp_path):
    """90 items of 384 dims (a small catalog, a MiniLM-wide palette): faiss' PCA has only 90 components."""
    x = np.random.default_rng(0).normal(size=(90, 2, 384)).astype(np.float32)
    res = quantize(x, QuantizeConfig(k=16, d=64))
    assert res.codes.shape == (90, 2) and res.quantizer.positions[0].components.shape == (64, 384)
    np.testing.assert_array_equal(res.quantizer.assign(x), res.codes)
