"""Stage 5: recommenders trained on `user_sequences` and evaluated on its test split.

`recommender/generative/<tokenizer>` (one per registered tokenizer: the same recommender on every code table),
`recommender/sasrec` and `recommender/popularity` (the ID baselines) each train once per seed and write their
metric rows (assets/results.py), which `evaluation` (assets/evaluation.py) gathers.
"""

import time
from dataclasses import replace
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl

from assets.common import (
    DATASETS,
    GPU_ASSET,
    code_version,
    config_class,
    job_tag,
    lineage,
    markdown_table,
    run_dtype,
)
from assets.resources import ComputeResource, StorageResource
from assets.results import EVALUATE, GROUP, summary, write_metrics
from ops import datasets, tokenizers
from ops.recommend.evaluation import EvalConfig
from ops.recommend.generative import GenerativeConfig
from ops.recommend.sasrec import SASRecConfig, SASRecGrid
from storage import Store

# Each backbone's run config shows only its own settings (ops.recommend.generative.GenerativeConfig has both).
_RESOURCE_FIELDS = ("device", "seed", "backbone")
_SCRATCH_FIELDS = ("layers", "d_model", "heads", "d_ff", "dropout")
_PRETRAINED_FIELDS = ("model", "lora_rank", "lora_alpha", "lora_dropout", "target_modules", "prompt", "align_prompt",
                      "max_text_tokens", "align", "align_epochs")
GenerativeRunConfig = config_class("GenerativeRunConfig", GenerativeConfig, EvalConfig,
                                   exclude=_RESOURCE_FIELDS + _PRETRAINED_FIELDS + ("dtype",),
                                   doc="The generative recommender from scratch (ops.recommend.generative."
                                       "GenerativeConfig) and how it is evaluated (EvalConfig: seeds, decoder).")
PretrainedRunConfig = config_class("PretrainedRunConfig", GenerativeConfig, EvalConfig,
                                   exclude=_RESOURCE_FIELDS + _SCRATCH_FIELDS, loads_model=True,
                                   doc="The generative recommender on a pretrained LM with LoRA (ops.recommend."
                                       "generative.GenerativeConfig, backbone `pretrained`: L_rip + L_align, then "
                                       "L_rip) and how it is evaluated (EvalConfig: seeds, decoder). `dtype` other "
                                       "than auto overrides the compute resource's.")
# recommender name -> (backbone, run config) of the generative families, one asset per tokenizer each
GENERATIVE_FAMILIES = {"generative": ("scratch", GenerativeRunConfig),
                       "generative_llm": ("pretrained", PretrainedRunConfig)}
SASRecRunConfig = config_class("SASRecRunConfig", SASRecConfig, SASRecGrid, EvalConfig,
                               exclude=("device", "dtype", "seed", "d_model", "layers", "dropout", "lr"),
                               doc="SASRec on item IDs (ops.recommend.sasrec.SASRecConfig): width, layers, dropout "
                                   "and lr tuned on the validation split over a grid (SASRecGrid), then one model "
                                   "per seed with the chosen setting.")



def _item_index(store: Store, ds: str) -> dict[str, int]:
    """Item id -> row of `items`: the catalog the ID baselines rank."""
    return {item: i for i, item in enumerate(store.scan(ds, "items").select("item_id").collect()["item_id"])}


def build_generative_asset(entry: tokenizers.TokenizerEntry, family: str = "generative") -> dg.AssetsDefinition:
    backbone, run_config = GENERATIVE_FAMILIES[family]
    key = dg.AssetKey(["recommender", family, entry.name])
    what = ("a decoder-only transformer from scratch" if backbone == "scratch" else
            "a pretrained LM with LoRA, the code tokens added to its vocabulary (L_rip jointly with the text -> "
            "code alignment L_align, then L_rip alone)")

    @dg.asset(key=key, deps=["user_sequences", "items", dg.AssetKey(["code_table", entry.name])],
              partitions_def=DATASETS, group_name=GROUP, kinds={"pytorch", "parquet"}, tags=job_tag(EVALUATE),
              code_version=code_version("ops.recommend.generative", "ops.recommend.evaluation"), **GPU_ASSET,
              description=f"The generative recommender on `code_table/{entry.name}`, {what}: the next item's "
                          "semantic ID token by token, decoded only into existing items; one model per seed, "
                          "early-stopped on validation NDCG@10, Recall / NDCG on the test split (full catalog).")
    def _asset(context: dg.AssetExecutionContext, config: run_config,  # type: ignore[valid-type]
               storage: StorageResource, compute: ComputeResource) -> dg.MaterializeResult:
        from ops.embed import item_texts
        from ops.metrics import ranks_from_lists
        from ops.recommend.decoding import PrefixIndex
        from ops.recommend.evaluation import rows_for
        from ops.recommend.generative import (
            GenerativeRecommender,
            examples,
            recommend,
            train_early_stopping,
        )
        from ops.recommend.tokens import SemanticVocab

        spec = datasets.get(context.partition_key)
        ds = spec.name
        store = storage.store()
        evaluation = config.build(EvalConfig)
        seqs = store.read(ds, "user_sequences")
        table = store.code_tables(ds, entry.name).read()
        vocab = SemanticVocab.from_code_table(table, f"code_table/{entry.name} of {ds}")
        dtype = run_dtype(config.dtype, compute) if backbone == "pretrained" else compute.dtype
        settings = dict(backbone=backbone, device=compute.device, dtype=dtype)
        base = config.build(GenerativeConfig, **settings)
        texts = None
        if backbone == "pretrained" and base.align:  # the alignment task's item texts, in code-table order
            items = table.select("item_id").join(store.read(ds, "items"), on="item_id", how="left",
                                                 maintain_order="left")
            texts = item_texts(items, spec.attributes[: spec.content_attributes])
        train_rows = examples(seqs, vocab, "train", base.max_history)
        valid_rows = examples(seqs, vocab, "valid", base.max_history)
        test_rows = examples(seqs, vocab, "test", base.max_history)
        index = PrefixIndex.build(vocab.item_codes)
        checkpoints = store.artifacts(ds, "recommenders", f"{family}-{entry.name}")
        longs, users, curves, stopping, started, tokens = [], [], {}, {}, time.perf_counter(), 0.0
        train_seconds = 0.0
        for seed in evaluation.seeds:
            model = GenerativeRecommender(config.build(GenerativeConfig, seed=seed, **settings), vocab, texts)
            began = time.perf_counter()
            stopped = train_early_stopping(model, train_rows, valid_rows, index, checkpoints, evaluation.decoder,
                                           width=10)  # the validation metric is NDCG@10
            train_seconds += time.perf_counter() - began
            stopping[seed] = {"best_epoch": stopped.best_epoch, "epochs_run": stopped.epochs_run,
                              "valid_ndcg@10": stopped.valid_ndcg10, "phases": stopped.phases}
            top = recommend(model, test_rows, index, k=20, decoder=evaluation.decoder, width=evaluation.beam_width)
            long, per_user = rows_for(ranks_from_lists(top, test_rows.target_items), test_rows.users, ds,
                                      family, entry.name, seed)
            longs.append(long)
            users.append(per_user)
            curves[seed] = [round(h["loss"], 4) for h in stopped.result.history]  # type: ignore[attr-defined]
            tokens += stopped.tokens
            checkpoints.publish(Path(stopped.checkpoint).name)  # the best epoch's model
            context.log.info(f"{key.to_user_string()}: seed {seed} done ({len(longs)}/{len(evaluation.seeds)}), "
                             f"best epoch {stopped.best_epoch} of {stopped.epochs_run}, "
                             f"{time.perf_counter() - started:.0f} s so far")
        long = write_metrics(store, ds, family, entry.name, longs, users,
                      lineage(context, dataset=ds, recommender=family, tokenizer=entry.name,
                              config=config.model_dump()))
        return dg.MaterializeResult(metadata={
            **summary(long), "train_rows": len(train_rows), "test_rows": len(test_rows), "items": index.n_items,
            **{k: v for k, v in model.describe().items() if k in ("model", "revision", "device", "dtype",
                                                                  "parameters", "trainable_parameters")},
            "train_tokens_per_s": round(tokens / max(train_seconds, 1e-9), 1),
            "seconds": round(time.perf_counter() - started, 1), "loss_curves": dg.MetadataValue.json(curves),
            "early_stopping": dg.MetadataValue.json(stopping)})

    return _asset


@dg.asset(key=dg.AssetKey(["recommender", "sasrec"]), deps=["user_sequences", "items"], partitions_def=DATASETS,
          group_name=GROUP, kinds={"pytorch", "parquet"}, tags=job_tag(EVALUATE),
          code_version=code_version("ops.recommend.sasrec", "ops.recommend.evaluation"), **GPU_ASSET,
          description="SASRec on item IDs (causal transformer, cross-entropy over the whole catalog): the ID baseline, "
                      "one model per seed, Recall / NDCG on the test split.")
def sasrec(context: dg.AssetExecutionContext, config: SASRecRunConfig,  # type: ignore[valid-type]
           storage: StorageResource, compute: ComputeResource) -> dg.MaterializeResult:
    from ops.metrics import ranks_from_scores
    from ops.recommend.evaluation import rows_for
    from ops.recommend.sasrec import SASRec, item_sequences, train, tune

    ds = datasets.get(context.partition_key).name
    store = storage.store()
    evaluation = config.build(EvalConfig)
    seqs = store.read(ds, "user_sequences")
    index = _item_index(store, ds)
    train_rows, test_rows = item_sequences(seqs, index, "train"), item_sequences(seqs, index, "test")
    started = time.perf_counter()
    grid = config.build(SASRecGrid).as_grid()
    base = config.build(SASRecConfig, device=compute.device, dtype=compute.dtype,
                        **{k: v[0] for k, v in grid.items()})
    trials: list[dict] = []
    tuned = None
    if any(len(v) > 1 for v in grid.values()):  # the validation split picks the setting (seed 0 of the base)
        base, trials, tuned = tune(base, len(index), train_rows, item_sequences(seqs, index, "valid"), grid)
    chosen = {k: getattr(base, k) for k in grid}
    longs, users, curves = [], [], {}
    for seed in evaluation.seeds:
        if tuned is not None and seed == base.seed:  # the winning trial is this seed's model already
            model, result = tuned
        else:
            model = SASRec(replace(base, seed=seed), len(index))
            result = train(model, train_rows)
        long, per_user = rows_for(ranks_from_scores(model.scores(test_rows), test_rows.targets), test_rows.users,
                                  ds, "sasrec", None, seed)
        longs.append(long)
        users.append(per_user)
        curves[seed] = [round(h["loss"], 4) for h in result.history]
        context.log.info(f"recommender/sasrec: seed {seed} done ({len(longs)}/{len(evaluation.seeds)}), "
                         f"{time.perf_counter() - started:.0f} s so far")
    long = write_metrics(store, ds, "sasrec", None, longs, users,
                  lineage(context, dataset=ds, recommender="sasrec", config=config.model_dump(),
                          chosen=chosen))
    return dg.MaterializeResult(metadata={
        **summary(long), "train_rows": len(train_rows), "test_rows": len(test_rows), "items": len(index),
        "chosen": dg.MetadataValue.json(chosen), "device": str(model.device_),
        "dtype": str(model.autocast_dtype or "float32").removeprefix("torch."),
        "tuning": dg.MetadataValue.md(markdown_table(pl.DataFrame(trials))) if trials else "no grid (one setting)",
        "seconds": round(time.perf_counter() - started, 1), "loss_curves": dg.MetadataValue.json(curves)})


@dg.asset(key=dg.AssetKey(["recommender", "popularity"]), deps=["user_sequences", "items"], partitions_def=DATASETS,
          group_name=GROUP, kinds={"parquet"}, tags=job_tag(EVALUATE),
          code_version=code_version("ops.recommend.popularity", "ops.recommend.evaluation"),
          description="Popularity: items ranked by their train-split count, for every user (deterministic: seed 0).")
def popularity(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    from ops.metrics import ranks_from_scores
    from ops.recommend.evaluation import rows_for
    from ops.recommend.popularity import popularity_scores
    from ops.recommend.sasrec import item_sequences

    ds = datasets.get(context.partition_key).name
    store = storage.store()
    seqs = store.read(ds, "user_sequences")
    index = _item_index(store, ds)
    test_rows = item_sequences(seqs, index, "test")
    scores = np.tile(popularity_scores(seqs, index), (len(test_rows), 1))
    long, per_user = rows_for(ranks_from_scores(scores, test_rows.targets), test_rows.users, ds, "popularity", None, 0)
    long = write_metrics(store, ds, "popularity", None, [long], [per_user], lineage(context, dataset=ds))
    return dg.MaterializeResult(metadata={**summary(long), "test_rows": len(test_rows)})


GENERATIVE = [build_generative_asset(e, family) for family in GENERATIVE_FAMILIES
              for e in tokenizers.REGISTRY.values()]
RECOMMENDERS = [*GENERATIVE, sasrec, popularity]
ASSETS = RECOMMENDERS
CHECKS: list = []

# this stage's part of the code location (pipeline/definitions.py merges every stage's)
defs = dg.Definitions(assets=ASSETS, asset_checks=CHECKS)
