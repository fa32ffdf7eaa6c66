"""The training loop every trainer shares: seeded batch order, gradient accumulation, autocast with loss scaling,
the out-of-memory back-off, and fingerprinted, resumable safetensors checkpoints in the artifact store.

A trainer supplies a model that follows `Trainable` (its parameters, how to save and load its weights, its
device and autocast dtype) and a loss function over a micro-batch of item indices; `fit` does the rest. A
checkpoint is one immutable version `<prefix>step-<n>` of an ArtifactStore (storage.artifacts):

    <prefix>step-0000050/
        ...                     the model's own files (Trainable.save_weights; e.g. a peft adapter)
        optimizer.safetensors   optimizer state tensors; optimizer.json its param groups
        state.json              step, run fingerprint, loss history, loss-scaler state + the trainer's own state
        MANIFEST.json

A run resumes from the newest checkpoint of its prefix whose fingerprint (everything that determines the trained
weights: config, model revision, data) equals its own, and then sees exactly the batches the uninterrupted run
would have seen (batches and dropout draws are pure functions of seed and step).
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from ops.config import Checked, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, Seed
from ops.models import Dtype, select_dtype
from ops.progress import Progress
from storage.artifacts import ArtifactStore

if TYPE_CHECKING:  # torch is imported where it is used: importing this module (configs) stays cheap
    import torch

STATE_FILE = "state.json"


@dataclass
class TrainingConfig(Checked):
    """Settings of the shared loop; a trainer's config extends it with its own fields and defaults."""

    lr: PositiveFloat = 1e-4  # Adam
    weight_decay: NonNegativeFloat = 0.0  # Adam's L2 penalty
    batch_size: PositiveInt = 128  # items per optimizer step
    micro_batch_size: PositiveInt = 16  # items per forward; gradients accumulate up to batch_size
    epochs: PositiveFloat = 1.0
    max_steps: NonNegativeInt = 0  # > 0 overrides epochs
    seed: Seed = 0
    checkpoint_every: NonNegativeInt = 50  # steps between checkpoints; 0 = only the final one
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # autocast dtype: "auto" = bf16 on CUDA when supported (else fp16); on a CPU float32, or bf16 for LM-sized models
    # where the CPU has native bf16 (ops.models.select_dtype); "bfloat16" / "float16" force autocast on any device
    # (fp16 with loss scaling); weights and optimizer state stay float32
    dtype: Dtype = "auto"

    def training_fields(self) -> dict[str, object]:
        """What determines the trained weights (a checkpoint is resumed only when these match): everything but
        where it runs and how often it is saved (and, for a trainer that has it, over how many processes)."""
        return {k: v for k, v in asdict(self).items() if k not in ("device", "dtype", "checkpoint_every", "processes")}


class Trainable(Protocol):
    device_: torch.device
    autocast_dtype: torch.dtype | None  # None: float32, no autocast

    def trainable_parameters(self) -> list[torch.nn.Parameter]: ...
    def save_weights(self, directory: Path) -> None: ...
    def load_weights(self, directory: Path) -> None: ...
    def train(self, mode: bool = True) -> object: ...
    def eval(self) -> object: ...


LossFn = Callable[[Sequence[int]], "tuple[torch.Tensor, Mapping[str, float]]"]


@dataclass
class TrainResult:
    steps: int
    history: list[dict[str, float]]  # one row per optimizer step: step, loss, the loss function's terms, seconds
    resumed_from: int = 0
    seconds: float = 0.0
    items_seen: int = 0
    fingerprint: str = ""
    checkpoint: str | None = None
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def items_per_second(self) -> float:
        return self.items_seen / self.seconds if self.seconds else 0.0


def autocast_dtype(device: torch.device, dtype: str, cpu_bf16: bool = False) -> torch.dtype | None:
    """The autocast dtype for a device and a configured dtype (ops.models.select_dtype: `cpu_bf16` for LM-sized
    models, where a CPU's native bf16 pays); None for float32 (no autocast)."""
    import torch

    amp = select_dtype(device, dtype, cpu_bf16)
    return None if amp == torch.float32 else amp


def autocast(device: torch.device, dtype: torch.dtype | None):
    import torch

    if dtype is None:
        return torch.autocast("cpu", enabled=False)
    return torch.autocast(device.type, dtype=dtype)


Batching = Literal["stream", "epoch"]


@dataclass
class EarlyStopping:
    """Validation inside `fit`: `evaluate()` (higher is better, e.g. validation NDCG@10 or AUC) after every
    `every` steps (an epoch) and after the last step; fit stops after `patience` evaluations without a better score
    (0: never) and leaves the model at the weights of its best evaluation: the checkpoint written at that step
    when fit has a checkpoint store (then resumable, evaluations included), else a copy kept in memory."""

    evaluate: Callable[[], float]
    every: int
    patience: int = 0


def steps_per_epoch(cfg: TrainingConfig, n_items: int) -> int:
    return max(1, math.ceil(n_items / cfg.batch_size))


def total_steps(cfg: TrainingConfig, n_items: int, batching: Batching = "stream") -> int:
    if cfg.max_steps > 0:
        return cfg.max_steps
    if batching == "epoch":  # whole epochs, each ending in a smaller batch where n is no multiple of the batch
        return max(1, math.ceil(cfg.epochs)) * steps_per_epoch(cfg, n_items)
    return max(1, math.ceil(cfg.epochs * n_items / cfg.batch_size))


def step_batch(cfg: TrainingConfig, n_items: int, step: int, batching: Batching = "stream") -> tuple[list[int], int]:
    """(items of optimizer step `step`, the seed of its dropout draws): pure functions of (seed, step), so a resumed
    run sees exactly what the uninterrupted one saw. `stream`: the epochs' permutations read as one stream, every
    batch full (batch_indices); `epoch`: each epoch's permutation cut into batches, the last one smaller."""
    import torch

    if batching == "stream":
        return batch_indices(cfg, n_items, step), cfg.seed * 7919 + step
    epoch, j = divmod(step, steps_per_epoch(cfg, n_items))
    perm = torch.randperm(n_items, generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch))
    return perm[j * cfg.batch_size: (j + 1) * cfg.batch_size].tolist(), cfg.seed * 7919 + epoch * 1_000_033 + j


def batch_indices(cfg: TrainingConfig, n_items: int, step: int) -> list[int]:
    """Items of optimizer step `step`: a pure function of (seed, step) — one seeded permutation per epoch, read
    as one stream — so a resumed run sees exactly the batches the uninterrupted run would have seen."""
    import torch

    out: list[int] = []
    start = step * cfg.batch_size
    while len(out) < min(cfg.batch_size, n_items):
        epoch, offset = divmod(start + len(out), n_items)
        perm = torch.randperm(n_items, generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch))
        out.extend(perm[offset: offset + cfg.batch_size - len(out)].tolist())
    return out


def checkpoint_name(prefix: str, step: int) -> str:
    return f"{prefix}step-{step:07d}"


def as_store(checkpoints: ArtifactStore | str | Path | None) -> ArtifactStore | None:
    return checkpoints if checkpoints is None or isinstance(checkpoints, ArtifactStore) else ArtifactStore(checkpoints)


def latest_checkpoint(checkpoints: ArtifactStore | str | Path, prefix: str = "") -> Path | None:
    """The newest complete checkpoint under `prefix`, or None."""
    store = as_store(checkpoints)
    if store is None:
        return None
    version = store.newest(f"{prefix}step-")
    return store.path(version) if version else None


def read_state(checkpoint: Path) -> dict[str, Any]:
    return json.loads((Path(checkpoint) / STATE_FILE).read_text())


def save_checkpoint(store: ArtifactStore, name: str, model: Trainable, optimizer: torch.optim.Optimizer,
                    state: Mapping[str, object]) -> Path:
    import torch
    from safetensors.torch import save_file

    def write(tmp: Path) -> None:
        model.save_weights(tmp)
        opt = optimizer.state_dict()
        tensors = {f"{i}.{k}": (v if torch.is_tensor(v) else torch.tensor(v)).detach().cpu().contiguous()
                   for i, s in opt["state"].items() for k, v in s.items()}
        save_file(tensors, tmp / "optimizer.safetensors")
        (tmp / "optimizer.json").write_text(json.dumps(opt["param_groups"]))
        (tmp / STATE_FILE).write_text(json.dumps(dict(state), default=str))

    return store.write(name, write, {"step": state["step"], "fingerprint": state["fingerprint"]})


def _resumable(store: ArtifactStore, prefix: str, fingerprint: str, steps: int) -> Path | None:
    """The newest checkpoint under `prefix` at or before step `steps` (a longer run of the same fingerprint is
    the same trajectory, batches being a function of seed and step), or None. Checkpoints of another run under
    the prefix are an error: their step names would collide with this run's, and versions are immutable."""
    found = store.versions(f"{prefix}step-")
    if not found:
        return None
    newest = read_state(store.path(found[-1]))
    if newest["fingerprint"] != fingerprint:
        raise FileExistsError(f"{store.path(found[-1])} is a checkpoint of another run (fingerprint "
                              f"{newest['fingerprint']}): give each run its own prefix (its fingerprint) or "
                              "checkpoint directory")
    usable = [v for v in found if int(v.rsplit("-", 1)[1]) <= steps]
    return store.path(usable[-1]) if usable else None


def _load_optimizer(checkpoint: Path, optimizer: torch.optim.Optimizer) -> None:
    from safetensors.torch import load_file

    tensors = load_file(Path(checkpoint) / "optimizer.safetensors")
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        i, name = key.split(".", 1)
        state.setdefault(int(i), {})[name] = value
    groups = json.loads((Path(checkpoint) / "optimizer.json").read_text())
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def fit(model: Trainable, cfg: TrainingConfig, n_items: int, loss_fn: LossFn, fingerprint: str,
        checkpoints: ArtifactStore | str | Path | None = None, prefix: str = "",
        state: Mapping[str, object] | None = None,
        on_step: Callable[[dict[str, float]], None] | None = None, progress_name: str = "",
        stopping: EarlyStopping | None = None, batching: Batching = "stream") -> TrainResult:
    """Adam over `model.trainable_parameters()` for `total_steps(cfg, n_items)` steps of `cfg.batch_size` items
    (`batching`: step_batch), each the mean of `loss_fn` over micro-batches; with `stopping`, validated every epoch
    and stopped early (EarlyStopping). Resumes from the newest checkpoint of `prefix` when its fingerprint matches;
    writes one every `cfg.checkpoint_every` steps, at every evaluation and at the end, with `state` (the trainer's
    own, e.g. its config) in state.json. The loop every trainer shares: the palette, the generative recommenders,
    SASRec, the CTR models and the VQ tokenizers."""
    import torch

    # Deterministic kernels where torch has a choice (e.g. index_put_ with accumulation, atomic on CPU threads):
    # with the same data, config, seed and thread count the weights are the same bits in every process. Ops with
    # no deterministic version only warn. Restored afterwards: the flag is process-wide.
    previous = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        return _fit(model, cfg, n_items, loss_fn, fingerprint, checkpoints, prefix, state, on_step, progress_name,
                    stopping, batching)
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])


class _Best:
    """The early-stopping state: every evaluation (step, score), the best one, and its weights."""

    def __init__(self, model: Trainable, store: ArtifactStore | None, evaluations: list[list[float]]):
        import copy

        self.model, self.store, self.evaluations = model, store, [(int(s), float(x)) for s, x in evaluations]
        self.index = max(range(len(self.evaluations)), key=lambda i: (self.evaluations[i][1], -i), default=-1)
        # in memory without a store: the weights so far (a model whose every evaluation is NaN keeps its first)
        self.weights = copy.deepcopy(model.state_dict()) if store is None else None  # type: ignore[attr-defined]  # Trainable omits nn.Module's state_dict

    @property
    def score(self) -> float:
        return self.evaluations[self.index][1] if self.index >= 0 else float("-inf")

    def add(self, step: int, score: float) -> None:
        import copy

        self.evaluations.append((step, score))
        if score > self.score:  # the first of equal scores
            self.index = len(self.evaluations) - 1
            if self.store is None:
                self.weights = copy.deepcopy(self.model.state_dict())  # type: ignore[attr-defined]  # nn.Module's

    def since_best(self) -> int:
        return len(self.evaluations) - 1 - self.index

    def restore(self, prefix: str) -> Path | None:
        """Load the best evaluation's weights; its checkpoint when there is a store."""
        if self.store is None:
            if self.weights is not None:
                self.model.load_state_dict(self.weights)  # type: ignore[attr-defined]  # nn.Module's, not in Trainable
            return None
        if self.index < 0:
            return None
        best = self.store.path(checkpoint_name(prefix, self.evaluations[self.index][0]))
        self.model.load_weights(best)
        return best


def _fit(model: Trainable, cfg: TrainingConfig, n_items: int, loss_fn: LossFn, fingerprint: str,
         checkpoints: ArtifactStore | str | Path | None, prefix: str, state: Mapping[str, object] | None,
         on_step: Callable[[dict[str, float]], None] | None, progress_name: str,
         stopping: EarlyStopping | None, batching: Batching) -> TrainResult:
    import torch

    from ops.distributed import barrier, sum_gradients, sum_terms, world

    if n_items < 1:
        raise ValueError("nothing to train on: no rows")
    w = world()  # one process, or one of torchrun's (ops.distributed): only rank 0 writes and reports
    store = as_store(checkpoints)
    steps = total_steps(cfg, n_items, batching)
    optimizer = torch.optim.Adam(model.trainable_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    # fp16 autocast (GPUs without bf16) needs loss scaling, or small gradients underflow to zero; bf16 and
    # float32 do not (the scaler is then a no-op).
    scaler = torch.amp.GradScaler(model.device_.type, enabled=model.autocast_dtype == torch.float16)
    history: list[dict[str, float]] = []
    start, evaluations = 0, []
    ck = _resumable(store, prefix, fingerprint, steps) if store is not None else None
    if ck is not None:
        saved: dict[str, Any] = read_state(ck)  # JSON values, as save_checkpoint wrote them
        model.load_weights(ck)
        _load_optimizer(ck, optimizer)
        if saved.get("scaler"):
            scaler.load_state_dict(saved["scaler"])
        start, history = int(saved["step"]), list(saved["history"])
        evaluations = list(saved.get("evaluations") or [])
    best = _Best(model, store, evaluations) if stopping is not None else None
    model.train()
    progress = Progress(f"training {progress_name or type(model).__name__}", steps, unit="steps", done=start)
    began, items_seen, last = time.perf_counter(), 0, None
    micro_size, backoffs = cfg.micro_batch_size, []
    stopped_early = (best is not None and stopping is not None and stopping.patience > 0
                     and best.since_best() >= stopping.patience)
    for step in range(start, start if stopped_early else steps):
        idx, dropout_seed = step_batch(cfg, n_items, step, batching)
        while True:
            try:
                row = _accumulate(loss_fn, idx, micro_size, scaler, dropout_seed, w.rank, w.size)
                break
            except torch.OutOfMemoryError:
                # A GPU that cannot hold the configured micro-batch redoes the step in halves instead of failing
                # the run: the step still averages over all its items; only in-batch terms (negatives) now come
                # from the smaller micro-batches (as if micro_batch_size had been configured that way).
                if micro_size == 1:
                    raise
                optimizer.zero_grad(set_to_none=True)
                if model.device_.type == "cuda":
                    torch.cuda.empty_cache()
                micro_size = max(1, micro_size // 2)
                backoffs.append({"step": step + 1, "micro_batch_size": micro_size})
        sum_gradients(model.trainable_parameters(), w)
        row = sum_terms(row, w)
        scaler.step(optimizer)  # = optimizer.step() unless fp16; skips a step whose gradients overflowed
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        if scaler.is_enabled():
            row["loss_scale"] = scaler.get_scale()
        items_seen += len(idx)
        row.update(step=step + 1, seconds=round(time.perf_counter() - began, 3))
        history.append(row)
        if on_step is not None and w.main:
            on_step(row)
        done = step + 1
        progress.update(done, f"loss {row['loss']:.4f}" if "loss" in row else "")
        evaluate = stopping is not None and (done % stopping.every == 0 or done == steps)
        if evaluate:
            best.add(done, float(stopping.evaluate()))  # type: ignore[union-attr]  # evaluate: both are set
            model.train()
        if store is not None and w.main and ((cfg.checkpoint_every and done % cfg.checkpoint_every == 0)
                                             or done == steps or evaluate):
            last = save_checkpoint(store, checkpoint_name(prefix, done), model, optimizer, {
                **(state or {}), "step": done, "fingerprint": fingerprint, "history": history,
                "evaluations": best.evaluations if best is not None else None,
                "scaler": scaler.state_dict() if scaler.is_enabled() else None})
        if store is not None and w.size > 1 and ((cfg.checkpoint_every and done % cfg.checkpoint_every == 0)
                                                 or done == steps or evaluate):
            barrier(w)  # the other processes may read it next (early stopping's best weights)
        # (evaluate implies that stopping and best are set)
        if evaluate and stopping.patience and best.since_best() >= stopping.patience:  # type: ignore[union-attr]
            break
    model.eval()
    if not history:  # nothing trained: an untrained model must never reach a published table
        raise RuntimeError(f"training {progress_name or type(model).__name__} ran zero steps ({steps} planned)")
    if last is None and store is not None:
        last = latest_checkpoint(store, prefix)
    extra: dict[str, object] = {"micro_batch_size": micro_size, "out_of_memory_backoffs": backoffs,
                                "torch_threads": torch.get_num_threads()}
    if best is not None:
        best_checkpoint = best.restore(prefix)
        model.eval()
        extra.update(evaluations=[score for _, score in best.evaluations],
                     best_evaluation=best.index + 1, best_step=best.evaluations[best.index][0] if best.index >= 0
                     else 0, best_checkpoint=str(best_checkpoint) if best_checkpoint else None)
    return TrainResult(steps, history, start, time.perf_counter() - began, items_seen, fingerprint,
                       str(last) if last else None, extra)


def _accumulate(loss_fn: LossFn, idx: Sequence[int], micro_size: int, scaler: torch.amp.GradScaler, seed: int,
                rank: int = 0, size: int = 1) -> dict[str, float]:
    """Gradients of one optimizer step's mean loss, accumulated over micro-batches; the step's mean terms. With
    `size` processes, this one takes micro-batches rank, rank + size, … (each weighted by its share of the whole
    step: the processes' sums add up to one process's). Each micro-batch's random draws (dropout, sampled tasks)
    start from a seed of its own, a function of the step's seed and its position: the same whichever process
    computes it, and across a resume."""
    import torch

    row: dict[str, float] = {}
    for n, s in enumerate(range(0, len(idx), micro_size)):
        if n % size != rank:
            continue
        torch.manual_seed((seed * 1_000_003 + n) % 2**62)
        micro = idx[s: s + micro_size]
        total, terms = loss_fn(micro)
        scaler.scale(total * (len(micro) / len(idx))).backward()
        for k, v in terms.items():
            row[k] = row.get(k, 0.0) + v * len(micro) / len(idx)
    return row

