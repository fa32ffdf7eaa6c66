"""CTR models on `impressions`: DeepFM and DCNv2 over user and item-ID embeddings, optionally with the item's
semantic codes from a code table (the downstream stage of Mixture-of-Codes, papers/mixture-of-codes.txt).

Fields (each an `embed_dim` vector):
- the user's ID (users of the train split; any other user is the zero padding row),
- the item's ID, in `id_embeddings` = M independent tables (M > 1: the multi-embedding "ME" baseline of Guo et
  al. 2024, ID-embedding scaling without codes; here each table is its own field),
- with `use_codes`: the item's L codes, position l embedded by its own table of K_l rows (an item that the code
  table lacks gets each position's zero padding row), fused by `fusion` into the item's semantic field(s):
  `gate` (MoC's self-gating: the concatenated code embeddings times sigmoid(MLP(concat)), then projected to a
  field), `concat` (projected), `mlp` (concat -> MLP), `attention` (self-attention over the L code embeddings,
  then their mean), `none` (each code embedding its own field).

Models: DeepFM = first-order biases + FM second-order interactions over the fields + a deep MLP over their
concatenation; DCNv2 = a cross network v2 (full-rank D x D matrices: x_{l+1} = x0 * (W x_l + b) + x_l) stacked
with a deep MLP and a linear head. Trained with BCE on logits and Adam, seeded batch order and dropout, early
stopping on the validation AUC (the best epoch's weights are kept), CUDA when present; AUC and logloss (sklearn) on
the test split, as rows of the long evaluation table (metric `auc` / `logloss`, k null).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Annotated, Literal, cast

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F
from torch import nn

from ops.codetable import codes_array
from ops.config import (
    Checked,
    ConfigError,
    NonEmpty,
    NonNegativeInt,
    OpenFraction,
    PositiveFloat,
    PositiveInt,
)
from ops.models import select_device
from ops.recommend.base import RecData, Recommender, SeedRun
from ops.recommend.evaluation import CTR_METRICS, CTR_MODELS, EVALUATION_SCHEMA
from ops.training import Trainable, TrainingConfig, autocast, autocast_dtype

Model = Literal["deepfm", "dcnv2"]
Fusion = Literal["gate", "concat", "mlp", "attention", "none"]
MODELS: tuple[str, ...] = CTR_MODELS
FUSIONS: tuple[str, ...] = ("gate", "concat", "mlp", "attention", "none")
DEFAULT_FUSION = "gate"
EMBED_INIT_STD = 0.1  # normal init of every embedding table (padding rows zero)


@dataclass
class CTRConfig(TrainingConfig):
    """One CTR model and how it trains: the shared loop's settings (ops.training.TrainingConfig: lr, weight_decay,
    batch_size, micro_batch_size, epochs, max_steps, seed, device, dtype) at CTR's defaults, plus its own."""

    model: Model = "deepfm"
    fusion: Fusion = "gate"  # how the L code embeddings become the item's semantic field(s)
    embed_dim: PositiveInt = 16
    id_embeddings: PositiveInt = 1  # M independent item-ID tables (M > 1: the multi-embedding baseline)
    use_codes: bool = True  # the item's semantic codes as features (needs a code table)
    mlp_layers: list[PositiveInt] = field(default_factory=lambda: [64, 32])  # the deep part's hidden widths
    cross_layers: NonNegativeInt = 2  # DCNv2
    dropout: OpenFraction = 0.1
    lr: PositiveFloat = 1e-3  # Adam
    batch_size: PositiveInt = 512  # rows per optimizer step; an epoch's last batch is smaller (epoch batching)
    micro_batch_size: PositiveInt = 512
    epochs: PositiveFloat = 10.0  # at most (whole epochs); stops earlier when validation AUC stalls
    patience: PositiveInt = 2  # epochs without a better validation AUC before stopping
    checkpoint_every: NonNegativeInt = 0  # (trained in memory: no checkpoints)

    def check(self) -> None:
        if self.model not in MODELS:
            raise ConfigError(f"unknown CTR model {self.model!r}; choose one of {', '.join(MODELS)}")
        if self.fusion not in FUSIONS:
            raise ConfigError(f"unknown fusion {self.fusion!r}; choose one of {', '.join(FUSIONS)}")


def recommender_name(cfg: CTRConfig) -> str:
    """The `recommender` of its metric rows: the model, `_me<M>` for M item-ID tables, `+<fusion>` when the codes
    are fused otherwise than by the default gate (e.g. deepfm, dcnv2_me4, deepfm+concat)."""
    name = cfg.model + (f"_me{cfg.id_embeddings}" if cfg.id_embeddings > 1 else "")
    return name + (f"+{cfg.fusion}" if cfg.use_codes and cfg.fusion != DEFAULT_FUSION else "")


# --- data ------------------------------------------------------------------------------------------------------------
@dataclass
class CTRData:
    users: np.ndarray  # int64 user index (0 = not a train user)
    items: np.ndarray  # int64 item index (0 = not in the catalog)
    labels: np.ndarray  # float32 0 / 1

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class CTRInputs:
    """Everything the models of one asset share: the splits as indices and the items' codes."""

    train: CTRData
    valid: CTRData
    test: CTRData
    n_users: int
    n_items: int
    item_codes: np.ndarray | None  # (n_items + 1, L) int64; position l's padding index is code_sizes[l]
    code_sizes: list[int] | None


def item_code_matrix(code_table: pl.DataFrame, item_ids: Sequence[str]) -> tuple[np.ndarray, list[int]]:
    """Row r + 1 = the codes of item_ids[r] (row 0 and items the table lacks: each position's padding index K_l,
    one past its largest code) and K_l per position."""
    codes = codes_array(code_table)
    sizes = [int(k) for k in codes.max(axis=0) + 1]
    out = np.tile(np.asarray(sizes, np.int64), (len(item_ids) + 1, 1))
    row = {item: i for i, item in enumerate(code_table["item_id"].to_list())}
    at = np.array([row.get(item, -1) for item in item_ids], dtype=np.int64)
    known = at >= 0
    out[1:][known] = codes[at[known]]
    return out, sizes


def prepare(impressions: pl.DataFrame, item_ids: Sequence[str], code_table: pl.DataFrame | None = None
            ) -> CTRInputs:
    """Index users (those of the train split, 1..) and items (the catalog, 1..) and split the rows."""
    users = impressions.filter(pl.col("split") == "train")["user_id"].unique(maintain_order=True)
    user_index = pl.DataFrame({"user_id": users, "_u": np.arange(1, users.len() + 1, dtype=np.int64)})
    item_index = pl.DataFrame({"item_id": list(item_ids), "_i": np.arange(1, len(item_ids) + 1, dtype=np.int64)})
    indexed = (impressions.join(user_index, on="user_id", how="left", maintain_order="left")
               .join(item_index, on="item_id", how="left", maintain_order="left")
               .with_columns(pl.col("_u", "_i").fill_null(0)))

    def split(name: str) -> CTRData:
        part = indexed.filter(pl.col("split") == name)
        return CTRData(part["_u"].to_numpy(), part["_i"].to_numpy(), part["label"].cast(pl.Float32).to_numpy())

    codes, sizes = item_code_matrix(code_table, item_ids) if code_table is not None else (None, None)
    return CTRInputs(split("train"), split("valid"), split("test"), users.len(), len(item_ids), codes, sizes)


# --- model -----------------------------------------------------------------------------------------------------------
def _mlp(width: int, hidden: Sequence[int], dropout: float, out: int | None = None) -> tuple[nn.Sequential, int]:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
        width = h
    if out is not None:
        layers.append(nn.Linear(width, out))
        width = out
    return nn.Sequential(*layers), width


class CodeFusion(nn.Module):
    """The L code embeddings (B, L, d) -> the item's semantic field(s) (B, F, d)."""

    def __init__(self, kind: str, length: int, dim: int, dropout: float):
        super().__init__()
        self.kind, wide = kind, length * dim
        self.fields = length if kind == "none" else 1
        if kind == "gate":  # MoC: c * sigmoid(MLP(c)) on the concatenation c, then a projection to one field
            self.gate = nn.Sequential(nn.Linear(wide, wide), nn.ReLU(), nn.Linear(wide, wide))
            self.out: nn.Module = nn.Linear(wide, dim)
        elif kind == "concat":
            self.out = nn.Linear(wide, dim)
        elif kind == "mlp":
            self.out = nn.Sequential(nn.Linear(wide, wide), nn.ReLU(), nn.Dropout(dropout), nn.Linear(wide, dim))
        elif kind == "attention":  # self-attention across the L positions, then their mean
            self.attention = nn.MultiheadAttention(dim, 2 if dim % 2 == 0 else 1, dropout=dropout, batch_first=True)
            self.norm = nn.LayerNorm(dim)
        elif kind != "none":
            raise ValueError(f"unknown fusion {kind!r}")

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        if self.kind == "none":
            return e
        if self.kind == "attention":
            attended, _ = self.attention(e, e, e, need_weights=False)
            return self.norm(e + attended).mean(dim=1, keepdim=True)
        c = e.flatten(1)
        if self.kind == "gate":
            c = c * torch.sigmoid(self.gate(c))
        return self.out(c).unsqueeze(1)


class CTRModel(nn.Module):
    codes: torch.Tensor  # a buffer (item row -> its codes), where the model fuses codes
    def __init__(self, cfg: CTRConfig, n_users: int, n_items: int, item_codes: np.ndarray | None = None,
                 code_sizes: Sequence[int] | None = None):
        super().__init__()
        if cfg.use_codes and item_codes is None:
            raise ValueError("use_codes needs the items' codes (a code table)")
        self.cfg = cfg
        self.device_ = select_device(cfg.device)
        self.autocast_dtype = autocast_dtype(self.device_, cfg.dtype)
        torch.manual_seed(cfg.seed)
        d = cfg.embed_dim
        self.user = nn.Embedding(n_users + 1, d, padding_idx=0)
        self.items = nn.ModuleList(nn.Embedding(n_items + 1, d, padding_idx=0) for _ in range(cfg.id_embeddings))
        self.user_bias = nn.Embedding(n_users + 1, 1, padding_idx=0)
        self.item_bias = nn.Embedding(n_items + 1, 1, padding_idx=0)
        fields = 1 + cfg.id_embeddings
        self.fusion: CodeFusion | None = None
        if cfg.use_codes:
            assert item_codes is not None and code_sizes is not None
            self.register_buffer("codes", torch.as_tensor(item_codes, dtype=torch.long))
            self.code_embeddings = nn.ModuleList(nn.Embedding(k + 1, d, padding_idx=k) for k in code_sizes)
            self.code_bias = nn.ModuleList(nn.Embedding(k + 1, 1, padding_idx=k) for k in code_sizes)
            self.fusion = CodeFusion(cfg.fusion, len(code_sizes), d, cfg.dropout)
            fields += self.fusion.fields
        for emb in [self.user, *self.items, *(self.code_embeddings if cfg.use_codes else [])]:
            nn.init.normal_(emb.weight, std=EMBED_INIT_STD)
            with torch.no_grad():
                emb.weight[emb.padding_idx].zero_()
        for emb in [self.user_bias, self.item_bias, *(self.code_bias if cfg.use_codes else [])]:
            nn.init.zeros_(emb.weight)
        self.fields, width = fields, fields * d
        self.bias = nn.Parameter(torch.zeros(1))
        if cfg.model == "deepfm":
            self.deep, _ = _mlp(width, cfg.mlp_layers, cfg.dropout, out=1)
        else:  # dcnv2: cross network (full-rank) stacked with the deep MLP
            self.cross = nn.ModuleList(nn.Linear(width, width) for _ in range(cfg.cross_layers))
            self.deep, out = _mlp(width, cfg.mlp_layers, cfg.dropout)
            self.head = nn.Linear(out, 1)
        self.to(self.device_)

    def field_embeddings(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """(B, F, d): user, the M item-ID embeddings, the semantic field(s)."""
        parts = [self.user(users).unsqueeze(1), *(t(items).unsqueeze(1) for t in self.items)]
        if self.fusion is not None:
            codes = self.codes[items]
            e = torch.stack([emb(codes[:, pos]) for pos, emb in enumerate(self.code_embeddings)], dim=1)
            parts.append(self.fusion(e))
        return torch.cat(parts, dim=1)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        v = self.field_embeddings(users, items)
        flat = v.flatten(1)
        if self.cfg.model == "deepfm":
            linear = self.bias + self.user_bias(users).squeeze(1) + self.item_bias(items).squeeze(1)
            if self.fusion is not None:
                codes = self.codes[items]
                linear = linear + sum(b(codes[:, pos]).squeeze(1) for pos, b in enumerate(self.code_bias))
            fm = 0.5 * (v.sum(dim=1).pow(2) - v.pow(2).sum(dim=1)).sum(dim=1)
            return linear + fm + self.deep(flat).squeeze(1)
        x = flat
        for layer in self.cross:
            x = flat * layer(x) + x
        return self.head(self.deep(x)).squeeze(1) + self.bias

    @torch.inference_mode()
    def predict(self, data: CTRData, batch: int = 8192) -> np.ndarray:
        """Click probabilities of the rows (float64)."""
        self.eval()
        out = []
        for a in range(0, len(data), batch):
            u = torch.tensor(data.users[a: a + batch], device=self.device_)
            i = torch.tensor(data.items[a: a + batch], device=self.device_)
            with autocast(self.device_, self.autocast_dtype):
                logits = self(u, i)
            out.append(torch.sigmoid(logits.float()).cpu().numpy())
        return np.concatenate(out).astype(np.float64) if out else np.zeros(0)

    def trainable_parameters(self) -> list[nn.Parameter]:  # (ops.training's Trainable)
        return list(self.parameters())

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())


# --- training and metrics --------------------------------------------------------------------------------------------
def ctr_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """AUC and logloss (sklearn; probabilities clipped to [1e-7, 1 - 1e-7])."""
    from sklearn.metrics import log_loss, roc_auc_score

    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        raise ValueError("AUC needs both labels among the rows scored")
    clipped = np.clip(probs, 1e-7, 1 - 1e-7)
    return {"auc": float(roc_auc_score(labels, probs)), "logloss": float(log_loss(labels, clipped, labels=[0, 1]))}


@dataclass
class CTRFit:
    best_epoch: int
    epochs_run: int
    valid_auc: list[float]
    train_loss: list[float]  # mean per epoch
    seconds: float


def train_ctr(model: CTRModel, train: CTRData, valid: CTRData) -> CTRFit:
    """Adam on BCE with logits on the shared loop (ops.training.fit, epoch batching: epoch e's rows a seeded
    permutation (seed, e) cut into batches, dropout seeded per step); the validation AUC after each epoch stops it
    after `patience` epochs without a better one and keeps the best epoch's weights."""
    from ops.training import EarlyStopping, fit, steps_per_epoch

    cfg, device = model.cfg, model.device_
    users, items = torch.tensor(train.users), torch.tensor(train.items)  # (copies: polars' arrays are read-only)
    labels = torch.tensor(train.labels, dtype=torch.float32)

    def loss(idx: Sequence[int]) -> tuple[torch.Tensor, dict[str, float]]:
        at = torch.as_tensor(idx, dtype=torch.long)
        with autocast(device, model.autocast_dtype):
            logits = model(users[at].to(device), items[at].to(device))
        value = F.binary_cross_entropy_with_logits(logits.float(), labels[at].to(device))
        return value, {"loss": float(value.detach())}

    per_epoch = steps_per_epoch(cfg, len(train))
    stopping = EarlyStopping(lambda: ctr_metrics(valid.labels, model.predict(valid))["auc"], every=per_epoch,
                             patience=cfg.patience)
    result = fit(cast(Trainable, model), cfg, len(train), loss, "", progress_name=f"CTR {cfg.model}", stopping=stopping,
                 batching="epoch")
    losses = []  # the mean training loss of each epoch, weighted by its batches' sizes
    for e in range(0, len(result.history), per_epoch):
        rows = result.history[e: e + per_epoch]
        sizes = [min(cfg.batch_size, len(train) - j * cfg.batch_size) for j in range(len(rows))]
        losses.append(round(sum(r["loss"] * n for r, n in zip(rows, sizes)) / len(train), 5))
    # fit's extra: the validation AUC per evaluation and the best one's index (TrainResult.extra is typed object)
    curve = list(cast(list[float], result.extra["evaluations"]))
    return CTRFit(int(cast(int, result.extra["best_evaluation"])), len(curve), curve, losses, result.seconds)


@dataclass
class CTRResult:
    recommender: str
    metrics: dict[str, float]  # on the test split
    fit: CTRFit
    parameters: int
    device: str


def train_and_test(inputs: CTRInputs, cfg: CTRConfig) -> tuple[CTRModel, CTRResult]:
    """One model: trained with early stopping on valid, AUC / logloss on test."""
    model = CTRModel(cfg, inputs.n_users, inputs.n_items, inputs.item_codes if cfg.use_codes else None,
                     inputs.code_sizes if cfg.use_codes else None)
    fitted = train_ctr(model, inputs.train, inputs.valid)
    metrics = ctr_metrics(inputs.test.labels, model.predict(inputs.test))
    return model, CTRResult(recommender_name(cfg), metrics, fitted, model.parameter_count(), str(model.device_))


def ctr_rows(metrics: dict[str, float], dataset: str, recommender: str, tokenizer: str | None, seed: int
             ) -> pl.DataFrame:
    """The long evaluation table's rows of one model and seed: metric auc / logloss, k null."""
    return pl.DataFrame([{"dataset": dataset, "recommender": recommender, "tokenizer": tokenizer, "seed": seed,
                          "metric": m, "k": None, "value": float(metrics[m])} for m in CTR_METRICS],
                        schema=EVALUATION_SCHEMA)


# --- the recommender contract (ops.recommend.base) -----------------------------------------------------------------
@dataclass
class CTRSuite(Checked):
    """The models one CTR asset trains (each once per seed)."""

    models: Annotated[list[str], NonEmpty] = field(default_factory=lambda: list(CTR_MODELS))

    def check(self) -> None:
        if unknown := [m for m in self.models if m not in MODELS]:
            raise ConfigError(f"models {unknown}: choose among {', '.join(MODELS)}")


@dataclass
class MultiEmbedding(Checked):
    """The ID-only asset's multi-embedding baseline (Guo et al. 2024): one more run of every model per M in the
    list, with M item-ID tables (recommender `<model>_me<M>`); empty = not run."""

    me_embeddings: list[PositiveInt] = field(default_factory=list)


class CTRModels(Recommender):
    """The CTR suite of one asset: every model of `CTRSuite.models` (and of the multi-embedding baseline) trained
    per seed on `impressions`, with the code table's codes as features or on IDs only. Configs: (CTRSuite,
    CTRConfig) or (CTRSuite, MultiEmbedding, CTRConfig)."""

    def prepare(self, data: RecData) -> None:
        suite, *rest, self.base = self.configs
        me = rest[0].me_embeddings if rest else []
        self.data = data
        self.inputs = prepare(data.needed(data.impressions, "impressions"), data.items["item_id"].to_list(),
                              data.code_table)
        self.variants = [(m, 1) for m in suite.models] + [(m, k) for k in me if k > 1 for m in suite.models]

    def run(self, seed: int) -> SeedRun:
        rows, curves, runs = [], {}, []
        for model, tables in self.variants:
            cfg = replace(self.base, model=model, seed=seed, use_codes=self.data.code_table is not None,
                          id_embeddings=tables)
            _, result = train_and_test(self.inputs, cfg)
            rows.append(ctr_rows(result.metrics, self.data.dataset, result.recommender, self.data.tokenizer, seed))
            runs.append({"recommender": result.recommender, "seed": seed,
                              **{k: round(v, 5) for k, v in result.metrics.items()},
                              "best_epoch": result.fit.best_epoch, "epochs_run": result.fit.epochs_run,
                              "parameters": result.parameters, "device": result.device,
                              "seconds": round(result.fit.seconds, 2)})
            curves[f"{result.recommender}/seed {seed}"] = {"valid_auc": [round(a, 5) for a in result.fit.valid_auc],
                                                           "train_loss": result.fit.train_loss}
        return SeedRun(pl.concat(rows), None, curves, facts={"runs": runs})

    def metadata(self, seeds: Sequence[SeedRun]) -> dict[str, object]:
        runs = [run for seed in seeds for run in seed.facts["runs"]]
        summary = pl.DataFrame(runs).group_by("recommender", maintain_order=True).agg(
            pl.col("auc").mean().round(5).alias("auc_mean"), pl.col("auc").std().round(5).alias("auc_std"),
            pl.col("logloss").mean().round(5).alias("logloss_mean"))
        inputs = self.inputs
        train_items = set(inputs.train.items.tolist())
        cold = float(sum(i not in train_items for i in inputs.test.items.tolist()) / max(len(inputs.test), 1))
        return {"summary": summary.to_dicts(), "runs": runs,
                **{f"{r}_auc_mean": float(a) for r, a in summary.select("recommender", "auc_mean").iter_rows()},
                "train_rows": len(inputs.train), "valid_rows": len(inputs.valid), "test_rows": len(inputs.test),
                "test_rows_with_items_unseen_in_train": round(cold, 4), "users": inputs.n_users,
                "items": inputs.n_items, "code_positions": len(inputs.code_sizes) if inputs.code_sizes else 0,
                "device": runs[0]["device"] if runs else ""}
