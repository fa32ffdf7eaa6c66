"""Training (gradient accumulation, seeded, resumable checkpoints in safetensors) and palette extraction."""
from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ops.palette.config import PaletteConfig
from ops.palette.losses import inter_palette_loss, intra_palette_loss, position_correlation
from ops.palette.model import PaletteData, PaletteModel

TERMS = ("gen", "intra", "inter")
LATEST = "LATEST"


@dataclass
class TrainResult:
    steps: int
    history: list[dict[str, float]]  # one row per optimizer step: step, loss, gen, intra, inter, seconds
    resumed_from: int = 0
    seconds: float = 0.0
    items_seen: int = 0
    fingerprint: str = ""
    checkpoint: str | None = None
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def items_per_second(self) -> float:
        return self.items_seen / self.seconds if self.seconds else 0.0


def total_steps(cfg: PaletteConfig, n_items: int) -> int:
    return cfg.max_steps if cfg.max_steps > 0 else max(1, math.ceil(cfg.epochs * n_items / cfg.batch_size))


def batch_indices(cfg: PaletteConfig, n_items: int, step: int) -> list[int]:
    """Items of optimizer step `step`: a pure function of (seed, step) — one seeded permutation per epoch, read
    as one stream — so a resumed run sees exactly the batches the uninterrupted run would have seen."""
    out: list[int] = []
    start = step * cfg.batch_size
    while len(out) < min(cfg.batch_size, n_items):
        epoch, offset = divmod(start + len(out), n_items)
        perm = torch.randperm(n_items, generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch))
        out.extend(perm[offset: offset + cfg.batch_size - len(out)].tolist())
    return out


def loss_terms(model: PaletteModel, data: PaletteData, idx: Sequence[int]) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss L_gen + gamma (L_intra + L_inter) for one micro-batch, with each switch of the config applied."""
    cfg = model.cfg
    if cfg.layout == "full":
        palette, gen = model.full_layout(data, idx)
    else:
        palette = model.palette(data, idx)
        gen = model.generation_loss(data, idx, palette) if cfg.use_gen else palette.new_zeros(())
    intra = intra_palette_loss(palette, cfg.alpha_intra) if cfg.use_intra else palette.new_zeros(())
    inter = inter_palette_loss(palette, cfg.alpha_inter) if cfg.use_inter else palette.new_zeros(())
    total = (gen if cfg.use_gen else 0.0) + cfg.gamma * (intra + inter)
    return total, {"gen": gen.item(), "intra": intra.item(), "inter": inter.item(), "loss": float(total.detach()),
                   "correlation": position_correlation(palette.detach())}


def run_fingerprint(model: PaletteModel, data: PaletteData) -> str:
    blob = json.dumps({"config": model.cfg.training_fields(), "revision": model.revision,
                       "data": data.fingerprint()}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# --- checkpoints ---------------------------------------------------------------------------------------------------
def save_checkpoint(root: Path, model: PaletteModel, optimizer: torch.optim.Optimizer | None, step: int,
                    history: list[dict[str, float]], fingerprint: str,
                    scaler: dict[str, object] | None = None) -> Path:
    """`root/step-<n>/` = adapter (peft, safetensors) + palette.safetensors (LaP, task tokens) + optimizer state
    (safetensors + json) + state.json. Written under a temporary name and renamed; `LATEST` moves last."""
    from safetensors.torch import save_file

    from storage.atomic import atomic_write_text

    root = Path(root)
    target = root / f"step-{step:07d}"
    tmp = root / f".tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        model.peft.save_pretrained(tmp / "adapter")
        save_file({"lap": model.lap.detach().cpu().contiguous(), "task": model.task.detach().cpu().contiguous()},
                  tmp / "palette.safetensors")
        if optimizer is not None:
            state = optimizer.state_dict()
            tensors = {f"{i}.{k}": (v if torch.is_tensor(v) else torch.tensor(v)).detach().cpu().contiguous()
                       for i, s in state["state"].items() for k, v in s.items()}
            save_file(tensors, tmp / "optimizer.safetensors")
            (tmp / "optimizer.json").write_text(json.dumps(state["param_groups"]))
        (tmp / "state.json").write_text(json.dumps({
            "step": step, "fingerprint": fingerprint, "history": history, "tasks": model.tasks, "scaler": scaler,
            "config": asdict(model.cfg), "model": model.describe()}, default=str))
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    atomic_write_text(root / LATEST, target.name)
    return target


def latest_checkpoint(root: Path) -> Path | None:
    marker = Path(root) / LATEST
    if not marker.is_file():
        return None
    path = Path(root) / marker.read_text().strip()
    return path if (path / "state.json").is_file() else None


def restore_weights(model: PaletteModel, checkpoint: Path) -> None:
    """Adapter (peft) and palette parameters of a checkpoint into a model built with the same config."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    adapter = load_file(Path(checkpoint) / "adapter" / "adapter_model.safetensors", device=str(model.device_))
    result = set_peft_model_state_dict(model.peft, adapter)
    if result.unexpected_keys:
        raise ValueError(f"{checkpoint}: adapter weights that this model does not have: {result.unexpected_keys[:3]}")
    params = load_file(Path(checkpoint) / "palette.safetensors")
    with torch.no_grad():
        model.lap.copy_(params["lap"])
        model.task.copy_(params["task"])


def load_model(checkpoint: Path, cfg: PaletteConfig | None = None) -> PaletteModel:
    """Backbone from its path + adapter + palette parameters of a checkpoint (cfg overrides device / dtype)."""
    state = json.loads((Path(checkpoint) / "state.json").read_text())
    saved = PaletteConfig(**state["config"])
    if cfg is not None:
        saved.device, saved.dtype, saved.extract_batch_size = cfg.device, cfg.dtype, cfg.extract_batch_size
    model = PaletteModel(saved, state["tasks"])
    restore_weights(model, checkpoint)
    return model


def _load_optimizer(checkpoint: Path, optimizer: torch.optim.Optimizer) -> None:
    from safetensors.torch import load_file

    tensors = load_file(Path(checkpoint) / "optimizer.safetensors")
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        i, name = key.split(".", 1)
        state.setdefault(int(i), {})[name] = value
    groups = json.loads((Path(checkpoint) / "optimizer.json").read_text())
    optimizer.load_state_dict({"state": state, "param_groups": groups})


# --- training ------------------------------------------------------------------------------------------------------
def train(model: PaletteModel, data: PaletteData, checkpoint_root: Path | None = None,
          on_step: Callable[[dict[str, float]], None] | None = None) -> TrainResult:
    """Adam over LoRA + LaP + task tokens. Resumes from `checkpoint_root` when it holds a checkpoint of the same
    run (same config, model revision and data); writes one every `checkpoint_every` steps and at the end."""
    cfg = model.cfg
    model.restrict_vocabulary(data)
    steps = total_steps(cfg, len(data))
    fingerprint = run_fingerprint(model, data)
    optimizer = torch.optim.Adam(model.trainable_parameters(), lr=cfg.lr)
    # fp16 autocast (GPUs without bf16) needs loss scaling, or small LoRA gradients underflow to zero; bf16 and
    # float32 do not (the scaler is then a no-op).
    scaler = torch.amp.GradScaler(model.device_.type, enabled=model.autocast_dtype == torch.float16)
    history: list[dict[str, float]] = []
    start = 0
    if checkpoint_root is not None and (ck := latest_checkpoint(checkpoint_root)) is not None:
        state = json.loads((ck / "state.json").read_text())
        if state["fingerprint"] == fingerprint and state["step"] <= steps:
            restore_weights(model, ck)
            _load_optimizer(ck, optimizer)
            if state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            start, history = int(state["step"]), list(state["history"])
    model.train()
    began, items_seen, last = time.perf_counter(), 0, None
    micro_size, backoffs = cfg.micro_batch_size, []
    for step in range(start, steps):
        idx = batch_indices(cfg, len(data), step)
        while True:
            torch.manual_seed(cfg.seed * 7919 + step)  # dropout draws: reproducible across a resume
            try:
                row = _accumulate(model, data, idx, micro_size, scaler)
                break
            except torch.OutOfMemoryError:
                # A GPU that cannot hold the configured micro-batch redoes the step in halves instead of failing
                # the run: the step still averages over all its items; only L_inter's in-batch negatives now come
                # from the smaller micro-batches (as if micro_batch_size had been configured that way).
                if micro_size == 1:
                    raise
                optimizer.zero_grad(set_to_none=True)
                if model.device_.type == "cuda":
                    torch.cuda.empty_cache()
                micro_size = max(1, micro_size // 2)
                backoffs.append({"step": step + 1, "micro_batch_size": micro_size})
        scaler.step(optimizer)  # = optimizer.step() unless fp16; skips a step whose gradients overflowed
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        if scaler.is_enabled():
            row["loss_scale"] = scaler.get_scale()
        items_seen += len(idx)
        row.update(step=step + 1, seconds=round(time.perf_counter() - began, 3))
        history.append(row)
        if on_step is not None:
            on_step(row)
        done = step + 1
        if checkpoint_root is not None and ((cfg.checkpoint_every and done % cfg.checkpoint_every == 0)
                                            or done == steps):
            last = save_checkpoint(checkpoint_root, model, optimizer, done, history, fingerprint,
                                   scaler.state_dict() if scaler.is_enabled() else None)
    model.eval()
    if last is None and checkpoint_root is not None:
        last = latest_checkpoint(checkpoint_root)
    return TrainResult(steps, history, start, time.perf_counter() - began, items_seen, fingerprint,
                       str(last) if last else None,
                       {"micro_batch_size": micro_size, "out_of_memory_backoffs": backoffs})


def _accumulate(model: PaletteModel, data: PaletteData, idx: Sequence[int], micro_size: int,
                scaler: torch.amp.GradScaler) -> dict[str, float]:
    """Gradients of one optimizer step's mean loss, accumulated over micro-batches; the step's mean terms."""
    row = dict.fromkeys(("loss", *TERMS, "correlation"), 0.0)
    for s in range(0, len(idx), micro_size):
        micro = idx[s: s + micro_size]
        total, terms = loss_terms(model, data, micro)
        scaler.scale(total * (len(micro) / len(idx))).backward()
        for k in row:
            row[k] += terms[k] * len(micro) / len(idx)
    return row


@torch.inference_mode()
def extract(model: PaletteModel, data: PaletteData, batch_size: int | None = None) -> np.ndarray:
    """Palettes of all items, (items, L, D) float32, in data order: inference mode, the model's device and
    autocast dtype, batches planned like the embedding stage (ops.embed.plan_batches: length-sorted, under a token
    budget of 2,048 padded tokens on CPU / 65,536 on CUDA, at most `batch_size` items)."""
    from ops.embed import CPU_TOKEN_BUDGET, CUDA_TOKEN_BUDGET, plan_batches

    model.eval()
    budget = CUDA_TOKEN_BUDGET if model.device_.type == "cuda" else CPU_TOKEN_BUDGET
    lengths = [len(c) + model.cfg.palette_size for c in data.content]
    out = np.empty((len(data), model.cfg.palette_size, model.dim), dtype=np.float32)
    # LoRA merged into the base weights for the duration: same function, no extra adapter matmuls per layer
    # (unmerging restores the weights up to float rounding; extraction is the last use of a trained model).
    model.peft.merge_adapter()
    try:
        for idx in plan_batches(lengths, max(budget, max(lengths, default=1)),
                                batch_size or model.cfg.extract_batch_size):
            out[idx] = model.palette(data, idx.tolist()).cpu().numpy()
    finally:
        model.peft.unmerge_adapter()
    return out

def palette_matrix(frame) -> np.ndarray:
    """The `palette` column of a palette_embeddings table (polars Array[Float32, (L, D)]) as items x L x D."""
    shape = frame["palette"].dtype.shape
    return frame["palette"].to_numpy().astype(np.float32, copy=False).reshape(frame.height, *shape)
