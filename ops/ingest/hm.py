"""H&M Personalized Fashion loader: articles.csv, customers.csv, transactions_train.csv.

- articles.csv (~105 k rows): quoted CSV with commas and newlines inside `detail_desc`, read with the csv module.
  Article ids keep their leading zeros (strings, never ints).
- customers.csv (~1.4 M rows): only the set of valid customer ids is needed; streamed with polars.
- transactions_train.csv (31.8 M rows, 3.5 GB): never materialised in memory. It is scanned by polars as
  string fields (plus one overflow field) so that a wrong column count, a bad date, an unknown article or customer
  are detected per line, and kept / quarantined rows are written by two streaming sinks in one pass.
"""
from __future__ import annotations

import csv
import re
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl
from polars.expr.whenthen import ChainedThen, Then

from ops.ingest.common import (
    FileAccount,
    FormatGuard,
    IngestError,
    IngestResult,
    ItemBuilder,
    LineCounter,
    Quarantine,
    find_file,
    open_text,
    plain_file,
    rel,
    scan_raw_lines,
)
from ops.ingest.source import Source
from storage.schemas import INTERACTION_CORE, QUARANTINE_SCHEMA

if TYPE_CHECKING:
    from ops.datasets import DatasetSpec

ATTRIBUTES = (
    "detail_desc",
    "product_type_name",
    "product_group_name",
    "graphical_appearance_name",
    "colour_group_name",
    "perceived_colour_value_name",
    "index_name",
)
TRANSACTION_COLUMNS = ("t_dat", "customer_id", "article_id", "price", "sales_channel_id")
# Official article ids are 10 digits with a leading zero ("0108775015"). A file re-saved through a tool that read
# them as integers (a pandas round trip) has "108775015": the zeros are restored, so that items join the official
# ids, and counted as repaired in the row accounting.
ARTICLE_ID_DIGITS = 10
SHORT_ARTICLE_ID = re.compile(r"[0-9]{1,9}")
RESTORED_ZEROS = "article_id zero-padded to 10 digits"
CUSTOMER_ID = "customer_id"
CUSTOMER_HASH_SEED = 20180920
INTERACTION_SCHEMA = {**INTERACTION_CORE, "price": pl.Float64(), "sales_channel_id": pl.Int8()}


def _read_header(path: Path) -> list[str]:
    with open_text(path, table=True) as fh:
        first = fh.readline().rstrip("\r\n")
    return next(csv.reader([first])) if first else []


def _require_columns(path: Path, header: list[str], required: tuple[str, ...]) -> None:
    missing = [c for c in required if c not in header]
    if missing:
        raise IngestError(
            f"{path} line 1: not an H&M CSV header: missing column(s) {', '.join(missing)}; "
            f"expected at least {', '.join(required)}, found {', '.join(header[:12]) or 'an empty line'}"
        )


def read_articles(path: Path, name: str, items: ItemBuilder, quarantine: Quarantine) -> FileAccount:
    account = FileAccount(name, "record", "items")
    required = ("article_id", *ATTRIBUTES)
    with open_text(path, table=True) as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise IngestError(f"{path}: empty file, expected an H&M articles.csv header") from None
        _require_columns(path, header, required)
        idx = [header.index(c) for c in required]
        guard = FormatGuard(path, f"H&M articles.csv with {len(header)} columns")
        start = reader.line_num + 1
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                account.rows_in += 1
                quarantine.add(name, start, f"CSV error: {exc}", "", account)
                start = reader.line_num + 1
                continue
            line, start = start, reader.line_num + 1
            if not any(c.strip() for c in row):
                continue
            account.rows_in += 1
            raw = ",".join(row)
            if len(row) != len(header):
                problem = f"expected {len(header)} columns, found {len(row)}"
                guard.record(line, problem)
                quarantine.add(name, line, problem, raw, account)
                continue
            guard.record(line, None)
            values = [row[i] for i in idx]
            article = values[0].strip()
            if SHORT_ARTICLE_ID.fullmatch(article):
                article = article.zfill(ARTICLE_ID_DIGITS)
                account.repaired[RESTORED_ZEROS] += 1
            items.add(article, values[1:], (name, line), raw, quarantine, account)
        guard.finish()
    return account


def customer_ids(path: Path, name: str, quarantine: Quarantine) -> tuple[pl.Series, FileAccount]:
    header = _read_header(path)
    _require_columns(path, header, (CUSTOMER_ID,))
    pos = header.index(CUSTOMER_ID)
    lf = scan_raw_lines(path, first_line=2).with_columns(
        pl.col("raw").str.split(",").list.get(pos, null_on_oob=True).str.strip_chars().alias("id"))
    reason = (
        pl.when(pl.col("raw").fill_null("") == "").then(pl.lit("blank line"))
        .when(pl.col("raw").str.count_matches(",") != len(header) - 1)
        .then(pl.lit(f"expected {len(header)} columns"))
        .when(pl.col("id").fill_null("") == "").then(pl.lit("empty customer_id"))
        .when(pl.col("id").is_first_distinct().not_()).then(pl.lit("duplicate customer_id"))
    )
    # Keep the raw text of rejected rows only: every customer's full line would cost memory for nothing.
    frame = lf.with_columns(reason.alias("reason")).select(
        "line", "id", "reason", pl.when(pl.col("reason").is_not_null()).then(pl.col("raw")).alias("raw")).collect()
    account = FileAccount(name, "line", rows_in=frame.height)
    bad = frame.filter(pl.col("reason").is_not_null())
    for line, reason, raw in bad.select("line", "reason", "raw").iter_rows():
        quarantine.add(name, int(line), reason, raw, account)
    ids = frame.filter(pl.col("reason").is_null())["id"]
    account.kept = ids.len()
    return ids, account


def _scan_article_ids(path: Path) -> pl.LazyFrame:
    return pl.scan_csv(path, has_header=True, quote_char=None, schema_overrides={"article_id": pl.String},
                       truncate_ragged_lines=True, encoding="utf8-lossy").select("article_id")


def first_article_id_is_short(path: Path) -> bool:
    """Does the first transaction's article_id lack its leading zero (a re-saved file)?"""
    first = _scan_article_ids(path).head(1).collect()["article_id"]
    return bool(first.len()) and SHORT_ARTICLE_ID.fullmatch(first[0] or "") is not None


def count_short_article_ids(path: Path) -> int:
    """How many transaction lines have an article_id of fewer than 10 digits (one streaming pass over one
    column; only run on a file that needs the zeros restored)."""
    return int(_scan_article_ids(path).select(
        pl.col("article_id").str.contains(r"^[0-9]{1,9}$").sum()).collect().item() or 0)


def transactions_plan(path: Path, name: str, articles: pl.Series, customers: pl.Series | None,
                      lossy: bool = False, restore_zeros: bool = False) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """Lazy (kept, quarantined) frames over the transactions file; nothing is read until they are sunk.
    Every scanned line (blank ones included) lands in exactly one of them. `restore_zeros`: article ids of
    fewer than 10 digits get their leading zeros back (files that do not need it pay nothing for it)."""
    header = _read_header(path)
    if header != list(TRANSACTION_COLUMNS):
        raise IngestError(f"{path} line 1: expected the H&M transactions header {','.join(TRANSACTION_COLUMNS)}, "
                          f"found {','.join(header) or 'an empty line'}")
    # polars' own CSV parser over 6 string columns (one more than the header has): a line with more fields
    # fills the 6th, a short line leaves the 5th null, a blank line is an all-null row, and the row index stays
    # the physical line number. Faster than splitting each line as one string (measured, bench/ingest.py).
    f = [pl.col(f"field_{i}") for i in range(6)]
    lf = (
        pl.scan_csv(path, has_header=False, skip_rows=1, quote_char=None, truncate_ragged_lines=True,
                    schema={f"field_{i}": pl.String for i in range(6)}, missing_columns="insert",
                    extra_columns="ignore",  # (else a first line with over 6 fields is a SchemaError, not a row)
                    # lossy: a byte that is not UTF-8 becomes U+FFFD, so its row fails a rule and is quarantined
                    # (strict decoding aborts the whole sink with a bare "invalid utf-8 sequence"); strict is
                    # a little cheaper, so it is used on the files that have no such byte (known before the scan)
                    encoding="utf8-lossy" if lossy else "utf8")
        .with_row_index("line", offset=2)
    )
    if restore_zeros:
        lf = lf.with_columns(pl.when(f[2].str.contains(r"^[0-9]{1,9}$")).then(f[2].str.zfill(ARTICLE_ID_DIGITS))
                             .otherwise(f[2]).alias("field_2"))
    date, price, channel = pl.col("_date"), pl.col("_price"), pl.col("_channel")
    lf = lf.with_columns(  # parsed once, used by the checks and by the kept rows
        f[0].str.strptime(pl.Date, "%Y-%m-%d", strict=False).alias("_date"),
        f[3].cast(pl.Float64, strict=False).alias("_price"),
        # as a float: a file re-saved by pandas from a column with a gap writes channel 2 as "2.0"
        f[4].cast(pl.Float64, strict=False).alias("_channel"),
    )
    rules = [  # (row is bad, reason), in the order a reason is assigned
        ((f[0].fill_null("") == "") & f[1].is_null(), "blank line"),
        (f[4].is_null(), "expected 5 comma-separated columns, found fewer"),
        (f[5].is_not_null(), "expected 5 comma-separated columns, found more"),
        (date.is_null(), "bad date, expected YYYY-MM-DD"),
        (f[2].is_in(articles.implode()).not_(), "unknown article_id"),
        (f[1].str.len_bytes() == 0, "empty customer_id"),
    ]
    if customers is not None:
        # Membership on 64-bit hashes of the 64-char ids: cheaper per row than on the strings
        # (bench/RESULTS.md, "Figures behind design choices"); a false accept needs a 64-bit hash collision with a
        # known id.
        known = customers.hash(CUSTOMER_HASH_SEED).implode()
        rules.append((f[1].hash(CUSTOMER_HASH_SEED).is_in(known).not_(), "unknown customer_id"))
    rules += [
        (price.is_null() | (price < 0), "bad price"),
        (channel.is_null() | channel.is_in([1.0, 2.0]).not_(), "bad sales_channel_id"),
    ]
    # One boolean per row on the hot path; the reason text is built only for the (few) rejected rows.
    # A null verdict (some field missing) counts as bad, so no row can slip between the two outputs.
    lf = lf.with_columns(pl.any_horizontal(bad for bad, _ in rules).not_().fill_null(False).alias("_ok"))
    chain: Then | ChainedThen = pl.when(rules[0][0]).then(pl.lit(rules[0][1]))
    for rule, text in rules[1:]:
        chain = chain.when(rule).then(pl.lit(text))
    reason = chain.otherwise(pl.lit("unparseable row"))
    kept = lf.filter(pl.col("_ok")).select(
        f[1].alias("user_id"),
        f[2].alias("item_id"),
        date.cast(pl.Datetime("ms")).dt.epoch("s").alias("timestamp"),
        pl.lit("purchase").alias("event"),
        pl.col("line").cast(pl.Int64).alias("seq"),
        price.alias("price"),
        channel.cast(pl.Int8).alias("sales_channel_id"),
    )
    bad = lf.filter(pl.col("_ok").not_()).select(
        pl.lit(name).alias("source_file"), pl.col("line").cast(pl.Int64), reason.alias("reason"),
        pl.lit(None, pl.String).alias("detail"),
        # The line as read, up to its 6th field (the parser keeps no more of an over-long line).
        pl.concat_str(f, separator=",", ignore_nulls=True).alias("raw"))
    return kept, bad.cast(QUARANTINE_SCHEMA)


def load_hm(raw_dir: Path, dataset: str, workdir: Path | None = None, validate_customers: bool = True
            ) -> IngestResult:
    """Items and the small files are read eagerly; transactions come back as lazy frames to be streamed.

    `IngestResult.finalize(rows_written)` completes the transactions account once storage has sunk
    them: rows_in is the file's line count minus the header, counted at byte level by a child process started
    before the small files are read (a third output on the shared scan would make polars buffer the whole file),
    kept / quarantined are what was written.
    """
    raw_dir = Path(raw_dir)
    articles_path = find_file(raw_dir, ["articles.csv"], "H&M articles")
    tx_path = find_file(raw_dir, ["transactions_train.csv"], "H&M transactions")
    customers_path = find_file(raw_dir, ["customers.csv"], "H&M customers") if validate_customers else None
    workdir = Path(workdir or tempfile.mkdtemp(prefix="hm-ingest-"))
    tx_name = rel(tx_path, raw_dir)
    tx_plain = plain_file(tx_path, workdir)
    line_count = LineCounter(tx_plain)  # overlaps the articles / customers reads on another core
    quarantine = Quarantine()
    items = ItemBuilder(dataset, ATTRIBUTES)
    customers_job = None
    if customers_path is not None:
        # polars parses customers.csv without the GIL while the csv module reads articles on this thread.
        c_quarantine = Quarantine()
        customers_job = ThreadPoolExecutor(max_workers=1, thread_name_prefix="customers").submit(
            lambda: customer_ids(plain_file(customers_path, workdir), rel(customers_path, raw_dir), c_quarantine))
    accounts = [read_articles(articles_path, rel(articles_path, raw_dir), items, quarantine)]
    if not items.rows:
        raise IngestError(f"H&M: no valid article in {articles_path}")
    customers = None
    small_quarantine = quarantine.frame()
    if customers_job is not None:
        customers, c_account = customers_job.result()
        accounts.append(c_account)
        small_quarantine = pl.concat([small_quarantine, c_quarantine.frame()])
    # A re-saved articles.csv lost the zeros; its transactions file (or one whose first id is short) did too.
    restore = bool(accounts[0].repaired) or first_article_id_is_short(tx_plain)
    kept, bad = transactions_plan(tx_plain, tx_name, pl.Series(list(items.rows), dtype=pl.String), customers,
                                  lossy=line_count.first_invalid_utf8_line() is not None, restore_zeros=restore)
    tx_account = FileAccount(tx_name, "line", "interactions")
    if restore:
        tx_account.repaired[RESTORED_ZEROS] = count_short_article_ids(tx_plain)
    accounts.append(tx_account)

    def finalize(rows: dict[str, int]) -> None:
        tx_account.rows_in = line_count.result() - 1  # minus the header
        tx_account.kept = rows["interactions"]
        tx_account.quarantined = rows["quarantine"] - small_quarantine.height
        if tx_plain != tx_path:
            tx_plain.unlink(missing_ok=True)

    return IngestResult(
        items.frame(),
        kept,
        [small_quarantine, bad],  # parts: storage sinks them separately (see storage.sink_frames)
        accounts,
        finalize=finalize,
    )


def _load(raw_dir: Path, spec: DatasetSpec, workdir: Path | None) -> IngestResult:
    return load_hm(raw_dir, spec.name, workdir=workdir,
                   validate_customers=bool(spec.options.get("validate_customers", True)))


def _sample(out_dir: Path, size, seed: int = 0, corrupt: bool = False, **options) -> Path:
    from ops.sample import generate_hm

    return generate_hm(out_dir, size, seed, corrupt, **options)


# transactions are the interactions (negatives for CTR are sampled); content = all seven article attributes
SOURCE = Source("hm", ATTRIBUTES, content_attributes=7, load=_load, generate_sample=_sample, impressions="sampled",
                labels=("product_type_name", "colour_group_name"))
