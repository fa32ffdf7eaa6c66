"""Stage 5, CTR: DeepFM and DCNv2 on `impressions`, with the items' semantic codes of each code table
(`recommender/ctr/<tokenizer>`) and without any (`recommender/ctr/ids`, the reviewers' baseline with no semantic
features, plus optionally the multi-embedding ID-scaling baseline). Each trains its models once per seed and writes
their test AUC / logloss rows (metrics__<model>__<tokenizer|ids>), which `evaluation` gathers."""

import time
from dataclasses import dataclass, field
from typing import Annotated

import dagster as dg
import polars as pl

from assets.common import DATASETS, GPU_ASSET, code_version, config_class, job_tag, lineage, markdown_table
from assets.resources import ComputeResource, StorageResource
from assets.results import EVALUATE, GROUP, write_metrics
from ops import datasets, tokenizers
from ops.config import Checked, NonEmpty, PositiveInt
from ops.recommend.ctr import CTRConfig
from ops.recommend.evaluation import CTR_MODELS, EvalConfig

CTR_FAMILY, CTR_IDS = "ctr", "ids"  # recommender/ctr/<tokenizer> and recommender/ctr/ids
CTR_CODE_VERSION = code_version("ops.recommend.ctr", "ops.recommend.evaluation")
_NOT_RUN_CONFIG = ("model", "use_codes", "id_embeddings", "seed", "device", "dtype", "decoder", "beam_width")


@dataclass
class CTRSuite(Checked):
    """The models one CTR asset trains (each once per seed)."""

    models: Annotated[list[str], NonEmpty] = field(default_factory=lambda: list(CTR_MODELS))


@dataclass
class MultiEmbedding(Checked):
    """The ID-only asset's multi-embedding baseline (Guo et al. 2024): one more run of every model per M in the
    list, with M item-ID tables (recommender `<model>_me<M>`); empty = not run."""

    me_embeddings: list[PositiveInt] = field(default_factory=list)


CTRRunConfig = config_class(
    "CTRRunConfig", CTRSuite, CTRConfig, EvalConfig, exclude=_NOT_RUN_CONFIG,
    doc="CTR models on a code table's semantic codes (ops.recommend.ctr.CTRConfig: fusion, widths, training) and "
        "the seeds (EvalConfig); device and dtype come from the compute resource.")
CTRIdsRunConfig = config_class(
    "CTRIdsRunConfig", CTRSuite, MultiEmbedding, CTRConfig, EvalConfig, exclude=_NOT_RUN_CONFIG + ("fusion",),
    doc="The ID-only CTR models (no semantic features) and the multi-embedding baseline (`me_embeddings`); "
        "ops.recommend.ctr.CTRConfig, EvalConfig.")


def _train_all(context: dg.AssetExecutionContext, config, storage: StorageResource, compute: ComputeResource,
               tokenizer: str | None) -> dg.MaterializeResult:
    from ops.recommend.ctr import ctr_rows, prepare, train_and_test

    ds = datasets.get(context.partition_key).name
    store = storage.store()
    evaluation = config.build(EvalConfig)
    unknown = [m for m in config.models if m not in CTR_MODELS]
    if unknown or not config.models:
        raise dg.Failure(f"models {unknown or '[]'}: choose among {', '.join(CTR_MODELS)}")
    started = time.perf_counter()
    frame = store.read(ds, "impressions")
    item_ids = store.scan(ds, "items").select("item_id").collect()["item_id"].to_list()
    table = store.code_tables(ds, tokenizer).read() if tokenizer else None
    inputs = prepare(frame, item_ids, table)
    variants = [(m, 1) for m in config.models] + [(m, k) for k in getattr(config, "me_embeddings", []) if k > 1
                                                  for m in config.models]
    longs: dict[str, list[pl.DataFrame]] = {}
    runs, curves = [], {}
    for model, tables in variants:
        for seed in evaluation.seeds:
            cfg = config.build(CTRConfig, model=model, seed=seed, use_codes=tokenizer is not None,
                               id_embeddings=tables, device=compute.device, dtype=compute.dtype)
            _, result = train_and_test(inputs, cfg)
            longs.setdefault(result.recommender, []).append(
                ctr_rows(result.metrics, ds, result.recommender, tokenizer, seed))
            runs.append({"recommender": result.recommender, "seed": seed, **{k: round(v, 5) for k, v in
                                                                             result.metrics.items()},
                         "best_epoch": result.fit.best_epoch, "epochs_run": result.fit.epochs_run,
                         "parameters": result.parameters, "device": result.device,
                         "seconds": round(result.fit.seconds, 2)})
            curves[f"{result.recommender}/seed {seed}"] = {"valid_auc": [round(a, 5) for a in result.fit.valid_auc],
                                                           "train_loss": result.fit.train_loss}
            context.log.info(f"recommender/{CTR_FAMILY}/{tokenizer or CTR_IDS}: {result.recommender} seed {seed} done "
                             f"({len(runs)}/{len(variants) * len(evaluation.seeds)}), "
                             f"{time.perf_counter() - started:.0f} s so far")
    meta = lineage(context, dataset=ds, family=CTR_FAMILY, tokenizer=tokenizer, config=config.model_dump())
    for recommender, parts in longs.items():
        write_metrics(store, ds, recommender, tokenizer, parts, [], meta)
    table_runs = pl.DataFrame(runs)
    summary = table_runs.group_by("recommender", maintain_order=True).agg(
        pl.col("auc").mean().round(5).alias("auc_mean"), pl.col("auc").std().round(5).alias("auc_std"),
        pl.col("logloss").mean().round(5).alias("logloss_mean"))
    train_items = set(inputs.train.items.tolist())
    cold = float(sum(i not in train_items for i in inputs.test.items.tolist()) / max(len(inputs.test), 1))
    return dg.MaterializeResult(metadata={
        "summary": dg.MetadataValue.md(markdown_table(summary)),
        "runs": dg.MetadataValue.md(markdown_table(table_runs)),
        **{f"{r}_auc_mean": float(a) for r, a in summary.select("recommender", "auc_mean").iter_rows()},
        "train_rows": len(inputs.train), "valid_rows": len(inputs.valid), "test_rows": len(inputs.test),
        "test_rows_with_items_unseen_in_train": round(cold, 4), "users": inputs.n_users, "items": inputs.n_items,
        "code_positions": len(inputs.code_sizes) if inputs.code_sizes else 0, "device": runs[0]["device"],
        "curves": dg.MetadataValue.json(curves),
        "seconds": round(time.perf_counter() - started, 1)})


def build_ctr_asset(tokenizer: str | None) -> dg.AssetsDefinition:
    name = tokenizer or CTR_IDS
    deps = ["impressions", "items"] + ([dg.AssetKey(["code_table", tokenizer])] if tokenizer else [])
    what = (f"with the item's semantic codes of `code_table/{tokenizer}` (each position its own embedding table, "
            "fused by the configured fusion, default MoC's self-gating)" if tokenizer else
            "on user and item IDs only (no semantic features: the baseline the codes must beat), plus the "
            "multi-embedding ID-scaling baseline when `me_embeddings` is set")
    run_config = CTRRunConfig if tokenizer else CTRIdsRunConfig

    @dg.asset(key=dg.AssetKey(["recommender", CTR_FAMILY, name]), deps=deps, partitions_def=DATASETS,
              group_name=GROUP, kinds={"pytorch", "parquet"}, tags=job_tag(EVALUATE), code_version=CTR_CODE_VERSION,
              **GPU_ASSET,
              description=f"CTR models (DeepFM, DCNv2) on `impressions` {what}: one model per seed, early-stopped "
                          "on validation AUC, AUC and logloss on the chronological test split.")
    def _asset(context: dg.AssetExecutionContext, config: run_config,  # type: ignore[valid-type]
               storage: StorageResource, compute: ComputeResource) -> dg.MaterializeResult:
        return _train_all(context, config, storage, compute, tokenizer)

    return _asset


ASSETS = [build_ctr_asset(e) for e in tokenizers.REGISTRY] + [build_ctr_asset(None)]
CHECKS: list = []

# this stage's part of the code location (pipeline/definitions.py merges every stage's)
defs = dg.Definitions(assets=ASSETS, asset_checks=CHECKS)
