"""The tokenizer interface: what every `code_table/<name>` is made by (DESIGN §1, §4).

A tokenizer has the shape of a faiss index: `fit` learns from the rows it is given (pooled embeddings
`items x D`, palettes `items x L x D`, or only item ids) and returns their codes; `encode` assigns codes to new
rows with the fitted model, without a refit; `save` writes the fitted model into a directory and `load` reads it
back. Codes are `items x L` integers in `[0, k)`. Everything a code table needs beyond the codes (dedup index,
semantic ids, figures, checks) is shared in ops.codetable, so a tokenizer only maps rows to codes.

The registry (ops.tokenizers) names each tokenizer, its config type and the table it reads; the assets layer
builds one `code_table/<name>` asset per entry, with the same checks and lineage for all.
"""
from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

META_FILE = "tokenizer.json"


class Tokenizer(ABC):
    """Subclasses set `config_type` (a dataclass: the tokenizer's own settings) and implement the four methods.
    After `fit`, `length` (L) and `k` are known; `figures` and `warnings` describe the fit (for metadata)."""

    config_type: ClassVar[type]

    def __init__(self, config: Any):
        self.config = config
        self.length = 0
        self.k = 0
        self.figures: dict[str, Any] = {}
        self.warnings: list[str] = []

    @abstractmethod
    def fit(self, x: np.ndarray | None, item_ids: Sequence[str]) -> np.ndarray:
        """Learn from these rows (row i is item_ids[i]) and return their codes, items x L."""

    @abstractmethod
    def encode(self, x: np.ndarray | None, item_ids: Sequence[str]) -> np.ndarray:
        """Codes of (new) rows with the fitted model, items x L; fitted rows get the codes `fit` gave them."""

    def save(self, directory: Path) -> None:
        """`tokenizer.json` (class, config, L, K); subclasses add their model files beside it."""
        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / META_FILE).write_text(json.dumps(
            {"tokenizer": type(self).__name__, "config": asdict(self.config), "length": self.length, "k": self.k},
            indent=2, default=str))

    @classmethod
    def load(cls, directory: Path) -> Self:
        meta = json.loads((Path(directory) / META_FILE).read_text())
        if meta["tokenizer"] != cls.__name__:
            raise ValueError(f"{directory} holds a {meta['tokenizer']}, not a {cls.__name__}")
        tok = cls(cls.config_type(**meta["config"]))
        tok.length, tok.k = int(meta["length"]), int(meta["k"])
        tok._load_model(Path(directory))
        return tok

    def _load_model(self, directory: Path) -> None:
        """Read the files `save` wrote beside tokenizer.json (none for a model-free tokenizer)."""


@dataclass(frozen=True)
class TokenizerEntry:
    """A registry entry. `source` is the table whose `column` the tokenizer fits on (`None`: item ids only);
    its rows are in the item order of `items`."""

    name: str
    tokenizer: type[Tokenizer]
    description: str
    source: str | None = None
    column: str | None = None
    kinds: frozenset[str] = field(default_factory=lambda: frozenset({"parquet"}))

    @property
    def config_type(self) -> type:
        return self.tokenizer.config_type

    @property
    def upstream(self) -> tuple[str, ...]:
        return ("items",) if self.source is None else ("items", self.source)

