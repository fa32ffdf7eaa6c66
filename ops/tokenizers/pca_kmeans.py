"""`pca_kmeans`: PCA + K-Means codes of the pooled item embedding (ops.quantize.quantize_pooled)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ops.config import PositiveInt
from ops.quantize import InitMethod, QuantizeConfig, quantize_pooled
from ops.tokenizers.quantized import QuantizerTokenizer


@dataclass(frozen=True)
class PcaKMeansConfig(QuantizeConfig):
    """One PCA of the pooled embedding to L x d dims, split into L sub-spaces of d principal components (coarse
    to fine, uncorrelated), K-Means with K codes in each. Defaults: LAMIA's L = 4, K = 256, d = 64."""

    length: PositiveInt = 4  # L: a pooled embedding has no positions of its own
    # Quality over speed here: greedy k-means++ costs little next to the embedding stage and does not merge
    # well-separated clusters (bench/quantize.py, bench/RESULTS.md); `afkmc2` is the fast one.
    init: InitMethod = "greedy_kmeans++"


class PcaKMeans(QuantizerTokenizer):
    config_type = PcaKMeansConfig

    def fit(self, x: np.ndarray | None, item_ids: Sequence[str]) -> np.ndarray:
        return self._fitted(quantize_pooled(np.asarray(x, dtype=np.float32), self.config.length, self.config))
