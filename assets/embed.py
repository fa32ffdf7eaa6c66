"""Stage 2: item text -> pooled LLM embeddings (`item_embeddings`)."""

import time
from dataclasses import asdict

import dagster as dg

from assets.common import (
    DATASETS,
    GPU_ASSET,
    MODEL_SETTINGS,
    code_version,
    config_class,
    job_tag,
    lineage,
    table_metadata,
    vector_check,
)
from ops import datasets
from ops.embed import EmbedConfig, clear_shards, embed_items, embeddings_frame, item_texts, load_model
from pipeline.resources import ComputeResource, StorageResource
from storage import write_frame

GROUP = "embed"
EMBED_CODE_VERSION = code_version("ops.embed")
EmbeddingConfig = config_class("EmbeddingConfig", EmbedConfig, exclude=("device", "dtype"),
                               doc="Run config of `item_embeddings` (ops.embed.EmbedConfig; device and dtype come "
                                   "from the compute resource).")
MODEL_SETTINGS["item_embeddings"] = EmbeddingConfig


@dg.asset(
    deps=["items"],
    partitions_def=DATASETS,
    group_name=GROUP,
    kinds={"pytorch", "parquet"},
    tags=job_tag("tokenize"),
    code_version=EMBED_CODE_VERSION,
    **GPU_ASSET,
    description="One pooled embedding per item from a Hugging Face model (default: the offline all-MiniLM-L6-v2; "
                "any encoder or decoder-only model path by config). Text = `attr: value` for the dataset's content "
                "attributes. Token-budget length bucketing, inference mode, CUDA + bf16 when present, resumable "
                "shards. Columns: item_id, embedding (fixed-size float32 list).",
)
def item_embeddings(context: dg.AssetExecutionContext, config: EmbeddingConfig,  # type: ignore[valid-type]
                    storage: StorageResource,
                    compute: ComputeResource) -> dg.MaterializeResult:
    spec = datasets.get(context.partition_key)
    store = storage.store()
    items = store.read(spec.name, "items")
    attributes = config.attributes or list(spec.attributes[: spec.content_attributes])
    unknown = [a for a in attributes if a not in items.columns]
    if unknown:
        raise dg.Failure(f"attributes {unknown} are not columns of items ({spec.name}): {items.columns}")
    texts = item_texts(items, attributes)
    ids = items["item_id"].to_list()
    cfg = config.build(device=compute.device, dtype=compute.dtype, attributes=attributes)
    started = time.perf_counter()
    lm = load_model(cfg)
    shard_root = storage.workdir(spec.name) / "embed_shards"

    def progress(done: int, total: int) -> None:
        context.log.info(f"embedded shard {done}/{total}")

    run = embed_items(lm, ids, texts, cfg, shard_root, on_shard=progress)
    frame = embeddings_frame(ids, run.vectors)
    path = store.table_path(spec.name, "item_embeddings")
    model = lm.describe()
    write_frame(frame, path, lineage(context, dataset=spec.name, table="item_embeddings",
                                     code_version=EMBED_CODE_VERSION, attributes=attributes,
                                     fingerprint=run.fingerprint, **model, config=asdict(cfg)))
    clear_shards(shard_root, run.fingerprint)
    s = run.stats
    return dg.MaterializeResult(data_version=dg.DataVersion(run.data_fingerprint), metadata=table_metadata(
        path, frame.schema, frame.height,
        dataset=spec.name, attributes=", ".join(attributes), example_text=texts[0][:300] if texts else "",
        **{k: v for k, v in model.items() if isinstance(v, (str, int, bool))},
        fingerprint=run.fingerprint,
        seconds=round(time.perf_counter() - started, 2),
        items_per_second=round(s.items / s.seconds, 1) if s.seconds else 0.0,
        tokens_per_second=round(s.tokens / s.seconds) if s.seconds else 0,
        padding_ratio=round(s.padding_ratio, 4),
        batches=s.batches, shards_computed=s.shards_computed, shards_reused=s.shards_reused,
    ))


@dg.asset_check(asset=item_embeddings, partitions_def=DATASETS, blocking=True, additional_deps=["items"])
def embeddings_complete_and_finite(context: dg.AssetCheckExecutionContext, storage: StorageResource
                                   ) -> dg.AssetCheckResult:
    """One finite, non-degenerate vector per item of `items`, same order."""
    return vector_check(storage.store(), context.partition_key, "item_embeddings", "embedding")


ASSETS = [item_embeddings]
CHECKS = [embeddings_complete_and_finite]
