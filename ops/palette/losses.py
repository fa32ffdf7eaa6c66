"""LAMIA's palette losses on a batch of palettes P (B items x L positions x D).

With cos(.,.) the cosine similarity and [x]_+ = max(x, 0):

    L_intra = mean over items b and position pairs i < j of  [cos(P[b,i], P[b,j]) - alpha_intra]_+^2
    L_inter = mean over positions l and item pairs a < b  of  [cos(P[a,l], P[b,l]) - alpha_inter]_+^2

L_intra pushes the L embeddings of one item apart (each position should carry a different aspect); L_inter
pushes the same position of different items apart, the negatives being the other items of the (micro-)batch.
Pairs already below their margin cost nothing (hinge), the squared hinge gives a gradient that fades near the
margin. The total is L_gen + gamma * (L_intra + L_inter).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _upper_pairs(sim: torch.Tensor) -> torch.Tensor:
    n = sim.shape[-1]
    i, j = torch.triu_indices(n, n, offset=1, device=sim.device)
    return sim[..., i, j]


def intra_palette_loss(palette: torch.Tensor, alpha: float = 0.1) -> torch.Tensor:
    z = F.normalize(palette.float(), dim=-1)
    pairs = _upper_pairs(z @ z.transpose(1, 2))  # (B, L(L-1)/2)
    if pairs.numel() == 0:
        return palette.new_zeros((), dtype=torch.float32)
    return F.relu(pairs - alpha).pow(2).mean()


def inter_palette_loss(palette: torch.Tensor, alpha: float = 0.25) -> torch.Tensor:
    z = F.normalize(palette.float(), dim=-1).transpose(0, 1)  # (L, B, D)
    pairs = _upper_pairs(z @ z.transpose(1, 2))  # (L, B(B-1)/2)
    if pairs.numel() == 0:  # a single item has no in-batch negative
        return palette.new_zeros((), dtype=torch.float32)
    return F.relu(pairs - alpha).pow(2).mean()


def position_correlation(palette: torch.Tensor) -> float:
    """Mean |cos| between different positions of the same item: 0 = independent aspects, 1 = one vector L times."""
    z = F.normalize(palette.float(), dim=-1)
    pairs = _upper_pairs(z @ z.transpose(1, 2))
    return float(pairs.abs().mean()) if pairs.numel() else 0.0
