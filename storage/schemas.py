"""Canonical table schemas (DESIGN §3). Loaders build frames with these dtypes; checks compare against them."""
from __future__ import annotations

from typing import Any, TypeAlias

import polars as pl

# Column name -> dtype. The key is typed Any, not str, only because polars' DataFrame.cast takes a Mapping keyed by
# "str | selector | dtype" and Mapping's key type is invariant: a dict[str, DataType] would be refused there.
ColumnTypes: TypeAlias = dict[Any, pl.DataType]

QUARANTINE_SCHEMA: ColumnTypes = {
    "source_file": pl.String(),
    "line": pl.Int64(),
    "reason": pl.String(),  # a stable category ("unknown item in history"): group_by("reason") answers "why"
    "detail": pl.String(),  # what made this record fail (an id, a value, a parser message), or null
    "raw": pl.String(),
}

# Core interaction columns; loaders may add source-specific extras after them (rating, price, impression_id …).
INTERACTION_CORE: ColumnTypes = {
    "user_id": pl.String(),
    "item_id": pl.String(),
    # Unix seconds, UTC. Null only where the source has no time (MIND click histories): order then comes from `seq`.
    "timestamp": pl.Int64(),
    "event": pl.String(),
    # Position of the event within its source file(s): a stable tie-breaker for equal or missing timestamps.
    "seq": pl.Int64(),
}

USER_SEQUENCE_SCHEMA: ColumnTypes = {
    "user_id": pl.String(),
    "history": pl.List(pl.String()),
    "target": pl.String(),
    "split": pl.String(),
}

# MIND impressions shown but not clicked (a side table of ingestion, `shown_not_clicked`): the label-0 rows of
# `impressions`; the clicks are the `click` events of `interactions`.
SHOWN_SCHEMA: ColumnTypes = {
    "user_id": pl.String(),
    "item_id": pl.String(),
    "timestamp": pl.Int64(),
    "impression_id": pl.String(),
}

# Labelled CTR rows (the `impressions` asset).
IMPRESSION_SCHEMA: ColumnTypes = {
    "user_id": pl.String(),
    "item_id": pl.String(),
    "label": pl.Int8(),  # 1 clicked / bought / reviewed, 0 shown and not clicked or a sampled negative
    "timestamp": pl.Int64(),
    "impression_id": pl.String(),
    "source": pl.String(),  # impression | sampled
    "split": pl.String(),
}

CODE_TABLE_SCHEMA_VERSION = 2  # 2: + content_hash (which text each ID was computed from), retired, id_migration


def code_table_schema(length: int) -> ColumnTypes:
    """DESIGN §4: what downstream teams read. `codes` is an Arrow FixedSizeList<int32>[L]."""
    return {"item_id": pl.String(), "codes": pl.Array(pl.Int32(), length), "dedup": pl.Int32(),
            "semantic_id": pl.String(), "content_hash": pl.String()}


# IDs a code-table lineage issued and took back (`retired.parquet` of a version): the code-table columns + these.
RETIRED_SCHEMA: ColumnTypes = {"retired_in": pl.String(), "retire_reason": pl.String()}

# `id_migration.parquet` of a version: every item of it or of the version before, and what happened to its ID.
MIGRATION_SCHEMA: ColumnTypes = {
    "item_id": pl.String(),
    "old_semantic_id": pl.String(),
    "new_semantic_id": pl.String(),
    "change": pl.String(),
    "moved": pl.Boolean(),
}


# What each column of the canonical tables means: the column schema every table shows in the Dagster UI.
COLUMN_DESCRIPTIONS: dict[str, str] = {
    # items
    "item_id": "the source's item id (MIND news id, Amazon ASIN / parent_asin, H&M 10-digit article_id), unique",
    "dataset": "the dataset partition the row belongs to",
    "content_hash": "hash of the item's cleaned attribute values: changes exactly when its text changes",
    "title": "item title (MIND, Amazon)",
    "abstract": "news abstract (MIND)",
    "category": "news category (MIND)",
    "subcategory": "news subcategory (MIND)",
    "description": "product description (Amazon)",
    "categories": "category paths, ' > ' within a path and ' | ' between paths (Amazon)",
    "brand": "brand or store (Amazon)",
    "detail_desc": "article description (H&M)",
    "product_type_name": "product type (H&M)",
    "product_group_name": "product group (H&M)",
    "graphical_appearance_name": "graphical appearance (H&M)",
    "colour_group_name": "colour group (H&M)",
    "perceived_colour_value_name": "perceived colour value (H&M)",
    "index_name": "index / department (H&M)",
    # interactions
    "user_id": "the source's user id",
    "timestamp": "event time, unix seconds UTC; null where the source has none (MIND click histories)",
    "event": "history | click | review | purchase: what the source recorded",
    "seq": "position of the event in its source file(s): orders events with equal or missing timestamps",
    "impression_id": "MIND impression id (behaviors.tsv first column)",
    "rating": "review rating (Amazon)",
    "price": "price as published (H&M, scaled)",
    "sales_channel_id": "1 or 2 (H&M)",
    # quarantine
    "source_file": "file the rejected record came from, relative to the dataset's raw directory",
    "line": "1-based line (or record start line) in that file",
    "reason": "why the record was rejected: a stable category",
    "detail": "what made this record fail (an id, a value, a parser message), or null",
    "raw": "the record's text as read",
    # user sequences
    "history": "up to max_history item ids before the target, oldest first",
    "target": "the item to predict",
    "split": "train | valid | test",
    # impressions
    "label": "1 clicked (MIND) or interacted (Amazon, H&M), 0 shown and not clicked or a sampled negative",
    "source": "impression (a logged MIND impression) | sampled (a negative drawn from the catalog)",
    # embeddings, palettes, code tables
    "embedding": "pooled item embedding (fixed-size float32 list)",
    "palette": "the item's L palette embeddings (float32 [L][D])",
    "codes": "one code per position, each in [0, K) (fixed-size int32 list of length L)",
    "dedup": "0 for the first item with a code tuple, 1, 2, ... for later ones (the extra index token)",
    "semantic_id": "c1-c2-...-cL/dedup: codes and dedup index as text, unique per table",
    "retire_reason": "removed (the item left the catalog) | changed (its new text gave it a new ID)",
    "retired_in": "the version that retired this ID (it stays reserved: never given to another item)",
    "old_semantic_id": "the item's ID in the version before, null for an added item",
    "new_semantic_id": "the item's ID in this version, null for a removed item",
    "change": "unchanged | changed | added | removed: the item's text (content_hash) against the version before",
    "moved": "the item's semantic ID differs between the two versions",
}
