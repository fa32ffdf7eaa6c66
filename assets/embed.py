"""Stage 2: item text -> pooled LLM embeddings: `item_embeddings` (a sentence encoder) and `item_embeddings_lm`
(the palette's causal LM), one asset per table, same code."""

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import dagster as dg
import polars as pl

from assets.common import DATASETS, FOLLOWS_UPSTREAM, job_tag
from assets.configs import OpsConfig, config_class, run_dtype
from assets.metadata import lineage, table_metadata, vector_check
from assets.resources import ComputeResource, StorageResource
from assets.shards import sharded_asset, summed
from assets.versions import code_version
from ops import datasets
from ops.embed import (
    EmbedConfig,
    LoadedModel,
    clear_shards,
    embed_items,
    embed_shards,
    embeddings_frame,
    item_texts,
    load_model,
    run_fingerprint,
)
from ops.models import SMOLLM2
from ops.reuse import ReusePlan, assemble, plan_reuse, rows_version
from storage import Store, write_frame

GROUP = "embed"
EMBED_CODE_VERSION = code_version("ops.embed")


@dataclass(frozen=True)
class LMEmbedConfig(EmbedConfig):
    """`item_embeddings_lm`: the causal LM of the palette (the offline SmolLM2-135M), last-token pooled."""

    model: str = SMOLLM2


# table -> (ops config type, what the asset's description says of its model)
EMBEDDINGS: dict[str, tuple[type[EmbedConfig], str]] = {
    "item_embeddings": (EmbedConfig, "default: the offline all-MiniLM-L6-v2 sentence encoder, mean-pooled"),
    "item_embeddings_lm": (LMEmbedConfig, (
        "default: the offline SmolLM2-135M causal LM that `palette_model` trains on, pooled at the last token, so "
        "that `pca_kmeans_lm` is the like-for-like baseline of `lamia`")),
}


RUN_CONFIGS: dict[str, type] = {}  # table -> its run-config class


def run_config_class(table: str) -> type[OpsConfig]:
    camel = "".join(part.title() for part in table.split("_"))
    return config_class(f"{camel}Config", EMBEDDINGS[table][0], exclude=("device",), loads_model=True,
                        doc=f"Run config of `{table}` (ops.embed.EmbedConfig; the device comes from the compute "
                            "resource, and so does the dtype unless this config names one other than auto).")


@dataclass
class _Job:
    """What each step of an embedding asset works out the same way from the same inputs: the items still to
    embed (the rest reused from the previous table), their texts, the loaded model and where shards go."""

    spec: datasets.DatasetSpec
    store: Store
    items: pl.DataFrame
    attributes: list[str]
    cfg: EmbedConfig
    lm: LoadedModel
    plan: ReusePlan
    shard_root: Path
    fingerprint: str

    @property
    def todo(self) -> list[str]:
        return self.plan.todo["item_id"].to_list()

    def texts(self) -> list[str]:
        return item_texts(self.plan.todo, self.attributes)


def _job(table: str, partition: str, config: OpsConfig, storage: StorageResource, compute: ComputeResource) -> _Job:
    spec = datasets.get(partition)
    store = storage.store()
    items = store.read(spec.name, "items")
    attributes = config.attributes or list(spec.attributes[: spec.content_attributes])
    unknown = [a for a in attributes if a not in items.columns]
    if unknown:
        raise dg.Failure(f"attributes {unknown} are not columns of items ({spec.name}): {items.columns}")
    cfg = config.build(device=compute.device, dtype=run_dtype(config.dtype, compute), attributes=attributes)
    lm = load_model(cfg)
    fingerprint = run_fingerprint(lm, cfg)

    def same_embedder(meta) -> str | None:
        if meta.get("fingerprint") != fingerprint or meta.get("attributes") != attributes:
            return "the previous table comes from another model, settings or attributes"
        return None

    path = store.table_path(spec.name, table)
    plan = (plan_reuse(items, path, ["embedding"], same_embedder) if cfg.reuse
            else ReusePlan(items, items.head(0).select("item_id"), "reuse off"))
    return _Job(spec, store, items, attributes, cfg, lm, plan, storage.workdir(spec.name) / f"{table}_shards",
                fingerprint)


def build_embedding_asset(table: str) -> tuple[dg.AssetsDefinition, dg.AssetChecksDefinition]:
    """`table` as a sharded asset (assets/shards.py): `config.workers` shard steps each embed every N-th shard,
    then the merge step assembles the table from the shard files."""
    run_config = RUN_CONFIGS[table] = run_config_class(table)

    def shard(context: dg.OpExecutionContext, config: OpsConfig, storage: StorageResource, compute: ComputeResource,
              worker: int) -> dict:
        job = _job(table, context.partition_key, config, storage, compute)
        context.log.info(f"{table}: worker {worker + 1}/{job.cfg.workers}, {job.lm.name} on {job.lm.device}, "
                         f"dtype {job.lm.dtype_choice}; {job.plan.reason}")

        def progress(done: int, total: int) -> None:
            context.log.info(f"worker {worker + 1}/{job.cfg.workers}: shard {done}/{total}")

        s = embed_shards(job.lm, job.todo, job.texts(), job.cfg, job.shard_root, worker, on_shard=progress).stats
        return {"worker": worker, "items": s.items, "tokens": s.tokens, "seconds": s.seconds,
                "padded_tokens": s.padded_tokens, "batches": s.batches, "shards_computed": s.shards_computed,
                "shards_reused": s.shards_reused}

    def merge(context: dg.OpExecutionContext, config: OpsConfig, storage: StorageResource, compute: ComputeResource,
              workers: list[dict]) -> dg.Output:
        started = time.perf_counter()
        job = _job(table, context.partition_key, config, storage, compute)
        todo = job.todo
        run = embed_items(job.lm, todo, job.texts(), job.cfg, job.shard_root)  # every shard is a file by now
        frame = assemble(job.items, job.plan, embeddings_frame(todo, run.vectors))
        model = job.lm.describe()
        path = job.store.table_path(job.spec.name, table)
        write_frame(frame, path, lineage(context, dataset=job.spec.name, table=table,
                                         code_version=EMBED_CODE_VERSION, attributes=job.attributes,
                                         fingerprint=run.fingerprint, **model, config=asdict(job.cfg)))
        clear_shards(job.shard_root, run.fingerprint)
        total = summed(workers, "items", "tokens", "padded_tokens", "batches", "shards_computed", "shards_reused")
        busiest = max((w["seconds"] for w in workers), default=0.0)  # the workers ran side by side
        example = item_texts(job.items.head(1), job.attributes)
        version = rows_version(f"{job.fingerprint}\0{job.attributes}", job.items)
        return dg.Output(None, data_version=dg.DataVersion(version), metadata=table_metadata(
            path, frame.schema, frame.height,
            dataset=job.spec.name, attributes=", ".join(job.attributes),
            example_text=example[0][:300] if example else "",
            items_reused=job.plan.reused, items_embedded=len(todo), reuse=job.plan.reason,
            **{k: v for k, v in model.items() if isinstance(v, (str, int, bool))},
            fingerprint=run.fingerprint, workers=len(workers),
            merge_seconds=round(time.perf_counter() - started, 2),
            items_per_second=round(total["items"] / busiest, 1) if busiest else 0.0,
            tokens_per_second=round(total["tokens"] / busiest) if busiest else 0,
            padding_ratio=round(total["padded_tokens"] / total["tokens"], 4) if total["tokens"] else 1.0,
            batches=total["batches"], shards_computed=total["shards_computed"],
            shards_reused=total["shards_reused"], per_worker=dg.MetadataValue.json(workers),
        ))

    _asset = sharded_asset(
        table, run_config, shard, merge, deps=["items"],
        partitions_def=DATASETS,
        group_name=GROUP,
        kinds={"pytorch", "parquet"},
        tags=job_tag("tokenize"),
        code_version=EMBED_CODE_VERSION,
        automation_condition=FOLLOWS_UPSTREAM,
        description=f"One pooled embedding per item from a Hugging Face model ({EMBEDDINGS[table][1]}; any "
                    "encoder or decoder-only model path by config). Text = `attr: value` for the dataset's content "
                    "attributes. Token-budget length bucketing, inference mode, CUDA + bf16 when present, resumable "
                    "shards split over `workers` parallel steps (assets/shards.py). Columns: item_id, embedding "
                    "(fixed-size float32 list).",
    )

    @dg.asset_check(asset=_asset, name="embeddings_complete_and_finite", partitions_def=DATASETS, blocking=True,
                    additional_deps=["items"])
    def _check(context: dg.AssetCheckExecutionContext, storage: StorageResource) -> dg.AssetCheckResult:
        """One finite, non-degenerate vector per item of `items`, same order."""
        return vector_check(storage.store(), context.partition_key, table, "embedding")

    return _asset, _check


_BUILT = {table: build_embedding_asset(table) for table in EMBEDDINGS}
item_embeddings, embeddings_complete_and_finite = _BUILT["item_embeddings"]
EmbeddingConfig = RUN_CONFIGS["item_embeddings"]

ASSETS = [asset for asset, _ in _BUILT.values()]
CHECKS = [check for _, check in _BUILT.values()]

# this stage's part of the code location (pipeline/definitions.py merges every stage's)
defs = dg.Definitions(assets=ASSETS, asset_checks=CHECKS)
