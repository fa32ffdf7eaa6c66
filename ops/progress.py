"""Progress lines of long steps (training, embedding, extraction): done / total, rate and time left, logged to the
`semid` logger at most every `every_s` seconds (default 15 s, `$SEMID_PROGRESS_EVERY_S`), so that a step that runs
for minutes says how far it is. Dagster routes the logger into each run's log and console (pipeline/dagster.yaml:
`python_logs.managed_python_loggers`); outside Dagster it is plain `logging`."""
from __future__ import annotations

import logging
import os
import time

log = logging.getLogger("semid")
DEFAULT_EVERY_S = 15.0  # a line at most 15 s + one unit of work apart: within 30 s while a unit takes <= 15 s


def every_s() -> float:
    value = os.environ.get("SEMID_PROGRESS_EVERY_S")
    return float(value) if value else DEFAULT_EVERY_S


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


class Progress:
    """`update(done)` after each unit of work; a line is logged when `every_s` passed since the last one. The rate
    counts only the work of this process (a resumed run starts at `done`)."""

    def __init__(self, what: str, total: int, unit: str = "items", done: int = 0, every: float | None = None):
        self.what, self.total, self.unit = what, int(total), unit
        self.every = every_s() if every is None else every
        self.start_done = self.done = int(done)
        self.began = self.last = time.perf_counter()
        self.lines: list[str] = []  # what was logged (for metadata and tests)

    def update(self, done: int, note: str = "") -> None:
        self.done = int(done)
        now = time.perf_counter()
        if now - self.last >= self.every and self.done < self.total:
            self.last = now
            self._log(now, note)

    def _log(self, now: float, note: str) -> None:
        elapsed = max(now - self.began, 1e-9)
        rate = (self.done - self.start_done) / elapsed
        left = (self.total - self.done) / rate if rate > 0 else float("inf")
        share = 100.0 * self.done / self.total if self.total else 100.0
        line = (f"{self.what}: {self.done:,}/{self.total:,} {self.unit} ({share:.0f} %), "
                f"{rate:,.2f} {self.unit}/s, {_duration(left) if left != float('inf') else '?'} left"
                f"{', ' + note if note else ''}")
        self.lines.append(line)
        log.info(line)
