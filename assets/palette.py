"""Stage 3 (LAMIA): `palette_model` (LoRA + palette training) and `palette_embeddings` (items x L x D).

The code table `code_table/lamia` (assets/codes.py) quantizes each palette position with PCA + K-Means.
Defaults are the paper's settings with OPT-350M (a GPU run); `configs/lamia_demo_cpu.yaml` is the CPU demo
(the offline MiniLM encoder, few steps) and `configs/lamia_mind_opt350m_gpu.yaml` the paper's recipe on MIND.
"""

import json
import time
from dataclasses import fields
from pathlib import Path

import dagster as dg
import polars as pl
import torch

from assets.common import DATASETS, GPU_ASSET, lineage, markdown_table, table_metadata, vector_check
from ops import datasets
from ops.palette import PaletteConfig, PaletteModel, extract, load_model, position_correlation, prepare_data, train
from ops.palette.train import run_fingerprint
from pipeline.resources import ComputeResource, StorageResource
from storage import Store, write_frame
from storage.atomic import atomic_write_text

GROUP = "palette"
PALETTE_CODE_VERSION = "palette-1"
CURRENT = "CURRENT"  # names the checkpoint palette_embeddings reads
_D = PaletteConfig()


class PaletteModelConfig(dg.Config):
    """Run config of `palette_model`; defaults = ops.palette.PaletteConfig (the paper's settings)."""

    model: str = _D.model
    palette_size: int = _D.palette_size
    content_attributes: int | None = None  # r; default: the dataset's (MIND 2, Amazon 2, H&M 7)
    tasks: list[str] | None = None  # default: every attribute of the dataset, in its order
    max_content_tokens: int = _D.max_content_tokens
    max_answer_tokens: int = _D.max_answer_tokens
    answer_vocabulary: str = _D.answer_vocabulary
    lora_rank: int = _D.lora_rank
    lora_alpha: int = _D.lora_alpha
    lora_dropout: float = _D.lora_dropout
    target_modules: list[str] | None = None
    lr: float = _D.lr
    batch_size: int = _D.batch_size
    micro_batch_size: int = _D.micro_batch_size
    epochs: float = _D.epochs
    max_steps: int = _D.max_steps
    gamma: float = _D.gamma
    alpha_intra: float = _D.alpha_intra
    alpha_inter: float = _D.alpha_inter
    use_gen: bool = _D.use_gen
    use_intra: bool = _D.use_intra
    use_inter: bool = _D.use_inter
    content_attention: str = _D.content_attention
    lap_init: str = _D.lap_init
    attn_implementation: str | None = None
    layout: str = _D.layout
    seed: int = _D.seed
    extract_batch_size: int = _D.extract_batch_size
    checkpoint_every: int = 50

    def to_ops(self, compute: ComputeResource, spec: datasets.DatasetSpec) -> PaletteConfig:
        names = {f.name for f in fields(PaletteConfig)} - {"device", "dtype", "tasks", "content_attributes"}
        return PaletteConfig(**{n: getattr(self, n) for n in names}, device=compute.device, dtype=compute.dtype,
                             tasks=list(self.tasks or spec.attributes),
                             content_attributes=self.content_attributes or spec.content_attributes)


def palette_root(store: Store, dataset: str) -> Path:
    return store.root / dataset / "palette_model"


def current_checkpoint(store: Store, dataset: str) -> Path:
    marker = palette_root(store, dataset) / CURRENT
    if not marker.is_file():
        raise dg.Failure(f"no trained palette model for {dataset}: materialize palette_model first")
    return palette_root(store, dataset) / marker.read_text().strip()


def _curve(history: list[dict[str, float]], points: int = 12) -> str:
    """The loss curve as a markdown table of ~`points` evenly spaced steps (the last one included)."""
    picks = sorted({round(i * (len(history) - 1) / max(points - 1, 1)) for i in range(points)})
    rows = [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in history[i].items()} for i in picks]
    cols = ["step", "loss", "gen", "intra", "inter", "correlation", "seconds"]
    return markdown_table(pl.DataFrame(rows).select(cols))


@dg.asset(
    deps=["items"],
    partitions_def=DATASETS,
    group_name=GROUP,
    kinds={"pytorch", "safetensors"},
    code_version=PALETTE_CODE_VERSION,
    **GPU_ASSET,
    description="LAMIA item palette model: a causal LM (any HF path; OPT-350M by default) with LoRA (peft), L "
                "trainable palette tokens and one task token per attribute, trained with L_gen + gamma (L_intra + "
                "L_inter) under the hierarchical mask (dual forward). Checkpoints (adapter + palette, safetensors) "
                "are resumable; the loss curve and per-term losses are in this metadata.",
)
def palette_model(context: dg.AssetExecutionContext, config: PaletteModelConfig, storage: StorageResource,
                  compute: ComputeResource) -> dg.MaterializeResult:
    spec = datasets.get(context.partition_key)
    store = storage.store()
    items = store.read(spec.name, "items")
    cfg = config.to_ops(compute, spec)
    compute.apply_threads()
    model = PaletteModel(cfg, cfg.tasks)
    data = prepare_data(items, cfg.tasks, cfg.content_attributes or 1, model.tokenizer, cfg)
    fingerprint = run_fingerprint(model, data)
    runs = palette_root(store, spec.name)
    every = max(1, cfg.checkpoint_every or 10)

    def log(row: dict[str, float]) -> None:
        if int(row["step"]) % every == 0:
            context.log.info(f"step {int(row['step'])}: " + ", ".join(
                f"{k} {row[k]:.4f}" for k in ("loss", "gen", "intra", "inter", "correlation")))

    result = train(model, data, runs / fingerprint, on_step=log)
    if result.checkpoint is None:
        raise dg.Failure("training finished without a checkpoint")
    for backoff in result.extra["out_of_memory_backoffs"]:  # type: ignore[attr-defined]
        context.log.warning(f"out of memory at step {backoff['step']}: micro_batch_size lowered to "
                            f"{backoff['micro_batch_size']} (same items per step, fewer in-batch negatives)")
    atomic_write_text(runs / CURRENT, str(Path(result.checkpoint).relative_to(runs)))
    last = result.history[-1]
    described = model.describe()
    return dg.MaterializeResult(metadata={
        "dataset": spec.name, "checkpoint": dg.MetadataValue.path(result.checkpoint), "fingerprint": fingerprint,
        **{k: v for k, v in described.items() if isinstance(v, (str, int, bool))},
        "lora_target_modules": ", ".join(described["lora_target_modules"]),  # type: ignore[arg-type]
        "tasks": ", ".join(cfg.tasks), "content": ", ".join(data.content_attributes),
        "items": len(data), "steps": result.steps, "resumed_from_step": result.resumed_from,
        "train_items_per_second": round(result.items_per_second, 2), "seconds": round(result.seconds, 1),
        # below the configured value when the device ran out of memory and the steps were redone in halves
        "micro_batch_size_used": int(result.extra["micro_batch_size"]),  # type: ignore[call-overload]
        **{f"final_{k}": round(float(last[k]), 5) for k in ("loss", "gen", "intra", "inter", "correlation")},
        "loss_curve": dg.MetadataValue.md(_curve(result.history)),
        "config": dg.MetadataValue.json(json.loads(json.dumps(cfg.training_fields(), default=str))),
    })


@dg.asset(
    deps=[palette_model, "items"],
    partitions_def=DATASETS,
    group_name=GROUP,
    kinds={"pytorch", "parquet"},
    code_version=PALETTE_CODE_VERSION,
    **GPU_ASSET,
    description="Every item's palette (pass 1 of the trained palette model, inference mode, length-bucketed "
                "batches): columns item_id, palette (float32 [L][D]).",
)
def palette_embeddings(context: dg.AssetExecutionContext, storage: StorageResource, compute: ComputeResource
                       ) -> dg.MaterializeResult:
    spec = datasets.get(context.partition_key)
    store = storage.store()
    items = store.read(spec.name, "items")
    ck = current_checkpoint(store, spec.name)
    compute.apply_threads()
    model = load_model(ck, PaletteConfig(device=compute.device, dtype=compute.dtype))
    cfg = model.cfg
    data = prepare_data(items, model.tasks, cfg.content_attributes or 1, model.tokenizer, cfg)
    started = time.perf_counter()
    x = extract(model, data)
    seconds = time.perf_counter() - started
    length, dim = x.shape[1], x.shape[2]
    frame = pl.DataFrame({"item_id": pl.Series(data.item_ids, dtype=pl.String),
                          "palette": pl.Series(x, dtype=pl.Array(pl.Float32, (length, dim)))})
    path = store.table_path(spec.name, "palette_embeddings")
    state = json.loads((ck / "state.json").read_text())
    described = model.describe()
    write_frame(frame, path, lineage(context, dataset=spec.name, table="palette_embeddings",
                                     code_version=PALETTE_CODE_VERSION, checkpoint=str(ck),
                                     fingerprint=state["fingerprint"], model=described["model"],
                                     revision=described["revision"], length=length, dim=dim))
    return dg.MaterializeResult(metadata=table_metadata(
        path, frame.schema, frame.height, dataset=spec.name, checkpoint=dg.MetadataValue.path(str(ck)),
        length=length, dim=dim, model=str(described["model"]), device=str(described["device"]),
        dtype=str(described["dtype"]), extract_items_per_second=round(len(data) / seconds, 1) if seconds else 0.0,
        position_correlation=round(position_correlation(torch.from_numpy(x)), 4),
    ))


@dg.asset_check(asset=palette_embeddings, partitions_def=DATASETS, blocking=True, additional_deps=["items"])
def palette_complete_and_finite(context: dg.AssetCheckExecutionContext, storage: StorageResource
                                ) -> dg.AssetCheckResult:
    """One finite, non-degenerate L x D palette per item of `items`, same order."""
    return vector_check(storage.store(), context.partition_key, "palette_embeddings", "palette")


ASSETS = [palette_model, palette_embeddings]
CHECKS = [palette_complete_and_finite]
