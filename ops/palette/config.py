"""Settings of the LAMIA palette; defaults are the paper's (DESIGN §5), every one overridable."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Annotated, Literal, get_args

from annotated_types import Interval

from ops.config import ConfigError, NonNegativeFloat, OpenFraction, PositiveInt
from ops.models import SMOLLM2
from ops.palette.losses import Reduction
from ops.training import TrainingConfig

Layout = Literal["split", "full"]
ContentAttention = Literal["auto", "causal", "bidirectional"]
LapInit = Literal["random", "summary"]
AnswerVocabulary = Literal["full", "answers"]
Margin = Annotated[float, Interval(ge=-1, le=1)]  # a hinge margin on a cosine


@dataclass
class PaletteConfig(TrainingConfig):
    """The shared training settings (ops.training.TrainingConfig: lr, batch_size, micro_batch_size, epochs,
    max_steps, seed, checkpoint_every, device, dtype) at the paper's values, plus the palette's own."""

    # Any causal LM (OPT, GPT-2, LLaMA families) or encoder: an offline name (ops.models.OFFLINE_MODELS, e.g. the
    # packaged SmolLM2-135M-Instruct causal LM), a local path, or a hub name where the hub is reachable.
    model: str = SMOLLM2  # offline; the paper's OPT-350M is the explicit choice of configs/lamia_mind_opt350m_gpu.yaml
    palette_size: PositiveInt = 4  # L
    content_attributes: PositiveInt | None = None  # r: the first r attributes form the content (None: dataset default)
    max_content_tokens: PositiveInt = 96
    max_answer_tokens: PositiveInt = 32  # answer tokens per task, end-of-text token included
    # "full": L_gen is a softmax over the whole vocabulary (the paper). "answers": over the tokens that occur in
    # some answer of the dataset only, a restricted softmax that makes CPU demos several times cheaper (the
    # vocabulary projection dominates a small backbone's step); it changes L_gen's scale, not what it rewards.
    answer_vocabulary: AnswerVocabulary = "full"
    # LoRA (peft). target_modules None = peft's default for the model family (OPT/LLaMA: q_proj, v_proj;
    # GPT-2: c_attn; BERT: query, value); the resolved list is recorded with the checkpoint.
    lora_rank: PositiveInt = 128
    lora_alpha: PositiveInt = 128
    lora_dropout: OpenFraction = 0.0
    target_modules: list[str] | None = None
    gamma: NonNegativeFloat = 0.1
    # "sum": the contrastive losses as the paper writes them, sums over the batch's pairs; "mean": averaged
    # (ops.palette.losses says why the choice matters)
    contrastive_reduction: Reduction = "sum"
    alpha_intra: Margin = 0.1
    alpha_inter: Margin = 0.25
    use_gen: bool = True  # switches for ablations
    use_intra: bool = True
    use_inter: bool = True
    # "auto": causal for decoders (the paper), bidirectional inside the content block for encoder backbones,
    # which were pre-trained that way; every other block stays causal.
    content_attention: ContentAttention = "auto"
    # "random": LaP are new embeddings drawn at the scale of the word embeddings (the paper). "summary": each LaP
    # starts at the embedding of the backbone's sequence-summary token (CLS, else BOS) plus 0.1x that random draw,
    # so an untrained palette already reads the content like that token does; it helps when few steps are
    # affordable (the CPU demo, bench/RESULTS.md), at the price of more correlated positions at the start.
    lap_init: LapInit = "random"
    attn_implementation: str | None = None  # transformers' choice when None (sdpa); "eager" works as well
    # data-parallel processes the training step launches on its node (ops.distributed.launch, as torchrun does):
    # one per GPU; the same steps at the same global batch as one process (within float tolerance)
    processes: PositiveInt = 1
    layout: Layout = "split"  # "split": two short passes; "full": the paper's one row per pass (same numbers)
    extract_batch_size: PositiveInt = 64
    # Train on a seeded sample of this many items (None: every item; e.g. one CPU epoch over part of a catalog);
    # palette_embeddings still extracts the palette of every item with the trained model.
    train_items: PositiveInt | None = None
    tasks: list[str] = field(default_factory=list)  # empty: every attribute of the dataset, in its order

    def check(self) -> None:
        for name, kind in (("layout", Layout), ("answer_vocabulary", AnswerVocabulary),
                           ("content_attention", ContentAttention), ("lap_init", LapInit),
                           ("contrastive_reduction", Reduction)):
            if getattr(self, name) not in get_args(kind):
                raise ConfigError(f"{name} must be one of {get_args(kind)}, got {getattr(self, name)!r}")
        if not (self.use_gen or self.use_intra or self.use_inter):
            raise ConfigError("use_gen, use_intra, use_inter: at least one loss term must be switched on")

    def training_fields(self) -> dict[str, object]:
        """What determines the trained weights (a checkpoint is resumed only when these match)."""
        skip = {"device", "dtype", "extract_batch_size", "checkpoint_every", "attn_implementation"}
        return {k: v for k, v in asdict(self).items() if k not in skip}
