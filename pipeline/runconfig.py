"""Run-config files: Dagster run config YAML (`ops: {<op>: {config: …}}`) plus `families:`, settings of a
recommender family (ops.recommend registry) written once and given to every asset of that family: a YAML names a
family once instead of one anchor per code table, and a new tokenizer's assets get the family's settings without a
line of their own. An op's own entry wins over its family's, field by field."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from assets.recommend import recommender_key
from ops import recommend, tokenizers


def expand(raw: dict[str, Any]) -> dict[str, Any]:
    """The Dagster run config of a run-config file's contents (`families:` spread over their ops)."""
    ops = {op: dict(entry or {}) for op, entry in (raw.get("ops") or {}).items()}
    for family, settings in (raw.get("families") or {}).items():
        entry = recommend.get(family)  # an unknown family is an error naming the registered ones
        for tokenizer in entry.variants(list(tokenizers.REGISTRY)):
            op = "__".join(recommender_key(entry, tokenizer).path)
            own = ops.get(op, {}).get("config") or {}
            ops[op] = {**ops.get(op, {}), "config": {**(settings or {}), **own}}
    return {**{k: v for k, v in raw.items() if k != "families"}, "ops": ops}


def load(path: str | os.PathLike[str]) -> dict[str, Any]:
    return expand(yaml.safe_load(Path(path).read_text()) or {})
