"""MIND (Microsoft News) loader: news.tsv + behaviors.tsv, plain or gzipped, one or several splits.

news.tsv: 8 tab-separated columns, no header: news_id, category, subcategory, title, abstract, url,
title_entities (JSON), abstract_entities (JSON). Abstracts may be empty.
behaviors.tsv: impression_id, user_id, time (`M/D/YYYY H:MM:SS AM`), history (space-separated news ids),
impressions (`Nxx-1` clicked / `Nxx-0` shown; the test split has no labels).

Interactions = each user's history (once per user; order kept, no timestamp) + clicked impressions (timestamp of
the impression). Non-clicked and unlabeled impressions are counted as filtered, not kept.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from ops.ingest.common import (
    FileAccount,
    FormatGuard,
    IngestError,
    IngestResult,
    ItemBuilder,
    Quarantine,
    find_file,
    iter_lines,
    rel,
)
from storage.schemas import INTERACTION_CORE

ATTRIBUTES = ("title", "abstract", "category", "subcategory")
NEWS_COLUMNS = 8
BEHAVIOR_COLUMNS = 5
TIME_FORMAT = "%m/%d/%Y %I:%M:%S %p"
INTERACTION_SCHEMA = {**INTERACTION_CORE, "impression_id": pl.String()}


def split_dirs(raw_dir: Path) -> list[Path]:
    """`raw_dir` itself if it holds news.tsv, else each sub-directory that does (e.g. MINDsmall_train/, _dev/)."""
    def has_news(d: Path) -> bool:
        return (d / "news.tsv").is_file() or (d / "news.tsv.gz").is_file()

    if has_news(raw_dir):
        return [raw_dir]
    if raw_dir.is_dir():
        subs = sorted(d for d in raw_dir.iterdir() if d.is_dir() and has_news(d))
        if subs:
            return subs
    # Raise the standard clear message for the first expected file.
    find_file(raw_dir, ["news.tsv"], "MIND news")
    raise AssertionError("unreachable")


def parse_time(text: str) -> int:
    return int(datetime.strptime(text.strip(), TIME_FORMAT).replace(tzinfo=timezone.utc).timestamp())


def _read_news(path: Path, name: str, items: ItemBuilder, quarantine: Quarantine) -> FileAccount:
    account = FileAccount(name, "line", "items")
    guard = FormatGuard(path, f"MIND news.tsv: {NEWS_COLUMNS} tab-separated columns, no header")
    for number, line in iter_lines(path):
        account.rows_in += 1
        cols = line.split("\t")
        if len(cols) != NEWS_COLUMNS:
            problem = f"expected {NEWS_COLUMNS} tab-separated columns, found {len(cols)}"
            guard.record(number, problem)
            quarantine.add(name, number, problem, line, account)
            continue
        news_id, category, subcategory, title, abstract, _url, t_ent, a_ent = cols
        bad_json = _bad_json_column(("title_entities", t_ent), ("abstract_entities", a_ent))
        if bad_json:
            guard.record(number, bad_json)
            quarantine.add(name, number, bad_json, line, account)
            continue
        guard.record(number, None)
        items.add(news_id.strip(), (title, abstract, category, subcategory), (name, number), line, quarantine, account)
    guard.finish()
    return account


def _bad_json_column(*columns: tuple[str, str]) -> str | None:
    for col, text in columns:
        if text.strip():
            try:
                json.loads(text)
            except json.JSONDecodeError as exc:
                return f"bad JSON in {col}: {exc.msg}"
    return None


def _read_behaviors(
    path: Path,
    name: str,
    items: ItemBuilder,
    quarantine: Quarantine,
    rows: dict[str, list],
    seen_history: set[tuple[str, str]],
) -> tuple[FileAccount, FileAccount]:
    lines = FileAccount(name, "line")
    entries = FileAccount(name, "history+impression entry", "interactions")
    guard = FormatGuard(path, f"MIND behaviors.tsv: {BEHAVIOR_COLUMNS} tab-separated columns "
                              "(impression id, user, M/D/YYYY H:MM:SS AM, history, impressions)")
    for number, line in iter_lines(path):
        lines.rows_in += 1
        cols = line.split("\t")
        if len(cols) != BEHAVIOR_COLUMNS:
            problem = f"expected {BEHAVIOR_COLUMNS} tab-separated columns, found {len(cols)}"
            guard.record(number, problem)
            quarantine.add(name, number, problem, line, lines)
            continue
        imp_id, user, time_text, history, impressions = (c.strip() for c in cols)
        try:
            ts = parse_time(time_text)
        except ValueError:
            problem = f"bad timestamp {time_text!r}, expected M/D/YYYY H:MM:SS AM"
            guard.record(number, problem)
            quarantine.add(name, number, problem, line, lines)
            continue
        if not user:
            guard.record(number, "empty user id")
            quarantine.add(name, number, "empty user id", line, lines)
            continue
        guard.record(number, None)
        lines.kept += 1
        for news_id in history.split():
            entries.rows_in += 1
            if news_id not in items:
                quarantine.add(name, number, f"unknown item in history: {news_id}", news_id, entries)
            elif (user, news_id) in seen_history:
                # MIND repeats a user's full history on every impression line.
                entries.filtered["history entry repeated on a later impression line"] += 1
            else:
                seen_history.add((user, news_id))
                _append(rows, user, news_id, None, "history", imp_id)
                entries.kept += 1
        for token in impressions.split():
            entries.rows_in += 1
            news_id, sep, label = token.rpartition("-")
            if not sep:  # test split: `N123` without label
                entries.filtered["unlabeled impression"] += 1
            elif label not in ("0", "1") or not news_id:
                quarantine.add(name, number, f"bad impression token {token!r}, expected NEWSID-0 or NEWSID-1",
                               token, entries)
            elif news_id not in items:
                quarantine.add(name, number, f"unknown item in impressions: {news_id}", token, entries)
            elif label == "0":
                entries.filtered["impression not clicked"] += 1
            else:
                _append(rows, user, news_id, ts, "click", imp_id)
                entries.kept += 1
    guard.finish()
    return lines, entries


def _append(rows: dict[str, list], user: str, item: str, ts: int | None, event: str, imp: str) -> None:
    rows["user_id"].append(user)
    rows["item_id"].append(item)
    rows["timestamp"].append(ts)
    rows["event"].append(event)
    rows["seq"].append(len(rows["seq"]))
    rows["impression_id"].append(imp)


def load_mind(raw_dir: Path, dataset: str) -> IngestResult:
    raw_dir = Path(raw_dir)
    dirs = split_dirs(raw_dir)
    items = ItemBuilder(dataset, ATTRIBUTES)
    quarantine = Quarantine()
    accounts: list[FileAccount] = []
    # All news first: a history may reference news listed only in another split's news.tsv.
    behavior_files = []
    for d in dirs:
        news = find_file(d, ["news.tsv"], "MIND news")
        behavior_files.append(find_file(d, ["behaviors.tsv"], "MIND behaviors"))
        accounts.append(_read_news(news, rel(news, raw_dir), items, quarantine))
    if not items.rows:
        raise IngestError(f"MIND: no valid news in {raw_dir}")
    rows: dict[str, list] = {k: [] for k in INTERACTION_SCHEMA}
    seen_history: set[tuple[str, str]] = set()
    for path in behavior_files:
        accounts.extend(_read_behaviors(path, rel(path, raw_dir), items, quarantine, rows, seen_history))
    interactions = pl.DataFrame(rows, schema=INTERACTION_SCHEMA)
    return IngestResult(items.frame(), interactions, quarantine.frame(), accounts)
