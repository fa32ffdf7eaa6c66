"""Canonical table schemas (DESIGN §3). Loaders build frames with these dtypes; checks compare against them."""
from __future__ import annotations

import polars as pl

QUARANTINE_SCHEMA: dict[str, pl.DataType] = {
    "source_file": pl.String(),
    "line": pl.Int64(),
    "reason": pl.String(),  # a stable category ("unknown item in history"): group_by("reason") answers "why"
    "detail": pl.String(),  # what made this record fail (an id, a value, a parser message), or null
    "raw": pl.String(),
}

# Core interaction columns; loaders may add source-specific extras after them (rating, price, impression_id …).
INTERACTION_CORE: dict[str, pl.DataType] = {
    "user_id": pl.String(),
    "item_id": pl.String(),
    # Unix seconds, UTC. Null only where the source has no time (MIND click histories): order then comes from `seq`.
    "timestamp": pl.Int64(),
    "event": pl.String(),
    # Position of the event within its source file(s): a stable tie-breaker for equal or missing timestamps.
    "seq": pl.Int64(),
}

USER_SEQUENCE_SCHEMA: dict[str, pl.DataType] = {
    "user_id": pl.String(),
    "history": pl.List(pl.String()),
    "target": pl.String(),
    "split": pl.String(),
}


CODE_TABLE_SCHEMA_VERSION = 1


def code_table_schema(length: int) -> dict[str, pl.DataType]:
    """DESIGN §4: what downstream teams read. `codes` is an Arrow FixedSizeList<int32>[L]."""
    return {"item_id": pl.String(), "codes": pl.Array(pl.Int32(), length), "dedup": pl.Int32(),
            "semantic_id": pl.String()}
