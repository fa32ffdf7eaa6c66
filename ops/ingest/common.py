"""Shared pieces of the raw-file loaders: errors, file discovery, line reading, quarantine and row accounting.

Contract of every loader: each input record is either kept, kept in a side table (e.g. MIND's shown but not
clicked impressions, which are CTR negatives but no interactions), quarantined (with file, line, reason and the
raw text) or filtered for a stated, counted reason. `FileAccount` carries the counts so that checks can verify
`rows_in == kept + kept_elsewhere + quarantined + sum(filtered)`.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import subprocess
import sys
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from storage.atomic import atomic_write_stream
from storage.schemas import QUARANTINE_SCHEMA

# Stop after this many leading records fail structurally: the file is in the wrong format, say so once.
FORMAT_PROBE_RECORDS = 20


class IngestError(Exception):
    """A raw input cannot be read at all (missing, wrong format). The message names the file and expectation."""


def find_file(directory: Path, candidates: Sequence[str], what: str) -> Path:
    """First existing file among `candidates` (each also tried with `.gz`), else a clear IngestError."""
    for name in candidates:
        for variant in (name, name + ".gz"):
            path = directory / variant
            if path.is_file():
                return path
    tried = ", ".join(f"{c}[.gz]" for c in candidates)
    if not directory.is_dir():
        raise IngestError(f"{what}: data directory {directory} does not exist (expected {tried} in it)")
    raise IngestError(f"{what}: no file {tried} in {directory}")


class _CheckedGzip(io.RawIOBase):
    """A gzip stream whose damage (cut short, bad CRC, not deflate data) is one IngestError naming the file, not a
    traceback from inside whichever parser was reading it. A multi-GB download cut short is the usual cause."""

    def __init__(self, path: Path):
        self.path = path
        self._gz = gzip.open(path, "rb")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        try:
            return self._gz.readinto(buffer)
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise IngestError(f"{self.path}: damaged or incomplete gzip file ({exc}); expected a complete .gz "
                              "file (download it again)") from None

    def close(self) -> None:
        if not self.closed:
            self._gz.close()
        super().close()


def open_binary(path: Path) -> io.BufferedReader:
    """Open a plain or gzipped file (detected by magic bytes, not by name) as bytes."""
    if is_gzip(path):
        return io.BufferedReader(_CheckedGzip(path), buffer_size=1 << 20)
    return open(path, "rb")


def open_text(path: Path, table: bool = False) -> io.TextIOWrapper:
    """Open a plain or gzipped text file as UTF-8 (bytes that are not UTF-8 become U+FFFD). `table`: a TSV / CSV
    file, whose byte-order mark at the start (as spreadsheet programs write) is dropped, as polars' CSV reader
    drops it; kept otherwise (a JSON line that starts with one is not JSON)."""
    return io.TextIOWrapper(open_binary(path), encoding="utf-8-sig" if table else "utf-8", errors="replace",
                            newline="")


def plain_file(path: Path, workdir: Path) -> Path:
    """`path` itself when it is not gzipped, else its decompressed copy in `workdir` (streamed, not in RAM), for
    readers that take plain files only (polars' CSV scan)."""
    if not is_gzip(path):
        return path
    with open_binary(path) as src:
        return atomic_write_stream(Path(workdir) / path.name.removesuffix(".gz"), src)


def iter_lines(path: Path, table: bool = False) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its newline), blank lines skipped (they are not records). A `table`
    (TSV) line ends at \n only, as for polars' CSV reader and the byte-level line count: a lone \r inside a
    field is data there, not the universal-newline line break it is for Python's text files."""
    with open_text(path, table) as fh:
        if table:
            fh.reconfigure(newline="\n")
        for number, line in enumerate(fh, start=1):
            line = line.rstrip("\r\n")
            if line.strip():
                yield number, line


# ASCII controls other than \t \n \r (and NUL), the unit separator first: what a file's lines can be split at.
_LINE_FIELD_SEPARATORS = bytes([0x1F, 0x1E, 0x1D, 0x1C, *range(0x01, 0x09), 0x0B, 0x0C, *range(0x0E, 0x1C), 0x7F])
_SCAN_CHUNK = 1 << 20


def line_field_separator(path: Path) -> str:
    """A byte absent from a plain file, for reading each of its lines as one field with polars' CSV reader
    (quote_char=None): that reader splits at its separator whatever the quoting, so a line holding it would be
    cut short without a word. The unit separator \x1f is checked first (at memchr speed, through one reused
    buffer: larger fresh reads cost peak memory; bench/RESULTS.md, "Figures behind design choices"); only a file
    that has one pays for a byte count."""
    buf = bytearray(_SCAN_CHUNK)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            if buf.find(0x1F, 0, n) >= 0:
                break
        else:
            return "\x1f"
        counts = [0] * 256
        fh.seek(0)
        while n := fh.readinto(buf):
            for byte in _LINE_FIELD_SEPARATORS:
                counts[byte] += buf.count(byte, 0, n)
    for byte in _LINE_FIELD_SEPARATORS:
        if not counts[byte]:
            return chr(byte)
    raise IngestError(f"{path}: holds every ASCII control character, so its lines cannot be read as single fields; "
                      "is it a text file of the expected format?")


def scan_raw_lines(path: Path, first_line: int = 1) -> pl.LazyFrame:
    """Each physical line of a plain file from `first_line` on as one string `raw` (null for a blank line), with
    its 1-based `line` number: polars' CSV reader without quoting, split at a byte the file does not hold; bytes
    that are not UTF-8 become U+FFFD, as in the Python readers."""
    return (
        pl.scan_csv(path, has_header=False, skip_rows=first_line - 1, separator=line_field_separator(path),
                    quote_char=None, schema={"raw": pl.String}, truncate_ragged_lines=True, raise_if_empty=False,
                    encoding="utf8-lossy")
        .with_row_index("line", offset=first_line)
    )


def is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


_LINECOUNT_SCRIPT = Path(__file__).with_name("linecount.py")


class LineCounter:
    """The byte-level line count (ops/ingest/linecount.py) in a child process that imports only numpy: it runs on
    its own core while this process parses other files, instead of competing for the GIL or a polars thread."""

    def __init__(self, path: Path):
        self.path = path
        self._proc = subprocess.Popen([sys.executable, str(_LINECOUNT_SCRIPT), str(path)], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE)

        self._out: tuple[int, int | None] | None = None

    def _wait(self) -> tuple[int, int | None]:
        if self._out is None:
            out, err = self._proc.communicate()
            if self._proc.returncode != 0:
                raise IngestError(f"{self.path}: could not count lines: {err.decode(errors='replace').strip()}")
            count, bad = out.split()
            self._out = int(count), (None if bad == b"-" else int(bad))
        return self._out

    def result(self) -> int:
        return self._wait()[0]

    def first_invalid_utf8_line(self) -> int | None:
        return self._wait()[1]


def content_hash(values: Sequence[str | None]) -> str:
    """Stable hash of an item's text attributes: changes iff some attribute text changes.
    (Bytes hashed: each value followed by a unit separator, in attribute order; one update call is ~2x faster
    than one per value, same digest.)"""
    return hashlib.sha256(("\x1f".join([v or "" for v in values]) + "\x1f").encode("utf-8")).hexdigest()[:16]


@dataclass
class FileAccount:
    """Row accounting for one source file (or one unit of it, e.g. MIND history entries)."""

    source_file: str
    unit: str
    # The canonical table whose rows are exactly this account's `kept` (None when the unit is not a row of one).
    table: str | None = None
    rows_in: int = 0
    kept: int = 0
    quarantined: int = 0
    filtered: Counter[str] = field(default_factory=Counter)
    # Records whose value was restored to its canonical form before validation (e.g. H&M ids that lost their
    # leading zero), by what was restored: they still end in exactly one of kept / quarantined / filtered.
    repaired: Counter[str] = field(default_factory=Counter)
    # Records kept in a table other than `table`, by that table (MIND: not-clicked impressions -> the
    # `shown_not_clicked` side table, read by `impressions` as label-0 rows).
    kept_elsewhere: Counter[str] = field(default_factory=Counter)

    @property
    def balanced(self) -> bool:
        return self.rows_in == (self.kept + sum(self.kept_elsewhere.values()) + self.quarantined
                                + sum(self.filtered.values()))

    def as_row(self) -> dict[str, object]:
        return {
            "source_file": self.source_file,
            "unit": self.unit,
            "table": self.table,
            "rows_in": self.rows_in,
            "kept": self.kept,
            "kept_elsewhere": sum(self.kept_elsewhere.values()),
            "kept_elsewhere_tables": dict(self.kept_elsewhere),
            "quarantined": self.quarantined,
            "filtered": sum(self.filtered.values()),
            "filtered_reasons": dict(self.filtered),
            "repaired": sum(self.repaired.values()),
            "repaired_reasons": dict(self.repaired),
            "balanced": self.balanced,
        }


class Quarantine:
    """Collects rejected records; `account` (if given) counts them for the file they came from."""

    def __init__(self) -> None:
        self._rows: dict[str, list] = {k: [] for k in QUARANTINE_SCHEMA}
        self._reasons: Counter[str] = Counter()

    def add(self, source: str, line: int, reason: str, raw: str, account: FileAccount | None = None) -> None:
        """`reason` is `category` or `category: detail` (every rule words its problems so); the two are stored
        apart, so that the reason column holds few distinct values whatever the ids and values that failed."""
        category, _, detail = reason.partition(": ")
        self._rows["source_file"].append(source)
        self._rows["line"].append(line)
        self._rows["reason"].append(category)
        self._rows["detail"].append(detail or None)
        self._rows["raw"].append(raw)
        self._reasons[category] += 1
        if account is not None:
            account.quarantined += 1

    def __len__(self) -> int:
        return len(self._rows["line"])

    def frame(self) -> pl.DataFrame:
        return pl.DataFrame(self._rows, schema=QUARANTINE_SCHEMA)


class FormatGuard:
    """Turns 'every leading record is structurally wrong' into one clear IngestError instead of a quarantine
    full of garbage (e.g. a CSV given where a TSV is expected)."""

    def __init__(self, path: Path, expectation: str, probe: int = FORMAT_PROBE_RECORDS):
        self.path, self.expectation, self.probe = path, expectation, probe
        self.seen = 0
        self.ok = 0
        self.first_problem: tuple[int, str] | None = None

    @property
    def settled(self) -> bool:
        """A record parsed, or the probe is over: later records cannot change the verdict."""
        return bool(self.ok) or self.seen >= self.probe

    def record(self, line: int, problem: str | None) -> None:
        if self.settled:
            return
        self.seen += 1
        if problem is None:
            self.ok += 1
            return
        if self.first_problem is None:
            self.first_problem = (line, problem)
        if self.seen == self.probe:
            self.fail()

    def finish(self) -> None:
        """At end of file: a file that had records but none parseable is not in the expected format."""
        if self.seen and not self.ok:
            self.fail()

    def fail(self) -> None:
        line, problem = self.first_problem or (1, "unreadable")
        raise IngestError(
            f"{self.path} line {line}: not in the expected format ({self.expectation}); "
            f"the first {self.seen} records all failed, first problem: {problem}"
        )


@dataclass
class ItemBuilder:
    """Accumulates canonical item rows (item_id, dataset, attributes..., content_hash) with duplicate handling:
    an identical re-listing is filtered and counted, a conflicting one is quarantined."""

    dataset: str
    attributes: tuple[str, ...]
    rows: dict[str, tuple[str, ...]] = field(default_factory=dict)
    hashes: dict[str, str] = field(default_factory=dict)
    first_line: dict[str, tuple[str, int]] = field(default_factory=dict)  # (file, line); formatted when needed

    def add(
        self,
        item_id: str,
        values: Sequence[str | None],
        where: tuple[str, int],
        raw: str,
        quarantine: Quarantine,
        account: FileAccount,
    ) -> bool:
        # (The str case inline: this runs once per attribute of every item, ~0.7 M times for H&M.)
        clean = tuple([" ".join(v.split()) if isinstance(v, str) else _clean_text(v) for v in values])
        if not item_id:
            quarantine.add(where[0], where[1], "missing item id", raw, account)
            return False
        if not any(clean):
            quarantine.add(where[0], where[1], "empty item text: every attribute is empty", raw, account)
            return False
        digest = content_hash(clean)
        if item_id in self.rows:
            if self.hashes[item_id] == digest:
                account.filtered["identical duplicate of an item already read"] += 1
            else:
                quarantine.add(
                    where[0], where[1],
                    f"duplicate item id with different content: {item_id} "
                    f"(first at {':'.join(map(str, self.first_line[item_id]))})",
                    raw, account,
                )
            return False
        self.rows[item_id] = clean
        self.hashes[item_id] = digest
        self.first_line[item_id] = where
        account.kept += 1
        return True

    def __contains__(self, item_id: str) -> bool:
        return item_id in self.rows

    def frame(self, keep: set[str] | None = None) -> pl.DataFrame:
        ids = list(self.rows) if keep is None else [i for i in self.rows if i in keep]
        rows = self.rows.values() if keep is None else [self.rows[i] for i in ids]
        columns = list(zip(*rows)) if ids else [()] * len(self.attributes)
        data: dict[str, Sequence] = {"item_id": ids, "dataset": [self.dataset] * len(ids)}
        data.update(zip(self.attributes, columns))
        data["content_hash"] = [self.hashes[i] for i in ids]
        return pl.DataFrame(data, schema={"item_id": pl.String, "dataset": pl.String,
                                          **{a: pl.String for a in self.attributes}, "content_hash": pl.String})


def _clean_text(value: str | None) -> str:
    if value is None:
        return ""
    return " ".join(str(value).split())


def fetch_lines(path: Path, numbers: set[int]) -> dict[int, str]:
    """Re-read specific lines (for quarantining records rejected only after the whole file was seen)."""
    out: dict[int, str] = {}
    if not numbers:
        return out
    with open_text(path) as fh:
        for number, line in enumerate(fh, start=1):
            if number in numbers:
                out[number] = line.rstrip("\r\n")
                if len(out) == len(numbers):
                    break
    return out


@dataclass
class IngestResult:
    """What a loader hands to storage. `interactions` may be lazy (streamed from a huge CSV)."""

    items: pl.DataFrame
    interactions: pl.LazyFrame | pl.DataFrame
    quarantine: pl.LazyFrame | pl.DataFrame | list[pl.LazyFrame | pl.DataFrame]  # list = parts of one table
    accounts: list[FileAccount]
    # Called with rows written per table once streamed outputs are on disk, to complete the accounting.
    finalize: Callable[[dict[str, int]], None] | None = None
    # Labelled impressions that are no interactions (MIND: shown, not clicked; SHOWN_SCHEMA), None where the source
    # logs no impressions (Amazon, H&M): the `impressions` asset then samples its negatives.
    shown_not_clicked: pl.LazyFrame | pl.DataFrame | None = None

    def accounting_frame(self) -> pl.DataFrame:
        rows = [a.as_row() for a in self.accounts]
        return pl.DataFrame(
            [{**r, "filtered_reasons": repr(r["filtered_reasons"]), "repaired_reasons": repr(r["repaired_reasons"]),
              "kept_elsewhere_tables": repr(r["kept_elsewhere_tables"])}
             for r in rows],
            schema={"source_file": pl.String, "unit": pl.String, "table": pl.String, "rows_in": pl.Int64,
                    "kept": pl.Int64,
                    "kept_elsewhere": pl.Int64, "kept_elsewhere_tables": pl.String, "quarantined": pl.Int64,
                    "filtered": pl.Int64, "filtered_reasons": pl.String,
                    "repaired": pl.Int64, "repaired_reasons": pl.String, "balanced": pl.Boolean},
        )


def _file_summary(accounts: Sequence[FileAccount]) -> str:
    a = accounts[0]
    if all(x.rows_in == 0 for x in accounts):
        return f"{a.source_file} is empty (no records)"
    parts = [f"{a.rows_in:,} {a.unit}s read"] + [f"{x.rows_in:,} {x.unit}s" for x in accounts[1:] if x.rows_in]
    quarantined = sum(x.quarantined for x in accounts)
    filtered: Counter[str] = Counter()
    for x in accounts:
        filtered.update(x.filtered)
    if quarantined:
        parts.append(f"{quarantined:,} quarantined (see the quarantine table's reasons)")
    if filtered:
        parts.append("filtered: " + ", ".join(f"{n:,} {why}" for why, n in filtered.most_common()))
    return f"{a.source_file}: " + ", ".join(parts) + ", none kept"


def require_rows(accounts: Sequence[FileAccount], raw_dir: Path, rows: dict[str, int]) -> None:
    """An ingest that keeps no items or no interactions is an error naming the files behind them (empty, or
    every record quarantined or filtered), not a run with empty tables and green checks. `rows`: rows written
    per canonical table."""
    for table in ("items", "interactions"):
        if rows.get(table, 0) > 0:
            continue
        files = [a.source_file for a in accounts if a.table == table]
        if not files:
            continue
        by_file = [[a for a in accounts if a.source_file == f] for f in dict.fromkeys(files)]
        raise IngestError(f"no {table} kept from {raw_dir}: " + "; ".join(_file_summary(accs) for accs in by_file))


def rel(path: Path, root: Path) -> str:
    """Path as stored in quarantine/accounting: relative to the dataset's raw directory when possible."""
    try:
        return os.path.relpath(path, root)
    except ValueError:
        return str(path)
