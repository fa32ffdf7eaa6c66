"""The recommender contract and its registry: what every recommender family (generative, SASRec, popularity, CTR)
provides, so that one asset factory (assets/recommend.py) owns the seeds loop, the metric rows and their write, and
`evaluation` knows which rows to expect. A new recommender = one ops module with a `Recommender` subclass plus one
`register(RecommenderEntry(...))` in ops/recommend/__init__.py.
"""
from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from ops.registry import Registry
from ops.serving import ServingIndex
from storage.artifacts import ArtifactStore


@dataclass
class RecData:
    """What a recommender of one dataset (and one code table, for a per-tokenizer family) reads: the tables its
    entry declares as `inputs`, the catalog, and where it keeps its checkpoints."""

    dataset: str
    items: pl.DataFrame  # the catalog, in item order (the ID models' item index)
    content_attributes: tuple[str, ...]  # the item text of an alignment task (LAMIA's content)
    sequences: pl.DataFrame | None = None  # user_sequences (ranking models)
    impressions: pl.DataFrame | None = None  # impressions (CTR models)
    code_table: pl.DataFrame | None = None  # the latest version of code_table/<tokenizer>
    serving: ServingIndex | None = None  # its serving index (a decoding family's; built from code_table if None)
    tokenizer: str | None = None
    checkpoints: ArtifactStore | None = None

    def item_index(self) -> dict[str, int]:
        return {item: i for i, item in enumerate(self.items["item_id"])}

    def needed(self, frame: pl.DataFrame | None, name: str) -> pl.DataFrame:
        """`frame` (one of the optional tables above), which this recommender cannot do without."""
        if frame is None:
            raise ValueError(f"dataset '{self.dataset}': the recommender needs `{name}`, which was not loaded")
        return frame


@dataclass
class SeedRun:
    """One seed's trained model, tested: its long metric rows (EVALUATION_SCHEMA, one recommender name or several,
    e.g. a CTR suite), per-user NDCG@10 for the paired tests (ranking models), the training loss per step, figures
    for the asset's metadata (by seed), the checkpoint version to publish as that family's latest model, and
    what the family's `metadata` sums up over its seeds. Seeds run as steps of their own (on other workers,
    maybe), so a seed hands back everything the asset reports of it here: nothing it sets on the family counts."""

    rows: pl.DataFrame
    per_user: pl.DataFrame | None = None
    curves: dict[str, Any] = field(default_factory=dict)  # JSON-able, by seed (and model)
    report: dict[str, Any] = field(default_factory=dict)
    publish: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)  # for Recommender.metadata


class Recommender(abc.ABC):
    """One family on one dataset: built from its ops configs (in its entry's `config_types` order, resource
    settings applied), `prepare` reads the data once (and tunes, where the family does), `run(seed)` fits on train
    (validation for early stopping) and tests, `metadata` sums up the seeds' runs. The prepared family is handed
    to each seed's step (pickled, across processes), so `prepare` keeps plain data and models, and `run` may not
    rely on what another seed's `run` did."""

    def __init__(self, name: str, configs: Sequence[Any], evaluation: Any):
        self.name = name  # the `recommender` column of its rows
        self.configs = list(configs)
        self.evaluation = evaluation  # ops.recommend.evaluation.EvalConfig: decoder, beam width

    @abc.abstractmethod
    def prepare(self, data: RecData) -> None: ...

    @abc.abstractmethod
    def run(self, seed: int) -> SeedRun: ...

    def metadata(self, runs: Sequence[SeedRun]) -> dict[str, Any]:
        return {}


def ranking_run(ranks: np.ndarray, users: Sequence[str], data: RecData, recommender: str, seed: int,
                curve: Sequence[float] = (), **report: Any) -> SeedRun:
    """A ranking model's SeedRun from the target ranks of its test users (full catalog)."""
    from ops.recommend.evaluation import rows_for

    long, per_user = rows_for(ranks, users, data.dataset, recommender, data.tokenizer, seed)
    return SeedRun(long, per_user, {f"seed {seed}": [round(float(v), 4) for v in curve]}, report)


@dataclass(frozen=True)
class RecommenderEntry:
    """A registered family. Its assets are `recommender/<name>` or, `per_tokenizer`, `recommender/<name>/<tokenizer>`
    for every registered tokenizer (plus `recommender/<name>/ids` with `ids_variant`: the same models without
    codes). The run config is generated from `config_types` (+ the evaluation settings), minus `exclude`;
    `overrides` are fixed values (e.g. the backbone); `device`, `dtype` (unless in the run config) and `seed` are
    set by the asset."""

    name: str
    factory: Callable[[str, Sequence[Any], Any], Recommender]  # (name, configs, EvalConfig)
    description: str
    config_types: tuple[type, ...] = ()
    exclude: tuple[str, ...] = ()
    overrides: Mapping[str, Any] = field(default_factory=dict)
    per_tokenizer: bool = False
    ids_variant: bool = False
    ids_config_types: tuple[type, ...] | None = None  # the ids variant's, where they differ
    ids_exclude: tuple[str, ...] | None = None
    inputs: tuple[str, ...] = ("user_sequences",)  # tables besides `items` (and the code table)
    fixed_seeds: tuple[int, ...] = ()  # a deterministic model: these seeds whatever the run config says
    trains: bool = True  # a model-bound asset (the `gpu` pool)
    loads_model: bool = False  # its `model` field names a pretrained model (the run-start check)
    modules: tuple[str, ...] = ()  # the ops modules behind it (code version)
    serves: bool = False  # decodes on the table's serving index (its asset reads serving_index/<tokenizer>)
    kinds: frozenset[str] = frozenset({"pytorch", "parquet"})
    # the `recommender` names its asset on a tokenizer (None: without codes) writes rows for, given the evaluation's
    # ExpectedConfig (a suite of models, e.g. CTR); None = its own name
    writes: Callable[[str | None, Any], list[str]] | None = None

    def expected(self, tokenizer: str | None, wanted: Any) -> list[str]:
        return self.writes(tokenizer, wanted) if self.writes is not None else [self.name]

    def configs_for(self, tokenizer: str | None) -> tuple[tuple[type, ...], tuple[str, ...]]:
        """(config types, excluded fields) of the asset on `tokenizer`'s code table (None: without codes)."""
        if tokenizer is None and self.per_tokenizer:
            return (self.ids_config_types or self.config_types,
                    self.exclude if self.ids_exclude is None else self.ids_exclude)
        return self.config_types, self.exclude

    def variants(self, tokenizers: Sequence[str]) -> list[str | None]:
        """The tokenizer of each of its assets (None: no code table)."""
        if not self.per_tokenizer:
            return [None]
        return [*tokenizers, *([None] if self.ids_variant else [])]


REGISTRY: Registry[RecommenderEntry] = Registry("recommender")
register = REGISTRY.register
get = REGISTRY.lookup
