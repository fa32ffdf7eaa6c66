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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F

from ops.config import ConfigError, OpenFraction, PositiveFloat, PositiveInt
from ops.embed import collate
from ops.metrics import ranks_from_lists, ranks_from_scores, recall_ndcg
from ops.models import SMOLLM2, select_device
from ops.recommend.base import RecData, Recommender, SeedRun
from ops.recommend.decoding import PrefixIndex, beam_search, exact_scores
from ops.recommend.tokens import BOS, PAD, SemanticVocab
from ops.serving import ServingIndex
from ops.training import EarlyStopping, TrainingConfig, autocast, autocast_dtype, fit

Decoder = Literal["beam", "exact"]


@dataclass
class GenerativeConfig(TrainingConfig):
    """The paper's settings for real runs (lr 5e-4, batch 64, LoRA rank 128) over the shared training settings.
    `scratch` reads layers .. dropout; `pretrained` reads model .. align_epochs."""

    backbone: Literal["scratch", "pretrained"] = "scratch"
    layers: PositiveInt = 4
    d_model: PositiveInt = 128
    heads: PositiveInt = 4
    d_ff: PositiveInt = 512
    dropout: OpenFraction = 0.1
    # pretrained: any causal LM (or an encoder such as BERT, run as a causal decoder) by HF path or offline name
    model: str = SMOLLM2
    lora_rank: PositiveInt = 128
    lora_alpha: PositiveInt = 128
    lora_dropout: OpenFraction = 0.05
    target_modules: list[str] | None = None  # None = peft's default for the model family
    prompt: str = "A user's history of items, then the next item:"
    align_prompt: str = "An item's description, then the item:"
    max_text_tokens: PositiveInt = 48  # of an item's text in the alignment task
    align: bool = True  # phase 1 = L_rip jointly with L_align (text -> codes), then L_rip alone
    align_epochs: PositiveFloat = 10.0  # at most, early-stopped like `epochs`
    max_history: PositiveInt = 20
    train_on: Literal["all", "last"] = "all"  # which items of a training sequence are targets (see `loss`)
    lr: float = 5e-4
    batch_size: int = 64
    micro_batch_size: int = 64
    epochs: float = 10.0  # at most; training stops early when validation NDCG@10 has not improved for `patience`
    patience: PositiveInt = 5
    valid_users: PositiveInt | None = None  # early stopping validates on the first N validation rows (None: all)
    # data-parallel processes each seed's training launches on its node (ops.distributed.launch, as torchrun
    # does: one per GPU); validation is split among them too. 1: the step's own process
    processes: PositiveInt = 1

    def check(self) -> None:
        if self.backbone == "scratch" and self.d_model % self.heads:
            raise ConfigError(f"d_model = {self.d_model} must be a multiple of heads = {self.heads}")

    def training_fields(self) -> dict[str, object]:
        """The trajectory of the weights: a longer run of the same settings continues it (batches are a function
        of seed and step, the learning rate is constant), so the run length and the stopping rule are not in it
        and an early-stopped run resumes epoch by epoch."""
        skip = ("epochs", "max_steps", "patience", "align_epochs", "valid_users")
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


def subset(data: Examples, rows: Sequence[int]) -> Examples:
    rows = list(rows)
    return Examples([data.users[i] for i in rows], [data.contexts[i] for i in rows], data.targets[rows],
                    data.target_items[rows])


def examples(sequences: pl.DataFrame, vocab: SemanticVocab, split: str, max_history: int = 20) -> Examples:
    """The rows of one split of `user_sequences` as token examples (an item missing from the code table is an
    error naming it, never a silent drop)."""
    rows = sequences.filter(pl.col("split") == split)
    items = vocab.items(rows["target"].to_list())
    contexts = [vocab.history_tokens(h, max_history) for h in rows["history"].to_list()]
    return Examples(rows["user_id"].to_list(), contexts, vocab.item_codes[items], items)


class LMRecommender(torch.nn.Module):
    """What the recommenders built on a Hugging Face LM share for ops.training.fit: their trainable parameters
    and safetensors weights (only the trainable ones: LoRA and the code tokens of a pretrained backbone, not its
    frozen weights)."""

    device_: torch.device

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def _trainable_state(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().cpu().contiguous() for n, p in self.named_parameters() if p.requires_grad}

    def save_weights(self, directory: Path) -> None:
        from safetensors.torch import save_file

        save_file(self._trainable_state(), str(directory / "model.safetensors"))

    def load_weights(self, directory: Path) -> None:
        from safetensors.torch import load_file

        saved = load_file(str(directory / "model.safetensors"), device=str(self.device_))
        expected = set(self._trainable_state())
        if set(saved) != expected:
            raise ValueError(f"{directory} holds other weights than this model trains: "
                             f"{sorted(set(saved) ^ expected)[:4]}")
        self.load_state_dict(saved, strict=False)


class GenerativeRecommender(LMRecommender):
    """A transformer body over token embeddings, with the code tokens' own embedding table as input rows and
    (tied) output head: only code tokens are ever scored. `scratch`: GPT-2 classes at random initialisation, the
    code vocabulary its whole vocabulary. `pretrained`: a pretrained LM with LoRA, its text vocabulary kept for the
    prompts and item texts and the code tokens appended after it (id = text vocabulary size + code token), so its
    49 k-word head is never evaluated. `texts`: each item's text (vocab order), for the alignment task."""

    def __init__(self, cfg: GenerativeConfig, vocab: SemanticVocab, texts: Sequence[str] | None = None):
        super().__init__()
        self.cfg, self.vocab = cfg, vocab
        self.device_ = select_device(cfg.device)
        # a pretrained LM backbone is LM-sized: on a CPU with native bf16 units `auto` autocasts it in bf16
        self.autocast_dtype = autocast_dtype(self.device_, cfg.dtype, cpu_bf16=cfg.backbone == "pretrained")
        torch.manual_seed(cfg.seed)  # the random initialisation (scratch), LoRA's A and the code tokens
        if cfg.backbone == "scratch":
            self._build_scratch(cfg, vocab)
        elif cfg.backbone == "pretrained":
            self._build_pretrained(cfg, vocab, texts)
        else:
            raise ValueError(f"backbone must be 'scratch' or 'pretrained', got {cfg.backbone!r}")
        self.to(self.device_)
        self._contexts: list[list[int]] = []  # what step() reads: the contexts of the users being decoded
        self.tokens_seen = 0  # tokens run through training losses (padding excluded): the throughput figure
        # beam steps of the scratch body attend to one shared copy of each user's context (_shared_context_step);
        # False: Hugging Face's forward on a key / value cache carried per beam (the comparison in bench/recommend)
        self.shared_context = True
        self._beam: tuple[Any, Any] = (None, None)  # a beam search's rows and their cache, from level to level
        forward = inspect.signature(self.body.forward).parameters
        self._cache_arg = "cache" if "cache" in forward else "past_key_values"

    def _build_scratch(self, cfg: GenerativeConfig, vocab: SemanticVocab) -> None:
        from transformers import GPT2Config, GPT2LMHeadModel

        positions = 1 + (cfg.max_history + 1) * vocab.positions
        lm = GPT2LMHeadModel(GPT2Config(
            vocab_size=vocab.size, n_positions=positions, n_embd=cfg.d_model, n_layer=cfg.layers, n_head=cfg.heads,
            n_inner=cfg.d_ff, resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout,
            # no dropout on the attention probabilities: it forces the math attention kernel, a sixth of a step
            attn_pdrop=0.0, bos_token_id=1, eos_token_id=2, pad_token_id=PAD))
        self.body: Any = lm.transformer  # GPT-2 ties its head to wte: logits = h @ wte
        self.codes = lm.transformer.wte
        self._hf_lm = (lm,)  # the same weights as a GenerationMixin model (not a submodule: nothing registered twice)
        self.text_embed: Any = None
        self.text_size, self.revision = 0, "scratch"
        self.prompt: list[int] = []
        self.align_rows: list[list[int]] = []

    def _build_pretrained(self, cfg: GenerativeConfig, vocab: SemanticVocab, texts: Sequence[str] | None) -> None:
        import warnings

        from peft import LoraConfig, get_peft_model
        from transformers import AutoConfig

        from ops.models import (
            is_decoder_only,
            load_backbone,
            load_tokenizer,
            model_revision,
            resolve_model_path,
        )

        path = resolve_model_path(cfg.model)
        hf_config = AutoConfig.from_pretrained(path)
        self.revision = model_revision(path, hf_config)
        # an encoder (BERT, as in the paper) runs as a causal decoder: its LM-head class with is_decoder=True
        extra: dict[str, Any] = {} if is_decoder_only(hf_config) else {"is_decoder": True}
        lm: Any = load_backbone(path, causal_lm=True, **extra)
        with warnings.catch_warnings():
            # peft 0.21 reads transformers 5's deprecated `is_gradient_checkpointing` alias (see ops.palette.model)
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            self.peft = get_peft_model(lm, LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha,
                                                      lora_dropout=cfg.lora_dropout,
                                                      target_modules=cfg.target_modules))
        self.body = lm.base_model  # LoRA layers are injected in place: the body runs with them
        self.text_embed = self.body.get_input_embeddings()
        self.text_size = self.text_embed.num_embeddings
        weight = self.text_embed.weight.detach().float()
        # new tokens, not words: the mean word embedding plus a small draw. As the head is tied, a draw at the words'
        # own spread would start the code logits ~±10 apart (a loss of ~15 nats where uniform is ln 256 = 5.5).
        init = weight.mean(0) + 0.1 * weight.std() * torch.randn(vocab.size, weight.shape[1])
        self.codes = torch.nn.Embedding(vocab.size, weight.shape[1])
        with torch.no_grad():
            self.codes.weight.copy_(init)
        tokenizer = load_tokenizer(path)
        self.prompt = tokenizer(cfg.prompt)["input_ids"]
        align_prompt = tokenizer(cfg.align_prompt)["input_ids"]
        self.align_rows = []
        if cfg.align and texts is not None:
            if len(texts) != len(vocab.item_ids):
                raise ValueError(f"{len(texts)} texts for {len(vocab.item_ids)} items of {vocab.table}")
            encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
            self.align_rows = [align_prompt + ids[: cfg.max_text_tokens] for ids in encoded]

    # --- forward -----------------------------------------------------------------------------------------------
    def _model_rows(self, rows: Sequence[Sequence[int]]) -> list[list[int]]:
        """Code-token rows as the body's token ids: the prompt, then the code tokens after the text vocabulary."""
        if not self.text_size:  # scratch: the code tokens are the whole vocabulary, no prompt
            return [list(row) for row in rows]
        return [self.prompt + [self.text_size + t for t in row] for row in rows]

    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        if self.text_embed is None:
            return self.codes(ids)
        is_code = (ids >= self.text_size)[..., None]
        return torch.where(is_code, self.codes((ids - self.text_size).clamp(min=0)),
                           self.text_embed(ids.clamp(max=self.text_size - 1)))

    def _run(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor | None = None, **kwargs):
        """The body over left-padded ids; positions count from each row's first token unless given."""
        if positions is None:
            positions = (mask.cumsum(1) - 1).clamp(min=0)
        with autocast(self.device_, self.autocast_dtype):
            return self.body(inputs_embeds=self._embed(ids.to(self.device_)), attention_mask=mask.to(self.device_),
                             position_ids=positions.to(self.device_), **kwargs)

    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits over the code vocabulary (tied to the code tokens' input embeddings)."""
        return F.linear(hidden.float(), self.codes.weight.float())

    def _logits(self, rows: Sequence[Sequence[int]]) -> torch.Tensor:
        """Code logits (B, T, V) of left-padded body rows at every position: the plain full forward that the
        cached decoding steps must reproduce (tests)."""
        ids, mask = collate(rows, PAD, "left")
        return self._head(self._run(ids, mask).last_hidden_state)

    def level_logits(self, logits: torch.Tensor, level: int) -> torch.Tensor:
        start = self.vocab.offsets[level]
        return logits[..., start: start + self.vocab.sizes[level]]

    def loss(self, data: Examples, idx: Sequence[int]) -> tuple[torch.Tensor, dict[str, float]]:
        """L_rip: mean cross-entropy of the trained items' tokens, each over its position's vocabulary
        (teacher-forced). `train_on="all"`: every item of history + target after the first is a target, the
        paper's L_rip (its sum runs over the items of the flattened sequence; each prefix is an example, as in
        TIGER's and SASRec's training data) at the cost of one pass; `"last"`: only the target."""
        idx = list(idx)
        tokens = self.vocab.item_codes[data.target_items[idx]] + np.asarray(self.vocab.offsets)
        rows = [data.contexts[i] + tokens[j].tolist() for j, i in enumerate(idx)]
        p = self.vocab.positions
        tails = []
        for row in rows:
            n_items = (len(row) - 1) // p
            first = 1 if self.cfg.train_on == "all" and n_items > 1 else n_items - 1  # first target item
            tails.append(row[1 + first * p:])
        return self._tail_loss(self._model_rows(rows), tails)

    def align_loss(self, items: Sequence[int]) -> tuple[torch.Tensor, dict[str, float]]:
        """L_align: an item's text in, its code tokens out (the loss is on the code tokens only)."""
        tails = [self.vocab.item_tokens[i].tolist() for i in items]
        rows = [self.align_rows[i] + [self.text_size + BOS] + [self.text_size + t for t in tail]
                for i, tail in zip(items, tails)]
        return self._tail_loss(rows, tails, "align_")

    def _tail_loss(self, rows: Sequence[Sequence[int]], tails: Sequence[Sequence[int]], name: str = ""
                   ) -> tuple[torch.Tensor, dict[str, float]]:
        """Cross-entropy of each row's last tokens (`tails`, code tokens starting at an item boundary), each over
        its level's vocabulary; rows are left-padded, so the tails end at the same column."""
        p = self.vocab.positions
        # Rows of similar length run together (four groups by length, the same sum): a batch padded to its longest
        # history spends about half its tokens on padding.
        order = sorted(range(len(rows)), key=lambda r: len(rows[r]))
        size = max(1, -(-len(rows) // 4))
        parts = []
        for g in range(0, len(order), size):
            group = order[g: g + size]
            ids, mask = collate([rows[r] for r in group], PAD, "left")
            self.tokens_seen += int(mask.sum())
            hidden = self._run(ids, mask).last_hidden_state
            width = hidden.shape[1]
            labels = torch.zeros(len(group), width, dtype=torch.long)
            levels = torch.full((len(group), width), -1, dtype=torch.long)
            for j, r in enumerate(group):
                labels[j, width - 1 - len(tails[r]): width - 1] = torch.as_tensor(tails[r], dtype=torch.long)
                levels[j, width - 1 - len(tails[r]): width - 1] = torch.arange(len(tails[r])) % p
            # the predicting positions' hidden states first, then each level's logits over its own codes only: the
            # full-vocabulary logits of every position (and their backward) would be most of a small model's step
            at = (levels >= 0).to(self.device_)
            parts.append((hidden[at].float(), labels.to(self.device_)[at], levels.to(self.device_)[at]))
        hidden, labels, levels = (torch.cat([part[i] for part in parts]) for i in range(3))
        losses, counts = [], []
        for level in range(p):
            here = levels == level
            start = self.vocab.offsets[level]
            logits = F.linear(hidden[here], self.codes.weight[start: start + self.vocab.sizes[level]].float())
            losses.append(F.cross_entropy(logits, labels[here] - start, reduction="sum"))
            counts.append(int(here.sum()))
        total = torch.stack(losses).sum() / max(1, sum(counts))
        return total, {f"{name}loss": total.item(), **{f"{name}loss_{lv}": (v / max(1, c)).item()
                                                       for lv, (v, c) in enumerate(zip(losses, counts))}}

    @torch.inference_mode()
    def prepare(self, contexts: Sequence[Sequence[int]]) -> None:
        """Run the contexts of the users about to be decoded once and keep their key/value cache: every decoding
        step then only runs its prefix tokens on top (the beams of a user share its context)."""
        self._contexts = [list(c) for c in contexts]
        ids, mask = collate(self._model_rows(contexts), PAD, "left")
        self._ctx_mask = mask.to(self.device_)
        self._ctx_len = mask.sum(1).to(self.device_)
        out = self._run(ids, mask, use_cache=True)
        # transformers 5 names the key/value cache `cache`, 4.x `past_key_values`
        self._ctx_cache = out.cache if hasattr(out, "cache") else out.past_key_values
        self._ctx_last = self._head(out.last_hidden_state[:, -1])

    @torch.inference_mode()
    def step(self, users: torch.Tensor, prefixes: torch.Tensor, level: int,
             parents: torch.Tensor | None = None) -> torch.Tensor:
        """ops.recommend.decoding.StepFn: log-probabilities of level `level`'s codes after each user's context
        (as prepared) and the prefix codes so far. With `parents` (beam search: the row of the previous call each
        row extends) the previous call's cache is carried on and only the last prefix code runs; without, the
        whole prefix runs on a copy of the context cache."""
        if level == 0:
            self._beam = (users, None)  # the level-0 rows: users, on the context cache (nothing run)
            return torch.log_softmax(self.level_logits(self._ctx_last[users], level), dim=-1)
        import copy

        offsets = torch.as_tensor(self.vocab.offsets[:level], dtype=torch.long, device=self.device_)
        tokens = prefixes.to(self.device_) + offsets + self.text_size
        mask = torch.cat([self._ctx_mask[users], torch.ones_like(tokens)], dim=1)
        positions = self._ctx_len[users][:, None] + torch.arange(level, device=self.device_)
        if parents is not None and self.cfg.backbone == "scratch" and self.shared_context:
            shared = self._shared_context_step(users, tokens[:, -1:], positions[:, -1:], level, parents)
            if shared is not None:
                return torch.log_softmax(self.level_logits(self._head(shared), level), dim=-1)
        if parents is None:  # the whole prefix on a copy of the context cache (feeding tokens appends to it)
            cache = copy.deepcopy(self._ctx_cache)
            cache.batch_select_indices(users)
        else:
            previous_users, previous = self._beam
            parents = parents.to(self.device_)
            if previous is None:  # level 1: the context cache's rows of the level-0 users extended
                if level != 1:
                    raise ValueError("a carried cache needs the calls of every level before, in order")
                cache = copy.deepcopy(self._ctx_cache)
                cache.batch_select_indices(previous_users[parents])
            elif isinstance(previous, list):
                raise ValueError("the previous level ran with a shared context (_shared_context_step)")
            else:  # the previous level's cache (owned by this search), reordered to the surviving beams
                cache = previous
                cache.batch_select_indices(parents)
            tokens, positions = tokens[:, -1:], positions[:, -1:]
        out = self._run(tokens, mask, positions, use_cache=True, **{self._cache_arg: cache})
        if parents is not None:
            self._beam = (users, out.cache if hasattr(out, "cache") else out.past_key_values)
        return torch.log_softmax(self.level_logits(self._head(out.last_hidden_state[:, -1]), level), dim=-1)

    def _shared_context_step(self, users: torch.Tensor, tokens: torch.Tensor, positions: torch.Tensor,
                             level: int, parents: torch.Tensor) -> torch.Tensor | None:
        """The beam step of the scratch (GPT-2) body with attention of our own: each row's new token attends to
        its user's one copy of the context keys / values (the prepared cache, never copied per beam) and to its
        own beam's prefix keys / values (a few tokens, reordered to the surviving beams each level). The same
        arithmetic as the body's forward over context + prefix, without copying the context once per beam. Rows
        must come as each user's beams side by side (beam_search's layout); None where they do not (the caller
        then runs the body on a carried cache)."""
        rows = len(users)
        width = int((users == users[0]).cumprod(0).sum())  # the first user's beams
        if rows % width:
            return None
        grouped = users.view(-1, width)
        if not bool((grouped == grouped[:, :1]).all()):
            return None
        group = grouped[:, 0]
        previous_users, previous = self._beam
        if previous is None and level != 1:
            raise ValueError("a carried cache needs the calls of every level before, in order")
        if isinstance(previous, list):  # our prefix keys / values of the rows of the previous level
            prefix_kv = [(k[parents], v[parents]) for k, v in previous]
        elif previous is None:
            prefix_kv = None
        else:
            return None  # the previous level ran on a carried cache (mixed paths): keep to it
        body, n_groups = self.body, len(group)
        heads = body.config.n_head
        dim = body.config.n_embd // heads
        bias = torch.zeros(self._ctx_mask.shape, device=self.device_).masked_fill(self._ctx_mask == 0,
                                                                                   float("-inf"))[group]
        bias = bias[:, None, None, :]  # (groups, 1, 1, context)
        with autocast(self.device_, self.autocast_dtype):
            h = self._embed(tokens) + body.wpe(positions)  # (rows, 1, d)
            kept = []
            for i, block in enumerate(body.h):
                q, k, v = block.attn.c_attn(block.ln_1(h)).split(body.config.n_embd, dim=2)
                q, k, v = (t.view(rows, 1, heads, dim).transpose(1, 2) for t in (q, k, v))  # (rows, heads, 1, dim)
                if prefix_kv is not None:
                    k = torch.cat([prefix_kv[i][0], k], dim=2)
                    v = torch.cat([prefix_kv[i][1], v], dim=2)
                kept.append((k, v))
                layer = self._ctx_cache.layers[i]
                ctx_k, ctx_v = layer.keys[group], layer.values[group]  # (groups, heads, context, dim)
                scale = getattr(block.attn, "scaling", dim ** -0.5)
                q_by_user = q.reshape(n_groups, width, heads, dim).transpose(1, 2)  # (groups, heads, width, dim)
                s_ctx = (q_by_user @ ctx_k.transpose(-1, -2)) * scale + bias
                s_own = ((q @ k.transpose(-1, -2)) * scale).reshape(n_groups, width, heads, -1).transpose(1, 2)
                p = torch.softmax(torch.cat([s_ctx, s_own.to(s_ctx.dtype)], dim=-1), dim=-1)
                context = ctx_k.shape[2]
                out = p[..., :context].to(ctx_v.dtype) @ ctx_v  # (groups, heads, width, dim)
                p_own = p[..., context:].transpose(1, 2).reshape(rows, heads, 1, -1).to(v.dtype)
                out = out + (p_own @ v).reshape(n_groups, width, heads, dim).transpose(1, 2)
                h = h + block.attn.c_proj(out.transpose(1, 2).reshape(rows, 1, heads * dim))
                h = h + block.mlp(block.ln_2(h))
            h = body.ln_f(h)
        self._beam = (users, kept)
        return h[:, -1]

    def hf_model(self):
        """The scratch backbone as Hugging Face's GPT2LMHeadModel over the code vocabulary (the same weights), for
        `generate`-based decoders such as the peers' in bench/recommend.py."""
        if self.cfg.backbone != "scratch":
            raise ValueError("hf_model: only the scratch backbone is one Hugging Face model over the code vocabulary")
        return self._hf_lm[0]

    def describe(self) -> dict[str, object]:
        total = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.trainable_parameters())
        return {"backbone": self.cfg.backbone, "model": self.cfg.model if self.cfg.backbone == "pretrained" else
                "gpt2 (random init)", "revision": self.revision, "parameters": total,
                "trainable_parameters": trainable, "device": str(self.device_),
                "dtype": str(self.autocast_dtype or torch.float32).removeprefix("torch.")}


def run_fingerprint(model: GenerativeRecommender, data: Examples, align: bool = False, start: str = "") -> str:
    """The training trajectory: settings, model revision, code table, data, the task mix and the weights it
    started from (`start`: the checkpoint a second phase continues)."""
    blob = json.dumps({"config": model.cfg.training_fields(), "revision": model.revision,
                       "vocab": [model.vocab.sizes, model.vocab.table],
                       "items": hashlib.sha256(model.vocab.item_codes.tobytes()).hexdigest(),
                       "data": data.fingerprint(), "align": hashlib.sha256(json.dumps(
                           model.align_rows).encode()).hexdigest() if align else None, "start": start},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _task_rows(model: GenerativeRecommender, data: Examples, align: bool) -> int:
    return len(data) + (len(model.align_rows) if align else 0)


def train(model: GenerativeRecommender, data: Examples, checkpoints=None, prefix: str = "", on_step=None,
          align: bool = False, start: str = "", stopping: EarlyStopping | None = None):
    """L_rip on the shared loop (seeded batches, resumable safetensors checkpoints); `align`: jointly with L_align,
    the alignment rows (one per item) drawn into the same batches and each task's mean loss summed."""
    n_rip = len(data)

    def loss(idx: Sequence[int]) -> tuple[torch.Tensor, dict[str, float]]:
        rip, text = [i for i in idx if i < n_rip], [i - n_rip for i in idx if i >= n_rip]
        parts = ([model.loss(data, rip)] if rip else []) + ([model.align_loss(text)] if text else [])
        logs = {k: v for _, part in parts for k, v in part.items()}
        return torch.stack([t for t, _ in parts]).sum(), logs

    return fit(model, model.cfg, _task_rows(model, data, align), loss, run_fingerprint(model, data, align, start),
               checkpoints, prefix, {"config": asdict(model.cfg), "align": align, "start": start}, on_step,
               stopping=stopping)


@dataclass
class EarlyStopped:
    best_epoch: int
    epochs_run: int
    valid_ndcg10: list[float]  # one per epoch run (both phases, in order)
    checkpoint: str
    result: object  # the last ops.training.TrainResult (its history holds every step of its phase)
    phases: list[dict[str, object]] = field(default_factory=list)  # per phase: task, epochs run, best epoch
    tokens: int = 0  # training tokens run (for throughput)


def train_early_stopping(model: GenerativeRecommender, train_rows: Examples, valid_rows: Examples,
                         index: PrefixIndex, checkpoints, decoder: Decoder = "beam", width: int | None = None
                         ) -> EarlyStopped:
    """The shared loop's early stopping (ops.training.EarlyStopping): validation NDCG@10 after every epoch, each
    epoch ending in a checkpoint; a phase stops after `cfg.patience` epochs without improvement and the best
    epoch's weights are kept (the paper's early stopping). With alignment rows (a pretrained backbone with item
    texts and `align`), the paper's two phases: L_rip + L_align for at most `align_epochs`, then L_rip alone for at
    most `epochs`, from the first phase's best weights. `checkpoints` is required: every epoch ends in one.
    `width`: of the validation beam (NDCG@10 needs 10)."""
    from ops.training import as_store

    store = as_store(checkpoints)
    if store is None:
        raise ValueError("early stopping needs a checkpoint store (every epoch ends in a checkpoint)")
    base, tokens_before = model.cfg, model.tokens_seen
    valid = valid_rows if base.valid_users is None else subset(valid_rows, range(min(base.valid_users,
                                                                                     len(valid_rows))))
    plan = ([(True, base.align_epochs)] if base.align and model.align_rows else []) + [(False, base.epochs)]
    scores: list[float] = []
    best, best_ck, start, result = -1.0, "", "", None
    phases: list[dict[str, object]] = []
    for align, max_epochs in plan:
        model.cfg = base
        if start:  # the previous phase's best weights, then a fresh optimizer
            model.load_weights(Path(start))
        per_epoch = max(1, -(-_task_rows(model, train_rows, align) // base.batch_size))
        total = max(1, int(np.ceil(max_epochs))) * per_epoch
        if base.max_steps > 0:  # a step budget per phase (a CPU smoke run): validated every epoch or at its end
            per_epoch, total = min(per_epoch, base.max_steps), base.max_steps
        prefix = f"{run_fingerprint(model, train_rows, align, Path(start).name if start else '')}-"
        model.cfg = replace(base, max_steps=total, checkpoint_every=0)
        stopping = EarlyStopping(lambda: _valid_ndcg10(model, valid, index, decoder, width or 10),
                                 every=per_epoch, patience=base.patience)
        result = train(model, train_rows, store, prefix, align=align, start=Path(start).name if start else "",
                       stopping=stopping)
        phase_scores = list(result.extra["evaluations"])
        phase_epoch, phase_ck = int(result.extra["best_evaluation"]), str(result.extra["best_checkpoint"])
        scores += phase_scores
        phases.append({"task": "rip+align" if align else "rip", "epochs_run": len(phase_scores),
                       "best_epoch": phase_epoch, "valid_ndcg@10": [round(x, 5) for x in phase_scores]})
        if max(phase_scores) > best:  # a second phase that never beats the first keeps the first's weights
            best, best_ck = max(phase_scores), phase_ck
        start = phase_ck
    model.cfg = base
    model.load_weights(Path(best_ck))
    best_epoch = scores.index(best) + 1
    return EarlyStopped(best_epoch, len(scores), [round(x, 5) for x in scores], best_ck, result, phases,
                        model.tokens_seen - tokens_before)


def _valid_ndcg10(model: GenerativeRecommender, valid: Examples, index: PrefixIndex, decoder: Decoder,
                  width: int) -> float:
    """Validation NDCG@10. Under data-parallel training (ops.distributed) each process ranks every N-th row and
    the ranks are gathered back into row order: the processes share the decoding and agree on the score."""
    from ops.distributed import gather, world

    w = world()
    if w.size == 1:
        return evaluate(model, valid, index, (10,), decoder, width)[("ndcg", 10)]
    parts = gather(ranks(model, subset(valid, range(w.rank, len(valid), w.size)), index, 10, decoder, width), w)
    full = np.empty(len(valid), dtype=parts[0].dtype)
    for r, part in enumerate(parts):
        full[r::w.size] = part
    return recall_ndcg(full, (10,))[("ndcg", 10)]


def _train_member(cfg: GenerativeConfig, vocab: SemanticVocab, texts: list[str] | None, train_rows: Examples,
                  valid_rows: Examples, index: PrefixIndex, checkpoints: Any, decoder: Decoder) -> EarlyStopped:
    """One process of `train_data_parallel`: the model built from `cfg`, trained as one process would be."""
    from ops.distributed import sum_terms, world

    model = GenerativeRecommender(cfg, vocab, texts)
    stopped = train_early_stopping(model, train_rows, valid_rows, index, checkpoints, decoder, width=10)
    # each process counted the tokens of its own micro-batches
    stopped.tokens = int(sum_terms({"tokens": float(stopped.tokens)}, world())["tokens"])
    return stopped


def train_data_parallel(cfg: GenerativeConfig, vocab: SemanticVocab, texts: list[str] | None, train_rows: Examples,
                        valid_rows: Examples, index: PrefixIndex, checkpoints: Any, decoder: Decoder = "beam",
                        threads: int = 0) -> EarlyStopped:
    """`train_early_stopping` in `cfg.processes` data-parallel processes of this node (ops.distributed.launch: one
    per GPU, or CPU processes with gloo), each `threads` CPU threads: the same steps as one process at the same
    global batch; rank 0 writes the checkpoints; rank 0's result (its `checkpoint`: the best epoch's weights)."""
    from ops.distributed import launch

    return launch(_train_member, (cfg, vocab, texts, train_rows, valid_rows, index, checkpoints, decoder),
                  cfg.processes, threads)


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
            found, _ = beam_search(model.step, index, users, k=k, width=width or max(k, 2 * k), exclude=exclude)
            out[a:b] = found.cpu().numpy()
    return out


def _history_items(data: Examples, vocab: SemanticVocab) -> list[list[int]]:
    """Item indices of each context (from its tokens: P tokens per item after <bos>)."""
    lookup = {tuple(t): i for i, t in enumerate(vocab.item_tokens.tolist())}
    p = vocab.positions
    return [[lookup[tuple(c[1 + j: 1 + j + p])] for j in range(0, len(c) - 1, p)] for c in data.contexts]


def evaluate(model: GenerativeRecommender, data: Examples, index: PrefixIndex, ks: Sequence[int] = (1, 5, 10, 20),
             decoder: Decoder = "beam", width: int | None = None) -> dict[tuple[str, int], float]:
    """Recall@K / NDCG@K of the held-out targets, ranked over the whole catalog (exact scoring) or the beam."""
    return recall_ndcg(ranks(model, data, index, max(ks), decoder, width), ks)


def ranks(model: GenerativeRecommender, data: Examples, index: PrefixIndex, k: int, decoder: Decoder = "beam",
          width: int | None = None) -> np.ndarray:
    """Each row's rank of its held-out target (ops.metrics: beyond the beam's `k` counts as not found)."""
    if decoder == "exact":
        model.eval()
        parts = []  # ranked 64 users at a time: no users x catalog matrix
        for a in range(0, len(data), 64):
            model.prepare(data.contexts[a: a + 64])
            scores = exact_scores(model.step, index, torch.arange(len(model._contexts))).cpu().numpy()
            parts.append(ranks_from_scores(scores, data.target_items[a: a + 64]))
        return np.concatenate(parts) if parts else np.empty(0)
    return ranks_from_lists(recommend(model, data, index, k, "beam", width), data.target_items)


class GenerativeFamily(Recommender):
    """The generative recommender on one code table (ops.recommend.base contract): one model per seed,
    early-stopped on validation NDCG@10, test users decoded into existing items only. Configs: (GenerativeConfig,)."""

    def prepare(self, data: RecData) -> None:
        from ops.embed import item_texts

        (self.base,) = self.configs
        table = data.code_table
        if table is None:
            raise ValueError(f"{self.name} needs a code table")
        self.data = data
        self.vocab = SemanticVocab.from_code_table(table, f"code_table/{data.tokenizer} of {data.dataset}")
        self.texts = None
        if self.base.backbone == "pretrained" and self.base.align:  # the alignment task's texts, code-table order
            items = table.select("item_id").join(data.items, on="item_id", how="left", maintain_order="left")
            self.texts = item_texts(items, list(data.content_attributes))
        sequences = data.needed(data.sequences, "sequences")
        self.rows = {split: examples(sequences, self.vocab, split, self.base.max_history)
                     for split in ("train", "valid", "test")}
        # the serving index a service loads (built from the same table where the caller has none): what is
        # evaluated is what is served
        serving = data.serving if data.serving is not None else ServingIndex.from_code_table(table)
        self.index = PrefixIndex.from_serving(serving, self.vocab.item_ids)

    def run(self, seed: int) -> SeedRun:
        import time

        from ops.recommend.base import ranking_run

        cfg = replace(self.base, seed=seed)
        began = time.perf_counter()
        if cfg.processes > 1:  # trained before this process builds a model of its own (its GPU is rank 0's)
            stopped = train_data_parallel(cfg, self.vocab, self.texts, self.rows["train"], self.rows["valid"],
                                          self.index, self.data.checkpoints, self.evaluation.decoder,
                                          threads=max(1, torch.get_num_threads() // cfg.processes))
            model = GenerativeRecommender(cfg, self.vocab, self.texts)
            model.load_weights(Path(stopped.checkpoint))
        else:
            model = GenerativeRecommender(cfg, self.vocab, self.texts)
            stopped = train_early_stopping(model, self.rows["train"], self.rows["valid"], self.index,
                                           self.data.checkpoints, self.evaluation.decoder, width=10)  # NDCG@10
        train_seconds = time.perf_counter() - began
        test = self.rows["test"]
        top = recommend(model, test, self.index, k=20, decoder=self.evaluation.decoder,
                        width=self.evaluation.beam_width)
        run = ranking_run(ranks_from_lists(top, test.target_items), test.users, self.data, self.name, seed,
                          [h["loss"] for h in stopped.result.history],  # type: ignore[attr-defined]  # result: object
                          early_stopping={"best_epoch": stopped.best_epoch, "epochs_run": stopped.epochs_run,
                                          "valid_ndcg@10": stopped.valid_ndcg10, "phases": stopped.phases})
        run.publish = Path(stopped.checkpoint).name  # the best epoch's model
        described = model.describe()
        run.facts = {"tokens": stopped.tokens, "train_seconds": train_seconds, "processes": cfg.processes,
                     "model": {k: v for k, v in described.items() if k in (
                         "model", "revision", "device", "dtype", "parameters", "trainable_parameters")}}
        return run

    def metadata(self, runs: Sequence[SeedRun]) -> dict[str, object]:
        tokens = sum(r.facts["tokens"] for r in runs)
        seconds = sum(r.facts["train_seconds"] for r in runs)
        return {"train_rows": len(self.rows["train"]), "test_rows": len(self.rows["test"]),
                "items": self.index.n_items, **(runs[-1].facts["model"] if runs else {}),
                "processes": max((r.facts["processes"] for r in runs), default=1),
                "train_tokens_per_s": round(tokens / max(seconds, 1e-9), 1)}
