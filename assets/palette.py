"""Stage 3 (LAMIA): `palette_model` (LoRA + palette training) and `palette_embeddings` (items x L x D).

The code table `code_table/lamia` (assets/codes.py) quantizes each palette position with PCA + K-Means.
Defaults are the paper's settings on the offline pretrained causal LM SmolLM2-135M (a GPU run at real sizes);
`configs/lamia_demo_cpu.yaml` is the CPU demo (SmolLM2, one epoch over a sample of the items) and
`configs/lamia_mind_opt350m_gpu.yaml` the paper's recipe on MIND with OPT-350M.
"""

import json
import time
from pathlib import Path
from typing import Any, cast

import dagster as dg
import polars as pl

from assets.common import DATASETS, FOLLOWS_UPSTREAM, GPU_ASSET, job_tag
from assets.configs import OpsConfig, config_class, run_dtype, takes_config
from assets.metadata import lineage, markdown_table, table_metadata, vector_check
from assets.resources import ComputeResource, StorageResource
from assets.shards import sharded_asset, summed
from assets.versions import code_version
from ops import datasets
from ops.models import Dtype
from ops.palette.config import PaletteConfig
from ops.palette.train import ExtractConfig
from ops.reuse import assemble, plan_reuse, rows_version
from ops.training import read_state
from storage import Store, write_frame
from storage.artifacts import ArtifactStore

GROUP = "palette"
PALETTE_CODE_VERSION = code_version("ops.palette.train")  # training and extraction (and all they import)
PaletteModelConfig = config_class(
    "PaletteModelConfig", PaletteConfig, exclude=("device",), loads_model=True,
    doc="Run config of `palette_model`: ops.palette.PaletteConfig (the paper's settings; the device comes from the "
        "compute resource, and so does the dtype unless this config names one other than auto; palette_embeddings "
        "extracts in the same dtype). `tasks` empty and `content_attributes` null mean the dataset's own.")


def palette_config(config: OpsConfig, compute: ComputeResource, spec: datasets.DatasetSpec) -> PaletteConfig:
    """The ops config of a run: the run config, the compute resource's device and dtype, the dataset's defaults."""
    return config.build(device=compute.device, dtype=run_dtype(config.dtype, compute),
                        tasks=list(config.tasks or spec.attributes),
                        content_attributes=config.content_attributes or spec.content_attributes)


def palette_store(store: Store, dataset: str) -> ArtifactStore:
    """Checkpoints `<fingerprint>-step-<n>` of every palette training run of a dataset; `latest` = the model
    palette_embeddings reads, moved when a training run finished."""
    return store.artifacts(dataset, "palette_model")


def current_checkpoint(store: Store, dataset: str) -> Path:
    checkpoints = palette_store(store, dataset)
    if checkpoints.latest() is None:
        raise dg.Failure(f"no trained palette model for {dataset}: materialize palette_model first")
    return checkpoints.latest_path()


def _curve_plot(history: list[dict[str, float]]) -> str:
    """The training curves as a PNG in Markdown (a data URI: the UI shows it in the metadata, nothing to fetch)."""
    import base64
    import io

    import matplotlib

    matplotlib.use("Agg")  # no display on workers
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    # three panels: the contrastive sums run in the hundreds, the correlation in [0, 1]
    panels = (("loss", "gen"), ("intra", "inter"), ("correlation",))
    titles = ("loss = L_gen + gamma (L_intra + L_inter)", "contrastive terms", "palette position correlation")
    for ax, keys, title in zip(axes, panels, titles, strict=True):
        for key in keys:
            ax.plot(steps, [h[key] for h in history], label=key)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return f"![training curves](data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()})"


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
    tags=job_tag("palette"),
    code_version=PALETTE_CODE_VERSION,
    **GPU_ASSET,
    description="LAMIA item palette model: a causal LM (any HF path; the offline SmolLM2-135M by default) with "
                "LoRA (peft), L trainable palette tokens and one task token per attribute, trained with L_gen + "
                "gamma (L_intra + L_inter) under the hierarchical mask (dual forward). Checkpoints (adapter + "
                "palette, safetensors) are resumable; the loss curve and per-term losses are in this metadata.",
)
@takes_config(PaletteModelConfig)
def palette_model(context: dg.AssetExecutionContext, config: OpsConfig,
                  storage: StorageResource, compute: ComputeResource) -> dg.MaterializeResult:
    from ops.palette.model import (  # torch + transformers: only where a model runs
        PaletteModel,
        prepare_data,
    )
    from ops.palette.train import run_fingerprint, train, train_data_parallel, training_data

    spec = datasets.get(context.partition_key)
    store = storage.store()
    items = store.read(spec.name, "items")
    cfg = palette_config(config, compute, spec)
    checkpoints = palette_store(store, spec.name)
    parallel = None
    if cfg.processes > 1:  # trained before this process loads a model of its own (its GPU is rank 0's)
        threads = max(1, compute.torch_threads // cfg.processes) if compute.torch_threads else 0
        context.log.info(f"training in {cfg.processes} data-parallel processes (ops.distributed.launch), "
                         f"{threads or 'default'} CPU threads each")
        parallel = train_data_parallel(cfg, items, str(checkpoints.dir), threads)
    model = PaletteModel(cfg, cfg.tasks)
    context.log.info(f"palette model on {model.device_}, dtype {model.dtype_choice}")
    data = prepare_data(items, cfg.tasks, cfg.content_attributes or 1, model.tokenizer, cfg)
    fingerprint = run_fingerprint(model, data)
    every = max(1, cfg.checkpoint_every or 10)

    def log(row: dict[str, float]) -> None:
        if int(row["step"]) % every == 0:
            context.log.info(f"step {int(row['step'])}: " + ", ".join(
                f"{k} {row[k]:.4f}" for k in ("loss", "gen", "intra", "inter", "correlation")))

    # after a data-parallel run, rank 0's result: it trained this run (same fingerprint) to its final checkpoint
    result = parallel or train(model, data, checkpoints, on_step=log, prefix=f"{fingerprint}-")
    if result.checkpoint is None:
        raise dg.Failure("training finished without a checkpoint")
    for backoff in result.extra["out_of_memory_backoffs"]:  # type: ignore[attr-defined]
        context.log.warning(f"out of memory at step {backoff['step']}: micro_batch_size lowered to "
                            f"{backoff['micro_batch_size']} (same items per step, fewer in-batch negatives)")
    checkpoints.publish(Path(result.checkpoint).name)
    last = result.history[-1]
    described = model.describe()
    return dg.MaterializeResult(data_version=dg.DataVersion(fingerprint), metadata={
        "dataset": spec.name, "checkpoint": dg.MetadataValue.path(result.checkpoint), "fingerprint": fingerprint,
        **{k: v for k, v in described.items() if isinstance(v, (str, int, bool))},
        "lora_target_modules": ", ".join(described["lora_target_modules"]),  # type: ignore[arg-type]
        "tasks": ", ".join(cfg.tasks), "content": ", ".join(data.content_attributes),
        "items": len(data), "train_items": len(training_data(data, cfg)), "steps": result.steps,
        "resumed_from_step": result.resumed_from, "processes": cfg.processes,
        "train_items_per_second": round(result.items_per_second, 2), "seconds": round(result.seconds, 1),
        # below the configured value when the device ran out of memory and the steps were redone in halves
        "micro_batch_size_used": int(result.extra["micro_batch_size"]),  # type: ignore[call-overload]
        # the weights are reproducible bit for bit at the same thread count (README, "Reproducibility")
        "torch_threads": int(result.extra["torch_threads"]),  # type: ignore[call-overload]
        **{f"final_{k}": round(float(last[k]), 5) for k in ("loss", "gen", "intra", "inter", "correlation")},
        # the first step's batch through the initial weights (what the trained palette's correlation compares to;
        # a resumed run's history starts at its first step too)
        "initial_correlation": round(float(result.history[0]["correlation"]), 5),
        "loss_curve": dg.MetadataValue.md(_curve(result.history)),
        "loss_plot": dg.MetadataValue.md(_curve_plot(result.history)),
        "config": dg.MetadataValue.json(json.loads(json.dumps(cfg.training_fields(), default=str))),
    })


PaletteEmbeddingsConfig = config_class(
    "PaletteEmbeddingsConfig", ExtractConfig,
    doc="Run config of `palette_embeddings`: how extraction is split (ops.palette.train.ExtractConfig); the model "
        "is the published palette checkpoint, the device and dtype those of the compute resource and checkpoint.")


def _extraction(partition: str, storage: StorageResource, compute: ComputeResource) -> dict[str, Any]:
    """What every step of palette_embeddings works out the same way: the published checkpoint loaded, the items
    still to extract (the rest reused: ops.reuse), their prepared data, and where their shards go."""
    from ops.palette.model import prepare_data
    from ops.palette.train import load_model

    spec = datasets.get(partition)
    store = storage.store()
    items = store.read(spec.name, "items")
    ck = current_checkpoint(store, spec.name)
    state = read_state(ck)
    dtype = run_dtype(str(state["config"]["dtype"]), compute)
    model = load_model(ck, PaletteConfig(device=compute.device, dtype=cast(Dtype, dtype)))
    path = store.table_path(spec.name, "palette_embeddings")
    # items whose text did not change keep the palette this same checkpoint gave them (ops.reuse)
    plan = plan_reuse(items, path, ["palette"], lambda meta: None if meta.get("checkpoint") == str(ck) else
                      "the previous palettes come from another checkpoint")
    data = (prepare_data(plan.todo, model.tasks, model.cfg.content_attributes or 1, model.tokenizer, model.cfg)
            if plan.todo.height else None)  # None: every palette reused
    shard_dir = storage.workdir(spec.name) / "palette_embeddings_shards" / f"{ck.name}-{model.dtype_choice}"
    return {"spec": spec, "store": store, "items": items, "ck": ck, "state": state, "model": model, "path": path,
            "plan": plan, "data": data, "keys": plan.todo["content_hash"].to_list(), "shard_dir": shard_dir}


def _palette_shard(context: dg.OpExecutionContext, config: OpsConfig, storage: StorageResource,
                   compute: ComputeResource, worker: int) -> dict:
    from ops.palette.train import extract_shards

    job = _extraction(context.partition_key, storage, compute)
    cfg: ExtractConfig = config.build()
    context.log.info(f"palette_embeddings: worker {worker + 1}/{cfg.workers} on {job['model'].device_}, dtype "
                     f"{job['model'].dtype_choice}; {job['plan'].reason}")
    started = time.perf_counter()
    if job["data"] is None:
        return {"worker": worker, "seconds": 0.0, "shards_computed": 0, "shards_reused": 0}
    run = extract_shards(job["model"], job["data"], job["keys"], cfg, job["shard_dir"], worker)
    return {"worker": worker, "seconds": time.perf_counter() - started, "shards_computed": run.computed,
            "shards_reused": run.reused}


def _palette_merge(context: dg.OpExecutionContext, config: OpsConfig, storage: StorageResource,
                   compute: ComputeResource, workers: list[dict]) -> dg.Output:
    import shutil

    import torch

    from ops.palette.losses import position_correlation
    from ops.palette.train import extract_shards

    job = _extraction(context.partition_key, storage, compute)
    spec, model, plan, ck = job["spec"], job["model"], job["plan"], job["ck"]
    started = time.perf_counter()
    if plan.todo.height:
        x = extract_shards(model, job["data"], job["keys"], config.build(), job["shard_dir"]).vectors
        assert x is not None
        computed = pl.DataFrame({"item_id": pl.Series(job["data"].item_ids, dtype=pl.String),
                                 "palette": pl.Series(x, dtype=pl.Array(pl.Float32, (x.shape[1], x.shape[2])))})
    else:
        computed = plan.kept.head(0)
    frame = assemble(job["items"], plan, computed)
    x = frame["palette"].to_numpy()
    length, dim = x.shape[1], x.shape[2]
    described = model.describe()
    write_frame(frame, job["path"], lineage(context, dataset=spec.name, table="palette_embeddings",
                                            code_version=PALETTE_CODE_VERSION, checkpoint=str(ck),
                                            fingerprint=job["state"]["fingerprint"], model=described["model"],
                                            revision=described["revision"], length=length, dim=dim))
    shutil.rmtree(job["shard_dir"], ignore_errors=True)  # the shards only exist to survive a failed run
    busiest = max((w["seconds"] for w in workers), default=0.0)  # the workers ran side by side
    total = summed(workers, "shards_computed", "shards_reused")
    version = rows_version(ck.name, job["items"])  # the trained model (its run fingerprint and step) and the items
    return dg.Output(None, data_version=dg.DataVersion(version), metadata=table_metadata(
        job["path"], frame.schema, frame.height, dataset=spec.name, checkpoint=dg.MetadataValue.path(str(ck)),
        length=length, dim=dim, model=str(described["model"]), device=str(described["device"]),
        dtype=str(described["dtype"]), dtype_choice=str(described["dtype_choice"]),
        extract_items_per_second=round(plan.todo.height / busiest, 1) if busiest and plan.todo.height else 0.0,
        items_reused=plan.reused, items_extracted=plan.todo.height, reuse=plan.reason, workers=len(workers),
        shards_computed=total["shards_computed"], shards_reused=total["shards_reused"],
        merge_seconds=round(time.perf_counter() - started, 2), per_worker=dg.MetadataValue.json(workers),
        position_correlation=round(position_correlation(torch.from_numpy(x)), 4),
    ))


palette_embeddings = sharded_asset(
    "palette_embeddings", PaletteEmbeddingsConfig, _palette_shard, _palette_merge, deps=["palette_model", "items"],
    partitions_def=DATASETS,
    group_name=GROUP,
    kinds={"pytorch", "parquet"},
    tags=job_tag("palette"),
    code_version=PALETTE_CODE_VERSION,
    automation_condition=FOLLOWS_UPSTREAM,
    description="Every item's palette (pass 1 of the trained palette model, inference mode, length-bucketed "
                "batches), in shards split over `workers` parallel steps (assets/shards.py): columns item_id, "
                "palette (float32 [L][D]).",
)


@dg.asset_check(asset=palette_embeddings, partitions_def=DATASETS, blocking=True, additional_deps=["items"])
def palette_complete_and_finite(context: dg.AssetCheckExecutionContext, storage: StorageResource
                                ) -> dg.AssetCheckResult:
    """One finite, non-degenerate L x D palette per item of `items`, same order."""
    return vector_check(storage.store(), context.partition_key, "palette_embeddings", "palette")


ASSETS = [palette_model, palette_embeddings]
CHECKS = [palette_complete_and_finite]

# this stage's part of the code location (pipeline/definitions.py merges every stage's)
defs = dg.Definitions(assets=ASSETS, asset_checks=CHECKS)
