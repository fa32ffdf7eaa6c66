"""The LAMIA palette model: a Hugging Face backbone with LoRA (peft), L trainable LaP embeddings and one trainable
task token per attribute, run in two passes under the hierarchical mask (ops.palette.mask).

Pass 1 reads `[content; LaP]`; the last hidden states at the LaP positions are the item's palette (L x D, D = the
input-embedding width, which is also the width of the final hidden states for OPT / GPT-2 / LLaMA / BERT).
Pass 2 writes the palette into the LdP positions of `[LdP; task; answer]` and the next-token loss over the answer
is L_gen, so the only way content reaches the answer is through the palette.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import polars as pl
import torch
import torch.nn.functional as F

from ops.embed import item_texts
from ops.models import (
    dtype_choice,
    is_decoder_only,
    load_backbone,
    load_tokenizer,
    model_revision,
    resolve_model_path,
    select_device,
)
from ops.palette.config import PaletteConfig
from ops.palette.mask import (
    CONTENT,
    IGNORE,
    LAP,
    Packed,
    additive_mask,
    allowed,
    full_row,
    pack,
    pass1_row,
    pass2_row,
)
from ops.training import autocast, autocast_dtype


def masked_rows(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`x[mask]` for a (B, T) mask over x (B, T, D), as an index_select. Why: the backward of advanced indexing
    is index_put_(accumulate=True), which on CPU adds with atomic floats across threads once the tensor is large
    (>= 32 k elements), so gradients, and after K-Means whole codes, differ from run to run; index_select's
    backward (index_add_) adds in index order. The same holds for every gather of a trainable tensor here."""
    return x.reshape(-1, x.shape[-1]).index_select(0, mask.reshape(-1).nonzero().squeeze(1))


@dataclass
class PaletteData:
    """Token ids of every item's content and of each task's answer (empty list = no such task for the item)."""

    item_ids: list[str]
    content: list[list[int]]
    answers: list[list[list[int]]]  # [item][task]
    tasks: list[str]
    content_attributes: list[str]

    def __len__(self) -> int:
        return len(self.item_ids)

    def subset(self, idx: Sequence[int]) -> PaletteData:
        return PaletteData([self.item_ids[i] for i in idx], [self.content[i] for i in idx],
                           [self.answers[i] for i in idx], self.tasks, self.content_attributes)

    def fingerprint(self) -> str:
        h = hashlib.sha256(json.dumps([self.item_ids, self.content, self.answers, self.tasks]).encode())
        return h.hexdigest()[:16]


def _special(tokenizer, *names: str) -> list[int]:
    for n in names:
        v = getattr(tokenizer, f"{n}_token_id", None)
        if v is not None:
            return [int(v)]
    return []


def prepare_data(items: pl.DataFrame, tasks: Sequence[str], content_attributes: int, tokenizer,
                 cfg: PaletteConfig) -> PaletteData:
    """Content = `attr: value` text of the first r attributes (same text as the embedding stage), prefixed by the
    tokenizer's BOS (or CLS); one task per attribute whose answer is its value followed by EOS (or SEP)."""
    tasks = list(tasks)
    missing = [t for t in tasks if t not in items.columns]
    if missing:
        raise ValueError(f"task attributes {missing} are not columns of items: {items.columns}")
    content_attrs = tasks[:content_attributes]
    bos, eos = _special(tokenizer, "bos", "cls"), _special(tokenizer, "eos", "sep")
    texts = item_texts(items, content_attrs)
    room = cfg.max_content_tokens - len(bos)
    content = [bos + ids[:room] for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    answers: list[list[list[int]]] = [[] for _ in range(items.height)]
    for t in tasks:
        values = items[t].fill_null("").str.strip_chars().to_list()
        encoded = tokenizer(values, add_special_tokens=False)["input_ids"]
        for i, (v, ids) in enumerate(zip(values, encoded)):
            answers[i].append(ids[: cfg.max_answer_tokens - len(eos)] + eos if v else [])
    return PaletteData(items["item_id"].to_list(), content, answers, tasks, content_attrs)


class PaletteModel(torch.nn.Module):
    ldp_placeholder: torch.Tensor  # a buffer (register_buffer): nn.Module's __getattr__ would type it Tensor | Module

    def __init__(self, cfg: PaletteConfig, tasks: Sequence[str]):
        super().__init__()
        from peft import LoraConfig, get_peft_model
        from transformers import AutoConfig

        self.cfg = cfg
        self.tasks = list(tasks)
        self.path = resolve_model_path(cfg.model)
        self.device_ = select_device(cfg.device)
        # Weights stay float32; the forward runs under autocast (mixed precision training) whenever the dtype is
        # not float32: "auto" = bf16 (else fp16) on CUDA, and on a CPU bf16 only where it has native bf16 units
        # (ops.models.cpu_bf16_native), else float32; an explicit "bfloat16" / "float16" autocasts on CPU too (the
        # GPU path, testable here). fp16 comes with loss scaling (ops.palette.train).
        self.autocast_dtype = autocast_dtype(self.device_, cfg.dtype, cpu_bf16=True)
        self.dtype_choice = dtype_choice(self.device_, cfg.dtype, cpu_bf16=True)
        hf_config = AutoConfig.from_pretrained(self.path)
        self.decoder_only = is_decoder_only(hf_config)
        self.revision = model_revision(self.path, hf_config)
        self.tokenizer = load_tokenizer(self.path)
        extra: dict[str, Any] = {"attn_implementation": cfg.attn_implementation} if cfg.attn_implementation else {}
        # a transformers PreTrainedModel, typed nn.Module, whose attributes would read as Tensor | Module
        lm: Any = load_backbone(self.path, causal_lm=self.decoder_only, **extra)
        lora = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=cfg.target_modules)
        torch.manual_seed(cfg.seed)  # LoRA's A matrices are drawn here
        with warnings.catch_warnings():
            # peft 0.21 reads transformers 5's deprecated `is_gradient_checkpointing` alias (a FutureWarning in every
            # run's log that no user can act on); nothing else is silenced.
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            self.peft = get_peft_model(lm, lora)
        lora_config = cast(LoraConfig, self.peft.peft_config["default"])  # peft types it as the PeftConfig base
        # get_peft_model has resolved the modules (None = the family's default) to a set of names
        self.target_modules = sorted(cast(set[str], lora_config.target_modules))
        # LoRA layers are injected in place, so the backbone object below runs with them.
        self.backbone = lm.base_model
        self.head = lm.get_output_embeddings() if self.decoder_only else None
        emb = self.backbone.get_input_embeddings()
        dim = emb.embedding_dim
        self.dim = dim
        self.bidirectional = (CONTENT,) if (cfg.content_attention == "bidirectional" or (
            cfg.content_attention == "auto" and not self.decoder_only)) else ()
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else (self.tokenizer.eos_token_id or 0))
        g = torch.Generator().manual_seed(cfg.seed)
        scale = float(emb.weight.detach().std())
        # LaP: new embeddings, not vocabulary words; drawn at the scale of the word embeddings.
        lap = torch.randn(cfg.palette_size, dim, generator=g) * scale
        if cfg.lap_init == "summary":
            summary = _special(self.tokenizer, "cls", "bos")
            if not summary:
                raise ValueError(f"lap_init 'summary': the tokenizer of {cfg.model} has neither a CLS nor a BOS token")
            lap = emb.weight[summary[0]].detach().float().cpu() + 0.1 * lap
        self.lap = torch.nn.Parameter(lap)
        # Task tokens start as the mean embedding of the attribute's name ("title", "detail_desc", ...).
        with torch.no_grad():
            names = self.tokenizer([t.replace("_", " ") for t in self.tasks], add_special_tokens=False)["input_ids"]
            init = torch.stack([emb.weight[torch.tensor(ids or [self.pad_id])].mean(0) for ids in names])
        self.task = torch.nn.Parameter(init.clone())
        # What LdP holds in pass 1 of the full layout; the mask makes its value irrelevant (tested).
        self.register_buffer("ldp_placeholder", torch.zeros(cfg.palette_size, dim))
        self.vocabulary: torch.Tensor | None = None  # token ids of a restricted softmax (answer_vocabulary)
        self.to(self.device_)

    def restrict_vocabulary(self, data: PaletteData) -> None:
        """answer_vocabulary="answers": score only the tokens that occur in some answer."""
        if self.cfg.answer_vocabulary == "answers":
            ids = sorted({t for per_item in data.answers for answer in per_item for t in answer})
            self.vocabulary = torch.tensor(ids, dtype=torch.long, device=self.device_)

    # --- building blocks -------------------------------------------------------------------------------------
    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def describe(self) -> dict[str, object]:
        total = sum(p.numel() for p in self.peft.parameters())
        trainable = sum(p.numel() for p in self.trainable_parameters())
        return {"model": self.cfg.model, "model_path": self.path, "revision": self.revision,
                "architecture": self.backbone.config.model_type, "decoder_only": self.decoder_only,
                "dim": self.dim, "parameters": total, "trainable_parameters": trainable,
                "lora_target_modules": self.target_modules, "device": str(self.device_),
                "dtype": str(self.autocast_dtype or torch.float32).removeprefix("torch."),
                "dtype_choice": self.dtype_choice}

    def save_weights(self, directory: Path) -> None:
        """What a checkpoint holds of the model: the peft adapter and palette.safetensors (LaP, task tokens)."""
        from safetensors.torch import save_file

        self.peft.save_pretrained(str(directory / "adapter"))
        # peft keeps target_modules as a set and saves list(set): its order follows PYTHONHASHSEED. Sorted, the
        # same training writes the same bytes in every process.
        config_path = directory / "adapter" / "adapter_config.json"
        config = json.loads(config_path.read_text())
        config.update({k: sorted(v) for k, v in config.items() if k.endswith("modules") and isinstance(v, list)})
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True))
        save_file({"lap": self.lap.detach().cpu().contiguous(), "task": self.task.detach().cpu().contiguous()},
                  directory / "palette.safetensors")

    def load_weights(self, directory: Path) -> None:
        """Adapter and palette parameters of a checkpoint into this model (built with the same config)."""
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        adapter = load_file(directory / "adapter" / "adapter_model.safetensors", device=str(self.device_))
        # peft annotates the result as `namedtuple` (the factory, not a type): it is torch's load_state_dict result
        result = cast(Any, set_peft_model_state_dict(self.peft, adapter))
        if result.unexpected_keys:
            raise ValueError(f"{directory}: adapter weights that this model does not have: "
                             f"{result.unexpected_keys[:3]}")
        params = load_file(directory / "palette.safetensors")
        with torch.no_grad():
            self.lap.copy_(params["lap"])
            self.task.copy_(params["task"])

    def hidden(self, packed: Packed, vectors: torch.Tensor) -> torch.Tensor:
        """Last hidden states (B, T, D); `vectors` (B, n_slots, D) fill the SLOT positions in row order."""
        packed = packed.to(self.device_)
        emb = self.backbone.get_input_embeddings()(packed.ids)
        emb = emb.masked_scatter(packed.slots[..., None], vectors.to(emb.dtype))
        with autocast(self.device_, self.autocast_dtype):
            dtype = self.autocast_dtype or emb.dtype
            mask = additive_mask(allowed(packed.blocks, self.bidirectional), dtype)
            out = self.backbone(inputs_embeds=emb, attention_mask=mask, position_ids=packed.positions)
        return out.last_hidden_state

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Next-token scores; columns = the restricted vocabulary when one is set, else the whole vocabulary. Under
        the backbone's autocast: a backbone whose last layer is a projection (OPT-350M's project_out) hands over
        half-precision states, which a float32 head cannot multiply outside autocast."""
        with autocast(self.device_, self.autocast_dtype):
            if self.head is not None:
                if self.vocabulary is None:
                    return self.head(h)
                w, b = self.head.weight[self.vocabulary], self.head.bias
                return F.linear(h, w, None if b is None else b[self.vocabulary])
            # Encoders have no causal-LM head: score against the (tied) input embeddings.
            w = self.backbone.get_input_embeddings().weight
            return h @ (w if self.vocabulary is None else w[self.vocabulary]).T

    # --- the two passes ----------------------------------------------------------------------------------------
    def palette(self, data: PaletteData, idx: Sequence[int]) -> torch.Tensor:
        """Pass 1 for items `idx`: (len(idx), L, D)."""
        length = self.cfg.palette_size
        packed = pack([pass1_row(data.content[i], length) for i in idx], self.pad_id, left=True)
        h = self.hidden(packed, self.lap.expand(len(idx), -1, -1))
        return h[:, -length:, :].float()

    def _task_rows(self, data: PaletteData, idx: Sequence[int]
                   ) -> tuple[list[tuple[int, int]], torch.Tensor, torch.Tensor]:
        """(position in idx, task) of every non-empty answer, and the same as two index tensors."""
        rows = [(k, t) for k, i in enumerate(idx) for t in range(len(self.tasks)) if data.answers[i][t]]
        k_idx = torch.tensor([k for k, _ in rows], dtype=torch.long, device=self.device_)
        t_idx = torch.tensor([t for _, t in rows], dtype=torch.long, device=self.device_)
        return rows, k_idx, t_idx

    def _gen(self, packed: Packed, hidden: torch.Tensor) -> torch.Tensor:
        labels = packed.labels.to(self.device_)
        sel = labels != IGNORE
        logits = self.logits(masked_rows(hidden, sel))
        target = labels[sel]
        if self.vocabulary is not None:  # token id -> column of the restricted vocabulary
            target = torch.searchsorted(self.vocabulary, target)
        return F.cross_entropy(logits.float(), target)

    def generation_loss(self, data: PaletteData, idx: Sequence[int], palette: torch.Tensor) -> torch.Tensor:
        """Pass 2: mean next-token cross-entropy over every answer token of every (item, task) of `idx`."""
        rows, k_idx, t_idx = self._task_rows(data, idx)
        if not rows:
            return palette.new_zeros(())
        length = self.cfg.palette_size
        packed = pack([pass2_row(len(data.content[idx[k]]), length, data.answers[idx[k]][t]) for k, t in rows],
                      self.pad_id, left=False)
        vectors = torch.cat([palette.index_select(0, k_idx), self.task.index_select(0, t_idx)[:, None]], dim=1)
        return self._gen(packed, self.hidden(packed, vectors))

    def full_layout(self, data: PaletteData, idx: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Reference: both passes over the paper's single row per (item, task). Returns (palette, L_gen); equal to
        the split passes up to float rounding (tested), at the price of recomputing content for every task."""
        rows, _, t_idx = self._task_rows(data, idx)
        length = self.cfg.palette_size
        packed: Packed = pack([full_row(data.content[idx[k]], length, data.answers[idx[k]][t]) for k, t in rows],
                              self.pad_id, left=False)
        n = len(rows)
        lap, task = self.lap.expand(n, -1, -1), self.task.index_select(0, t_idx)[:, None]
        h1 = self.hidden(packed, torch.cat([lap, self.ldp_placeholder.expand(n, -1, -1), task], dim=1))
        per_row = masked_rows(h1, packed.blocks.to(self.device_) == LAP).view(n, length, -1).float()
        h2 = self.hidden(packed, torch.cat([lap, per_row, task], dim=1))
        first = {k: r for r, (k, _) in reversed(list(enumerate(rows)))}
        palette = per_row.index_select(0, torch.tensor([first[k] for k in range(len(idx))], device=self.device_))
        return palette, self._gen(packed, h2)
