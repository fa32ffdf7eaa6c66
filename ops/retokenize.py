"""Re-tokenization with IDs that do not move (DESIGN §4): a new code-table version from the previous one.

Two modes, chosen by the run:
- `incremental` (the scheduled job's): items whose `content_hash` is unchanged keep their row byte-identical; new
  and changed items are assigned codes by the previous version's fitted tokenizer (frozen, no refit); a new item's
  dedup digit is the next one free for its code tuple, counting every ID ever issued in this lineage, so no
  existing item is renumbered; an item that left the catalog, or whose changed text moved its ID, leaves its old ID
  in the `retired` table, where it stays reserved: an old ID never names a different item later.
- `refit`: a new fit on the current items. IDs may move; the `id_migration` table says which did and how.

Both write `id_migration` (one row per item of either version) and the churn counts; `ids_stable` is the gate
that refuses to move `latest` when more than a set share of unchanged items got a new ID, unless the run accepts it.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, cast

import numpy as np
import polars as pl

from ops.codetable import CheckOutcome, build_code_table, code_figures, codes_array, semantic_ids
from ops.config import Checked, Fraction
from ops.tokenizers.base import META_FILE, Tokenizer
from storage.codes import CodeTableStore
from storage.schemas import MIGRATION_SCHEMA, RETIRED_SCHEMA, code_table_schema

Mode = Literal["incremental", "refit"]
CHANGES = ("unchanged", "changed", "added", "removed")


@dataclass(frozen=True)
class RetokenizeConfig(Checked):
    """How a code-table run relates to the version before it."""

    mode: Mode = "incremental"  # incremental: keep every unchanged item's ID; refit: fit anew (IDs may move)
    max_moved_share: Fraction = 0.0  # share of unchanged items whose ID may change before `latest` is held back
    accept_moved_ids: bool = False  # publish even above max_moved_share (a full refit the run means to ship)


class IncompatibleVersion(ValueError):
    """The previous version cannot be extended incrementally (another config, source model or schema)."""


@dataclass
class Retokenized:
    frame: pl.DataFrame  # the new code table, rows in the order of `items`
    retired: pl.DataFrame  # every ID this lineage retired, still reserved
    migration: pl.DataFrame  # item_id, old / new semantic_id, change, moved
    figures: dict[str, Any]  # ops.codetable.code_figures of the new codes
    churn: dict[str, int]  # added / changed / unchanged / removed / moved / moved_unchanged / assigned
    notes: list[str] = field(default_factory=list)  # what the run should know (settings an incremental run ignored)


def classify(items: pl.DataFrame, previous: pl.DataFrame | None) -> pl.DataFrame:
    """item_id, change (unchanged | changed | added | removed): the current items (item_id, content_hash) against
    the previous table's, current items first in their order, then removed ones in the previous order."""
    current = items.select("item_id", "content_hash")
    if previous is None:
        return current.select("item_id", pl.lit("added").alias("change"))
    old = previous.select("item_id", pl.col("content_hash").alias("old_hash"))
    joined = current.join(old, on="item_id", how="left", maintain_order="left")
    change = (pl.when(pl.col("old_hash").is_null()).then(pl.lit("added"))
              .when(pl.col("old_hash") == pl.col("content_hash")).then(pl.lit("unchanged"))
              .otherwise(pl.lit("changed")))
    removed = old.join(current, on="item_id", how="anti", maintain_order="left")
    return pl.concat([joined.select("item_id", change.alias("change")),
                      removed.select("item_id", pl.lit("removed").alias("change"))])


def migration(items: pl.DataFrame, previous: pl.DataFrame | None, new: pl.DataFrame,
              kinds: pl.DataFrame | None = None) -> pl.DataFrame:
    """One row per item of either version: its old and new semantic_id (null where it has none), how its content
    changed (`kinds`: classify(items, previous), where the caller has it), and whether its ID moved."""
    kinds = classify(items, previous) if kinds is None else kinds
    old = (previous.select("item_id", pl.col("semantic_id").alias("old_semantic_id")) if previous is not None
           else pl.DataFrame(schema={"item_id": pl.String, "old_semantic_id": pl.String}))
    frame = (kinds.join(old, on="item_id", how="left", maintain_order="left")
             .join(new.select("item_id", pl.col("semantic_id").alias("new_semantic_id")), on="item_id", how="left",
                   maintain_order="left"))
    moved = (pl.col("old_semantic_id").is_not_null() & pl.col("new_semantic_id").is_not_null()
             & (pl.col("old_semantic_id") != pl.col("new_semantic_id")))
    return frame.select("item_id", "old_semantic_id", "new_semantic_id", "change",
                        moved.alias("moved")).cast(MIGRATION_SCHEMA)


def churn(moves: pl.DataFrame, assigned: int) -> dict[str, int]:
    counts = dict(moves.group_by("change").len().iter_rows())
    return {**{kind: int(counts.get(kind, 0)) for kind in CHANGES},
            "moved": int(moves["moved"].sum()),
            "moved_unchanged": int(moves.filter(pl.col("change") == "unchanged")["moved"].sum()),
            "assigned": assigned}


def stability_check(stats: dict[str, int], config: RetokenizeConfig) -> CheckOutcome:
    """`ids_stable`: the share of unchanged items whose ID moved, against `max_moved_share`. Blocking unless the
    run accepts moved IDs (then a warning that still names how many moved)."""
    unchanged = stats["unchanged"]
    share = stats["moved_unchanged"] / unchanged if unchanged else 0.0
    passed = share <= config.max_moved_share
    return CheckOutcome(
        "ids_stable", passed,
        f"at most {config.max_moved_share:.1%} of the items whose text did not change get a new semantic ID "
        f"({'accepted by the run' if config.accept_moved_ids else 'blocking'} above)",
        {"moved_unchanged": stats["moved_unchanged"], "unchanged": unchanged, "moved_share": round(share, 6),
         "max_moved_share": config.max_moved_share, "accepted": config.accept_moved_ids},
        blocking=not config.accept_moved_ids)


def empty_retired(length: int) -> pl.DataFrame:
    return pl.DataFrame(schema={**code_table_schema(length), **RETIRED_SCHEMA})


def _retire(rows: pl.DataFrame, reason: str, version: str) -> pl.DataFrame:
    return rows.with_columns(pl.lit(version).alias("retired_in"), pl.lit(reason).alias("retire_reason"))


def next_dedup(codes: np.ndarray, taken: np.ndarray, taken_dedup: np.ndarray) -> np.ndarray:
    """Dedup digits for new rows `codes`: for each code tuple, one past the largest digit already issued to it
    (`taken` rows with `taken_dedup`), then counting up in row order; 0 for a tuple never seen."""
    if len(codes) == 0:
        return np.zeros(0, dtype=np.int64)
    issued: dict[bytes, int] = {}
    for row, d in zip(np.ascontiguousarray(taken, dtype=np.int64), taken_dedup):
        key = row.tobytes()
        issued[key] = max(issued.get(key, -1), int(d))
    out = np.empty(len(codes), dtype=np.int64)
    for i, row in enumerate(np.ascontiguousarray(codes, dtype=np.int64)):
        key = row.tobytes()
        out[i] = issued[key] = issued.get(key, -1) + 1
    return out


def incremental(items: pl.DataFrame, previous: pl.DataFrame, retired: pl.DataFrame, codes_of_assigned: np.ndarray,
                assigned: Sequence[str], k: int, version: str) -> Retokenized:
    """The new table: `previous` rows for unchanged items (byte-identical), `codes_of_assigned` (rows in the order
    of `assigned` = `to_assign(...)`) for new and changed ones. A changed item whose codes did not change keeps
    its ID; otherwise its old ID is retired, as is every removed item's."""
    length = cast(pl.Array, previous["codes"].dtype).size
    kinds = classify(items, previous)
    prev = previous.join(kinds, on="item_id", how="left", maintain_order="left")
    new_codes = pl.DataFrame({"item_id": pl.Series(list(assigned), dtype=pl.String),
                              "new_codes": pl.Series(codes_of_assigned.astype(np.int32), dtype=pl.Array(pl.Int32,
                                                                                                        length))})
    changed = prev.filter(pl.col("change") == "changed").join(new_codes, on="item_id", how="left")
    same = changed.filter(pl.col("codes") == pl.col("new_codes")).drop("new_codes", "change")
    moved = changed.filter(pl.col("codes") != pl.col("new_codes")).drop("new_codes", "change")
    removed = prev.filter(pl.col("change") == "removed").drop("change")
    # every ID issued before stays reserved: the rows kept, the ones retired now and the ones retired earlier
    retired_now = pl.concat([_retire(removed, "removed", version), _retire(moved, "changed", version)])
    all_retired = pl.concat([retired, retired_now.select(retired.columns)], how="vertical_relaxed")
    keep = pl.concat([prev.filter(pl.col("change") == "unchanged").drop("change"), same])
    reserved = pl.concat([keep.select("codes", "dedup"), all_retired.select("codes", "dedup")])
    fresh = kinds.filter(pl.col("change") == "added").select("item_id").vstack(moved.select("item_id"))
    fresh = fresh.join(new_codes, on="item_id", how="left", maintain_order="left")
    fresh_codes = codes_array(fresh.rename({"new_codes": "codes"}), length)
    dedup = next_dedup(fresh_codes, codes_array(reserved, length), reserved["dedup"].to_numpy())
    fresh_rows = pl.DataFrame({
        "item_id": fresh["item_id"], "codes": pl.Series(fresh_codes.astype(np.int32), dtype=pl.Array(pl.Int32, length)),
        "dedup": dedup.astype(np.int32), "semantic_id": semantic_ids(fresh_codes, dedup)})
    hashes = items.select("item_id", "content_hash")
    body = pl.concat([keep.drop("content_hash"), fresh_rows]).join(hashes, on="item_id", how="left")
    frame = hashes.select("item_id").join(body, on="item_id", how="left", maintain_order="left").select(
        list(code_table_schema(length))).cast(code_table_schema(length))
    codes = codes_array(frame, length)
    moves = migration(items, previous, frame, kinds)
    return Retokenized(frame, all_retired, moves, code_figures(codes, frame["dedup"].to_numpy(), k),
                       churn(moves, len(assigned)))


def to_assign(items: pl.DataFrame, previous: pl.DataFrame) -> list[str]:
    """The items the frozen tokenizer must code: new ones and those whose text changed, in item order."""
    kinds = classify(items, previous)
    return kinds.filter(pl.col("change").is_in(["added", "changed"]))["item_id"].to_list()


def refit(items: pl.DataFrame, previous: pl.DataFrame | None, codes: np.ndarray, k: int) -> Retokenized:
    """A table from a fresh fit (codes in item order), compared with the previous version."""
    frame, figures = build_code_table(items["item_id"].to_list(), codes, k, items["content_hash"].to_list())
    moves = migration(items, previous, frame)
    return Retokenized(frame, empty_retired(int(codes.shape[1])), moves, figures, churn(moves, frame.height))


def config_differences(tokenizer_meta: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    """The tokenizer settings of this run that differ from those the previous version was fitted with (its
    tokenizer.json): an incremental run keeps the fitted tokenizer, so these apply only to a refit."""
    saved = tokenizer_meta.get("config", {})
    asked = json.loads(json.dumps(dict(config), default=str))
    return [f"{k} = {saved.get(k)!r} there, {asked.get(k)!r} in this run"
            for k in sorted(set(saved) | set(asked)) if saved.get(k) != asked.get(k)]


def incompatibilities(previous: Mapping[str, Any], sources: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Why the previous version (its code-table metadata) cannot be extended by an incremental run on these
    `sources` (each upstream table's lineage): empty if it can."""
    problems = []
    if int(previous.get("schema_version", 1)) < 2:
        problems.append("it predates content hashes in code tables (schema 1), so changed items cannot be told")
    for table, lineage in sources.items():
        before = (previous.get("sources") or {}).get(table, {}).get("fingerprint")
        now = lineage.get("fingerprint")
        if before and now and before != now:
            problems.append(f"{table} now comes from another model or settings (fingerprint {now}, was {before}): "
                            "the frozen tokenizer would code new items in another space than the old ones")
    return problems


def retokenize(tokenizer_type: type[Tokenizer], tables: CodeTableStore, previous: str | None, items: pl.DataFrame,
               rows: np.ndarray | None, config: Any, plan: RetokenizeConfig,
               sources: Mapping[str, Mapping[str, Any]], version: str) -> tuple[Tokenizer, Retokenized]:
    """The next version of a code table: a fit (the first version, or `plan.mode == "refit"`), else the previous
    version's frozen tokenizer assigning codes to the new and changed items only (with the settings it was fitted
    with: this run's `config` is for a refit, and where it differs the result's notes say so). `rows` are what the
    tokenizer reads (embeddings, palettes; None for ids only) in the order of `items` (item_id, content_hash);
    `sources` is the lineage of the tables they come from. Raises IncompatibleVersion where an incremental run
    cannot be made."""
    before = tables.read(previous) if previous else None
    if before is None or plan.mode == "refit":
        tokenizer = tokenizer_type(config)
        return tokenizer, refit(items, before, tokenizer.fit(rows, items["item_id"].to_list()), tokenizer.k)
    assert previous is not None
    directory = tables.path(previous)
    problems = incompatibilities(tables.manifest(previous)["metadata"], sources)
    if problems:
        raise IncompatibleVersion(
            f"version {previous} cannot be extended incrementally: " + "; ".join(problems)
            + ". Run the refit job (mode: refit) to fit anew; its id_migration table says which IDs move.")
    tokenizer = tokenizer_type.load(directory)
    assigned = to_assign(items, before)
    index = {item: i for i, item in enumerate(items["item_id"].to_list())}
    picked = None if rows is None else rows[[index[item] for item in assigned]]
    codes = tokenizer.encode(picked, assigned) if assigned else np.zeros((0, tokenizer.length), dtype=np.int64)
    retired = tables.read_retired(previous)
    result = incremental(items, before, retired if retired is not None else empty_retired(tokenizer.length),
                         np.asarray(codes), assigned, tokenizer.k, version)
    ignored = config_differences(json.loads((directory / META_FILE).read_text()), asdict(config))
    if ignored:
        result.notes.append(f"incremental run: the tokenizer fitted for {previous} was kept, so these settings "
                            "apply only to a refit: " + "; ".join(ignored))
    return tokenizer, result
