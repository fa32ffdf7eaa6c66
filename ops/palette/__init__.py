"""LAMIA item palette (ops only, no Dagster): mask, losses, model, training, extraction.

The names below are loaded on first use (PEP 562), so that importing the palette's config does not import torch
and transformers: a Dagster step that does not train pays nothing for them."""
from __future__ import annotations

import importlib
from typing import Any

_HOME = {
    "PaletteConfig": "ops.palette.config",
    "inter_palette_loss": "ops.palette.losses", "intra_palette_loss": "ops.palette.losses",
    "position_correlation": "ops.palette.losses",
    "PaletteData": "ops.palette.model", "PaletteModel": "ops.palette.model", "prepare_data": "ops.palette.model",
    "TrainResult": "ops.palette.train", "extract": "ops.palette.train", "latest_checkpoint": "ops.palette.train",
    "load_model": "ops.palette.train",
}  # (the training function is ops.palette.train.train: the package's `train` is that module)
__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'ops.palette' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOME[name]), name)
