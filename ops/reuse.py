"""Reuse of per-item rows between materializations of a derived table (embeddings, palettes): a row whose item
still has the same `content_hash`, in a table made by the same producer (model, settings, checkpoint), is taken
from the previous table instead of being computed again, so a re-ingest that changed a few items costs a few
items' compute. The tables carry the `content_hash` each row was computed from."""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from storage.parquet import read_table_metadata


@dataclass
class ReusePlan:
    todo: pl.DataFrame  # the rows of `items` to compute, in item order
    kept: pl.DataFrame  # item_id + the reused column(s), from the previous table
    reason: str  # why rows were or were not reused (metadata)

    @property
    def reused(self) -> int:
        return self.kept.height


def plan_reuse(items: pl.DataFrame, previous: str | os.PathLike[str], columns: list[str],
               same_producer: Callable[[Mapping[str, Any]], str | None]) -> ReusePlan:
    """Which items of `items` (item_id, content_hash, ...) must be computed: all of them unless `previous` exists,
    has a content_hash column and `same_producer(its lineage)` returns None (else the reason it does not match);
    then only those whose content_hash is not the previous row's."""
    def nothing(reason: str) -> ReusePlan:
        return ReusePlan(items, pl.DataFrame(schema={"item_id": pl.String}), reason)

    previous = Path(previous)
    if not previous.is_file():
        return nothing("no previous table")
    mismatch = same_producer(read_table_metadata(previous))
    if mismatch is not None:
        return nothing(mismatch)
    schema = pl.read_parquet_schema(previous)
    if "content_hash" not in schema:
        return nothing("the previous table has no content_hash column")
    old = pl.read_parquet(previous, columns=["item_id", "content_hash", *columns])
    kept = old.join(items.select("item_id", "content_hash"), on=["item_id", "content_hash"], how="semi")
    todo = items.join(kept.select("item_id"), on="item_id", how="anti", maintain_order="left")
    return ReusePlan(todo, kept.drop("content_hash"), f"{kept.height} rows reused, {todo.height} computed")


def assemble(items: pl.DataFrame, plan: ReusePlan, computed: pl.DataFrame) -> pl.DataFrame:
    """The full table in the order of `items`: reused and computed rows, with each item's content_hash."""
    rows = pl.concat([plan.kept.cast(computed.schema), computed]) if plan.kept.height else computed
    out = items.select("item_id", "content_hash").join(rows, on="item_id", how="left", maintain_order="left")
    missing = out.filter(pl.col(computed.columns[1]).is_null()).height
    if missing:
        raise ValueError(f"{missing} items have neither a reused nor a computed row")
    return out.select("item_id", *computed.columns[1:], "content_hash")


def rows_version(producer: str, items: pl.DataFrame) -> str:
    """Data version of a per-item table: its producer (model, settings, checkpoint) and every (item_id,
    content_hash) it covers, in order: the same for a full computation and for one that reused rows."""
    import hashlib

    h = hashlib.sha256(producer.encode())
    h.update(items.select(pl.concat_str("item_id", "content_hash", separator="\x1f"))
             .to_series().str.join("\x1e").item().encode() if items.height else b"")
    return h.hexdigest()[:16]
