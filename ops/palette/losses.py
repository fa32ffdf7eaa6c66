"""LAMIA's palette losses on a batch of palettes P (B items x L positions x D).

With cos(.,.) the cosine similarity and [x]_+ = max(x, 0), as the paper writes them (§4.2.2), sums:

    L_intra = sum over items b and ordered position pairs i != j of  [cos(P[b,i], P[b,j]) - alpha_intra]_+^2
    L_inter = sum over positions l and ordered item pairs a != b  of  [cos(P[a,l], P[b,l]) - alpha_inter]_+^2

`reduction="mean"` averages over the same pairs instead. The choice matters: with gamma = 0.1 the mean form weighs
the contrastive terms ~B*L(L-1) and ~B(B-1)L times less against L_gen (a per-token mean) than the paper's sums
do, so little enough that an LM's palette positions stay near-copies (bench/RESULTS.md, "LAMIA on SmolLM2").

L_intra pushes the L embeddings of one item apart (each position should carry a different aspect); L_inter
pushes the same position of different items apart, the negatives being the other items of the (micro-)batch.
Pairs already below their margin cost nothing (hinge), the squared hinge gives a gradient that fades near the
margin. The total is L_gen + gamma * (L_intra + L_inter).
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

Reduction = Literal["sum", "mean"]


def _upper_pairs(sim: torch.Tensor) -> torch.Tensor:
    n = sim.shape[-1]
    i, j = torch.triu_indices(n, n, offset=1, device=sim.device)
    return sim[..., i, j]


def _hinge(pairs: torch.Tensor, alpha: float, reduction: Reduction) -> torch.Tensor:
    if pairs.numel() == 0:
        return pairs.new_zeros((), dtype=torch.float32)
    cost = F.relu(pairs - alpha).pow(2)
    # each unordered pair once; the paper's sums run over ordered pairs, i.e. count each one twice
    return 2 * cost.sum() if reduction == "sum" else cost.mean()


def intra_palette_loss(palette: torch.Tensor, alpha: float = 0.1, reduction: Reduction = "sum") -> torch.Tensor:
    z = F.normalize(palette.float(), dim=-1)
    return _hinge(_upper_pairs(z @ z.transpose(1, 2)), alpha, reduction)  # pairs (B, L(L-1)/2)


def inter_palette_loss(palette: torch.Tensor, alpha: float = 0.25, reduction: Reduction = "sum") -> torch.Tensor:
    z = F.normalize(palette.float(), dim=-1).transpose(0, 1)  # (L, B, D)
    return _hinge(_upper_pairs(z @ z.transpose(1, 2)), alpha, reduction)  # pairs (L, B(B-1)/2); none for B = 1


def position_correlation(palette: torch.Tensor) -> float:
    """Mean |cos| between different positions of the same item: 0 = independent aspects, 1 = one vector L times."""
    z = F.normalize(palette.float(), dim=-1)
    pairs = _upper_pairs(z @ z.transpose(1, 2))
    return float(pairs.abs().mean()) if pairs.numel() else 0.0
