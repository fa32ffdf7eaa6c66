"""Settings of the LAMIA palette; defaults are the paper's (DESIGN §5), every one overridable."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

LAYOUTS = ("split", "full")
CONTENT_ATTENTION = ("auto", "causal", "bidirectional")
LAP_INIT = ("random", "summary")


@dataclass
class PaletteConfig:
    model: str = "facebook/opt-350m"  # any causal LM (OPT, GPT-2, LLaMA families) or encoder, by path or hub name
    palette_size: int = 4  # L
    content_attributes: int | None = None  # r: the first r attributes form the content (None: dataset default)
    max_content_tokens: int = 96
    max_answer_tokens: int = 32  # answer tokens per task, end-of-text token included
    # LoRA (peft). target_modules None = peft's default for the model family (OPT/LLaMA: q_proj, v_proj;
    # GPT-2: c_attn; BERT: query, value); the resolved list is recorded with the checkpoint.
    # "full": L_gen is a softmax over the whole vocabulary (the paper). "answers": over the tokens that occur in
    # some answer of the dataset only, a restricted softmax that makes CPU demos several times cheaper (the
    # vocabulary projection dominates a small backbone's step); it changes L_gen's scale, not what it rewards.
    answer_vocabulary: str = "full"
    lora_rank: int = 128
    lora_alpha: int = 128
    lora_dropout: float = 0.0
    target_modules: list[str] | None = None
    lr: float = 1e-4  # Adam
    batch_size: int = 128  # items per optimizer step (each with all of its tasks)
    micro_batch_size: int = 16  # items per forward; gradients accumulate up to batch_size
    epochs: float = 1.0
    max_steps: int = 0  # > 0 overrides epochs
    gamma: float = 0.1
    alpha_intra: float = 0.1
    alpha_inter: float = 0.25
    use_gen: bool = True  # switches for ablations
    use_intra: bool = True
    use_inter: bool = True
    # "auto": causal for decoders (the paper), bidirectional inside the content block for encoder backbones,
    # which were pre-trained that way; every other block stays causal.
    content_attention: str = "auto"
    # "random": LaP are new embeddings drawn at the scale of the word embeddings (the paper). "summary": each LaP
    # starts at the embedding of the backbone's sequence-summary token (CLS, else BOS) plus 0.1x that random draw,
    # so an untrained palette already reads the content like that token does; it helps when few steps are
    # affordable (the CPU demo, bench/RESULTS.md), at the price of more correlated positions at the start.
    lap_init: str = "random"
    attn_implementation: str | None = None  # transformers' choice when None (sdpa); "eager" works as well
    layout: str = "split"  # "split": two short passes; "full": the paper's one row per pass (same numbers)
    seed: int = 0
    device: str = "auto"
    # autocast dtype: "auto" = bf16 on CUDA when supported (else fp16), float32 on CPU; "bfloat16" / "float16" force
    # autocast on any device (fp16 with loss scaling); weights and optimizer state stay float32
    dtype: str = "auto"
    extract_batch_size: int = 64
    checkpoint_every: int = 0  # steps between checkpoints; 0 = only the final one
    tasks: list[str] = field(default_factory=list)  # filled from the dataset's attributes when empty

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.answer_vocabulary not in ("full", "answers"):
            raise ValueError(f"answer_vocabulary must be 'full' or 'answers', got {self.answer_vocabulary!r}")
        if self.content_attention not in CONTENT_ATTENTION:
            raise ValueError(f"content_attention must be one of {CONTENT_ATTENTION}, got {self.content_attention!r}")
        if self.lap_init not in LAP_INIT:
            raise ValueError(f"lap_init must be one of {LAP_INIT}, got {self.lap_init!r}")
        if self.palette_size < 1 or self.micro_batch_size < 1 or self.batch_size < 1:
            raise ValueError("palette_size, batch_size and micro_batch_size must be positive")
        if not (self.use_gen or self.use_intra or self.use_inter):
            raise ValueError("at least one loss term must be switched on")

    def training_fields(self) -> dict[str, object]:
        """What determines the trained weights (a checkpoint is resumed only when these match)."""
        skip = {"device", "dtype", "extract_batch_size", "checkpoint_every", "attn_implementation"}
        return {k: v for k, v in asdict(self).items() if k not in skip}
