"""`random`: uniform random codes, a pure function of (seed, item_id) — the sanity baseline."""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ops.config import Checked, CodesPerPosition, PositiveInt, Seed
from ops.tokenizers.base import Tokenizer


@dataclass(frozen=True)
class RandomConfig(Checked):
    length: PositiveInt = 4
    k: CodesPerPosition = 256
    seed: Seed = 0


def random_codes(item_ids: Sequence[str], length: int, k: int, seed: int) -> np.ndarray:
    """Uniform random codes, a pure function of (seed, item_id): an item keeps its codes when others change."""
    out = np.empty((len(item_ids), length), dtype=np.int64)
    for row, item in enumerate(item_ids):
        digest = hashlib.blake2b(f"{seed}\x1f{item}".encode(), digest_size=8 * length).digest()
        out[row] = np.frombuffer(digest, dtype="<u8") % k
    return out


class RandomCodes(Tokenizer):
    config_type = RandomConfig

    def fit(self, x: np.ndarray | None, item_ids: Sequence[str]) -> np.ndarray:
        self.length, self.k = self.config.length, self.config.k
        return self.encode(x, item_ids)

    def encode(self, x: np.ndarray | None, item_ids: Sequence[str]) -> np.ndarray:
        return random_codes(item_ids, self.config.length, self.config.k, self.config.seed)
