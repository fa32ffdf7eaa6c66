"""Shared by the tokenizers whose fitted model is an ops.quantize.Quantizer (`pca_kmeans`, `lamia`)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ops.quantize import Quantizer, QuantizeResult
from ops.tokenizers.base import Tokenizer


class QuantizerTokenizer(Tokenizer):
    """A tokenizer whose fitted model is an ops.quantize.Quantizer (PCA + centroids per position), saved as
    `quantizer.npz` (plain arrays, no pickle) beside tokenizer.json."""

    QUANTIZER_FILE: ClassVar[str] = "quantizer.npz"

    def __init__(self, config: Any):
        super().__init__(config)
        self.quantizer: Quantizer | None = None

    def _fitted(self, result: QuantizeResult) -> np.ndarray:
        self.quantizer, self.k, self.length = result.quantizer, result.k, result.codes.shape[1]
        self.figures, self.warnings = result.figures, result.warnings
        return result.codes

    def encode(self, x: np.ndarray | None, item_ids: Sequence[str]) -> np.ndarray:
        if self.quantizer is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted")
        return self.quantizer.assign(np.asarray(x, dtype=np.float32))

    def save(self, directory: Path) -> None:
        super().save(directory)
        if self.quantizer is not None:
            self.quantizer.save(Path(directory) / self.QUANTIZER_FILE)

    def _load_model(self, directory: Path) -> None:
        self.quantizer = Quantizer.load(directory / self.QUANTIZER_FILE)
