"""Semantic IDs as tokens: each item is its L codes plus its dedup index, every position with a vocabulary of its own
(code c at position l is its own token), after a few special tokens. Histories become token sequences."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from ops.codetable import codes_array

SPECIALS = ("<pad>", "<bos>", "<eos>")
PAD, BOS, EOS = 0, 1, 2


@dataclass(frozen=True)
class SemanticVocab:
    """Token ids of a code table: position l (0..L, the last one the dedup index) holds `sizes[l]` tokens starting
    at `offsets[l]`; `item_tokens[i]` are item i's L + 1 tokens. Item i is row i of the code table."""

    item_ids: tuple[str, ...]
    item_codes: np.ndarray  # items x (L + 1): codes then dedup, as position-local values
    sizes: tuple[int, ...]
    offsets: tuple[int, ...]
    table: str  # where the codes came from, for error messages

    @classmethod
    def from_code_table(cls, frame: pl.DataFrame, table: str = "code table") -> SemanticVocab:
        codes = codes_array(frame)
        full = np.concatenate([codes, frame["dedup"].to_numpy().astype(np.int64)[:, None]], axis=1)
        sizes = tuple(int(full[:, p].max()) + 1 for p in range(full.shape[1]))
        offsets = tuple(int(x) for x in len(SPECIALS) + np.concatenate([[0], np.cumsum(sizes)[:-1]]))
        return cls(tuple(frame["item_id"].to_list()), full, sizes, offsets, table)

    @property
    def positions(self) -> int:
        return len(self.sizes)

    @property
    def size(self) -> int:
        """Vocabulary size: specials + every position's tokens."""
        return len(SPECIALS) + sum(self.sizes)

    @property
    def item_tokens(self) -> np.ndarray:
        return self.item_codes + np.asarray(self.offsets)[None, :]

    def index_of(self) -> dict[str, int]:
        return {item: i for i, item in enumerate(self.item_ids)}

    def items(self, item_ids: Sequence[str]) -> np.ndarray:
        """Row indices of item ids; an id missing from the code table is an error naming it and the table."""
        index = self.index_of()
        missing = [i for i in item_ids if i not in index]
        if missing:
            raise KeyError(f"{len(missing)} item(s) are not in {self.table}, e.g. {missing[:3]}: the code table must "
                           "cover every item of the sequences (re-materialize it after the items changed)")
        return np.array([index[i] for i in item_ids], dtype=np.int64)

    def history_tokens(self, history: Sequence[str], max_items: int = 20) -> list[int]:
        """<bos> then the tokens of the last `max_items` items, oldest first."""
        rows = self.items(list(history)[-max_items:]) if history else np.zeros(0, np.int64)
        return [BOS, *self.item_tokens[rows].reshape(-1).tolist()]
