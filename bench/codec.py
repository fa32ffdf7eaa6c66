"""Parquet codec benchmark: the storage layer's zstd level against polars' default, same tables, same process.

For each table it writes the same in-memory frame with polars at zstd level 3 (polars' default, the baseline) and
at the other levels, best of `--repeat` rounds each, and prints write CPU seconds, file size, and both as ratios
to the baseline; then the read-back CPU of each file. Tables: an H&M interactions table ingested by our loader
from bench/ingest.py's generator (`--rows`, default 3 M), its items table, and any Parquet files given with
`--tables` (e.g. the demo's store: `--tables data/store/sample_*/*.parquet`).

Usage: python bench/codec.py [--rows 3000000] [--levels 1 2 3 6] [--tables FILE ...] [--workdir DIR]
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.ingest import generate, ingest_ours  # noqa: E402
from storage.parquet import PARQUET_OPTIONS  # noqa: E402

BASELINE_LEVEL = 3  # polars' default zstd level


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def ingested_tables(rows: int, work: Path) -> list[Path]:
    data = work / f"hm_{rows}"
    if not (data / "transactions_train.csv").is_file():
        generate(data, rows)
    out = work / "codec_tables"
    out.mkdir(exist_ok=True)
    ingest_ours(data, out)
    return [out / "interactions.parquet", out / "items.parquet"]


def measure(frame: pl.DataFrame, level: int, target: Path, repeat: int) -> tuple[float, int, float]:
    """(best write CPU s, bytes, best read CPU s) for one zstd level."""
    write = read = float("inf")
    for _ in range(repeat):
        t = cpu_s()
        frame.write_parquet(target, compression="zstd", compression_level=level)
        write = min(write, cpu_s() - t)
        t = cpu_s()
        back = pl.read_parquet(target)
        read = min(read, cpu_s() - t)
    assert back.equals(frame), "round trip changed the table"
    return write, target.stat().st_size, read


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=3_000_000, help="H&M transactions to ingest (0: skip)")
    ap.add_argument("--levels", type=int, nargs="*", default=[1, 2, 3, 6])
    ap.add_argument("--tables", nargs="*", default=[], help="more Parquet files to measure")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-codec-"))
    tables = (ingested_tables(args.rows, work) if args.rows else []) + [Path(t) for t in args.tables]
    levels = sorted(set(args.levels) | {BASELINE_LEVEL})
    print(f"storage writes with {PARQUET_OPTIONS}; baseline: zstd level {BASELINE_LEVEL} (polars' default)")
    print("\n| table | rows | zstd level | write CPU s | MB | read CPU s | write CPU / baseline | size / baseline |")
    print("|---|---|---|---|---|---|---|---|")
    target = work / "codec_probe.parquet"
    for path in tables:
        frame = pl.read_parquet(path)
        results = {level: measure(frame, level, target, args.repeat) for level in levels}
        base_w, base_b, _ = results[BASELINE_LEVEL]
        for level, (w, b, r) in results.items():
            print(f"| {path.parent.name}/{path.name} | {frame.height:,} | {level} | {w:.3f} | {b / 1e6:.2f} "
                  f"| {r:.3f} | {w / base_w:.2f} | {b / base_b:.3f} |")
    target.unlink(missing_ok=True)
    print(f"\n(CPU = this process's user+sys, best of {args.repeat}; cores: {os.cpu_count()})")


if __name__ == "__main__":
    main()
