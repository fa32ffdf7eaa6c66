"""LAMIA's hierarchical attention mask and the packing of input rows into padded tensors.

A row is a sequence of blocks `[content; LaP_1..L; LdP_1..L; task; answer]`. The mask (paper, Fig. 2):
- causal inside each block (the content block may be bidirectional for encoder backbones, see PaletteConfig);
- LaP attends to the content block (this is where the palette reads the item);
- the task block (task token + answer tokens) attends to the LdP block (where the palette is written back);
- nothing else crosses blocks, padding is never attended to.

It is handed to the Hugging Face model as a 4-D *additive* float mask (batch, 1, query, key): transformers 5
returns a 4-D mask unchanged (`masking_utils._preprocess_mask_arguments`), eager attention adds it to the scores
and sdpa takes it as `attn_mask`. A float mask rather than a boolean one because eager attention adds it, and
because a boolean mask with an all-False row (a padding query) makes sdpa return NaN; here a padding query
attends to itself only. Position ids are always passed explicitly: OPT would otherwise derive them from a
2-D mask that is not there.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

PAD, CONTENT, LAP, LDP, TASK = -1, 0, 1, 2, 3
SLOT = -1  # an input position filled with a vector (LaP / LdP / task token) instead of a token embedding
IGNORE = -100  # label of a position that predicts nothing


def allowed(blocks: torch.Tensor, bidirectional: Sequence[int] = ()) -> torch.Tensor:
    """Boolean (B, T, T): may query position q attend to key position k? `blocks` is (B, T) of block codes.
    Blocks listed in `bidirectional` see their whole block instead of only earlier positions."""
    t = blocks.shape[-1]
    q, k = blocks[:, :, None], blocks[:, None, :]
    causal = torch.ones(t, t, dtype=torch.bool, device=blocks.device).tril()
    same = q == k
    two_way = torch.zeros_like(same)
    for b in bidirectional:
        two_way |= same & (q == b)
    cross = ((q == LAP) & (k == CONTENT)) | ((q == TASK) & (k == LDP))
    ok = (same | cross) & (causal | two_way) & (q != PAD) & (k != PAD)
    eye = torch.eye(t, dtype=torch.bool, device=blocks.device)
    return ok | (eye & (q == PAD))  # a padding query sees itself: no empty softmax row


def additive_mask(ok: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, T, T) boolean -> (B, 1, T, T) float: 0 where allowed, the dtype's minimum elsewhere."""
    zero = torch.zeros((), dtype=dtype, device=ok.device)
    low = torch.full((), torch.finfo(dtype).min, dtype=dtype, device=ok.device)
    return torch.where(ok, zero, low)[:, None]


@dataclass
class Row:
    ids: list[int]  # token ids, SLOT where a vector goes
    blocks: list[int]
    first_position: int = 0  # position id of the row's first element (pass 2 continues the full layout)
    labels: list[int] | None = None  # label at i = the token to predict from position i (IGNORE if none)


@dataclass
class Packed:
    ids: torch.Tensor  # (B, T) token ids; SLOT at vector positions; pad_id at padding
    blocks: torch.Tensor  # (B, T)
    positions: torch.Tensor  # (B, T)
    labels: torch.Tensor  # (B, T), IGNORE where nothing is predicted
    slots: torch.Tensor  # (B, T) bool, True where a vector is inserted

    def to(self, device: torch.device) -> Packed:
        return Packed(*(t.to(device) for t in (self.ids, self.blocks, self.positions, self.labels, self.slots)))


def pack(rows: Sequence[Row], pad_id: int, left: bool) -> Packed:
    """Pad rows to one length (left padding keeps the rows' ends aligned, e.g. the LaP block of pass 1)."""
    t = max(len(r.ids) for r in rows)
    shape = (len(rows), t)
    ids = torch.full(shape, pad_id, dtype=torch.long)
    blocks = torch.full(shape, PAD, dtype=torch.long)
    positions = torch.zeros(shape, dtype=torch.long)
    labels = torch.full(shape, IGNORE, dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r.ids)
        sl = slice(t - n, t) if left else slice(0, n)
        ids[i, sl] = torch.tensor(r.ids, dtype=torch.long)
        blocks[i, sl] = torch.tensor(r.blocks, dtype=torch.long)
        positions[i, sl] = torch.arange(r.first_position, r.first_position + n)
        if r.labels is not None:
            labels[i, sl] = torch.tensor(r.labels, dtype=torch.long)
    slots = ids == SLOT
    ids[slots] = pad_id
    return Packed(ids, blocks, positions, labels, slots)


def pass1_row(content: Sequence[int], length: int) -> Row:
    """`[content; LaP_1..L]`: the palette pass (nothing after LaP can change LaP's outputs, so it stops there)."""
    return Row([*content, *[SLOT] * length], [CONTENT] * len(content) + [LAP] * length)


def pass2_row(content_len: int, length: int, answer: Sequence[int]) -> Row:
    """`[LdP_1..L; task; answer]` at the positions they have in the full row. Under the hierarchical mask these
    blocks see nothing of content / LaP except through the palette written into LdP, so those are left out."""
    n = len(answer)
    labels = [IGNORE] * length + list(answer) + [IGNORE]  # the task token predicts answer[0], and so on
    return Row([*[SLOT] * length, SLOT, *answer], [LDP] * length + [TASK] * (1 + n), content_len + length, labels)


def full_row(content: Sequence[int], length: int, answer: Sequence[int]) -> Row:
    """The paper's single row `[content; LaP; LdP; task; answer]` (reference layout; pass1 + pass2 equal it)."""
    c, n = len(content), len(answer)
    labels = [IGNORE] * (c + 2 * length) + list(answer) + [IGNORE]
    return Row([*content, *[SLOT] * (2 * length + 1), *answer],
               [CONTENT] * c + [LAP] * length + [LDP] * length + [TASK] * (1 + n), 0, labels)
