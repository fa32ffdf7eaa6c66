"""Recommenders over semantic IDs and their baselines (ops only, no Dagster): token vocabularies of code tables,
the prefix index and the decoders that only yield existing items, the ID baselines, CTR models, and the registry
of recommender families (ops.recommend.base). A new recommender = one module with a `Recommender` subclass plus
one `register(RecommenderEntry(...))` below."""
from __future__ import annotations

from ops.recommend.base import REGISTRY, RecData, Recommender, RecommenderEntry, SeedRun, get, register
from ops.recommend.ctr import CTRConfig, CTRModels, CTRSuite, MultiEmbedding
from ops.recommend.generative import GenerativeConfig, GenerativeFamily
from ops.recommend.popularity import Popularity
from ops.recommend.sasrec import SASRecConfig, SASRecFamily, SASRecGrid

_SCRATCH_FIELDS = ("layers", "d_model", "heads", "d_ff", "dropout")
_PRETRAINED_FIELDS = ("model", "lora_rank", "lora_alpha", "lora_dropout", "target_modules", "prompt", "align_prompt",
                      "max_text_tokens", "align", "align_epochs")
_RANKING = ("ops.recommend.evaluation",)
_NOT_CTR = ("model", "use_codes", "id_embeddings", "dtype", "decoder", "beam_width")


def _ctr_writes(tokenizer: str | None, wanted) -> list[str]:
    """A CTR asset's models: `ctr_models` on a code table; without codes their architectures plus `ctr_id_models`
    (the multi-embedding runs)."""
    from ops.recommend.evaluation import architecture

    if tokenizer is not None:
        return list(wanted.ctr_models)
    return list(dict.fromkeys([*(architecture(m) for m in wanted.ctr_models), *wanted.ctr_id_models]))


register(RecommenderEntry(
    "generative", GenerativeFamily,
    "a decoder-only transformer from scratch: the next item's semantic ID token by token, decoded only into "
    "existing items; one model per seed, early-stopped on validation NDCG@10, Recall / NDCG on the test split "
    "(full catalog).",
    config_types=(GenerativeConfig,), exclude=("backbone", "dtype", *_PRETRAINED_FIELDS),
    overrides={"backbone": "scratch"}, per_tokenizer=True, serves=True,
    modules=("ops.recommend.generative", *_RANKING)))
register(RecommenderEntry(
    "generative_llm", GenerativeFamily,
    "a pretrained LM with LoRA, the code tokens added to its vocabulary (L_rip jointly with the text -> code "
    "alignment L_align, then L_rip alone): the next item's semantic ID token by token, decoded only into existing "
    "items; one model per seed, early-stopped on validation NDCG@10, Recall / NDCG on the test split. `dtype` "
    "other than auto overrides the compute resource's.",
    config_types=(GenerativeConfig,), exclude=("backbone", *_SCRATCH_FIELDS), overrides={"backbone": "pretrained"},
    per_tokenizer=True, loads_model=True, serves=True, modules=("ops.recommend.generative", *_RANKING)))
register(RecommenderEntry(
    "sasrec", SASRecFamily,
    "SASRec on item IDs (causal transformer, cross-entropy over the whole catalog): the ID baseline; width, layers, "
    "dropout and lr tuned on the validation split over a grid, then one model per seed, Recall / NDCG on the test "
    "split.",
    config_types=(SASRecConfig, SASRecGrid), exclude=("dtype", "d_model", "layers", "dropout", "lr"),
    modules=("ops.recommend.sasrec", *_RANKING)))
register(RecommenderEntry(
    "popularity", Popularity,
    "Popularity: items ranked by their train-split count, for every user (deterministic: seed 0).",
    exclude=("seeds", "decoder", "beam_width"), fixed_seeds=(0,), trains=False, kinds=frozenset({"parquet"}),
    modules=("ops.recommend.popularity", *_RANKING)))
register(RecommenderEntry(
    "ctr", CTRModels,
    "CTR models (DeepFM, DCNv2) on `impressions`, with the item's semantic codes of the code table as features "
    "(each position its own embedding table, fused by the configured fusion, default MoC's self-gating) or, on "
    "`ids`, on user and item IDs only (the baseline the codes must beat, plus the multi-embedding ID-scaling "
    "baseline with `me_embeddings`): one model per seed, early-stopped on validation AUC, AUC and logloss on the "
    "chronological test split.",
    config_types=(CTRSuite, CTRConfig), exclude=_NOT_CTR, per_tokenizer=True, ids_variant=True,
    ids_config_types=(CTRSuite, MultiEmbedding, CTRConfig), ids_exclude=(*_NOT_CTR, "fusion"),
    inputs=("impressions",), writes=_ctr_writes, modules=("ops.recommend.ctr", *_RANKING)))

__all__ = ["REGISTRY", "RecData", "Recommender", "RecommenderEntry", "SeedRun", "get", "register"]
