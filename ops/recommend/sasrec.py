"""SASRec on item IDs, the baseline semantic IDs must beat: a causal transformer over the item sequence (Hugging
Face's GPT-2 classes; learned positions, as in SASRec) that predicts the next item at every position, trained with
the cross-entropy over the whole catalog (the strongest published SASRec variant, ANCHORS.md) on the shared loop.
`tune` picks width, layers, dropout and lr on the validation split from a small grid and records the choice: a
weak baseline would be a false result."""
from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Annotated, Any, cast

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F

from ops.config import Checked, NonEmpty, OpenFraction, PositiveFloat, PositiveInt
from ops.embed import collate
from ops.metrics import ranks_from_scores, recall_ndcg
from ops.models import select_device
from ops.recommend.base import RecData, Recommender, SeedRun
from ops.recommend.generative import LMRecommender
from ops.training import TrainingConfig, TrainResult, autocast, autocast_dtype, fit

PAD = 0  # item i is token i + 1


@dataclass
class SASRecConfig(TrainingConfig):
    d_model: PositiveInt = 128
    layers: PositiveInt = 2
    heads: PositiveInt = 2
    dropout: OpenFraction = 0.2
    max_length: PositiveInt = 50
    lr: float = 1e-3
    batch_size: int = 128
    micro_batch_size: int = 128
    epochs: float = 20.0


@dataclass
class ItemSequences:
    """Per row: the item indices of history + target (training) or history only with a held-out target."""

    users: list[str]
    histories: list[list[int]]
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.users)

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps([self.users, self.histories, self.targets.tolist()]).encode()).hexdigest()[:16]


def item_sequences(sequences: pl.DataFrame, item_index: dict[str, int], split: str) -> ItemSequences:
    rows = sequences.filter(pl.col("split") == split)
    missing = {i for h in rows["history"].to_list() for i in h if i not in item_index} | {
        t for t in rows["target"].to_list() if t not in item_index}
    if missing:
        raise KeyError(f"{len(missing)} item(s) of user_sequences are not in the item catalog, e.g. "
                       f"{sorted(missing)[:3]}")
    return ItemSequences(rows["user_id"].to_list(), [[item_index[i] for i in h] for h in rows["history"].to_list()],
                         np.array([item_index[t] for t in rows["target"].to_list()], dtype=np.int64))


class SASRec(LMRecommender):
    def __init__(self, cfg: SASRecConfig, n_items: int):
        super().__init__()
        from transformers import GPT2Config, GPT2LMHeadModel

        self.cfg, self.n_items = cfg, n_items
        self.device_ = select_device(cfg.device)
        self.autocast_dtype = autocast_dtype(self.device_, cfg.dtype)
        torch.manual_seed(cfg.seed)
        self.lm = GPT2LMHeadModel(GPT2Config(
            vocab_size=n_items + 1, n_positions=cfg.max_length, n_embd=cfg.d_model, n_layer=cfg.layers,
            n_head=cfg.heads, n_inner=4 * cfg.d_model, resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout,
            attn_pdrop=cfg.dropout, pad_token_id=PAD, bos_token_id=None, eos_token_id=None))
        self.to(self.device_)

    def _hidden(self, rows: Sequence[Sequence[int]]) -> torch.Tensor:
        """Right-padded rows of item indices -> the last layer's hidden states (B, T, d)."""
        ids, mask = collate([[i + 1 for i in r] for r in rows], PAD, "right")
        with autocast(self.device_, self.autocast_dtype):
            out = self.lm.transformer(input_ids=ids.to(self.device_), attention_mask=mask.to(self.device_))
        return out.last_hidden_state

    def _item_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Hidden states (N, d) -> logits over the catalog (N, items), through the tied output embeddings without
        the padding token's row. Only the positions that are scored get logits: a (batch x length x catalog)
        tensor of every position, padding included, was most of SASRec's memory and time at MIND-small's catalog."""
        with autocast(self.device_, self.autocast_dtype):
            return F.linear(hidden, self.lm.lm_head.weight[1:]).float()

    def loss(self, data: ItemSequences, idx: Sequence[int]) -> tuple[torch.Tensor, dict[str, float]]:
        """Next-item cross-entropy over the whole catalog at every position of history + target."""
        rows = [(data.histories[i] + [int(data.targets[i])])[-(self.cfg.max_length + 1):] for i in idx]
        hidden = self._hidden([r[:-1] for r in rows])
        labels = torch.full(hidden.shape[:2], -100, dtype=torch.long)
        for j, r in enumerate(rows):
            labels[j, : len(r) - 1] = torch.as_tensor(r[1:])
        at = (labels != -100).to(self.device_)
        loss = F.cross_entropy(self._item_logits(hidden[at]), labels.to(self.device_)[at])
        return loss, {"loss": float(loss.detach())}

    @torch.inference_mode()
    def scores(self, data: ItemSequences, batch: int = 256) -> np.ndarray:
        """Next-item scores over the catalog after each row's history (rows x items)."""
        self.eval()
        out = []
        for a in range(0, len(data), batch):
            rows = [h[-self.cfg.max_length:] or [0] for h in data.histories[a: a + batch]]
            hidden = self._hidden(rows)
            last = torch.as_tensor([len(r) - 1 for r in rows], device=hidden.device)
            out.append(self._item_logits(hidden[torch.arange(len(rows), device=hidden.device), last]).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.n_items), np.float32)

    def ranks(self, data: ItemSequences, batch: int = 256) -> np.ndarray:
        """Each row's target rank over the catalog (`ranks_from_scores`), `batch` rows at a time: memory grows
        with the catalog, not with users x catalog."""
        out = [ranks_from_scores(self.scores(ItemSequences(data.users[a: a + batch], data.histories[a: a + batch],
                                                           data.targets[a: a + batch]), batch),
                                 data.targets[a: a + batch]) for a in range(0, len(data), batch)]
        return np.concatenate(out) if out else np.zeros(0, np.int64)


def train(model: SASRec, data: ItemSequences, checkpoints=None, prefix: str = "", on_step=None):
    fp = hashlib.sha256(json.dumps({"config": model.cfg.training_fields(), "items": model.n_items,
                                    "data": data.fingerprint()}, sort_keys=True).encode()).hexdigest()[:16]
    return fit(model, model.cfg, len(data), lambda idx: model.loss(data, idx), fp, checkpoints, prefix,
               {"config": asdict(model.cfg)}, on_step)


def evaluate(model: SASRec, data: ItemSequences, ks: Sequence[int] = (1, 5, 10, 20)) -> dict[tuple[str, int], float]:
    return recall_ndcg(model.ranks(data), ks)


GRID: dict[str, tuple[Any, ...]] = {"d_model": (64, 128), "layers": (1, 2), "dropout": (0.2, 0.5), "lr": (1e-3, 3e-3)}


@dataclass
class SASRecGrid(Checked):
    """The tuning grid (every combination trained on train, NDCG@10 on valid); one value per field = no tuning."""

    grid_d_model: Annotated[list[PositiveInt], NonEmpty] = field(default_factory=lambda: list(GRID["d_model"]))
    grid_layers: Annotated[list[PositiveInt], NonEmpty] = field(default_factory=lambda: list(GRID["layers"]))
    grid_dropout: Annotated[list[OpenFraction], NonEmpty] = field(default_factory=lambda: list(GRID["dropout"]))
    grid_lr: Annotated[list[PositiveFloat], NonEmpty] = field(default_factory=lambda: list(GRID["lr"]))

    def as_grid(self) -> dict[str, Sequence[object]]:
        return {"d_model": self.grid_d_model, "layers": self.grid_layers, "dropout": self.grid_dropout,
                "lr": self.grid_lr}


def tune(base: SASRecConfig, n_items: int, train_data: ItemSequences, valid: ItemSequences,
         grid: Mapping[str, Sequence[Any]] | None = None
         ) -> tuple[SASRecConfig, list[dict[str, object]], tuple[SASRec, TrainResult]]:
    """Every combination of the grid trained on train and scored by NDCG@10 on valid; the best config, the whole
    table (to be recorded with the model) and the best trial's model and training result: it is the model of the
    best config at `base.seed`, so a caller training that seed again would get the same weights."""
    space: Mapping[str, Sequence[Any]] = grid or GRID
    trials: list[dict[str, object]] = []
    best: tuple[dict[str, object], SASRec, TrainResult] | None = None
    for values in itertools.product(*space.values()):
        cfg = replace(base, **dict(zip(space, values)))
        model = SASRec(cfg, n_items)
        result = train(model, train_data)
        trials.append({**dict(zip(space, values)), "valid_ndcg@10": evaluate(model, valid, (10,))[("ndcg", 10)]})
        # (the scores are floats; the trial rows are typed object for their other entries)
        if best is None or cast(float, trials[-1]["valid_ndcg@10"]) > cast(float, best[0]["valid_ndcg@10"]):
            # the first of equal scores
            best = (trials[-1], model, result)
    assert best is not None
    chosen = cast(dict[str, Any], best[0])  # the grid's values, typed object in the trial rows
    return replace(base, **{k: chosen[k] for k in space}), trials, (best[1], best[2])


class SASRecFamily(Recommender):
    """SASRec on item IDs (ops.recommend.base contract): width, layers, dropout and lr chosen on the validation
    split over the grid (the winning trial is seed `base.seed`'s model already), then one model per seed.
    Configs: (SASRecConfig, SASRecGrid)."""

    def prepare(self, data: RecData) -> None:
        config, grid_config = self.configs
        self.data = data
        index = data.item_index()
        self.n_items = len(index)
        sequences = data.needed(data.sequences, "sequences")
        self.train_rows = item_sequences(sequences, index, "train")
        self.test_rows = item_sequences(sequences, index, "test")
        grid = grid_config.as_grid()
        self.base = replace(config, **{k: v[0] for k, v in grid.items()})
        self.trials: list[dict[str, object]] = []
        self.tuned: tuple[SASRec, TrainResult] | None = None
        if any(len(v) > 1 for v in grid.values()):  # the validation split picks the setting (seed 0 of the base)
            self.base, self.trials, self.tuned = tune(self.base, self.n_items, self.train_rows,
                                                      item_sequences(sequences, index, "valid"), grid)
        self.chosen = {k: getattr(self.base, k) for k in grid}

    def run(self, seed: int) -> SeedRun:
        from ops.recommend.base import ranking_run

        if self.tuned is not None and seed == self.base.seed:  # the winning trial is this seed's model already
            model, result = self.tuned
        else:
            model = SASRec(replace(self.base, seed=seed), self.n_items)
            result = train(model, self.train_rows)
        run = ranking_run(model.ranks(self.test_rows), self.test_rows.users, self.data, self.name, seed,
                          [h["loss"] for h in result.history])
        run.facts = {"device": str(model.device_),
                     "dtype": str(model.autocast_dtype or "float32").removeprefix("torch.")}
        return run

    def metadata(self, runs: Sequence[SeedRun]) -> dict[str, object]:
        last = runs[-1].facts if runs else {}
        return {"train_rows": len(self.train_rows), "test_rows": len(self.test_rows), "items": self.n_items,
                "chosen": self.chosen, "device": last.get("device", ""), "dtype": last.get("dtype", ""),
                "tuning": self.trials or "no grid (one setting)"}
