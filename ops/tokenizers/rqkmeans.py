"""`rqkmeans`: residual K-Means on the pooled embedding, training-free (faiss K-Means per level).

Level 1 clusters the embeddings into K codes; level l clusters what levels 1..l-1 left unexplained (the residual
x - sum of the chosen centroids), so codes go coarse to fine and the residual norm falls level by level (the
RQ-KMeans of GRID / MiniOneRec / TorchEasyRec). faiss' ResidualQuantizer would do the same with a beam; this keeps
the greedy assignment those peers use and our K-Means seeding (greedy k-means++, ops.quantize), with any K.
Centroids are saved as safetensors.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ops.config import Checked, CodesPerPosition, PositiveInt, Seed
from ops.quantize import InitMethod, QuantizeConfig, kmeans, nearest
from ops.tokenizers.base import Tokenizer

CENTROIDS_FILE = "centroids.safetensors"


@dataclass(frozen=True)
class RQKMeansConfig(Checked):
    length: PositiveInt = 3  # levels (TIGER / GRID use 3, plus the dedup index)
    k: CodesPerPosition = 256  # codes per level (capped at the number of items)
    niter: PositiveInt = 20
    seed: Seed = 0
    init: InitMethod = "greedy_kmeans++"

    def quantize_config(self) -> QuantizeConfig:
        return QuantizeConfig(k=self.k, niter=self.niter, seed=self.seed, init=self.init)


def residual_k(k: int, n: int) -> int:
    """K of a residual level, at most half the items: with one code per item the first level leaves no residual
    and every later level names a single code."""
    return max(2, min(k, n // 2))


def residual_assign(centroids: Sequence[np.ndarray], x: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """Greedy residual codes (items x L) and the mean residual norm after each level (index 0: before any)."""
    residual = np.ascontiguousarray(x, dtype=np.float32).copy()
    codes, norms = [], [float(np.linalg.norm(residual, axis=1).mean())]
    for c in centroids:
        code, _ = nearest(c, residual)
        residual -= c[code]
        codes.append(code)
        norms.append(float(np.linalg.norm(residual, axis=1).mean()))
    return np.stack(codes, axis=1), norms


class RQKMeans(Tokenizer):
    config_type = RQKMeansConfig

    def __init__(self, config: RQKMeansConfig):
        super().__init__(config)
        self.centroids: list[np.ndarray] = []

    def fit(self, x: np.ndarray | None, item_ids: Sequence[str]) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        cfg = self.config
        k = residual_k(cfg.k, len(x))
        if k < cfg.k:
            self.warnings.append(f"K capped from {cfg.k} to {k}: only {len(x)} items to cluster")
        residual = x.copy()
        self.centroids = []
        for level in range(cfg.length):
            # a level's seed differs from the last one's: identical seeding on a near-zero residual is wasted
            c = kmeans(residual, k, replace(cfg.quantize_config(), seed=cfg.seed + level))
            code, _ = nearest(c, residual)
            residual -= c[code]
            self.centroids.append(c)
        self.length, self.k = cfg.length, k
        codes, norms = residual_assign(self.centroids, x)
        self.figures = {"residual_norm": [round(v, 6) for v in norms],
                        "reconstruction_mse": round(float((residual ** 2).mean()), 8),
                        "relative_reconstruction_error": round(float(
                            (residual ** 2).sum() / max(((x - x.mean(0)) ** 2).sum(), 1e-12)), 6)}
        return codes

    def encode(self, x: np.ndarray | None, item_ids: Sequence[str]) -> np.ndarray:
        if not self.centroids:
            raise RuntimeError("RQKMeans is not fitted")
        return residual_assign(self.centroids, np.asarray(x, dtype=np.float32))[0]

    def save(self, directory: Path) -> None:
        from safetensors.numpy import save_file

        super().save(directory)
        save_file({f"level{i}": np.ascontiguousarray(c) for i, c in enumerate(self.centroids)},
                  str(Path(directory) / CENTROIDS_FILE))

    def _load_model(self, directory: Path) -> None:
        from safetensors.numpy import load_file

        arrays = load_file(str(directory / CENTROIDS_FILE))
        self.centroids = [arrays[f"level{i}"] for i in range(self.length)]
