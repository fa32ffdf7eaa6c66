"""LAMIA's ablations as run configs: configs/lamia_ablations.yaml names each variant's change to the demo's
palette_model settings; `ablation_config` renders a variant into a full_pipeline_job / palette_job run config."""
from __future__ import annotations

import copy
from pathlib import Path

import yaml

from pipeline import runconfig
from pipeline.demo import DEMO_CONFIG

ABLATIONS = Path(__file__).resolve().parents[1] / "configs" / "lamia_ablations.yaml"


def ablations() -> dict[str, dict]:
    return yaml.safe_load(ABLATIONS.read_text())


def ablation_config(variant: str, base: dict | None = None) -> dict:
    """The demo run config (or `base`) with the variant's palette_model settings applied over the base's."""
    variants = ablations()
    if variant not in variants:
        raise KeyError(f"unknown ablation {variant!r}; {ABLATIONS} has {', '.join(variants)}")
    config = copy.deepcopy(base if base is not None else runconfig.load(DEMO_CONFIG))
    palette = config.setdefault("ops", {}).setdefault("palette_model", {}).setdefault("config", {})
    palette.update(variants[variant] or {})
    return config
