"""Stage 2: item text -> pooled LLM embeddings: `item_embeddings` (a sentence encoder) and `item_embeddings_lm`
(the palette's causal LM), one asset per table, same code."""

import time
from dataclasses import asdict, dataclass

import dagster as dg

from assets.common import DATASETS, FOLLOWS_UPSTREAM, GPU_ASSET, job_tag
from assets.configs import OpsConfig, config_class, run_dtype, takes_config
from assets.metadata import lineage, table_metadata, vector_check
from assets.resources import ComputeResource, StorageResource
from assets.versions import code_version
from ops import datasets
from ops.embed import (
    EmbedConfig,
    clear_shards,
    embed_items,
    embeddings_frame,
    item_texts,
    load_model,
    run_fingerprint,
)
from ops.models import SMOLLM2
from ops.reuse import ReusePlan, assemble, plan_reuse, rows_version
from storage import write_frame

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


def run_config_class(table: str) -> type:
    camel = "".join(part.title() for part in table.split("_"))
    return config_class(f"{camel}Config", EMBEDDINGS[table][0], exclude=("device",), loads_model=True,
                        doc=f"Run config of `{table}` (ops.embed.EmbedConfig; the device comes from the compute "
                            "resource, and so does the dtype unless this config names one other than auto).")


def build_embedding_asset(table: str) -> tuple[dg.AssetsDefinition, dg.AssetChecksDefinition]:
    run_config = RUN_CONFIGS[table] = run_config_class(table)

    @dg.asset(
        name=table,
        deps=["items"],
        partitions_def=DATASETS,
        group_name=GROUP,
        kinds={"pytorch", "parquet"},
        tags=job_tag("tokenize"),
        code_version=EMBED_CODE_VERSION,
        **GPU_ASSET,
        automation_condition=FOLLOWS_UPSTREAM,
        description=f"One pooled embedding per item from a Hugging Face model ({EMBEDDINGS[table][1]}; any "
                    "encoder or decoder-only model path by config). Text = `attr: value` for the dataset's content "
                    "attributes. Token-budget length bucketing, inference mode, CUDA + bf16 when present, resumable "
                    "shards. Columns: item_id, embedding (fixed-size float32 list).",
    )
    @takes_config(run_config)
    def _asset(context: dg.AssetExecutionContext, config: OpsConfig,
               storage: StorageResource, compute: ComputeResource) -> dg.MaterializeResult:
        spec = datasets.get(context.partition_key)
        store = storage.store()
        items = store.read(spec.name, "items")
        attributes = config.attributes or list(spec.attributes[: spec.content_attributes])
        unknown = [a for a in attributes if a not in items.columns]
        if unknown:
            raise dg.Failure(f"attributes {unknown} are not columns of items ({spec.name}): {items.columns}")
        cfg = config.build(device=compute.device, dtype=run_dtype(config.dtype, compute), attributes=attributes)
        started = time.perf_counter()
        lm = load_model(cfg)
        context.log.info(f"{table}: {lm.name} on {lm.device}, dtype {lm.dtype_choice}")
        shard_root = storage.workdir(spec.name) / f"{table}_shards"
        path = store.table_path(spec.name, table)
        fingerprint = run_fingerprint(lm, cfg)

        def same_embedder(meta) -> str | None:
            if meta.get("fingerprint") != fingerprint or meta.get("attributes") != attributes:
                return "the previous table comes from another model, settings or attributes"
            return None

        plan = (plan_reuse(items, path, ["embedding"], same_embedder) if cfg.reuse
                else ReusePlan(items, items.head(0).select("item_id"), "reuse off"))
        context.log.info(f"{table}: {plan.reason}")

        def progress(done: int, total: int) -> None:
            context.log.info(f"embedded shard {done}/{total}")

        todo = plan.todo["item_id"].to_list()
        run = embed_items(lm, todo, item_texts(plan.todo, attributes), cfg, shard_root, on_shard=progress)
        frame = assemble(items, plan, embeddings_frame(todo, run.vectors))
        model = lm.describe()
        write_frame(frame, path, lineage(context, dataset=spec.name, table=table,
                                         code_version=EMBED_CODE_VERSION, attributes=attributes,
                                         fingerprint=run.fingerprint, **model, config=asdict(cfg)))
        clear_shards(shard_root, run.fingerprint)
        s = run.stats
        example = item_texts(items.head(1), attributes)
        version = rows_version(f"{fingerprint}\0{attributes}", items)
        return dg.MaterializeResult(data_version=dg.DataVersion(version), metadata=table_metadata(
            path, frame.schema, frame.height,
            dataset=spec.name, attributes=", ".join(attributes), example_text=example[0][:300] if example else "",
            items_reused=plan.reused, items_embedded=len(todo), reuse=plan.reason,
            **{k: v for k, v in model.items() if isinstance(v, (str, int, bool))},
            fingerprint=run.fingerprint,
            seconds=round(time.perf_counter() - started, 2),
            items_per_second=round(s.items / s.seconds, 1) if s.seconds else 0.0,
            tokens_per_second=round(s.tokens / s.seconds) if s.seconds else 0,
            padding_ratio=round(s.padding_ratio, 4),
            batches=s.batches, shards_computed=s.shards_computed, shards_reused=s.shards_reused,
        ))

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
