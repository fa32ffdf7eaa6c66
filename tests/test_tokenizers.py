"""The codebook tokenizers (moc, rqvae, rqkmeans, pq, opq) on synthetic embeddings with planted structure."""
import numpy as np
import pytest
from sklearn.metrics import normalized_mutual_info_score as nmi

from ops.tokenizers import REGISTRY
from ops.tokenizers.moc import MixtureOfCodes, MoCConfig
from ops.tokenizers.pq import OptimizedProductQuantization, PQConfig, ProductQuantization
from ops.tokenizers.rqkmeans import RQKMeans, RQKMeansConfig
from ops.tokenizers.rqvae import RQVAE, RQVAEConfig

N, CLUSTERS = 600, 8
FAST_VQ = dict(k=16, latent_dim=8, hidden=[32], epochs=30, batch_size=128)
TOKENIZERS = {
    "rqkmeans": lambda **kw: RQKMeans(RQKMeansConfig(k=16, **kw)),
    "pq": lambda **kw: ProductQuantization(PQConfig(k=16, **kw)),
    "opq": lambda **kw: OptimizedProductQuantization(PQConfig(k=16, opq_iterations=5, **kw)),
    "rqvae": lambda **kw: RQVAE(RQVAEConfig(**FAST_VQ, **kw)),
    "moc": lambda **kw: MixtureOfCodes(MoCConfig(**FAST_VQ, **kw)),
}


def clusters(seed=0, n=N, dim=32, k=CLUSTERS, spread=4.0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    return (rng.normal(size=(k, dim)) * spread)[labels].astype(np.float32) + rng.normal(size=(n, dim)).astype(
        np.float32), labels


def aspects(seed=0, n=N, parts=3, dim=16, k=CLUSTERS):
    """Items made of several independent planted aspects, each in its own block of dims."""
    rng = np.random.default_rng(seed)
    labels = [rng.integers(0, k, n) for _ in range(parts)]
    x = np.concatenate([(rng.normal(size=(k, dim)) * 3)[lab] for lab in labels], axis=1)
    return (x + rng.normal(size=x.shape)).astype(np.float32), labels


IDS = [f"i{i}" for i in range(N)]


def test_every_codebook_tokenizer_is_registered_on_the_pooled_embeddings():
    for name in TOKENIZERS:
        assert REGISTRY[name].source == "item_embeddings" and REGISTRY[name].column == "embedding"


@pytest.mark.parametrize("name", TOKENIZERS)
def test_planted_clusters_are_recovered_far_above_chance(name):
    x, labels = clusters()
    tok = TOKENIZERS[name]()
    codes = tok.fit(x, IDS)
    assert codes.shape == (N, tok.length) and codes.min() >= 0 and codes.max() < tok.k
    best = max(nmi(labels, codes[:, i]) for i in range(codes.shape[1]))
    chance = nmi(labels, np.random.default_rng(1).integers(0, tok.k, N))
    assert best > 0.7 > 0.1 > chance, (name, best, chance)
    assert tok.figures["reconstruction_mse"] >= 0 and 0 <= tok.figures["relative_reconstruction_error"] < 1


@pytest.mark.parametrize("name", TOKENIZERS)
def test_save_load_gives_the_same_codes_and_new_items_need_no_refit(name, tmp_path):
    x, _ = clusters()
    tok = TOKENIZERS[name]()
    codes = tok.fit(x[:500], IDS[:500])
    tok.save(tmp_path)
    loaded = type(tok).load(tmp_path)
    np.testing.assert_array_equal(loaded.encode(x[:500], IDS[:500]), codes)
    new = loaded.encode(x[500:], IDS[500:])  # items the fit never saw
    np.testing.assert_array_equal(new, tok.encode(x[500:], IDS[500:]))
    assert new.shape == (100, tok.length) and new.max() < tok.k
    assert not list(tmp_path.glob("*.pkl")) and not list(tmp_path.glob("*.pt"))


@pytest.mark.parametrize("name", TOKENIZERS)
def test_codes_are_a_function_of_the_seed(name):
    x, _ = clusters()
    a, b = TOKENIZERS[name]().fit(x, IDS), TOKENIZERS[name]().fit(x, IDS)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", ["rqkmeans", "rqvae"])
def test_residual_norms_fall_level_by_level(name):
    x, _ = clusters()
    tok = TOKENIZERS[name](length=4)
    tok.fit(x, IDS)
    norms = tok.figures["residual_norm"]
    assert len(norms) == 5 and all(a > b for a, b in zip(norms, norms[1:])), norms


def test_moc_gives_n_codes_and_its_shared_decoder_reconstructs_better_with_three_codebooks():
    x, _ = aspects()
    errors = {}
    for n in (1, 3):
        tok = MixtureOfCodes(MoCConfig(**{**FAST_VQ, "epochs": 60}, length=n))
        codes = tok.fit(x, IDS)
        assert codes.shape == (N, n)
        errors[n] = tok.figures["reconstruction_mse"]
    assert errors[3] < 0.95 * errors[1], errors


def test_moc_with_one_decoder_per_codebook_runs_and_saves(tmp_path):
    x, _ = aspects()
    tok = MixtureOfCodes(MoCConfig(**FAST_VQ, length=3, decoder="per_codebook"))
    codes = tok.fit(x, IDS)
    assert len(tok.model.decoders) == 3 and codes.shape == (N, 3)
    tok.save(tmp_path)
    np.testing.assert_array_equal(MixtureOfCodes.load(tmp_path).encode(x, IDS), codes)


def test_dead_code_restart_revives_unused_codes():
    """Random codebooks far from the data leave most codes unused; restarts move them onto the latents."""
    x, _ = clusters()
    used = {}
    for every in (0, 5):
        tok = RQVAE(RQVAEConfig(**{**FAST_VQ, "k": 32}, length=1, kmeans_init=False, restart_every=every))
        codes = tok.fit(x, IDS)
        used[every] = len(np.unique(codes[:, 0]))
        assert (tok.figures["dead_code_restarts"][0] > 0) == bool(every)
    assert used[5] >= 2 * used[0], used


class CollapsedInit(RQVAE):
    """A planted collapse: every codeword of every level starts at one point far from the latents, so one code
    takes every item (the handful-of-IDs failure of peers' RQ-VAEs)."""

    def _kmeans_init(self, data):
        import torch

        with torch.no_grad():
            self.model.codebooks.copy_(torch.full_like(self.model.codebooks, 5.0)
                                       + 1e-3 * torch.randn_like(self.model.codebooks))


def test_a_planted_collapse_is_flagged_and_dead_code_restarts_undo_it():
    x, _ = aspects()
    cfg = {**FAST_VQ, "k": 32}
    collapsed = CollapsedInit(RQVAEConfig(**cfg, restart_every=0))
    bad = collapsed.fit(x, IDS)
    assert len(np.unique(bad, axis=0)) <= 40
    assert any("collapse" in w for w in collapsed.warnings)
    revived = CollapsedInit(RQVAEConfig(**cfg, restart_every=5))
    good = revived.fit(x, IDS)
    assert len(np.unique(good, axis=0)) > 0.5 * N and not any("collapse" in w for w in revived.warnings)


def test_reconstruction_and_commitment_are_per_item_sums_on_one_scale():
    """The balance peers got wrong: both terms are sums over their vector's dims, averaged over items."""
    import torch

    x, _ = clusters()
    tok = RQVAE(RQVAEConfig(**{**FAST_VQ, "epochs": 1}))
    tok.fit(x, IDS)
    model = tok.model
    with torch.no_grad():
        data = torch.from_numpy(x)
        out = model(data)
        xs = model.standardize(data)
        x_hat = (out["x_hat"] - model.mean) / model.scale
        z = model.encoder(xs)
        r, commit = z, 0.0
        for level in range(3):
            q = model.codebooks[level][out["codes"][:, level]]
            commit += float(((r - q) ** 2).sum(1).mean())
            r = r - q
    assert float(out["recon"]) == pytest.approx(float(((xs - x_hat) ** 2).sum(1).mean()), rel=1e-4)
    assert float(out["commit"]) == pytest.approx(commit, rel=1e-4)


@pytest.mark.parametrize("k", [32, 256, 8])
def test_pq_codes_are_unpacked_right_when_bits_are_not_a_multiple_of_8(k):
    import faiss

    x, _ = clusters(dim=32)
    tok = ProductQuantization(PQConfig(length=4, k=k))
    codes = tok.fit(x, IDS)
    pq = tok.index.pq
    assert pq.nbits == int(np.log2(k)) and tok.k == k
    centroids = faiss.vector_to_array(pq.centroids).reshape(4, k, 8)
    for m in range(4):  # each code is the nearest centroid of its sub-vector
        d = ((x[:, None, m * 8:(m + 1) * 8] - centroids[m][None]) ** 2).sum(-1)
        np.testing.assert_array_equal(codes[:, m], d.argmin(1))


def test_pq_caps_k_at_a_power_of_two_the_catalog_can_train_and_refuses_a_bad_width():
    x, _ = clusters(n=100, dim=32)
    tok = ProductQuantization(PQConfig(length=4, k=256))
    codes = tok.fit(x, IDS[:100])
    assert tok.k == 64 and codes.max() < 64 and "capped" in tok.warnings[0]
    with pytest.raises(ValueError, match="multiple of length"):
        ProductQuantization(PQConfig(length=5)).fit(x, IDS[:100])
    with pytest.raises(ValueError, match="power of 2"):
        PQConfig(k=100)


def test_opq_rotation_balances_subspaces_better_than_pq_on_correlated_dims():
    """All variance in the first dims: plain PQ spends three sub-spaces on noise, OPQ rotates it across them."""
    rng = np.random.default_rng(0)
    x = np.zeros((N, 32), np.float32)
    x[:, :8] = rng.normal(size=(N, 8)) * 5
    x += rng.normal(size=x.shape).astype(np.float32) * 0.1
    pq = ProductQuantization(PQConfig(k=16))
    opq = OptimizedProductQuantization(PQConfig(k=16))
    pq.fit(x, IDS)
    opq.fit(x, IDS)
    assert opq.figures["reconstruction_mse"] < 0.8 * pq.figures["reconstruction_mse"]
