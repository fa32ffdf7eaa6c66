"""Amazon reviews loader: the 2014, 2018 and 2023 releases, one category at a time, plain or gzipped.

| release | reviews file | meta file | user / item / rating / time |
|---|---|---|---|
| 2014 | reviews_<Cat>_5.json (JSON lines) | meta_<Cat>.json (Python-literal dict lines) | reviewerID / asin / overall / unixReviewTime (s) |
| 2018 | <Cat>_5.json (JSON lines) | meta_<Cat>.json (JSON lines) | reviewerID / asin / overall / unixReviewTime (s) |
| 2023 | <Cat>.jsonl (JSON lines) | meta_<Cat>.jsonl (JSON lines, keyed by parent_asin) | user_id / parent_asin / rating / timestamp (ms) |

Reviews are read first so that meta lines of items nobody reviewed are skipped cheaply (counted, not parsed);
the full meta of a category is far larger than its 5-core reviews.
"""
from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from ops.ingest.common import (
    FileAccount,
    FormatGuard,
    IngestError,
    IngestResult,
    ItemBuilder,
    Quarantine,
    fetch_lines,
    find_file,
    iter_lines,
    rel,
)
from storage.schemas import INTERACTION_CORE

ATTRIBUTES = ("title", "description", "categories", "brand")
INTERACTION_SCHEMA = {**INTERACTION_CORE, "rating": pl.Float64()}
VERSIONS = ("2014", "2018", "2023")


@dataclass(frozen=True)
class Release:
    version: str
    review_files: tuple[str, ...]
    meta_files: tuple[str, ...]
    user_key: str
    item_key: str
    rating_key: str
    time_key: str
    time_divisor: int  # 2023 timestamps are in milliseconds
    meta_item_key: str
    python_literal_meta: bool


def release(version: str, category: str) -> Release:
    if version == "2014":
        return Release("2014", (f"reviews_{category}_5.json", f"reviews_{category}.json"), (f"meta_{category}.json",),
                       "reviewerID", "asin", "overall", "unixReviewTime", 1, "asin", True)
    if version == "2018":
        return Release("2018", (f"{category}_5.json", f"{category}.json"), (f"meta_{category}.json",),
                       "reviewerID", "asin", "overall", "unixReviewTime", 1, "asin", False)
    if version == "2023":
        return Release("2023", (f"{category}.jsonl",), (f"meta_{category}.jsonl",),
                       "user_id", "parent_asin", "rating", "timestamp", 1000, "parent_asin", False)
    raise IngestError(f"Amazon: unknown release {version!r}; expected one of {', '.join(VERSIONS)}")


def _join(value: Any, sep: str = " ") -> str:
    """Flatten the many shapes Amazon uses for text (str, list of str, list of lists of categories)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(v, (list, tuple)) for v in value):  # 2014 categories: [['A','B'],['C']]
            return " | ".join(" > ".join(str(x) for x in path) for path in value)
        return sep.join(_join(v) for v in value if v is not None)
    return str(value)


def item_text(meta: dict[str, Any], version: str) -> tuple[str, str, str, str]:
    if version == "2014":
        return (_join(meta.get("title")), _join(meta.get("description")),
                _join(meta.get("categories")), _join(meta.get("brand")))
    if version == "2018":
        return (_join(meta.get("title")), _join(meta.get("description")),
                _join(meta.get("category"), " > "), _join(meta.get("brand")))
    categories = meta.get("categories") or meta.get("main_category")
    return (_join(meta.get("title")), _join(meta.get("description")),
            _join(categories, " > "), _join(meta.get("store") or (meta.get("details") or {}).get("Brand")))


_ASIN_RE = {
    "asin": re.compile(r"""['"]asin['"]\s*:\s*['"]([^'"]+)['"]"""),
    "parent_asin": re.compile(r"""['"]parent_asin['"]\s*:\s*['"]([^'"]+)['"]"""),
}


def parse_meta_line(line: str, python_literal: bool) -> dict[str, Any]:
    """Parse one meta line. 2014 meta lines are Python literals (single quotes) that JSON cannot parse."""
    if python_literal:
        try:
            value = ast.literal_eval(line)
        except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
            # Some mirrors re-encode the 2014 meta as real JSON: accept that too.
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                raise ValueError(f"not a Python-literal dict: {type(exc).__name__}") from None
    else:
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"bad JSON: {exc.msg}") from None
    if not isinstance(value, dict):
        raise ValueError(f"expected a dict, got {type(value).__name__}")
    return value


def _read_reviews(path: Path, name: str, rel_: Release, quarantine: Quarantine
                  ) -> tuple[FileAccount, dict[str, list]]:
    account = FileAccount(name, "line", "interactions")
    keys = (rel_.user_key, rel_.item_key, rel_.rating_key, rel_.time_key)
    guard = FormatGuard(path, f"Amazon {rel_.version} reviews: JSON lines with {', '.join(keys)}")
    rows: dict[str, list] = {k: [] for k in (*INTERACTION_SCHEMA, "line")}
    for number, line in iter_lines(path):
        account.rows_in += 1
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict):
                raise ValueError(f"expected a JSON object, got {type(rec).__name__}")
        except (json.JSONDecodeError, ValueError) as exc:
            problem = f"bad JSON: {getattr(exc, 'msg', exc)}"
            guard.record(number, problem)
            quarantine.add(name, number, problem, line, account)
            continue
        missing = [k for k in keys if rec.get(k) in (None, "")]
        if missing:
            problem = f"missing field(s) {', '.join(missing)}"
            guard.record(number, problem)
            quarantine.add(name, number, problem, line, account)
            continue
        try:
            ts = int(float(rec[rel_.time_key])) // rel_.time_divisor
            rating = float(rec[rel_.rating_key])
        except (TypeError, ValueError):
            problem = f"bad timestamp or rating ({rec[rel_.time_key]!r}, {rec[rel_.rating_key]!r})"
            guard.record(number, problem)
            quarantine.add(name, number, problem, line, account)
            continue
        guard.record(number, None)
        rows["user_id"].append(str(rec[rel_.user_key]))
        rows["item_id"].append(str(rec[rel_.item_key]))
        rows["timestamp"].append(ts)
        rows["event"].append("review")
        rows["seq"].append(number)
        rows["rating"].append(rating)
        rows["line"].append(number)
    guard.finish()
    return account, rows


def _read_meta(path: Path, name: str, rel_: Release, wanted: set[str], items: ItemBuilder,
               quarantine: Quarantine, keep_unreviewed: bool) -> FileAccount:
    account = FileAccount(name, "line", "items")
    fmt = "Python-literal dict lines" if rel_.python_literal_meta else "JSON lines"
    guard = FormatGuard(path, f"Amazon {rel_.version} meta: {fmt} with '{rel_.meta_item_key}'")
    id_re = _ASIN_RE[rel_.meta_item_key]
    for number, line in iter_lines(path):
        account.rows_in += 1
        if not keep_unreviewed:
            m = id_re.search(line)
            if m and m.group(1) not in wanted:
                guard.record(number, None)
                account.filtered["item has no kept review"] += 1
                continue
        try:
            meta = parse_meta_line(line, rel_.python_literal_meta)
        except ValueError as exc:
            guard.record(number, str(exc))
            quarantine.add(name, number, str(exc), line, account)
            continue
        item_id = str(meta.get(rel_.meta_item_key) or "")
        guard.record(number, None if item_id else f"no '{rel_.meta_item_key}' key")
        if item_id and not keep_unreviewed and item_id not in wanted:
            account.filtered["item has no kept review"] += 1
            continue
        items.add(item_id, item_text(meta, rel_.version), (name, number), line, quarantine, account)
    guard.finish()
    return account


def load_amazon(raw_dir: Path, dataset: str, category: str, version: str = "2014",
                keep_unreviewed_items: bool = False) -> IngestResult:
    raw_dir = Path(raw_dir)
    rel_ = release(str(version), category)
    reviews_path = find_file(raw_dir, rel_.review_files, f"Amazon {rel_.version} reviews ({category})")
    meta_path = find_file(raw_dir, rel_.meta_files, f"Amazon {rel_.version} meta ({category})")
    quarantine = Quarantine()
    r_name, m_name = rel(reviews_path, raw_dir), rel(meta_path, raw_dir)
    r_account, rows = _read_reviews(reviews_path, r_name, rel_, quarantine)
    wanted = set(rows["item_id"])
    items = ItemBuilder(dataset, ATTRIBUTES)
    m_account = _read_meta(meta_path, m_name, rel_, wanted, items, quarantine, keep_unreviewed_items)
    if not items.rows:
        raise IngestError(f"Amazon: no valid item in {meta_path} matches a review in {reviews_path}")
    frame = pl.DataFrame(rows, schema={**INTERACTION_SCHEMA, "line": pl.Int64()})
    known = frame["item_id"].is_in(pl.Series(list(items.rows)).implode())
    unknown = frame.filter(~known)
    if unknown.height:
        raw = fetch_lines(reviews_path, set(unknown["line"].to_list()))
        for number, item in zip(unknown["line"], unknown["item_id"]):
            quarantine.add(r_name, number, f"unknown item: {item} has no valid meta line", raw.get(number, ""),
                           r_account)
    interactions = frame.filter(known).drop("line")
    r_account.kept = interactions.height
    return IngestResult(items.frame(), interactions, quarantine.frame(), [r_account, m_account])
