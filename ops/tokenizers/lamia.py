"""`lamia`: each position of the learned item palette (palette_embeddings, items x L x D) quantized on its own."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ops.quantize import InitMethod, QuantizeConfig, quantize
from ops.tokenizers.quantized import QuantizerTokenizer


@dataclass(frozen=True)
class LamiaCodesConfig(QuantizeConfig):
    """PCA D -> d, then K-Means with K codes, per palette position (LAMIA §4.2.3). L is the palette's size."""

    init: InitMethod = "greedy_kmeans++"  # as pca_kmeans


class LamiaCodes(QuantizerTokenizer):
    config_type = LamiaCodesConfig

    def fit(self, x: np.ndarray | None, item_ids: Sequence[str]) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 3:
            raise ValueError(f"lamia fits on palettes (items x L x D), got shape {x.shape}")
        return self._fitted(quantize(x, self.config))
