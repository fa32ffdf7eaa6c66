"""Amazon reviews read line by line in plain Python: the specification that the block reader of ops.ingest.amazon
(`_read_reviews`) is tested against (tests/test_ingest_amazon.py) and the baseline of bench/amazon.py. The pipeline
does not use it."""
from __future__ import annotations

from pathlib import Path

import polars as pl

from ops.ingest import amazon
from ops.ingest.amazon import Release, _finish_reviews, _review_frame
from ops.ingest.common import FileAccount, FormatGuard, Quarantine, iter_lines


def read_reviews_line_by_line(path: Path, name: str, rel_: Release, quarantine: Quarantine
                              ) -> tuple[FileAccount, pl.DataFrame]:
    """`parse_review` on every line as Python reads the file: the specification `_read_reviews` is tested against
    (and what it does itself for a block it cannot vectorise)."""
    account = FileAccount(name, "line", "interactions")
    guard = FormatGuard(path, rel_.reviews_format)
    kept = []
    for number, line in iter_lines(path):
        account.rows_in += 1
        verdict = amazon.parse_review(line, rel_)  # (through the module: tests count its calls)
        if isinstance(verdict, str):
            guard.record(number, verdict)
            quarantine.add(name, number, verdict, line, account)
        else:
            guard.record(number, None)
            kept.append((number, verdict))
    guard.finish()
    return account, _finish_reviews(account, [_review_frame(kept)])
