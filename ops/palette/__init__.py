"""LAMIA item palette (ops only, no Dagster): mask, losses, model, training, extraction."""
from ops.palette.config import PaletteConfig
from ops.palette.losses import inter_palette_loss, intra_palette_loss, position_correlation
from ops.palette.model import PaletteData, PaletteModel, prepare_data
from ops.palette.train import TrainResult, extract, latest_checkpoint, load_model, train

__all__ = ["PaletteConfig", "PaletteData", "PaletteModel", "TrainResult", "extract", "inter_palette_loss",
           "intra_palette_loss", "latest_checkpoint", "load_model", "position_correlation", "prepare_data", "train"]
