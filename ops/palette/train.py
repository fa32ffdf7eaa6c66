"""Palette training on the shared loop (ops.training: seeded batches, accumulation, autocast / loss scaling,
out-of-memory back-off, resumable safetensors checkpoints) and palette extraction."""
from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from ops.config import Checked, NonNegativeInt, PositiveInt
from ops.palette.config import PaletteConfig
from ops.palette.losses import inter_palette_loss, intra_palette_loss, position_correlation
from ops.palette.model import PaletteData, PaletteModel, prepare_data
from ops.progress import Progress
from ops.shards import ShardRun, run_shards
from ops.training import TrainResult, batch_indices, fit, latest_checkpoint, read_state
from storage.artifacts import ArtifactStore

__all__ = ["TrainResult", "batch_indices", "extract", "latest_checkpoint", "load_model", "loss_terms",
           "run_fingerprint", "train", "train_data_parallel", "training_data"]


def loss_terms(model: PaletteModel, data: PaletteData, idx: Sequence[int]) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss L_gen + gamma (L_intra + L_inter) for one micro-batch, with each switch of the config applied."""
    cfg = model.cfg
    if cfg.layout == "full":
        palette, gen = model.full_layout(data, idx)
    else:
        palette = model.palette(data, idx)
        gen = model.generation_loss(data, idx, palette) if cfg.use_gen else palette.new_zeros(())
    zero, how = palette.new_zeros(()), cfg.contrastive_reduction
    intra = intra_palette_loss(palette, cfg.alpha_intra, how) if cfg.use_intra else zero
    inter = inter_palette_loss(palette, cfg.alpha_inter, how) if cfg.use_inter else zero
    total = (gen if cfg.use_gen else 0.0) + cfg.gamma * (intra + inter)
    return total, {"gen": gen.item(), "intra": intra.item(), "inter": inter.item(), "loss": float(total.detach()),
                   "correlation": position_correlation(palette.detach())}


def training_data(data: PaletteData, cfg: PaletteConfig) -> PaletteData:
    """The items a run trains on: all of them, or a sample of `train_items` drawn with the run's seed (in data
    order)."""
    if cfg.train_items is None or cfg.train_items >= len(data):
        return data
    picked = np.random.default_rng(cfg.seed).choice(len(data), size=cfg.train_items, replace=False)
    return data.subset(sorted(picked.tolist()))


def run_fingerprint(model: PaletteModel, data: PaletteData) -> str:
    blob = json.dumps({"config": model.cfg.training_fields(), "revision": model.revision,
                       "data": data.fingerprint()}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def train(model: PaletteModel, data: PaletteData, checkpoints: ArtifactStore | str | Path | None = None,
          on_step: Callable[[dict[str, float]], None] | None = None, prefix: str = "") -> TrainResult:
    """Adam over LoRA + LaP + task tokens (ops.training.fit), on `training_data`. Resumes from the newest
    checkpoint under `prefix` of the same run (same config, model revision and data); writes one every
    `checkpoint_every` steps and at the end: the peft adapter, palette.safetensors (LaP, task tokens), optimizer
    state and state.json."""
    data = training_data(data, model.cfg)
    model.restrict_vocabulary(data)
    state = {"tasks": model.tasks, "config": asdict(model.cfg), "model": model.describe()}
    # loss_terms is looked up at call time (tests replace it to simulate a device without memory)
    return fit(model, model.cfg, len(data), lambda idx: loss_terms(model, data, idx), run_fingerprint(model, data),
               checkpoints, prefix, state, on_step)


def train_data_parallel(cfg: PaletteConfig, items: pl.DataFrame, checkpoints: str, threads: int = 0
                        ) -> TrainResult:
    """`train` in `cfg.processes` data-parallel processes of this node (ops.distributed.launch: one per GPU, or
    CPU processes with gloo), each `threads` CPU threads: each builds the model and data from `cfg` and `items` as
    the palette_model step does, rank 0 writes the checkpoints (prefix: the run's fingerprint); rank 0's result. A
    `train` of the same run afterwards resumes from the final checkpoint, trained already."""
    from ops.distributed import launch

    return launch(_train_member, (cfg, items, checkpoints), cfg.processes, threads)


def _train_member(cfg: PaletteConfig, items: pl.DataFrame, checkpoints: str) -> TrainResult:
    model = PaletteModel(cfg, cfg.tasks)
    data = prepare_data(items, cfg.tasks, cfg.content_attributes or 1, model.tokenizer, cfg)
    return train(model, data, checkpoints, prefix=f"{run_fingerprint(model, data)}-")


def load_model(checkpoint: Path, cfg: PaletteConfig | None = None) -> PaletteModel:
    """Backbone from its path + adapter + palette parameters of a checkpoint (cfg overrides device / dtype)."""
    state: dict[str, Any] = read_state(checkpoint)  # JSON values, as train() wrote them
    saved = PaletteConfig(**state["config"])
    if cfg is not None:
        saved.device, saved.dtype, saved.extract_batch_size = cfg.device, cfg.dtype, cfg.extract_batch_size
    model = PaletteModel(saved, state["tasks"])
    model.load_weights(Path(checkpoint))
    return model


@dataclass
class ExtractConfig(Checked):
    """How palette extraction is split: `workers` steps each extract every N-th shard of `shard_size` items
    (0: ops.embed.auto_shard_size) into shard files that the last step assembles (ops.shards)."""

    workers: PositiveInt = 1
    shard_size: NonNegativeInt = 0


def extract_shards(model: PaletteModel, data: PaletteData, keys: Sequence[str], config: ExtractConfig,
                   shard_dir: Path, worker: int | None = None,
                   on_shard: Callable[[int, int], None] | None = None) -> ShardRun:
    """Palettes by shard (ops.shards.run_shards; `keys` one per item, e.g. its content hash): worker `worker` of
    `config.workers` writes its shards; `worker=None` assembles every shard (computing any missing). The adapter
    is merged once for all of this call's shards, as in a single `extract`, so the bits do not depend on how the
    shards were shared out."""
    from ops.embed import auto_shard_size

    size = config.shard_size or auto_shard_size(len(data))
    with merged_adapter(model):
        return run_shards(data.item_ids, keys, lambda a, b: extract(model, data.subset(range(a, b)), merged=True),
                          shard_dir, size, worker, config.workers, on_shard)


@contextlib.contextmanager
def merged_adapter(model: PaletteModel) -> Iterator[None]:
    # LoRA merged into the base weights for the duration: same function, no extra adapter matmuls per layer
    # (unmerging restores the weights up to float rounding; extraction is the last use of a trained model).
    model.peft.merge_adapter()
    try:
        yield
    finally:
        model.peft.unmerge_adapter()


@torch.inference_mode()
def extract(model: PaletteModel, data: PaletteData, batch_size: int | None = None, merged: bool = False
            ) -> np.ndarray:
    """Palettes of all items, (items, L, D) float32, in data order: inference mode, the model's device and
    autocast dtype, batches planned like the embedding stage (ops.embed.plan_batches: length-sorted, under a token
    budget of 2,048 padded tokens on CPU / 65,536 on CUDA, at most `batch_size` items)."""
    from ops.embed import CPU_TOKEN_BUDGET, CUDA_TOKEN_BUDGET, plan_batches

    model.eval()
    budget = CUDA_TOKEN_BUDGET if model.device_.type == "cuda" else CPU_TOKEN_BUDGET
    lengths = [len(c) + model.cfg.palette_size for c in data.content]
    out = np.empty((len(data), model.cfg.palette_size, model.dim), dtype=np.float32)
    progress = Progress(f"palette extraction ({model.cfg.model}, {model.device_}, {model.describe()['dtype']})",
                        len(data))
    done = 0
    with contextlib.nullcontext() if merged else merged_adapter(model):  # `merged`: the caller merged it
        for idx in plan_batches(lengths, max(budget, max(lengths, default=1)),
                                batch_size or model.cfg.extract_batch_size):
            out[idx] = model.palette(data, idx.tolist()).cpu().numpy()
            done += len(idx)
            progress.update(done)
    return out
