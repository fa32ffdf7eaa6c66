"""Learned codebooks on the pooled embedding: a VQ autoencoder whose latent is quantized by L codebooks of K codes,
either as residual levels (`rqvae`, TIGER) or as parallel codebooks (`moc`, Mixture-of-Codes).

    x ──(standardize)── encoder MLP ── z ──┬─ residual: code_l = nearest(C_l, r_l), r_{l+1} = r_l - C_l[code_l]
                                            │           quantized z_q = sum_l C_l[code_l]
                                            └─ parallel: code_n = nearest(C_n, z) for every codebook n
                                                        quantized z_q = mean_n C_n[code_n]
    decoder MLP(z + sg(z_q - z))  (straight-through)  ── x̂       (MoC's `per_codebook`: one decoder per codebook)

Loss = w_rec * ||x - x̂||^2 + sum over levels (mean over parallel codebooks) of ||sg(r) - q||^2 + beta ||r - sg(q)||^2.
Every term is a per-item *sum* over its vector, averaged over the batch: peers' RQ-VAEs collapsed to a handful of
IDs when the reconstruction was averaged over dims against summed commitment terms (ANCHORS.md), i.e. with the
reconstruction weighed 1/D. Training hygiene: codebooks initialised by K-Means on the initial latents (residual
K-Means for levels, one seed per parallel codebook), codes unused for `restart_every` steps re-seeded from that
step's latents (dead-code restart), and a collapse detector that turns a degenerate fit into a warning the code
table's collision check then blocks. Training runs on the shared loop (ops/training.py); the model is saved as
safetensors.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ops.config import (
    CodesPerPosition,
    Fraction,
    NonNegativeFloat,
    NonNegativeInt,
    OpenFraction,
    PositiveFloat,
    PositiveInt,
)
from ops.quantize import QuantizeConfig, kmeans, nearest
from ops.tokenizers.base import Tokenizer
from ops.tokenizers.rqkmeans import residual_k
from ops.training import TrainingConfig

if TYPE_CHECKING:
    import torch

WEIGHTS_FILE, ARCH_FILE = "vq.safetensors", "vq.json"
CURVE_POINTS = 100  # training-curve rows kept in the metadata


@dataclass
class VQConfig(TrainingConfig):
    """Shared by `rqvae` and `moc`: the shared loop's settings (ops.training.TrainingConfig) at the VQ defaults,
    plus the autoencoder's. Defaults follow TIGER's RQ-VAE (MLP 512-256-128, latent 32, K 256, beta 0.25) with
    Adam instead of its Adagrad at lr 0.4, and far fewer epochs than its 20 k (small catalogs converge)."""

    length: PositiveInt = 3  # levels (rqvae) or parallel codebooks (moc): codes per item
    k: CodesPerPosition = 256  # codes per codebook (capped at the number of items)
    latent_dim: PositiveInt = 32
    hidden: list[PositiveInt] = field(default_factory=lambda: [512, 256, 128])
    beta: NonNegativeFloat = 0.25  # commitment weight
    reconstruction_weight: PositiveFloat = 1.0
    lr: PositiveFloat = 1e-3
    batch_size: PositiveInt = 256  # items per step (capped at the number of items)
    micro_batch_size: PositiveInt = 256
    epochs: PositiveFloat = 100.0
    checkpoint_every: NonNegativeInt = 0  # (trained in memory: no checkpoints)
    dropout: OpenFraction = 0.0
    restart_every: NonNegativeInt = 20  # steps between dead-code restarts; 0 = never
    kmeans_init: bool = True
    collapse_share: Fraction = 0.5  # warn below this share of min(items, K^L) distinct code tuples



def _mlp(dims: Sequence[int], dropout: float):
    import torch.nn as nn

    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers += [nn.ReLU(), nn.Dropout(dropout)] if dropout else [nn.ReLU()]
    return nn.Sequential(*layers)


def _build(input_dim: int, k: int, cfg: VQConfig, residual: bool, decoders: int):
    import torch
    import torch.nn as nn

    from ops.models import select_device
    from ops.training import autocast_dtype

    class VQAutoencoder(nn.Module):
        mean: torch.Tensor  # buffers (register_buffer): typed here, as nn.Module's __getattr__ says Tensor | Module
        scale: torch.Tensor

        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(cfg.seed)
            self.residual = residual
            self.encoder = _mlp([input_dim, *cfg.hidden, cfg.latent_dim], cfg.dropout)
            self.decoders = nn.ModuleList(
                [_mlp([cfg.latent_dim, *reversed(cfg.hidden), input_dim], cfg.dropout) for _ in range(decoders)])
            self.codebooks = nn.Parameter(torch.randn(cfg.length, k, cfg.latent_dim) * 0.1)
            self.register_buffer("mean", torch.zeros(input_dim))
            self.register_buffer("scale", torch.ones(()))
            self.usage = torch.zeros(cfg.length, k)  # codes used since the last restart check (not saved)
            self.last_inputs: list[torch.Tensor] = []  # what each codebook quantized in the last micro-batch
            self.restarts = [0] * cfg.length
            self.device_ = select_device(cfg.device)
            self.autocast_dtype = autocast_dtype(self.device_, cfg.dtype)

        def standardize(self, x: torch.Tensor) -> torch.Tensor:
            return (x - self.mean) / self.scale

        def quantize(self, z: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
            """codes (B x L), z_q, the vectors each codebook quantized, their chosen codewords (fp32, no autocast)."""
            z = z.float()
            r, codes, inputs, chosen = z, [], [], []
            for level in range(cfg.length):
                book = self.codebooks[level]
                target = r if self.residual else z
                d = (target.detach() ** 2).sum(1, keepdim=True) - 2 * target.detach() @ book.T + (book ** 2).sum(1)
                code = d.argmin(1)
                q = book[code]
                codes.append(code)
                inputs.append(target)
                chosen.append(q)
                if self.residual:
                    r = r - q.detach()
            stacked = torch.stack(chosen)
            z_q = stacked.sum(0) if self.residual else stacked.mean(0)
            return torch.stack(codes, 1), z_q, inputs, chosen

        def forward(self, x: torch.Tensor) -> dict[str, Any]:  # tensors, and "inputs": a list of them
            from ops.training import autocast

            xs = self.standardize(x)
            with autocast(self.device_, self.autocast_dtype):
                z = self.encoder(xs).float()
            codes, z_q, inputs, chosen = self.quantize(z)
            with autocast(self.device_, self.autocast_dtype):
                if len(self.decoders) == 1:
                    recons = [self.decoders[0](z + (z_q - z).detach()).float()]
                else:  # one decoder per codebook, each from its own codeword
                    recons = [dec(z + (q - z).detach()).float() for dec, q in zip(self.decoders, chosen)]
            recon = torch.stack([((xs - r) ** 2).sum(1).mean() for r in recons]).mean()
            book = torch.stack([((i.detach() - q) ** 2).sum(1).mean() for i, q in zip(inputs, chosen)])
            commit = torch.stack([((i - q.detach()) ** 2).sum(1).mean() for i, q in zip(inputs, chosen)])
            reduce = (lambda t: t.sum()) if self.residual else (lambda t: t.mean())
            return {"codes": codes, "recon": recon, "codebook": reduce(book), "commit": reduce(commit),
                    "inputs": inputs, "x_hat": torch.stack(recons).mean(0) * self.scale + self.mean}

        # --- the Trainable protocol of ops.training ---
        def trainable_parameters(self) -> list[torch.nn.Parameter]:
            return list(self.parameters())

        def save_weights(self, directory: Path) -> None:
            from safetensors.torch import save_file

            save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()},
                      str(Path(directory) / WEIGHTS_FILE))

        def load_weights(self, directory: Path) -> None:
            from safetensors.torch import load_file

            self.load_state_dict(load_file(str(Path(directory) / WEIGHTS_FILE)))

    return VQAutoencoder()


class VQTokenizer(Tokenizer):
    """Base of `rqvae` and `moc`: subclasses set `residual` and how many decoders there are."""

    config_type: ClassVar[type] = VQConfig
    residual: ClassVar[bool] = True

    def __init__(self, config: VQConfig):
        super().__init__(config)
        # the VQAutoencoder of _build: a class local to it (torch is imported lazily), hence Any
        self.model: Any = None
        self.input_dim = 0

    def decoders(self) -> int:
        return 1

    def fit(self, x: np.ndarray | None, item_ids: Sequence[str]) -> np.ndarray:
        import torch

        from ops.training import fit

        cfg = self.config
        x = np.ascontiguousarray(x, dtype=np.float32)
        n, self.input_dim = x.shape
        self.k, self.length = (residual_k(cfg.k, n) if self.residual else min(cfg.k, n)), cfg.length
        if self.k < cfg.k:
            self.warnings.append(f"K capped from {cfg.k} to {self.k}: only {n} items to train on")
        model = self.model = _build(self.input_dim, self.k, cfg, self.residual, self.decoders())
        with torch.no_grad():
            model.mean.copy_(torch.from_numpy(x.mean(0)))
            model.scale.fill_(float(np.sqrt(x.var(0).mean())) or 1.0)
        model.to(model.device_)
        data = torch.from_numpy(x.copy()).to(model.device_)
        if cfg.kmeans_init:
            self._kmeans_init(data)
        train = replace(cfg, batch_size=min(cfg.batch_size, n), micro_batch_size=min(cfg.micro_batch_size, n))

        def loss_fn(idx: Sequence[int]):
            out = model(data[list(idx)])
            model.usage += torch.stack([torch.bincount(out["codes"][:, i], minlength=self.k)
                                        for i in range(cfg.length)]).cpu().float()
            model.last_inputs = [v.detach() for v in out["inputs"]]
            total = cfg.reconstruction_weight * out["recon"] + out["codebook"] + cfg.beta * out["commit"]
            return total, {"loss": float(total.detach()), "recon": float(out["recon"].detach()),
                           "codebook": float(out["codebook"].detach()), "commit": float(out["commit"].detach())}

        def on_step(row: dict[str, float]) -> None:
            if cfg.restart_every and int(row["step"]) % cfg.restart_every == 0:
                self._restart_dead(int(row["step"]))

        # Adam moments of codewords no item picks decay geometrically into denormal floats, which made CPU steps
        # ~7x slower (measured); flushed to zero for the fit only (the flag is process-wide; off is torch's default)
        torch.set_flush_denormal(True)
        try:
            result = fit(model, train, n, loss_fn, fingerprint="", on_step=on_step)
        finally:
            torch.set_flush_denormal(False)
        codes = self.encode(x, item_ids)
        self.figures = self._figures(data, x, codes, result.history)
        self.warnings += self._collapse_warnings(codes)
        return codes

    def _kmeans_init(self, data: torch.Tensor) -> None:
        """Codebooks from K-Means of the initial latents: residual K-Means for levels, one seed per parallel book."""
        import torch

        cfg, model = self.config, self.model
        with torch.no_grad():
            model.eval()
            z = model.encoder(model.standardize(data)).float().cpu().numpy()
            residual = z.copy()
            for level in range(cfg.length):
                target = residual if self.residual else z
                c = kmeans(np.ascontiguousarray(target), self.k,
                           QuantizeConfig(k=self.k, seed=cfg.seed + level, init="greedy_kmeans++"))
                model.codebooks[level].copy_(torch.from_numpy(c))
                if self.residual:
                    residual -= c[nearest(c, residual)[0]]

    def _restart_dead(self, step: int) -> None:
        """Codes no item chose since the last check move onto latents of the last batch (seeded by step)."""
        import torch

        model = self.model
        gen = torch.Generator().manual_seed(self.config.seed * 1_000_003 + step)
        with torch.no_grad():
            for level in range(self.config.length):
                dead = torch.nonzero(model.usage[level] == 0).flatten()
                inputs = model.last_inputs[level]
                if len(dead) and len(inputs):
                    pick = torch.randint(len(inputs), (len(dead),), generator=gen)
                    noise = torch.randn(len(dead), inputs.shape[1], generator=gen) * 1e-3
                    model.codebooks[level, dead.to(model.device_)] = inputs[pick.to(inputs.device)] + noise.to(
                        inputs.device)
                    model.restarts[level] += len(dead)
        model.usage.zero_()

    def encode(self, x: np.ndarray | None, item_ids: Sequence[str]) -> np.ndarray:
        import torch

        if self.model is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted")
        self.model.eval()
        out = []
        with torch.no_grad():
            data = torch.from_numpy(np.array(x, dtype=np.float32)).to(self.model.device_)
            for s in range(0, len(data), 4096):
                z = self.model.encoder(self.model.standardize(data[s: s + 4096])).float()
                out.append(self.model.quantize(z)[0].cpu().numpy())
        return np.concatenate(out).astype(np.int64) if out else np.zeros((0, self.length), np.int64)

    def _figures(self, data: torch.Tensor, x: np.ndarray, codes: np.ndarray, history: list[dict]) -> dict:
        import torch

        with torch.no_grad():
            out = self.model(data)
            x_hat = out["x_hat"].cpu().numpy()
            z = self.model.encoder(self.model.standardize(data)).float()
            norms, r = [float(z.norm(dim=1).mean())], z
            for level in range(self.length):
                r = (r if self.residual else z) - self.model.codebooks[level][torch.from_numpy(codes[:, level]).to(
                    z.device)]
                norms.append(float(r.norm(dim=1).mean()))
        err = ((x - x_hat) ** 2)
        every = max(1, math.ceil(len(history) / CURVE_POINTS))
        curve = [{k: round(v, 5) for k, v in row.items() if k in ("step", "loss", "recon", "commit")}
                 for row in history[::every]]
        return {"reconstruction_mse": round(float(err.mean()), 8),
                "relative_reconstruction_error": round(float(err.sum() / max(((x - x.mean(0)) ** 2).sum(), 1e-12)), 6),
                # latent-space error after each level (residual) / of each codebook alone (parallel)
                "residual_norm" if self.residual else "codebook_error": [round(v, 5) for v in norms],
                "dead_code_restarts": list(self.model.restarts), "steps": len(history),
                "final_loss": round(history[-1]["loss"], 5) if history else None, "training_curve": curve}

    def _collapse_warnings(self, codes: np.ndarray) -> list[str]:
        """A fit whose codes name few distinct tuples, or a codebook stuck on a handful of codes, is a collapse."""
        notes = []
        possible = min(len(codes), self.k ** codes.shape[1])  # K^L tuples at most: one codebook of 32 names 32
        distinct = len(np.unique(codes, axis=0)) / max(possible, 1)
        if distinct < self.config.collapse_share:
            notes.append(f"collapse: {distinct:.1%} of the possible distinct code tuples (below "
                         f"{self.config.collapse_share:.0%}): " + (
                             "check the reconstruction / commitment balance (reconstruction_weight, beta)"
                             if self.residual else "the parallel codebooks name the same partitions (see "
                             "position_agreement_ami); fewer codebooks or a larger K"))
        for level in range(codes.shape[1]):
            used = len(np.unique(codes[:, level]))
            if used < max(2, min(self.k, len(codes)) // 20):
                notes.append(f"collapse: codebook {level} uses {used} of {self.k} codes")
        return notes

    def save(self, directory: Path) -> None:
        super().save(directory)
        self.model.save_weights(Path(directory))
        (Path(directory) / ARCH_FILE).write_text(json.dumps({"input_dim": self.input_dim}))

    def _load_model(self, directory: Path) -> None:
        self.input_dim = int(json.loads((directory / ARCH_FILE).read_text())["input_dim"])
        self.model = _build(self.input_dim, self.k, self.config, self.residual, self.decoders())
        self.model.load_weights(directory)
        self.model.to(self.model.device_)
        self.model.eval()
