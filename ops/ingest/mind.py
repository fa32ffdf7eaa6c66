"""MIND (Microsoft News) loader: news.tsv + behaviors.tsv, plain or gzipped, one or several splits.

news.tsv: 8 tab-separated columns, no header: news_id, category, subcategory, title, abstract, url,
title_entities (JSON), abstract_entities (JSON). Abstracts may be empty.
behaviors.tsv: impression_id, user_id, time (`M/D/YYYY H:MM:SS AM`), history (space-separated news ids),
impressions (`Nxx-1` clicked / `Nxx-0` shown; the test split has no labels).

Interactions = each user's history (once per user; order kept, no timestamp) + clicked impressions (timestamp of
the impression). Impressions shown and not clicked are no interactions: they are kept in the side table
`shown_not_clicked` (SHOWN_SCHEMA), the label-0 rows of the CTR table `impressions` (whose label-1 rows are the
clicks). Unlabeled impressions (test split) are counted as filtered.

news.tsv (~100 k lines) is read line by line; behaviors.tsv (MIND-large: 2.2 M lines, ~150 M entries) with polars
over whole columns. tests/reference_mind.py keeps the line-by-line reading of behaviors as the specification
it is tested against (bench/mind.py compares the two).
"""
from __future__ import annotations

import json
import tempfile
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

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
    plain_file,
    rel,
    scan_raw_lines,
)
from ops.ingest.source import Source
from storage.schemas import INTERACTION_CORE, SHOWN_SCHEMA

if TYPE_CHECKING:
    from ops.datasets import DatasetSpec

ATTRIBUTES = ("title", "abstract", "category", "subcategory")
NEWS_COLUMNS = 8
BEHAVIOR_COLUMNS = 5
TIME_FORMAT = "%m/%d/%Y %I:%M:%S %p"
# Python's whitespace (str.split / str.strip): Unicode's White_Space, which is what polars' \s and strip_chars()
# mean, plus the separators \x1c-\x1f.
PY_SPACE = "".join(c for c in map(chr, range(0x3001)) if c.isspace())
_TOKEN = r"[^\s\x1c-\x1f]+"
# The shape of every time in the published files. polars' strptime is laxer than Python's (it reads '11/12/-2019'
# and '9: 05:58'), so it decides only texts of this shape; any other goes to parse_time, the line-by-line rule.
USUAL_TIME = (r"^(?:1[0-2]|0?[1-9])/(?:3[01]|[12][0-9]|0?[1-9])/[1-9][0-9]{3} "
              r"(?:1[0-2]|0?[1-9]):[0-5][0-9]:[0-5][0-9] [AP]M$")
INTERACTION_SCHEMA = {**INTERACTION_CORE, "impression_id": pl.String()}
# what an impression token is (behaviors.tsv)
CLICK, NOT_CLICKED, UNLABELED, BAD, UNKNOWN = range(5)
IMPRESSION_SLICE_LINES = 200_000
SHOWN_TABLE = "shown_not_clicked"  # the side table of label-0 impressions (FileAccount.kept_elsewhere)
BEHAVIORS_FORMAT = (f"MIND behaviors.tsv: {BEHAVIOR_COLUMNS} tab-separated columns "
                    "(impression id, user, M/D/YYYY H:MM:SS AM, history, impressions)")


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


def _times_of_unusual_shape(df: pl.DataFrame) -> pl.DataFrame:
    """parse_time for the lines whose time polars left undecided (not of the USUAL_TIME shape); a time it reads
    clears the line's "time" problem (the user check after it still applies)."""
    parsed: dict[int, int] = {}
    for line, text in df.filter(pl.col("problem") == "time").select("line", "time_text").iter_rows():
        try:
            parsed[line] = parse_time(text)
        except ValueError:  # (a "time" problem implies all 5 fields, so the text is there)
            pass
    if not parsed:
        return df
    ts = pl.col("line").replace_strict(list(parsed), list(parsed.values()), default=None, return_dtype=pl.Int64)
    return df.with_columns(pl.coalesce(pl.col("ts"), ts).alias("ts")).with_columns(
        pl.when(ts.is_null()).then(pl.col("problem"))
        .when(pl.col("user") == "").then(pl.lit("user")).alias("problem"))


def _read_news(path: Path, name: str, items: ItemBuilder, quarantine: Quarantine) -> FileAccount:
    account = FileAccount(name, "line", "items")
    guard = FormatGuard(path, f"MIND news.tsv: {NEWS_COLUMNS} tab-separated columns, no header")
    for number, line in iter_lines(path, table=True):
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


def _read_behaviors(path: Path, name: str, known: pl.Series, quarantine: Quarantine, seen: pl.DataFrame,
                    last: bool = True
                    ) -> tuple[FileAccount, FileAccount, pl.DataFrame, pl.DataFrame, pl.LazyFrame]:
    """One behaviors.tsv, vectorised with polars (MIND-large's shape: several times faster and lighter than the
    per-entry Python loop it is tested to equal; bench/mind.py, bench/RESULTS.md).
    Returns the line and entry accounts, this file's interactions in file order (line, then history before
    clicks, then position), the (user, item) history pairs kept so far, which span the files of all splits
    (not extended for the `last` file), and the impressions shown but not clicked (SHOWN_SCHEMA, file order; lazy:
    held as line number + item index until written, MIND-large has ~140 M of them).

    Same rules as a line-by-line reading: a line with the wrong column count, a bad time or no user is
    quarantined whole; a history entry is kept the first time its (user, item) appears, counted as a repeat
    after that (MIND repeats a user's full history on every impression line), quarantined when the item is
    unknown (once per occurrence); an impression token `ID-1` is a click, `ID-0` kept in `shown_not_clicked`,
    `ID` (test split) filtered as unlabeled, anything else quarantined."""
    lines = FileAccount(name, "line")
    entries = FileAccount(name, "history+impression entry", "interactions")
    with tempfile.TemporaryDirectory(prefix="mind-") as tmp:
        plain = plain_file(path, Path(tmp))
        # One string per physical line (split at a byte the file does not hold; no quoting): the row index is
        # the line number, blank lines included as nulls and dropped below (they are not records).
        cols = pl.col("raw").str.split("\t")
        problem = (pl.when(pl.col("n") != BEHAVIOR_COLUMNS).then(pl.lit("columns"))
                   .when(pl.col("ts").is_null()).then(pl.lit("time"))
                   .when(pl.col("user") == "").then(pl.lit("user")))
        df = (
            scan_raw_lines(plain)  # (bad bytes become U+FFFD, as the line-by-line reading does)
            .with_columns(pl.col("raw").str.strip_chars_end("\r\n"))
            .filter(pl.col("raw").fill_null("").str.strip_chars(PY_SPACE) != "")
            .with_columns(cols.list.len().alias("n"), *[
                cols.list.get(i, null_on_oob=True).str.strip_chars(PY_SPACE).alias(c)
                for i, c in enumerate(("imp", "user", "time_text", "history", "impressions"))])
            .with_columns(pl.when(pl.col("time_text").str.contains(USUAL_TIME))
                          .then(pl.col("time_text").str.strptime(pl.Datetime("us"), TIME_FORMAT, strict=False))
                          .dt.epoch("s").alias("ts"))
            .with_columns(problem.alias("problem"))
            # the raw text is kept for the quarantine of rejected lines only
            .with_columns(pl.when(pl.col("problem").is_not_null()).then(pl.col("raw")).alias("raw"))
            .collect()
        )
    df = _times_of_unusual_shape(df)
    lines.rows_in = df.height

    def line_reason(problem: str, n: int, time_text: str | None) -> str:
        if problem == "columns":
            return f"expected {BEHAVIOR_COLUMNS} tab-separated columns, found {n}"
        if problem == "time":
            return f"bad timestamp, expected M/D/YYYY H:MM:SS AM: {time_text!r}"
        return "empty user id"

    guard = FormatGuard(path, BEHAVIORS_FORMAT)
    for line, problem, n, time_text in df.head(guard.probe).select("line", "problem", "n", "time_text").iter_rows():
        guard.record(line, problem and line_reason(problem, n, time_text))
    guard.finish()

    bad_lines = df.filter(pl.col("problem").is_not_null()).select(
        "line", pl.lit(-1).alias("part"), pl.lit(0, pl.UInt32).alias("k"), "problem", "n", "time_text",
        pl.col("raw").alias("text"))
    # Good lines, numbered g; exploded entries carry g only, and the strings of a line are gathered back for the
    # rows that are kept (a user id per entry would cost more memory than the entries themselves).
    good = df.filter(pl.col("problem").is_null()).select(
        "line", "user", "imp", "ts", "history", "impressions",
        pl.col("user").cast(pl.Categorical).to_physical().alias("uid")).with_row_index("g")
    del df
    lines.kept = good.height

    # Tokens as Python's str.split() makes them (runs of non-whitespace). MIND separates them by single spaces:
    # splitting on " " and dropping empty strings is then the same and faster than the regex (bench/RESULTS.md),
    # which stays for a file with other whitespace inside its fields.
    odd_space = bool(good.select(pl.any_horizontal(
        pl.col("history", "impressions").str.contains(r"[^\S ]|[\x1c-\x1f]")).any()).item())

    def tokens(frame: pl.DataFrame, column: str, alias: str) -> pl.DataFrame:
        split = pl.col(column).str.extract_all(_TOKEN) if odd_space else pl.col(column).str.split(" ")
        out = frame.select("g", split.alias(alias)).explode(alias)
        return out.filter(pl.col(alias).fill_null("") != "").with_row_index("k")

    def is_known(expr: pl.Expr) -> pl.Expr:
        return expr.is_in(known.implode())

    def with_line(frame: pl.DataFrame, *columns: str) -> pl.DataFrame:
        return frame.with_columns(good.select("line", *columns)[frame["g"]])  # noqa: F821 (used before the del)

    # MIND repeats a user's history verbatim on each of their impression lines: only a (user, history) seen for
    # the first time is split into entries; on a repeating line every known entry is a repeat by construction.
    first_line = pl.struct("uid", "history").is_first_distinct()
    hist = tokens(good.filter(first_line), "history", "item").with_columns(is_known(pl.col("item")).alias("known"))
    pairs = with_line(hist.filter("known"), "uid")
    first = pairs.filter(pl.struct("uid", "item").is_first_distinct()).drop("uid")
    first = with_line(first, "user", "imp")
    if seen.height:  # pairs kept from an earlier split's file
        first = first.join(seen, on=["user", "item"], how="anti", maintain_order="left")
    again = good.filter(~first_line)
    again_tokens = int(again.select(pl.col("history").str.count_matches(_TOKEN).sum()).item() or 0)
    # ... and an unknown entry on a repeating line is quarantined again, with that line's number
    unknown = with_line(hist.filter(~pl.col("known")), "uid", "history")
    again_bad = again.join(unknown.select("uid", "history").unique(), on=["uid", "history"], how="semi")
    again_unknown = with_line(tokens(again_bad, "history", "item").filter(~is_known(pl.col("item"))))
    repeated = pairs.height - first.height + again_tokens - again_unknown.height
    entries.rows_in = hist.height + again_tokens
    del hist, pairs, again, again_bad

    # `ID-1` / `ID-0` by literal suffix: the same split as str.rpartition("-") for the only two valid labels
    token = pl.col("token")
    clicked, unclicked = token.str.ends_with("-1"), token.str.ends_with("-0")
    news = pl.when(clicked | unclicked).then(token.str.head(-2))
    kind = (pl.when(~token.str.contains("-", literal=True)).then(pl.lit(UNLABELED))
            .when(~(clicked | unclicked) | (news == "")).then(pl.lit(BAD))
            .when(~is_known(news)).then(pl.lit(UNKNOWN))
            .when(unclicked).then(pl.lit(NOT_CLICKED))
            .otherwise(pl.lit(CLICK)).cast(pl.UInt8))
    # Impressions are many tokens a line, nearly all of them not clicked: classified in slices of lines, so that
    # at most one slice of tokens is in memory (MIND-large's all at once: bench/RESULTS.md, "Figures behind design
    # choices").
    kinds: Counter[int] = Counter()
    click_parts, rejected_parts, shown_parts = [], [], []
    item_enum = pl.Enum(known)  # an item as a 4-byte index into the catalog while the tokens are in memory
    for start in range(0, max(good.height, 1), IMPRESSION_SLICE_LINES):  # one (empty) slice for an empty file
        imp = tokens(good.slice(start, IMPRESSION_SLICE_LINES), "impressions", "token").with_columns(
            news.alias("item"), kind.alias("kind"))
        kinds.update(dict(imp.group_by("kind").len().iter_rows()))
        click_parts.append(imp.filter(pl.col("kind") == CLICK).select("g", "item"))
        rejected_parts.append(imp.filter(pl.col("kind").is_in([BAD, UNKNOWN])))
        shown_parts.append(imp.filter(pl.col("kind") == NOT_CLICKED).select("g", pl.col("item").cast(item_enum)))
        entries.rows_in += imp.height
    clicks = with_line(pl.concat(click_parts), "user", "imp", "ts")
    imp_rejected = with_line(pl.concat(rejected_parts))
    for reason, count in (("history entry repeated on a later impression line", repeated),
                          ("unlabeled impression", kinds.get(UNLABELED, 0))):
        if count:
            entries.filtered[reason] = count
    if kinds.get(NOT_CLICKED, 0):
        entries.kept_elsewhere[SHOWN_TABLE] = kinds[NOT_CLICKED]
    # the strings of a line are joined back to its shown tokens only when the table is written
    shown = pl.concat(shown_parts).lazy().join(
        good.select("g", "user", "ts", "imp").lazy(), on="g", how="left", maintain_order="left").select(
        pl.col("user").alias("user_id"), pl.col("item").cast(pl.String).alias("item_id"),
        pl.col("ts").alias("timestamp"), pl.col("imp").alias("impression_id")).cast(SHOWN_SCHEMA)

    del good  # everything below works on the gathered rows
    # Quarantine in file order; reason texts are built for the (few) rejected rows only.
    entry_columns = [pl.lit(None, pl.UInt32).alias("n"), pl.lit(None, pl.String).alias("time_text")]
    rejected = pl.concat([
        bad_lines,
        *[frame.select("line", pl.lit(0).alias("part"), "k", pl.lit("history").alias("problem"), *entry_columns,
                       pl.col("item").alias("text"))
          for frame in (unknown, again_unknown)],
        imp_rejected.select("line", pl.lit(1).alias("part"), "k", pl.when(pl.col("kind") == BAD).then(
            pl.lit("bad")).otherwise(pl.lit("unknown")).alias("problem"), *entry_columns, pl.col("token")
            .alias("text")),
    ]).sort("line", "part", "k")
    for line, part, problem, n, time_text, text in rejected.select(
            "line", "part", "problem", "n", "time_text", "text").iter_rows():
        if part < 0:
            quarantine.add(name, line, line_reason(problem, n, time_text), text, lines)
        elif problem == "history":
            quarantine.add(name, line, f"unknown item in history: {text}", text, entries)
        elif problem == "unknown":
            quarantine.add(name, line, f"unknown item in impressions: {text.rpartition('-')[0]}", text, entries)
        else:
            quarantine.add(name, line, f"bad impression token, expected NEWSID-0 or NEWSID-1: {text!r}", text,
                           entries)

    # Each part is already in file order: merge them on (line, history before clicks) instead of sorting.
    order = (pl.col("line").cast(pl.Int64) * 2).alias("order")
    kept = first.select(order, "user", "item", pl.lit(None, pl.Int64).alias("ts"), pl.lit("history").alias("event"),
                        "imp").set_sorted("order").merge_sorted(
        clicks.select(order + 1, "user", "item", "ts", pl.lit("click").alias("event"), "imp").set_sorted("order"),
        key="order").select(
        pl.col("user").alias("user_id"), pl.col("item").alias("item_id"), pl.col("ts").alias("timestamp"),
        "event", pl.lit(0, pl.Int64).alias("seq"), pl.col("imp").alias("impression_id"))
    entries.kept = kept.height
    # (the pairs are remembered only for a later split's file: 23 M rows on MIND-large)
    return lines, entries, kept, seen if last else pl.concat([seen, first.select("user", "item")]), shown


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
    known = pl.Series(list(items.rows), dtype=pl.String)
    seen = pl.DataFrame(schema={"user": pl.String, "item": pl.String})
    parts, shown = [], []
    for i, path in enumerate(behavior_files):
        lines, entries, kept, seen, not_clicked = _read_behaviors(path, rel(path, raw_dir), known, quarantine,
                                                                  seen, last=i == len(behavior_files) - 1)
        accounts.extend((lines, entries))
        parts.append(kept)
        shown.append(not_clicked)
    # seq: position in the files' order (splits, then lines, history before clicks), as the events were read
    interactions = pl.concat(parts).with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias("seq")).cast(
        INTERACTION_SCHEMA)
    return IngestResult(items.frame(), interactions, quarantine.frame(), accounts,
                        shown_not_clicked=pl.concat(shown))


def _load(raw_dir: Path, spec: DatasetSpec, workdir: Path | None) -> IngestResult:
    return load_mind(raw_dir, spec.name)


def _sample(out_dir: Path, size, seed: int = 0, corrupt: bool = False, **options) -> Path:
    from ops.sample import generate_mind

    return generate_mind(out_dir, size, seed, corrupt, **options)


# MIND logs its impressions (clicked and shown-not-clicked); content = title + abstract
SOURCE = Source("mind", ATTRIBUTES, content_attributes=2, load=_load, generate_sample=_sample, impressions="logged",
                labels=("category", "subcategory"))
