"""`rqvae`: TIGER's residual-quantized VAE (ops.tokenizers.vq): L residual levels of K codes, coarse to fine."""
from __future__ import annotations

from dataclasses import dataclass

from ops.tokenizers.vq import VQConfig, VQTokenizer


@dataclass
class RQVAEConfig(VQConfig):
    """L residual levels (TIGER: 3, plus the dedup index), the VQ training settings of ops.tokenizers.vq."""


class RQVAE(VQTokenizer):
    config_type = RQVAEConfig
    residual = True
