"""Item text -> one pooled LLM embedding per item, for any Hugging Face encoder or decoder-only model.

Speed comes from three things, each measured in bench/embed.py:
- the whole text list is tokenized once (fast Rust tokenizer), then items are sorted by their exact token length
  and cut into batches under a *token budget* (batch size x padded length), so batches of short texts are large
  and padding is near zero;
- `torch.inference_mode` and, on CUDA, bf16 (fp16 where bf16 is unsupported) weights;
- results are written back in item order, in shards that a killed run does not recompute.

Pooling: `mean` over real tokens (encoders, sentence-transformers style), `last` real token (decoder-only
models: the only position that has seen the whole text), `cls`. Padding may be on either side: pooled positions
come from the attention mask, and with left padding decoders get explicit position ids so that a padded item
embeds exactly as it would alone.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast, get_args

import numpy as np
import polars as pl

from ops.config import Checked, ConfigError, NonNegativeInt, PositiveInt
from ops.models import (
    MINILM,
    Dtype,
    dtype_choice,
    is_decoder_only,
    load_backbone,
    load_tokenizer,
    model_revision,
    resolve_model_path,
    select_device,
    select_dtype,
)
from ops.progress import Progress
from ops.shards import run_shards, shard_ranges

if TYPE_CHECKING:  # torch is imported where it is used: importing this module (configs) stays cheap
    import torch

Pooling = Literal["auto", "mean", "last", "cls"]
POOLINGS = get_args(Pooling)
# On CPU small batches win (they stay in cache): 2,048 tokens/batch was the fastest budget for MiniLM on 2 cores
# (bench/RESULTS.md, "Figures behind design choices"). A GPU wants big batches.
CPU_TOKEN_BUDGET = 2048
CUDA_TOKEN_BUDGET = 65536


@dataclass(frozen=True)
class EmbedConfig(Checked):
    model: str = MINILM  # an offline model name (ops.models), a local directory, or a hub name where reachable
    pooling: Pooling = "auto"  # auto = mean for encoders, last token for decoder-only models
    max_length: PositiveInt = 128
    token_budget: NonNegativeInt = 0  # padded tokens per batch; 0 = by device (CPU_TOKEN_BUDGET / CUDA_TOKEN_BUDGET)
    max_batch_size: PositiveInt = 256
    padding_side: Literal["left", "right"] = "right"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # auto: bf16/fp16 on CUDA; on a CPU float32 for encoders (their vectors are the product: bench/embed.py holds
    # them to the naive loop within 1e-5), bf16 for decoder-only LMs where the CPU has native bf16 units
    dtype: Dtype = "auto"  # | float32 | bfloat16 | float16
    normalize: bool = False  # L2-normalise the pooled vectors
    # items per resumable shard; 0 = auto_shard_size (at least 16 shards, 256-4,096 items)
    shard_size: NonNegativeInt = 0
    # shard steps: worker w of N embeds shards w, w + N, … as a step of its own (a pod of its own on Kubernetes),
    # then one step assembles the table from the shard files; the vectors do not depend on N
    workers: PositiveInt = 1
    attributes: list[str] | None = None  # item attributes that form the text; None: the dataset's content ones
    # take the vectors of items whose content_hash did not change from the previous table of the same model and
    # settings (ops.reuse): a re-ingest that changed a few items embeds a few items
    reuse: bool = True

    def check(self) -> None:
        if self.pooling not in POOLINGS:
            raise ConfigError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.padding_side not in ("left", "right"):
            raise ConfigError(f"padding_side must be 'left' or 'right', got {self.padding_side!r}")
        if self.token_budget and self.token_budget < self.max_length:
            raise ConfigError(f"token_budget ({self.token_budget}) must hold one item of max_length "
                             f"({self.max_length}) tokens")


@dataclass
class LoadedModel:
    name: str
    path: str
    revision: str
    tokenizer: Any  # a Hugging Face tokenizer (callable on a batch of texts)
    model: torch.nn.Module
    decoder_only: bool
    pooling: str  # resolved, never "auto"
    device: torch.device
    dtype: torch.dtype
    pad_id: int
    takes_position_ids: bool
    dim: int  # width of the last hidden state (not always hidden_size: OPT-350M projects 1024 back to 512)
    dtype_choice: str = ""  # why this dtype (ops.models.dtype_choice)

    def describe(self) -> dict[str, object]:
        n_params = sum(p.numel() for p in self.model.parameters())
        return {"model": self.name, "model_path": self.path, "revision": self.revision,
                "architecture": cast(Any, self.model).config.model_type, "decoder_only": self.decoder_only,
                "pooling": self.pooling, "dim": self.dim, "device": str(self.device),
                "dtype": str(self.dtype).removeprefix("torch."), "dtype_choice": self.dtype_choice,
                "parameters": n_params}


def load_model(config: EmbedConfig) -> LoadedModel:
    path = resolve_model_path(config.model)
    from transformers import AutoConfig

    device = select_device(config.device)
    decoder = is_decoder_only(AutoConfig.from_pretrained(path))
    dtype = select_dtype(device, config.dtype, cpu_bf16=decoder)
    choice = dtype_choice(device, config.dtype, cpu_bf16=decoder)
    tokenizer = load_tokenizer(path)
    model = load_backbone(path, causal_lm=False, dtype=dtype).to(device).eval()
    pooling = config.pooling if config.pooling != "auto" else ("last" if decoder else "mean")
    pad_id = tokenizer.pad_token_id
    if pad_id is None:  # GPT-2 / LLaMA tokenizers have none; the value is irrelevant under the mask
        pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    takes_pos = "position_ids" in inspect.signature(model.forward).parameters
    import torch

    with torch.inference_mode():  # one token: the output width as the model really produces it
        dim = model(input_ids=torch.tensor([[int(pad_id)]], device=device)).last_hidden_state.shape[-1]
    return LoadedModel(config.model, path, model_revision(path, model.config), tokenizer, model, decoder, pooling,
                       device, dtype, int(pad_id), takes_pos, int(dim), choice)


def item_texts(items: pl.DataFrame, attributes: Sequence[str]) -> list[str]:
    """`attr: value` for each non-empty attribute in the dataset's order, joined by two spaces
    (e.g. MIND: `title: …  abstract: …`)."""
    parts = [
        pl.when(pl.col(a).fill_null("").str.strip_chars() != "").then(pl.lit(f"{a}: ") + pl.col(a))
        for a in attributes
    ]
    return items.select(pl.concat_str(parts, separator="  ", ignore_nulls=True).alias("text"))["text"].to_list()


def tokenize(lm: LoadedModel, texts: Sequence[str], max_length: int) -> list[list[int]]:
    if not texts:
        return []
    return lm.tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]


def token_budget(config: EmbedConfig, device: torch.device) -> int:
    if config.token_budget:
        return config.token_budget
    return max(config.max_length, CUDA_TOKEN_BUDGET if device.type == "cuda" else CPU_TOKEN_BUDGET)


def plan_batches(lengths: Sequence[int], token_budget: int, max_batch_size: int) -> list[np.ndarray]:
    """Indices grouped longest-first so that batch_size x longest <= token_budget; every index exactly once."""
    lens = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lens, kind="stable")
    batches, start = [], 0
    while start < len(order):
        longest = max(int(lens[order[start]]), 1)
        size = max(1, min(max_batch_size, token_budget // longest, len(order) - start))
        batches.append(order[start:start + size])
        start += size
    return batches


def collate(seqs: Sequence[Sequence[int]], pad_id: int, side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, s in enumerate(seqs):
        if side == "right":
            ids[row, :len(s)] = torch.as_tensor(s)
            mask[row, :len(s)] = 1
        else:
            ids[row, width - len(s):] = torch.as_tensor(s)
            mask[row, width - len(s):] = 1
    return ids, mask


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """hidden: batch x tokens x dim; mask: batch x tokens (1 = real token, either padding side)."""
    hidden = hidden.float()
    if pooling == "mean":
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
    import torch

    rows = torch.arange(hidden.shape[0], device=hidden.device)
    if pooling == "last":
        last = mask.shape[1] - 1 - mask.flip(1).argmax(1)  # the last 1 of each row
        return hidden[rows, last]
    if pooling == "cls":
        return hidden[rows, mask.argmax(1)]  # the first real token
    raise ValueError(f"unknown pooling {pooling!r}")


def forward_pooled(lm: LoadedModel, ids: torch.Tensor, mask: torch.Tensor, side: str) -> torch.Tensor:
    kwargs = {}
    if side == "left" and lm.takes_position_ids:
        # Without this a left-padded decoder sees its first real token at position = pad count.
        kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
    out = lm.model(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device),
                   **{k: v.to(lm.device) for k, v in kwargs.items()})
    return pool(out.last_hidden_state, mask.to(lm.device), lm.pooling)


@dataclass
class EmbedStats:
    items: int = 0
    tokens: int = 0  # real tokens
    padded_tokens: int = 0  # tokens actually computed (real + padding)
    batches: int = 0
    seconds: float = 0.0
    shards_computed: int = 0
    shards_reused: int = 0

    @property
    def padding_ratio(self) -> float:
        return self.padded_tokens / self.tokens if self.tokens else 1.0


def embed_token_ids(lm: LoadedModel, seqs: Sequence[Sequence[int]], config: EmbedConfig,
                    stats: EmbedStats | None = None, on_batch: Callable[[int], None] | None = None) -> np.ndarray:
    """Pooled float32 embeddings, row i for seqs[i], computed in length-sorted token-budget batches;
    `on_batch(items)` after each batch (progress)."""
    out = np.empty((len(seqs), lm.dim), dtype=np.float32)
    stats = stats if stats is not None else EmbedStats()
    t0 = time.perf_counter()
    import torch

    with torch.inference_mode():
        budget = token_budget(config, lm.device)
        for batch in plan_batches([len(s) for s in seqs], budget, config.max_batch_size):
            ids, mask = collate([seqs[i] for i in batch], lm.pad_id, config.padding_side)
            vec = forward_pooled(lm, ids, mask, config.padding_side)
            if config.normalize:
                vec = torch.nn.functional.normalize(vec, dim=-1)
            out[batch] = vec.cpu().numpy()
            stats.batches += 1
            stats.tokens += int(mask.sum())
            stats.padded_tokens += mask.numel()
            if on_batch is not None:
                on_batch(len(batch))
    stats.items += len(seqs)
    stats.seconds += time.perf_counter() - t0
    return out


def embed_texts(lm: LoadedModel, texts: Sequence[str], config: EmbedConfig,
                stats: EmbedStats | None = None, on_batch: Callable[[int], None] | None = None) -> np.ndarray:
    return embed_token_ids(lm, tokenize(lm, texts, config.max_length), config, stats, on_batch)


def run_fingerprint(lm: LoadedModel, config: EmbedConfig) -> str:
    """Everything that changes the vectors; batch sizes and shard size do not (within float tolerance)."""
    key = {"revision": lm.revision, "path": lm.path, "pooling": lm.pooling, "max_length": config.max_length,
           "normalize": config.normalize, "dtype": str(lm.dtype), "padding_side": config.padding_side}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def auto_shard_size(n_items: int) -> int:
    """Items per shard when none is configured: n / 16 within [256, 4,096], so that a run long enough to be worth
    resuming (a minute at CPU speed is a few thousand items) is cut into several shards and a kill loses at most
    one of them, while a large catalog does not pay a file per few items."""
    return min(4096, max(256, -(-n_items // 16)))


@dataclass
class EmbedRun:
    vectors: np.ndarray  # items x dim, float32, in item order
    stats: EmbedStats
    fingerprint: str  # the model and the settings that change the vectors


def embed_items(
    lm: LoadedModel,
    item_ids: Sequence[str],
    texts: Sequence[str],
    config: EmbedConfig,
    shard_root: Path,
    on_shard: Callable[[int, int], None] | None = None,
) -> EmbedRun:
    """Embed items in shards of `config.shard_size`, each saved atomically under shard_root/<fingerprint>/.

    A shard file is named by its position and a hash of its (item_id, text) pairs, so a rerun after a kill
    loads the finished shards and computes only the rest; changed items or a changed model never reuse a stale
    shard. `on_shard(done, total)` is called after each shard (progress; tests use it to simulate a crash).
    """
    return _run_shards(lm, item_ids, texts, config, shard_root, on_shard, None)


def embed_shards(lm: LoadedModel, item_ids: Sequence[str], texts: Sequence[str], config: EmbedConfig,
                 shard_root: Path, worker: int, on_shard: Callable[[int, int], None] | None = None) -> EmbedRun:
    """Worker `worker` of `config.workers`: embed (or find done) the shards k with k % workers == worker, as
    `embed_items` would, and write them; `vectors` is empty. `embed_items` afterwards assembles every shard."""
    return _run_shards(lm, item_ids, texts, config, shard_root, on_shard, worker)


def _run_shards(lm: LoadedModel, item_ids: Sequence[str], texts: Sequence[str], config: EmbedConfig,
                shard_root: Path, on_shard: Callable[[int, int], None] | None, worker: int | None) -> EmbedRun:
    fp = run_fingerprint(lm, config)
    stats = EmbedStats()
    size = config.shard_size or auto_shard_size(len(item_ids))
    total = sum(b - a for k, (a, b) in enumerate(shard_ranges(len(item_ids), size))
                if worker is None or k % config.workers == worker)
    progress = Progress(f"embeddings ({lm.name}, {lm.device}, {str(lm.dtype).removeprefix('torch.')})"
                        + (f", worker {worker + 1}/{config.workers}" if worker is not None else ""), total)
    done = 0

    def batch_done(n: int) -> None:
        nonlocal done
        done += n
        progress.update(done)

    def reused(a: int, b: int) -> None:
        nonlocal done
        done += b - a
        progress.start_done = done  # reused shards are not this run's rate

    run = run_shards(item_ids, texts, lambda a, b: embed_texts(lm, texts[a:b], config, stats, batch_done),
                     Path(shard_root) / fp, size, worker, config.workers, on_shard, reused)
    stats.shards_computed, stats.shards_reused = run.computed, run.reused
    vectors = run.vectors if run.vectors is not None else np.empty((0, lm.dim), dtype=np.float32)
    return EmbedRun(vectors, stats, fp)


def clear_shards(shard_root: Path, fingerprint: str) -> None:
    """Called once the final table is safely written: the shards only exist to survive a crash."""
    shutil.rmtree(Path(shard_root) / fingerprint, ignore_errors=True)


def embeddings_frame(item_ids: Sequence[str], vectors: np.ndarray) -> pl.DataFrame:
    """`item_id` + `embedding` as a fixed-size float32 list (Arrow FixedSizeList), readable by any Parquet tool."""
    dim = vectors.shape[1]
    return pl.DataFrame({
        "item_id": pl.Series(list(item_ids), dtype=pl.String),
        "embedding": pl.Series(vectors, dtype=pl.Array(pl.Float32, dim)),
    })
