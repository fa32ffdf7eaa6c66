"""Amazon reviews loader: the 2014, 2018 and 2023 releases, one category at a time, plain or gzipped.

| release | reviews file | meta file | user / item / rating / time |
|---|---|---|---|
| 2014 | reviews_<Cat>_5.json | meta_<Cat>.json (Python literals) | reviewerID / asin / overall / unixReviewTime s |
| 2018 | <Cat>_5.json | meta_<Cat>.json | reviewerID / asin / overall / unixReviewTime s |
| 2023 | <Cat>.jsonl | meta_<Cat>.jsonl (keyed by parent_asin) | user_id / parent_asin / rating / timestamp ms |

Every file holds one record per line (JSON unless said otherwise).

Reviews are read first so that meta lines of items nobody reviewed are skipped cheaply (counted, not parsed);
the full meta of a category is far larger than its 5-core reviews. Reviews (tens of millions of lines in a 2023
category) are read by polars in blocks of whole lines; `parse_review` is the per-line rule, applied to every line
polars cannot vouch for, and tests/reference_amazon.py's `read_reviews_line_by_line` the specification the block
reader is tested against.
"""
from __future__ import annotations

import ast
import io
import json
import math
import re
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    is_gzip,
    iter_lines,
    open_binary,
    rel,
)
from ops.ingest.source import Source
from storage.schemas import INTERACTION_CORE

if TYPE_CHECKING:
    from ops.datasets import DatasetSpec

ATTRIBUTES = ("title", "description", "categories", "brand")
INTERACTION_SCHEMA = {**INTERACTION_CORE, "rating": pl.Float64()}
REVIEW_SCHEMA = {**INTERACTION_SCHEMA, "line": pl.Int64()}  # + the line, for a later quarantine
_BLOCK_SCHEMA = {"line": pl.Int64(), "user_id": pl.String(), "item_id": pl.String(), "timestamp": pl.Int64(),
                 "rating": pl.Float64()}
# Reviews and meta are read in blocks of whole lines of about this size (~14 k review lines of a 2023 file):
# memory stays flat, and a block polars cannot read as Python does costs only its own lines in the per-line path.
BLOCK_BYTES = 8 << 20
BLOCK_LOOKAHEAD = 2  # blocks decoded ahead in a thread while this one is handled (peak RSS grows with it)
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

    @property
    def review_keys(self) -> tuple[str, str, str, str]:
        return self.user_key, self.item_key, self.rating_key, self.time_key

    @property
    def reviews_format(self) -> str:
        return f"Amazon {self.version} reviews: JSON lines with {', '.join(self.review_keys)}"


def release(version: str, category: str) -> Release:
    if version == "2014":
        return Release("2014", (f"reviews_{category}_5.json", f"reviews_{category}.json"), (f"meta_{category}.json",),
                       "reviewerID", "asin", "overall", "unixReviewTime", 1, "asin", True)
    if version == "2018":
        return Release("2018", (f"{category}_5.json", f"{category}.json"), (f"meta_{category}.json",),
                       "reviewerID", "asin", "overall", "unixReviewTime", 1, "asin", False)
    if version == "2023":
        # (the release's own download tree keeps reviews and meta in these two folders under raw/)
        return Release("2023", (f"{category}.jsonl", f"review_categories/{category}.jsonl"),
                       (f"meta_{category}.jsonl", f"meta_categories/meta_{category}.jsonl"),
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
    details = meta.get("details")  # a dict of product facts in the published files; anything else has no brand
    brand = meta.get("store") or (details.get("Brand") if isinstance(details, dict) else None)
    return (_join(meta.get("title")), _join(meta.get("description")), _join(categories, " > "), _join(brand))


_ASIN_RE = {
    "asin": re.compile(r"""['"]asin['"]\s*:\s*['"]([^'"]+)['"]"""),
    "parent_asin": re.compile(r"""['"]parent_asin['"]\s*:\s*['"]([^'"]+)['"]"""),
}


# A \ud800-\udfff escape decodes to a surrogate code point, which UTF-8 (polars, Parquet) cannot hold. A cheap
# test on the line's text: it may also match an escaped backslash (then _mend finds nothing to change).
_SURROGATE_ESCAPE = re.compile(r"\\(?:u[dD][89a-fA-F]|U0000[dD][89a-fA-F])")


def _mend(value: Any) -> Any:
    """Surrogates in every string of a parsed value: a pair becomes its character (Python literals keep the two
    halves apart, JSON joins them itself), a lone half U+FFFD, as a byte that is not UTF-8 does."""
    if isinstance(value, str):
        return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    if isinstance(value, dict):
        return {_mend(k): _mend(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return type(value)(_mend(v) for v in value)
    return value


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
    return _mend(value) if _SURROGATE_ESCAPE.search(line) else value


def parse_review(line: str, rel_: Release) -> tuple[str, str, int, float] | str:
    """The rule for one reviews line: its (user, item, timestamp in s, rating), or why it is quarantined."""
    try:
        rec = json.loads(line)
        if not isinstance(rec, dict):
            raise ValueError(f"expected a JSON object, got {type(rec).__name__}")
        if _SURROGATE_ESCAPE.search(line):
            rec = _mend(rec)
    except (json.JSONDecodeError, ValueError) as exc:
        return f"bad JSON: {getattr(exc, 'msg', exc)}"
    missing = [k for k in rel_.review_keys if rec.get(k) in (None, "")]
    if missing:
        return f"missing field(s) {', '.join(missing)}"
    try:
        ts = int(float(rec[rel_.time_key])) // rel_.time_divisor
        rating = float(rec[rel_.rating_key])
        if not math.isfinite(rating):  # json.loads reads NaN and 1e999
            raise ValueError
        if not -(2**63) <= ts < 2**63:  # the timestamp column is Int64
            raise OverflowError
    except (TypeError, ValueError, OverflowError):  # (int(inf) overflows)
        return f"bad timestamp or rating: ({rec[rel_.time_key]!r}, {rec[rel_.rating_key]!r})"
    return str(rec[rel_.user_key]), str(rec[rel_.item_key]), ts, rating


def _review_frame(rows: list[tuple[int, tuple[str, str, int, float]]]) -> pl.DataFrame:
    return pl.DataFrame([(n, *v) for n, v in rows], schema=_BLOCK_SCHEMA, orient="row")


def _finish_reviews(account: FileAccount, parts: list[pl.DataFrame]) -> pl.DataFrame:
    frame = pl.concat(parts)
    account.kept = frame.height  # before the unknown-item check, which moves rows to the quarantine
    return frame.select("user_id", "item_id", "timestamp", pl.lit("review").alias("event"),
                        pl.col("line").alias("seq"), "rating", "line").cast(REVIEW_SCHEMA)


def _blocks(path: Path) -> Iterator[bytes]:
    """The file's bytes in blocks of whole lines (~BLOCK_BYTES each). A gzipped file is decompressed as it
    is read (no temporary copy: a 2023 category can be tens of GB of JSON); a plain file is read up to the last
    whole line and then seeks back, which saves a copy of each block (copying a block costs about as much as
    reading it from the page cache on this machine)."""
    gz = is_gzip(path)
    with open_binary(path) as fh:
        rest = b""
        while chunk := fh.read(BLOCK_BYTES):
            cut = chunk.rfind(b"\n") + 1
            if not cut:  # a line longer than a block
                rest += chunk
                continue
            block = chunk if cut == len(chunk) else chunk[:cut]
            if gz:
                yield rest + block if rest else block
                rest = chunk[cut:]
            else:
                if rest:  # (only after a line longer than a block)
                    block, rest = rest + block, b""
                fh.seek(cut - len(chunk), 1)
                yield block
        if rest:
            yield rest


def _python_lines(block: bytes) -> list[str]:
    """The lines Python's text reading of these bytes gives (as iter_lines: UTF-8 with replacement, a line ends
    at \\n, \\r\\n or a lone \\r), blank ones included, newlines stripped."""
    return [line.rstrip("\r\n") for line in io.StringIO(block.decode("utf-8", errors="replace"), newline="")]


def _review_columns(rel_: Release) -> tuple[list[pl.Expr], pl.Expr]:
    """(the values as polars reads them, is the line plain). A plain line is one whose values polars' JSON
    reading and a regex give exactly as `parse_review` would: a JSON object (the block's NDJSON reading succeeded)
    whose 4 keys each occur once, spelled without escapes, ids as strings without escapes, rating and time as
    numbers, the time within 2^53 (parse_review goes through float). Every other line goes through parse_review."""
    raw = pl.col("raw")

    def plain_string(key: str) -> pl.Expr:  # a JSON string with no escape: its text is its value
        return raw.str.extract(rf'"{key}"[ \t]*:[ \t]*"([^"\\]+)"', 1)

    values = [plain_string(rel_.user_key).alias("user_id"), plain_string(rel_.item_key).alias("item_id"),
              pl.col(rel_.time_key).alias("ts"), pl.col(rel_.rating_key).alias("rating")]
    keys = "|".join(rel_.review_keys)
    plain = (
        raw.str.strip_chars_start().str.starts_with("{")
        # with no escaped printable ASCII, a key can only be spelled literally, so the count sees duplicates
        # (json.loads keeps a duplicate key's last value, polars its first)
        & raw.str.contains(r"\\u00[2-7][0-9A-Fa-f]").not_()
        & (raw.str.count_matches(f'"(?:{keys})"') == len(rel_.review_keys))
        & pl.all_horizontal(pl.col("user_id", "item_id", "ts", "rating").is_not_null())
        & pl.col("rating").is_finite()
        & (pl.col("ts").abs() <= 2**53)
    )
    return values, plain.fill_null(False)


def _block_frame(block: bytes, build: Callable[[pl.LazyFrame], pl.LazyFrame],
                 ndjson: Mapping[str, pl.DataType] | None = None) -> tuple[pl.DataFrame, int] | None:
    """(build(the block's non-blank lines `raw` with their 0-based `line`, and the `ndjson` fields of each),
    collected; the number of lines, blank ones included), or None when polars cannot read the block as Python
    does: a lone \r (a line break for Python only), bytes that are not UTF-8, a line its NDJSON reader rejects
    (not a JSON object, or a field of another type), or an expression that fails on some line.

    The fields are read by polars' NDJSON reader, which parses each line on its own. (`str.json_decode` on the
    column of lines parses them joined into one text: a line cut inside a string swallows the next one, a line
    holding two objects yields two rows, and the values of the lines after it shift silently.)"""
    if b"\r" in block and block.count(b"\r") != block.count(b"\r\n"):
        return None
    try:
        # (without a lone \r, polars' lines are Python's lines, blank ones included: the row index numbers them)
        lines = pl.read_lines(block, name="raw")
        records = lines.lazy().with_row_index("line").filter(pl.col("raw").str.strip_chars() != "")
        if ndjson is not None:
            fields = pl.read_ndjson(block, schema=dict(ndjson))
            collected = records.collect()
            if fields.height != collected.height:  # (it skips only lines of JSON whitespace, all blank here too)
                return None
            records = collected.hstack(fields).lazy()
        return build(records).collect(), lines.height
    except pl.exceptions.PolarsError:
        return None


def _vector_block(block: bytes, rel_: Release) -> tuple[pl.DataFrame, int] | None:
    """_block_frame with `plain`, the values of plain lines and the text of the others."""
    values, plain = _review_columns(rel_)
    return _block_frame(block, lambda lines: (
        lines.with_columns(*values)
        .with_columns(plain.alias("plain"))
        .select("line", "plain", "user_id", "item_id", (pl.col("ts") // rel_.time_divisor).alias("timestamp"),
                "rating", pl.when(pl.col("plain").not_()).then(pl.col("raw")).alias("raw"))),
        ndjson={rel_.rating_key: pl.Float64(), rel_.time_key: pl.Int64()})


def _read_blocks(path: Path, read_block: Callable[[bytes], tuple[pl.DataFrame, int] | None]
                 ) -> Iterator[tuple[pl.DataFrame | None, list[tuple[int, str]]]]:
    """Per block in file order: (read_block's frame with file line numbers, []) or, for a block polars cannot
    read as Python does, (None, its non-blank (line, text) as Python reads them). The next blocks are read by
    polars in another thread while this one is handled (polars releases the GIL), BLOCK_LOOKAHEAD ahead."""
    number = 1  # of the block's first line
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="amazon") as pool:
        pending: deque = deque()
        blocks = _blocks(path)
        while True:
            while len(pending) <= BLOCK_LOOKAHEAD and (block := next(blocks, None)) is not None:
                pending.append((block, pool.submit(read_block, block)))
            if not pending:
                return
            block, future = pending.popleft()
            if (read := future.result()) is None:
                texts = _python_lines(block)
                yield None, [(n, t) for n, t in enumerate(texts, start=number) if t.strip()]
                number += len(texts)
            else:
                frame, count = read
                yield frame.with_columns(pl.col("line").cast(pl.Int64) + number), []
                number += count


def _guard_block(guard: FormatGuard, ok_lines: list[int], outcomes: list[tuple[int, str | None]]) -> None:
    """Show the format guard a block's first records in line order, whichever path read them: `ok_lines` had no
    problem, `outcomes` are (line, problem or None) in line order."""
    if not guard.settled:
        first = sorted([(n, None) for n in sorted(ok_lines)[:guard.probe]] + outcomes[:guard.probe])
        for n, problem in first[:guard.probe]:
            guard.record(n, problem)


def _read_reviews(path: Path, name: str, rel_: Release, quarantine: Quarantine) -> tuple[FileAccount, pl.DataFrame]:
    """Reviews, vectorised with polars block by block, with the same kept rows, quarantine and accounts as
    read_reviews_line_by_line (tested on an edge-case file): plain lines are read by polars, every other line
    (and any block polars cannot read as Python does) goes through parse_review. A 2023 category of ~24 M lines
    no longer needs Python objects per line (bench/amazon.py)."""
    account = FileAccount(name, "line", "interactions")
    guard = FormatGuard(path, rel_.reviews_format)
    parts: list[pl.DataFrame] = []
    for fast, others in _read_blocks(path, lambda b: _vector_block(b, rel_)):
        plain_lines: list[int] = []
        if fast is not None:
            others = fast.filter(pl.col("plain").not_()).select("line", "raw").rows()
            plain_lines = fast.head(guard.probe).filter("plain")["line"].to_list()
        account.rows_in += len(others) if fast is None else fast.height
        verdicts = [(n, t, parse_review(t, rel_)) for n, t in others]
        _guard_block(guard, plain_lines, [(n, v if isinstance(v, str) else None) for n, _, v in verdicts])
        for n, text, verdict in verdicts:
            if isinstance(verdict, str):
                quarantine.add(name, n, verdict, text, account)
        kept = _review_frame([(n, v) for n, _, v in verdicts if not isinstance(v, str)])
        if fast is not None:  # plain and parsed rows back in line order
            plain_rows = fast.filter("plain").select(kept.columns)
            kept = plain_rows if kept.is_empty() else pl.concat([plain_rows, kept]).sort("line")
        parts.append(kept)
    guard.finish()
    return account, _finish_reviews(account, parts or [_review_frame([])])


def _meta_line(number: int, line: str, name: str, rel_: Release, wanted: set[str] | None, items: ItemBuilder,
               quarantine: Quarantine, account: FileAccount) -> str | None:
    """The rule for one meta line (after the id prefilter): the item is added, filtered or quarantined. Returns
    the problem the format guard should see, if any. `wanted` None keeps never-reviewed items."""
    try:
        meta = parse_meta_line(line, rel_.python_literal_meta)
    except ValueError as exc:
        quarantine.add(name, number, str(exc), line, account)
        return str(exc)
    item_id = str(meta.get(rel_.meta_item_key) or "")
    if item_id and wanted is not None and item_id not in wanted:
        account.filtered["item has no kept review"] += 1
    else:
        items.add(item_id, item_text(meta, rel_.version), (name, number), line, quarantine, account)
    return None if item_id else f"no '{rel_.meta_item_key}' key"


def _meta_format(rel_: Release) -> str:
    fmt = "Python-literal dict lines" if rel_.python_literal_meta else "JSON lines"
    return f"Amazon {rel_.version} meta: {fmt} with '{rel_.meta_item_key}'"


def read_meta_line_by_line(path: Path, name: str, rel_: Release, wanted: set[str], items: ItemBuilder,
                           quarantine: Quarantine, keep_unreviewed: bool) -> FileAccount:
    """The meta file as Python reads it: a line whose id (found by a regex, without parsing) no kept review has
    is filtered; every other line goes through `_meta_line`. The specification `_read_meta` is tested against."""
    account = FileAccount(name, "line", "items")
    guard = FormatGuard(path, _meta_format(rel_))
    id_re = _ASIN_RE[rel_.meta_item_key]
    for number, line in iter_lines(path):
        account.rows_in += 1
        if not keep_unreviewed:
            m = id_re.search(line)
            if m and m.group(1) not in wanted:
                guard.record(number, None)
                account.filtered["item has no kept review"] += 1
                continue
        guard.record(number, _meta_line(number, line, name, rel_, None if keep_unreviewed else wanted, items,
                                         quarantine, account))
    guard.finish()
    return account


def _meta_block(block: bytes, rel_: Release, wanted: pl.Series) -> tuple[pl.DataFrame, int] | None:
    """_block_frame with `skip` (true: the line's id, found by the prefilter regex, has no kept review; null:
    left to Python's regex) and the text of the lines not skipped."""
    raw = pl.col("raw")
    item = raw.str.extract(_ASIN_RE[rel_.meta_item_key].pattern, 1)
    # Python's \s also matches \x1c-\x1f, the Rust regex's does not: such a line is left to Python's regex
    skip = (pl.when(raw.str.contains("[\x1c-\x1f]")).then(None)
            .otherwise(item.is_not_null() & item.is_in(wanted.implode()).not_()))
    return _block_frame(block, lambda lines: lines.select(
        "line", skip.alias("skip"), pl.when(skip.not_() | skip.is_null()).then(raw).alias("raw")))


def _read_meta(path: Path, name: str, rel_: Release, wanted: set[str], items: ItemBuilder,
               quarantine: Quarantine, keep_unreviewed: bool) -> FileAccount:
    """The meta file with the id prefilter vectorised by polars (the full meta of a category has several times
    more lines than its 5-core reviews have items, and the id is near the end of a 2018 / 2023 line); the lines
    it keeps go through `_meta_line` in file order. Same items, quarantine and accounts as
    read_meta_line_by_line (tested)."""
    if keep_unreviewed:  # nothing to prefilter
        return read_meta_line_by_line(path, name, rel_, wanted, items, quarantine, keep_unreviewed)
    account = FileAccount(name, "line", "items")
    guard = FormatGuard(path, _meta_format(rel_))
    id_re = _ASIN_RE[rel_.meta_item_key]
    wanted_ids = pl.Series(list(wanted), dtype=pl.String)
    for frame, lines in _read_blocks(path, lambda b: _meta_block(b, rel_, wanted_ids)):
        skipped: list[int] = []
        undecided = [(n, t, None) for n, t in lines]
        if frame is not None:
            skip = pl.col("skip").fill_null(False)
            skipped = frame.filter(skip)["line"].to_list()
            undecided = frame.filter(skip.not_()).select("line", "raw", "skip").rows()
        account.rows_in += len(skipped) + len(undecided)
        records = []
        for n, text, skip_line in undecided:
            if skip_line is None:  # Python's regex decides
                m = id_re.search(text)
                skip_line = bool(m and m.group(1) not in wanted)
            if skip_line:
                skipped.append(n)
            else:
                records.append((n, text))
        if skipped:
            account.filtered["item has no kept review"] += len(skipped)
        outcomes = [(n, _meta_line(n, t, name, rel_, wanted, items, quarantine, account)) for n, t in records]
        _guard_block(guard, skipped, outcomes)
    guard.finish()
    return account


def load_amazon(raw_dir: Path, dataset: str, category: str, version: str = "2014",
                keep_unreviewed_items: bool = False) -> IngestResult:
    raw_dir = Path(raw_dir)
    rel_ = release(str(version), category)
    reviews_path = find_file(raw_dir, rel_.review_files, f"Amazon {rel_.version} reviews ({category})")
    # the reviews hold no item text: say which file of the release does, and where it is published
    meta_path = find_file(raw_dir, rel_.meta_files,
                          f"Amazon {rel_.version} meta ({category}; the item titles, descriptions, categories and "
                          f"brands are in the release's metadata file {rel_.meta_files[0]}[.gz], published beside "
                          f"the reviews)")
    quarantine = Quarantine()
    r_name, m_name = rel(reviews_path, raw_dir), rel(meta_path, raw_dir)
    r_account, frame = _read_reviews(reviews_path, r_name, rel_, quarantine)
    wanted = set(frame["item_id"].unique().to_list())
    items = ItemBuilder(dataset, ATTRIBUTES)
    m_account = _read_meta(meta_path, m_name, rel_, wanted, items, quarantine, keep_unreviewed_items)
    if not items.rows:
        raise IngestError(f"Amazon: no valid item in {meta_path} matches a review in {reviews_path}")
    known = frame["item_id"].is_in(pl.Series(list(items.rows)).implode())
    unknown = frame.filter(~known)
    if unknown.height:
        raw = fetch_lines(reviews_path, set(unknown["line"].to_list()))
        for number, item in zip(unknown["line"], unknown["item_id"]):
            quarantine.add(r_name, number, f"unknown item, no valid meta line: {item}", raw.get(number, ""),
                           r_account)
    interactions = frame.filter(known).drop("line")
    r_account.kept = interactions.height
    return IngestResult(items.frame(), interactions, quarantine.frame(), [r_account, m_account])


def _load(raw_dir: Path, spec: DatasetSpec, workdir: Path | None) -> IngestResult:
    return load_amazon(raw_dir, spec.name, str(spec.category), spec.version,
                       keep_unreviewed_items=bool(spec.options.get("keep_unreviewed_items", False)))


def _sample(out_dir: Path, size, seed: int = 0, corrupt: bool = False, **options) -> Path:
    from ops.sample import generate_amazon

    return generate_amazon(out_dir, size, seed, corrupt=corrupt, **options)


# reviews are the interactions (negatives for CTR are sampled); content = title + description
SOURCE = Source("amazon", ATTRIBUTES, content_attributes=2, load=_load, generate_sample=_sample,
                impressions="sampled", required=("category",),
                sample_options=lambda spec: {"category": spec.category, "version": spec.version},
                labels=("categories", "brand"))
