"""`pq` and `opq`: product quantization of the pooled embedding, without and with OPQ's learned rotation (faiss).

The D dims are cut into M sub-vectors of D / M dims, each quantized with its own K = 2^nbits centroids: M parallel
codes per item, no order between them (the reviewers' "PQ/VQ alternative" to residual codes). `opq` first learns
a rotation (faiss.OPQMatrix, optimized for this very PQ) that balances the variance between the sub-spaces.
Training-free beyond the K-Means; the fitted model is a faiss index (IndexPQ, or IndexPreTransform(OPQ, IndexPQ)),
saved in faiss' own format. faiss packs the M codes of nbits each into bytes; they are unpacked with
faiss.unpack_bitstrings, so an nbits that is not a multiple of 8 (e.g. K = 32) reads back right.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from ops.config import Checked, CodesPerPosition, ConfigError, PositiveInt, Seed
from ops.tokenizers.base import Tokenizer

if TYPE_CHECKING:
    import faiss

INDEX_FILE = "index.faiss"


@dataclass(frozen=True)
class PQConfig(Checked):
    length: PositiveInt = 4  # M sub-spaces = codes per item; D must be a multiple of M
    k: CodesPerPosition = 256  # codes per sub-space, a power of 2 (nbits = log2 K); capped at the number of items
    niter: PositiveInt = 25  # K-Means iterations per sub-space (faiss' default)
    opq_iterations: PositiveInt = 25  # OPQ only: alternations of rotation and PQ
    seed: Seed = 1234

    def check(self) -> None:
        if self.k & (self.k - 1):
            raise ConfigError(f"k = {self.k}: must be a power of 2 (faiss' nbits = log2 K)")


def unpack_codes(packed: np.ndarray, m: int, nbits: int) -> np.ndarray:
    """faiss' packed PQ codes (items x code_size bytes) -> items x M integer codes."""
    import faiss

    packed = np.ascontiguousarray(packed, dtype=np.uint8)
    return faiss.unpack_bitstrings(packed, m, nbits).astype(np.int64)


class ProductQuantization(Tokenizer):
    config_type = PQConfig
    rotate: ClassVar[bool] = False

    def __init__(self, config: PQConfig):
        super().__init__(config)
        self.index: faiss.Index | None = None
        self.nbits = 0

    def fit(self, x: np.ndarray | None, item_ids: Sequence[str]) -> np.ndarray:
        import faiss

        cfg = self.config
        x = np.ascontiguousarray(x, dtype=np.float32)
        n, dim = x.shape
        if dim % cfg.length:
            raise ValueError(f"{type(self).__name__}: embedding width {dim} is not a multiple of length={cfg.length}")
        self.nbits = int(math.log2(min(cfg.k, 1 << int(math.log2(max(n, 2))))))
        if (1 << self.nbits) < cfg.k:
            self.warnings.append(f"K capped from {cfg.k} to {1 << self.nbits}: only {n} items to train on")
        pq_index = faiss.IndexPQ(dim, cfg.length, self.nbits)
        pq = pq_index.pq
        pq.cp.seed, pq.cp.niter = cfg.seed, cfg.niter
        # faiss asks for 39 points per centroid (a printed notice only); small catalogs are expected here
        pq.cp.min_points_per_centroid = 1
        if self.rotate:
            opq = faiss.OPQMatrix(dim, cfg.length)
            opq.niter = cfg.opq_iterations
            opq.pq = pq  # the rotation is optimised for this PQ (its nbits), not faiss' default 8 bits
            self.index = faiss.IndexPreTransform(opq, pq_index)
            self._keep = (opq, pq_index)  # the swig objects must outlive the index that points at them
        else:
            self.index = pq_index
        self.index.train(x)
        self.length, self.k = cfg.length, 1 << self.nbits
        codes = self.encode(x, item_ids)
        recon = self.index.sa_decode(self.index.sa_encode(x))
        self.figures = {"reconstruction_mse": round(float(((x - recon) ** 2).mean()), 8),
                        "relative_reconstruction_error": round(float(
                            ((x - recon) ** 2).sum() / max(((x - x.mean(0)) ** 2).sum(), 1e-12)), 6),
                        "nbits": self.nbits, "subspace_dim": dim // cfg.length}
        return codes

    def encode(self, x: np.ndarray | None, item_ids: Sequence[str]) -> np.ndarray:
        if self.index is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted")
        packed = self.index.sa_encode(np.ascontiguousarray(x, dtype=np.float32))
        return unpack_codes(packed, self.length, self.nbits)

    def save(self, directory: Path) -> None:
        import faiss

        super().save(directory)
        if self.index is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted")
        faiss.write_index(self.index, str(Path(directory) / INDEX_FILE))

    def _load_model(self, directory: Path) -> None:
        import faiss

        self.index = faiss.read_index(str(directory / INDEX_FILE))
        self.nbits = int(math.log2(self.k))


class OptimizedProductQuantization(ProductQuantization):
    rotate = True
