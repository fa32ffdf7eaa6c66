"""MIND behaviors.tsv read line by line in plain Python: the specification that the vectorised reader in
ops.ingest.mind is tested against (tests/test_ingest_mind.py: same interactions, quarantine and accounts) and
the baseline of bench/mind.py. The pipeline does not use it: on MIND-large (2.2 M lines, ~100 M entries) this
loop takes minutes and several GB."""
from __future__ import annotations

from pathlib import Path

import polars as pl

from ops.ingest.common import (
    FileAccount,
    FormatGuard,
    IngestResult,
    ItemBuilder,
    Quarantine,
    find_file,
    iter_lines,
    rel,
)
from ops.ingest.mind import (
    ATTRIBUTES,
    BEHAVIOR_COLUMNS,
    BEHAVIORS_FORMAT,
    INTERACTION_SCHEMA,
    SHOWN_TABLE,
    _read_news,
    parse_time,
    split_dirs,
)
from storage.schemas import SHOWN_SCHEMA


def read_behaviors_line_by_line(
    path: Path,
    name: str,
    items: ItemBuilder,
    quarantine: Quarantine,
    rows: dict[str, list],
    seen_history: set[tuple[str, str]],
    shown: dict[str, list] | None = None,
) -> tuple[FileAccount, FileAccount]:
    lines = FileAccount(name, "line")
    entries = FileAccount(name, "history+impression entry", "interactions")
    guard = FormatGuard(path, BEHAVIORS_FORMAT)
    for number, line in iter_lines(path, table=True):
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
            problem = f"bad timestamp, expected M/D/YYYY H:MM:SS AM: {time_text!r}"
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
                quarantine.add(name, number, f"bad impression token, expected NEWSID-0 or NEWSID-1: {token!r}",
                               token, entries)
            elif news_id not in items:
                quarantine.add(name, number, f"unknown item in impressions: {news_id}", token, entries)
            elif label == "0":  # shown, not clicked: a label-0 impression, no interaction
                entries.kept_elsewhere[SHOWN_TABLE] += 1
                if shown is not None:
                    for column, value in zip(SHOWN_SCHEMA, (user, news_id, ts, imp_id)):
                        shown[column].append(value)
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



def load_mind_line_by_line(raw_dir: Path, dataset: str) -> IngestResult:
    """ops.ingest.mind.load_mind with the behaviors read by read_behaviors_line_by_line."""
    raw_dir = Path(raw_dir)
    items = ItemBuilder(dataset, ATTRIBUTES)
    quarantine = Quarantine()
    accounts: list[FileAccount] = []
    behavior_files = []
    for d in split_dirs(raw_dir):
        news = find_file(d, ["news.tsv"], "MIND news")
        behavior_files.append(find_file(d, ["behaviors.tsv"], "MIND behaviors"))
        accounts.append(_read_news(news, rel(news, raw_dir), items, quarantine))
    rows: dict[str, list] = {k: [] for k in INTERACTION_SCHEMA}
    seen_history: set[tuple[str, str]] = set()
    shown: dict[str, list] = {k: [] for k in SHOWN_SCHEMA}
    for path in behavior_files:
        accounts.extend(read_behaviors_line_by_line(path, rel(path, raw_dir), items, quarantine, rows,
                                                    seen_history, shown))
    return IngestResult(items.frame(), pl.DataFrame(rows, schema=INTERACTION_SCHEMA), quarantine.frame(), accounts,
                        shown_not_clicked=pl.DataFrame(shown, schema=SHOWN_SCHEMA))
