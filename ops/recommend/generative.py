"""The generative recommender: the next item's semantic ID predicted token by token from the history's tokens (the
LAMIA paper's L_rip), trained on the shared loop (ops.training) and decoded only into existing items
(ops.recommend.decoding).

Backbone `scratch`: a decoder-only transformer with random initialisation, built from Hugging Face's GPT-2 classes
(4 layers, d_model 128, 4 heads, d_ff 512 by default: TIGER-sized). Decoder-only rather than TIGER's T5
encoder-decoder because one causal pass serves training and constrained decoding alike, and the `pretrained`
backbone (a causal LM such as SmolLM2 with LoRA) takes the same input, so both share every line here but the model.

Input: `<bos>` + the tokens of the last `max_history` items (L codes + dedup each, position-specific
vocabularies) + the target's tokens; the loss is the cross-entropy of each target token over its own position's
vocabulary, the distribution the decoder samples from.
"""
from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F

from ops.embed import collate
from ops.metrics import ranks_from_lists, ranks_from_scores, recall_ndcg
from ops.models import select_device
from ops.recommend.decoding import PrefixIndex, beam_search, exact_scores
from ops.recommend.tokens import PAD, SemanticVocab
from ops.training import TrainingConfig, autocast, autocast_dtype, fit

Decoder = Literal["beam", "exact"]


@dataclass
class GenerativeConfig(TrainingConfig):
    """The paper's settings for real runs (lr 5e-4, batch 64) over the shared training settings."""

    backbone: Literal["scratch"] = "scratch"
    layers: int = 4
    d_model: int = 128
    heads: int = 4
    d_ff: int = 512
    dropout: float = 0.1
    max_history: int = 20
    lr: float = 5e-4
    batch_size: int = 64
    micro_batch_size: int = 64
    epochs: float = 10.0  # at most; training stops early when validation NDCG@10 has not improved for `patience`
    patience: int = 5

    def training_fields(self) -> dict[str, object]:
        """The trajectory of the weights: a longer run of the same settings continues it (batches are a function
        of seed and step, the learning rate is constant), so the run length and the stopping rule are not in it
        and an early-stopped run resumes epoch by epoch."""
        skip = ("epochs", "max_steps", "patience")
        return {k: v for k, v in super().training_fields().items() if k not in skip}


@dataclass
class Examples:
    """One (history, target) pair per row: context token ids and the target's P position-local codes."""

    users: list[str]
    contexts: list[list[int]]
    targets: np.ndarray  # rows x P codes
    target_items: np.ndarray  # rows: item index in the code table

    def __len__(self) -> int:
        return len(self.users)

    def fingerprint(self) -> str:
        blob = json.dumps([self.users, self.contexts, self.targets.tolist()]).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def examples(sequences: pl.DataFrame, vocab: SemanticVocab, split: str, max_history: int = 20) -> Examples:
    """The rows of one split of `user_sequences` as token examples (an item missing from the code table is an
    error naming it, never a silent drop)."""
    rows = sequences.filter(pl.col("split") == split)
    items = vocab.items(rows["target"].to_list())
    contexts = [vocab.history_tokens(h, max_history) for h in rows["history"].to_list()]
    return Examples(rows["user_id"].to_list(), contexts, vocab.item_codes[items], items)


class LMRecommender(torch.nn.Module):
    """What the recommenders built on a Hugging Face LM (`self.lm`) share for ops.training.fit: their trainable
    parameters and safetensors weights."""

    lm: torch.nn.Module
    device_: torch.device

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def save_weights(self, directory: Path) -> None:
        from safetensors.torch import save_model

        save_model(self.lm, str(directory / "model.safetensors"))

    def load_weights(self, directory: Path) -> None:
        from safetensors.torch import load_model

        load_model(self.lm, str(directory / "model.safetensors"), device=str(self.device_))


class GenerativeRecommender(LMRecommender):
    def __init__(self, cfg: GenerativeConfig, vocab: SemanticVocab):
        super().__init__()
        from transformers import GPT2Config, GPT2LMHeadModel

        self.cfg, self.vocab = cfg, vocab
        self.device_ = select_device(cfg.device)
        self.autocast_dtype = autocast_dtype(self.device_, cfg.dtype)
        positions = 1 + (cfg.max_history + 1) * vocab.positions
        torch.manual_seed(cfg.seed)  # the random initialisation
        self.lm = GPT2LMHeadModel(GPT2Config(
            vocab_size=vocab.size, n_positions=positions, n_embd=cfg.d_model, n_layer=cfg.layers, n_head=cfg.heads,
            n_inner=cfg.d_ff, resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout,
            bos_token_id=1, eos_token_id=2, pad_token_id=PAD))
        self.to(self.device_)
        self._contexts: list[list[int]] = []  # what step() reads: the contexts of the users being decoded
        self._cache_arg = "cache" if "cache" in inspect.signature(self.lm.forward).parameters else "past_key_values"

    # --- forward -----------------------------------------------------------------------------------------------
    def _logits(self, rows: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits of left-padded rows (B, T, V) and each row's length; positions count from a row's first token."""
        ids, mask = collate(rows, PAD, "left")
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        with autocast(self.device_, self.autocast_dtype):
            out = self.lm(input_ids=ids.to(self.device_), attention_mask=mask.to(self.device_),
                          position_ids=positions.to(self.device_))
        return out.logits.float(), mask.sum(1)

    def level_logits(self, logits: torch.Tensor, level: int) -> torch.Tensor:
        start = self.vocab.offsets[level]
        return logits[..., start: start + self.vocab.sizes[level]]

    def loss(self, data: Examples, idx: Sequence[int]) -> tuple[torch.Tensor, dict[str, float]]:
        """Mean cross-entropy of the targets' tokens, each over its position's vocabulary (teacher-forced)."""
        tokens = self.vocab.item_codes[data.target_items[list(idx)]] + np.asarray(self.vocab.offsets)
        rows = [data.contexts[i] + tokens[j].tolist() for j, i in enumerate(idx)]
        logits, _ = self._logits(rows)
        p = self.vocab.positions
        predicting = logits[:, -p - 1: -1]  # the position before each target token predicts it (left padding)
        losses = [F.cross_entropy(self.level_logits(predicting[:, level], level),
                                  torch.as_tensor(data.targets[list(idx), level], device=self.device_))
                  for level in range(p)]
        total = torch.stack(losses).mean()
        return total, {"loss": total.item(), **{f"loss_{lv}": v.item() for lv, v in enumerate(losses)}}

    @torch.inference_mode()
    def prepare(self, contexts: Sequence[Sequence[int]]) -> None:
        """Run the contexts of the users about to be decoded once and keep their key/value cache: every decoding
        step then only runs its prefix tokens on top (the beams of a user share its context)."""
        self._contexts = list(contexts)
        ids, mask = collate(contexts, PAD, "left")
        self._ctx_mask = mask.to(self.device_)
        self._ctx_len = mask.sum(1).to(self.device_)
        with autocast(self.device_, self.autocast_dtype):
            out = self.lm(input_ids=ids.to(self.device_), attention_mask=self._ctx_mask,
                          position_ids=(mask.cumsum(1) - 1).clamp(min=0).to(self.device_), use_cache=True)
        # transformers 5 names the key/value cache `cache`, 4.x `past_key_values`
        self._ctx_cache = out.cache if hasattr(out, "cache") else out.past_key_values
        self._ctx_last = out.logits[:, -1].float()

    @torch.inference_mode()
    def step(self, users: torch.Tensor, prefixes: torch.Tensor, level: int) -> torch.Tensor:
        """ops.recommend.decoding.StepFn: log-probabilities of level `level`'s codes after each user's context
        (as prepared) and the prefix codes so far."""
        if level == 0:
            return torch.log_softmax(self.level_logits(self._ctx_last[users], level), dim=-1)
        import copy

        cache = copy.deepcopy(self._ctx_cache)  # feeding tokens appends to a cache: each step starts from a copy
        cache.batch_select_indices(users)
        offsets = torch.as_tensor(self.vocab.offsets[:level], dtype=torch.long, device=self.device_)
        tokens = prefixes.to(self.device_) + offsets
        mask = torch.cat([self._ctx_mask[users], torch.ones_like(tokens)], dim=1)
        positions = self._ctx_len[users][:, None] + torch.arange(level, device=self.device_)
        with autocast(self.device_, self.autocast_dtype):
            out = self.lm(input_ids=tokens, attention_mask=mask, position_ids=positions, **{self._cache_arg: cache})
        return torch.log_softmax(self.level_logits(out.logits[:, -1].float(), level), dim=-1)


def run_fingerprint(model: GenerativeRecommender, data: Examples) -> str:
    blob = json.dumps({"config": model.cfg.training_fields(), "vocab": [model.vocab.sizes, model.vocab.table],
                       "items": hashlib.sha256(model.vocab.item_codes.tobytes()).hexdigest(),
                       "data": data.fingerprint()}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def train(model: GenerativeRecommender, data: Examples, checkpoints=None, prefix: str = "", on_step=None):
    """L_rip on the shared loop (seeded batches, resumable safetensors checkpoints)."""
    return fit(model, model.cfg, len(data), lambda idx: model.loss(data, idx), run_fingerprint(model, data),
               checkpoints, prefix, {"config": asdict(model.cfg)}, on_step)


@dataclass
class EarlyStopped:
    best_epoch: int
    epochs_run: int
    valid_ndcg10: list[float]  # one per epoch run
    checkpoint: str
    result: object  # the last ops.training.TrainResult (its history holds every step)


def train_early_stopping(model: GenerativeRecommender, train_rows: Examples, valid_rows: Examples,
                         index: PrefixIndex, checkpoints, decoder: Decoder = "beam", width: int | None = None
                         ) -> EarlyStopped:
    """Epoch by epoch up to `cfg.epochs`, each resumed from the previous epoch's checkpoint, validation NDCG@10
    after each; stops after `cfg.patience` epochs without improvement and loads the best epoch's weights (the
    paper's early stopping). `checkpoints` is required: every epoch ends in one. `width`: of the validation beam
    (NDCG@10 needs 10)."""
    from dataclasses import replace

    from ops.training import as_store

    store = as_store(checkpoints)
    if store is None:
        raise ValueError("early stopping needs a checkpoint store (every epoch ends in a checkpoint)")
    base = model.cfg
    per_epoch = max(1, -(-len(train_rows) // base.batch_size))
    prefix = f"{run_fingerprint(model, train_rows)}-"
    scores: list[float] = []
    best, best_epoch, best_ck, result = -1.0, 0, "", None
    for epoch in range(1, max(1, int(np.ceil(base.epochs))) + 1):
        model.cfg = replace(base, max_steps=epoch * per_epoch, checkpoint_every=0)
        result = train(model, train_rows, store, prefix)
        scores.append(evaluate(model, valid_rows, index, (10,), decoder, width or 10)[("ndcg", 10)])
        if scores[-1] > best:
            best, best_epoch, best_ck = scores[-1], epoch, str(result.checkpoint)
        elif epoch - best_epoch >= base.patience:
            break
    model.cfg = base
    model.load_weights(Path(best_ck))
    return EarlyStopped(best_epoch, len(scores), [round(s, 5) for s in scores], best_ck, result)


@torch.inference_mode()
def recommend(model: GenerativeRecommender, data: Examples, index: PrefixIndex, k: int = 20,
              decoder: Decoder = "beam", width: int | None = None, batch_users: int = 64,
              exclude_history: bool = False) -> np.ndarray:
    """Top-k item indices per example (rows x k), decoded only into items of the code table."""
    model.eval()
    out = np.full((len(data), k), -1, dtype=np.int64)
    history_items = None
    for a in range(0, len(data), batch_users):
        b = min(len(data), a + batch_users)
        model.prepare(data.contexts[a:b])
        users = torch.arange(b - a, device=model.device_)
        exclude = None
        if exclude_history:
            history_items = history_items or _history_items(data, model.vocab)
            exclude = torch.zeros(b - a, index.n_items, dtype=torch.bool, device=model.device_)
            for r, items in enumerate(history_items[a:b]):
                exclude[r, items] = True
        if decoder == "exact":
            scores = exact_scores(model.step, index, users)
            if exclude is not None:
                scores = scores.masked_fill(exclude, float("-inf"))
            top = scores.topk(min(k, index.n_items), dim=1).indices
            out[a:b, : top.shape[1]] = top.cpu().numpy()
        else:
            items, _ = beam_search(model.step, index, users, k=k, width=width or max(k, 2 * k), exclude=exclude)
            out[a:b] = items.cpu().numpy()
    return out


def _history_items(data: Examples, vocab: SemanticVocab) -> list[list[int]]:
    """Item indices of each context (from its tokens: P tokens per item after <bos>)."""
    lookup = {tuple(t): i for i, t in enumerate(vocab.item_tokens.tolist())}
    p = vocab.positions
    return [[lookup[tuple(c[1 + j: 1 + j + p])] for j in range(0, len(c) - 1, p)] for c in data.contexts]


def evaluate(model: GenerativeRecommender, data: Examples, index: PrefixIndex, ks: Sequence[int] = (1, 5, 10, 20),
             decoder: Decoder = "beam", width: int | None = None) -> dict[tuple[str, int], float]:
    """Recall@K / NDCG@K of the held-out targets, ranked over the whole catalog (exact scoring) or the beam."""
    k = max(ks)
    if decoder == "exact":
        model.eval()
        scores = []
        for a in range(0, len(data), 64):
            model.prepare(data.contexts[a: a + 64])
            scores.append(exact_scores(model.step, index, torch.arange(len(model._contexts))).cpu().numpy())
        ranks = ranks_from_scores(np.concatenate(scores), data.target_items)
    else:
        ranks = ranks_from_lists(recommend(model, data, index, k, "beam", width), data.target_items)
    return recall_ndcg(ranks, ks)
