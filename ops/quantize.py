"""PCA + K-Means per palette position (LAMIA §4.2.3): the quantizer behind the `pca_kmeans` and `lamia` tokenizers.

Input: an `items x L x D` float array (L = 1 for a single pooled embedding). Each position is reduced D -> d by
PCA and clustered into K codes, independently of the other positions. faiss does the work (a GPU index when
faiss-gpu and CUDA are present); scikit-learn is the reference backend used by tests and bench/quantize.py.

The fitted `Quantizer` (PCA matrices + centroids) is kept next to each code table, so new items can be assigned
codes later without refitting (and without moving any existing item).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, cast, get_args

import numpy as np

from ops.config import Checked, CodesPerPosition, ConfigError, PositiveInt, Seed

InitMethod = Literal["afkmc2", "kmeans++", "random", "greedy_kmeans++"]
INIT_METHODS = {"afkmc2": "AFK_MC2", "kmeans++": "KMEANS_PLUS_PLUS", "random": "RANDOM", "greedy_kmeans++": None}
assert set(INIT_METHODS) == set(get_args(InitMethod))
GREEDY_SAMPLE_PER_CENTROID = 16


@dataclass(frozen=True)
class QuantizeConfig(Checked):
    d: PositiveInt = 64  # PCA output dim per position (skipped when the input is not wider)
    k: CodesPerPosition = 256  # codes per position (capped at the number of items)
    niter: PositiveInt = 20
    nredo: PositiveInt = 1
    seed: Seed = 0
    backend: Literal["faiss", "sklearn"] = "faiss"  # sklearn: the reference
    gpu: Literal["auto", "never"] = "auto"  # auto: a faiss GPU index when faiss-gpu sees a CUDA device
    max_points_per_centroid: PositiveInt = 256  # faiss subsamples training points beyond K x this (faiss default)
    # Seeding. faiss' default (random points) often puts two seeds in one true cluster and k-means never
    # recovers; AFK-MC2 approximates k-means++ at about random-init cost. On K well-separated clusters only
    # *greedy* k-means++ (sklearn's kmeans_plusplus on a 16 K-point sample, then faiss Lloyd) avoids merged
    # clusters, at a higher cost (figures: bench/RESULTS.md, "Figures behind design choices"). The sklearn backend
    # always uses its own greedy k-means++ unless init=random.
    init: InitMethod = "afkmc2"

    def check(self) -> None:
        if self.backend not in ("faiss", "sklearn"):
            raise ConfigError(f"backend must be 'faiss' or 'sklearn', got {self.backend!r}")
        if self.gpu not in ("auto", "never"):
            raise ConfigError(f"gpu must be 'auto' or 'never', got {self.gpu!r}")
        if self.init not in INIT_METHODS:
            raise ConfigError(f"init must be one of {tuple(INIT_METHODS)}, got {self.init!r}")


def faiss_gpus() -> int:
    try:
        import faiss

        return faiss.get_num_gpus() if hasattr(faiss, "StandardGpuResources") else 0
    except Exception:  # pragma: no cover - broken faiss install
        return 0


@dataclass
class PositionModel:
    """PCA (mean, components: d x D) or None, then centroids K x d."""

    mean: np.ndarray | None
    components: np.ndarray | None
    centroids: np.ndarray

    def project(self, x: np.ndarray) -> np.ndarray:
        if self.components is None:
            return np.ascontiguousarray(x, dtype=np.float32)
        return np.ascontiguousarray((x - self.mean) @ self.components.T, dtype=np.float32)

    def assign(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nearest centroid (codes, squared distances) for raw position vectors x (n x D)."""
        return nearest(self.centroids, self.project(x))


def nearest(centroids: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    dist, idx = index.search(np.ascontiguousarray(y, dtype=np.float32), 1)
    return idx[:, 0].astype(np.int64), dist[:, 0]


def _pca(x: np.ndarray, d: int, cfg: QuantizeConfig) -> tuple[np.ndarray | None, np.ndarray | None, float]:
    """(mean, components d x D, explained variance ratio); no PCA when it would not reduce."""
    n, dim = x.shape
    d = min(d, dim, max(n - 1, 1))
    if d >= dim:
        return None, None, 1.0
    if cfg.backend == "sklearn":
        from sklearn.decomposition import PCA

        pca = PCA(n_components=d, svd_solver="full", random_state=cfg.seed).fit(x)
        return pca.mean_.astype(np.float32), pca.components_.astype(np.float32), float(
            pca.explained_variance_ratio_.sum())
    import faiss

    pca = faiss.PCAMatrix(dim, d)
    pca.train(np.ascontiguousarray(x, dtype=np.float32))
    mean = faiss.vector_to_array(pca.mean).astype(np.float32)
    # PCAMat holds min(n, D) components of D values (fewer items than dims: fewer than D rows)
    comps = faiss.vector_to_array(pca.PCAMat).reshape(-1, dim)[:d].astype(np.float32)
    eig = faiss.vector_to_array(pca.eigenvalues)
    return mean, comps, float(eig[:d].sum() / eig.sum()) if eig.sum() > 0 else 1.0


def kmeans(y: np.ndarray, k: int, cfg: QuantizeConfig) -> np.ndarray:
    """K centroids of y (faiss Lloyd from the configured seeding, or scikit-learn)."""
    if cfg.backend == "sklearn":
        from sklearn.cluster import KMeans

        km = KMeans(n_clusters=k, n_init=cfg.nredo, max_iter=cfg.niter, random_state=cfg.seed,
                    init="random" if cfg.init == "random" else "k-means++").fit(y)
        return km.cluster_centers_.astype(np.float32)
    import faiss

    method = INIT_METHODS[cfg.init]
    extra = {"init_method": getattr(faiss, f"ClusteringInitMethod_{method}")} if method else {}
    km = faiss.Kmeans(y.shape[1], k, niter=cfg.niter, nredo=cfg.nredo, seed=cfg.seed, verbose=False,
                      gpu=cfg.gpu == "auto" and faiss_gpus() > 0,
                      max_points_per_centroid=cfg.max_points_per_centroid,
                      # faiss prints (C++ stderr, no Python warning) "please provide at least 39 K points" below
                      # 39 points per centroid; it only gates that message (same centroids, tested), and the
                      # demo samples are that small by design (the K cap is reported in the metadata).
                      min_points_per_centroid=1, **extra)
    init = None
    if method is None:  # greedy k-means++ seeds from a sample, faiss runs Lloyd from them
        from sklearn.cluster import kmeans_plusplus

        rng = np.random.default_rng(cfg.seed)
        sample = y[rng.choice(len(y), min(len(y), GREEDY_SAMPLE_PER_CENTROID * k), replace=False)]
        init = np.ascontiguousarray(kmeans_plusplus(sample, k, random_state=cfg.seed)[0], dtype=np.float32)
    km.train(y, init_centroids=init)
    if km.centroids is None:  # faiss' stub: None until trained
        raise RuntimeError("faiss Kmeans has no centroids after training")
    return km.centroids.astype(np.float32)


def fit_position(x: np.ndarray, cfg: QuantizeConfig) -> tuple[PositionModel, np.ndarray, dict[str, float]]:
    """PCA + K-Means of one position: (model, codes, figures)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    k = min(cfg.k, x.shape[0])
    mean, comps, explained = _pca(x, cfg.d, cfg)
    model = PositionModel(mean, comps, np.empty((0, 0), np.float32))
    y = model.project(x)
    model.centroids = kmeans(y, k, cfg)
    codes, dist = nearest(model.centroids, y)
    return model, codes, {"inertia": float(dist.sum()), "explained_variance": explained, "k": k}


@dataclass
class Quantizer:
    """Everything needed to give a new item its codes: optional input projection, then one model per position."""

    positions: list[PositionModel]
    k: int
    input_mean: np.ndarray | None = None  # pca_kmeans: one PCA of the pooled vector, split into L sub-spaces
    input_components: np.ndarray | None = None

    @property
    def length(self) -> int:
        return len(self.positions)

    def views(self, x: np.ndarray) -> np.ndarray:
        if self.input_components is None:
            return x if x.ndim == 3 else x[:, None, :]
        y = (x - self.input_mean) @ self.input_components.T
        return y.reshape(len(x), self.length, -1)

    def assign(self, x: np.ndarray) -> np.ndarray:
        v = self.views(np.asarray(x, dtype=np.float32))
        return np.stack([p.assign(v[:, i])[0] for i, p in enumerate(self.positions)], axis=1)

    def save(self, path: Path) -> None:
        arrays: dict[str, np.ndarray] = {"k": np.array(self.k)}
        if self.input_components is not None:
            # the PCA's mean and components are set together (quantize_pooled)
            arrays["input_mean"] = cast(np.ndarray, self.input_mean)
            arrays["input_components"] = self.input_components
        for i, p in enumerate(self.positions):
            arrays[f"p{i}_centroids"] = p.centroids
            if p.components is not None:
                # _pca returns mean and components together, or neither
                arrays[f"p{i}_mean"], arrays[f"p{i}_components"] = cast(np.ndarray, p.mean), p.components
        with open(path, "wb") as fh:
            # numpy's stub matches **arrays against savez' allow_pickle: bool (numpy >= 2.1); the keys are names
            np.savez(fh, **cast(dict[str, Any], arrays))

    @classmethod
    def load(cls, path: Path) -> "Quantizer":
        z = np.load(path)
        n = sum(1 for key in z.files if key.endswith("_centroids"))
        positions = [PositionModel(z.get(f"p{i}_mean"), z.get(f"p{i}_components"), z[f"p{i}_centroids"])
                     for i in range(n)]
        return cls(positions, int(z["k"]), z.get("input_mean"), z.get("input_components"))


@dataclass
class QuantizeResult:
    codes: np.ndarray  # items x L, int64 in [0, k)
    quantizer: Quantizer
    k: int
    figures: dict[str, object] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def _capped_k(n: int, cfg: QuantizeConfig) -> tuple[int, list[str]]:
    if n >= cfg.k:
        return cfg.k, []
    return n, [f"K capped from {cfg.k} to {n}: only {n} items to cluster"]


def quantize(x: np.ndarray, cfg: QuantizeConfig) -> QuantizeResult:
    """x: items x L x D (or items x D for L = 1). Positions are independent."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 2:
        x = x[:, None, :]
    if x.ndim != 3 or x.shape[0] == 0:
        raise ValueError(f"expected a non-empty items x L x D array, got shape {x.shape}")
    k, notes = _capped_k(x.shape[0], cfg)
    models, codes, per_pos = [], [], []
    for i in range(x.shape[1]):
        model, c, figs = fit_position(x[:, i], cfg)
        models.append(model)
        codes.append(c)
        per_pos.append(figs)
    codes_arr = np.stack(codes, axis=1)
    result = QuantizeResult(codes_arr, Quantizer(models, k), k, warnings=notes)
    result.figures = {"inertia": [p["inertia"] for p in per_pos],
                      "explained_variance": [round(p["explained_variance"], 4) for p in per_pos]}
    return result


def pca_subspaces(x: np.ndarray, length: int, d: int, cfg: QuantizeConfig
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One pooled vector per item -> L views: PCA to L*d dims, position i = components [i*d, (i+1)*d).

    Positions are then decorrelated by construction (principal components are uncorrelated) and ordered by
    variance, coarse to fine. When D < L*d, d shrinks to D // L.
    """
    n, dim = x.shape
    d = max(1, min(d, dim // length, max(n - 1, 1) // length))
    mean, comps, _ = _pca(x, length * d, replace(cfg, d=length * d))
    # already narrow (_pca then returns neither mean nor components): split the raw dims; the projection that does so
    # is kept for new items
    if mean is None or comps is None:
        return (x[:, : length * d].reshape(n, length, d), np.zeros(dim, np.float32),
                np.eye(length * d, dim, dtype=np.float32))
    y = ((x - mean) @ comps.T).astype(np.float32)
    return y.reshape(n, length, d), mean, comps


def quantize_pooled(x: np.ndarray, length: int, cfg: QuantizeConfig) -> QuantizeResult:
    """The `pca_kmeans` tokenizer on a pooled embedding: L PCA sub-spaces, K-Means in each."""
    views, mean, comps = pca_subspaces(np.asarray(x, dtype=np.float32), length, cfg.d, cfg)
    result = quantize(views, cfg)
    result.quantizer.input_mean, result.quantizer.input_components = mean, comps
    return result
