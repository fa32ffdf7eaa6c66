"""`moc`: Mixture-of-Codes (ops.tokenizers.vq): N independent codebooks quantize the same latent in parallel and a
shared decoder reconstructs from the mean of the N codewords; N in {1, 2, 3, 7} is the paper's scaling study.
`decoder: per_codebook` answers the reviewers' question: one decoder per codebook, each from its own codeword."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ops.tokenizers.vq import VQConfig, VQTokenizer


@dataclass
class MoCConfig(VQConfig):
    """`length` = N parallel codebooks; the other VQ settings as ops.tokenizers.vq."""

    decoder: Literal["shared", "per_codebook"] = "shared"


class MixtureOfCodes(VQTokenizer):
    config_type = MoCConfig
    residual = False

    def decoders(self) -> int:
        return self.config.length if self.config.decoder == "per_codebook" else 1
