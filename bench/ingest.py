"""Ingestion benchmark: H&M-format transactions CSV -> Parquet, ours against pandas and bare polars, same run.

Each contender runs in its own subprocess so that its peak RSS is its own (read from the child's rusage):
  pandas_read_csv        pandas.read_csv of the transactions file (ids as strings), nothing written
  pandas_to_parquet      pandas.read_csv + DataFrame.to_parquet (zstd)
  polars_streaming       polars scan_csv().sink_parquet(), no validation (the bare conversion, ANCHORS.md's anchor:
                         polars' default zstd level 3)
  polars_streaming_zstd1 the same bare conversion at our storage's codec setting (zstd level 1), for comparing
                         the validation work alone
  ours                   ops.ingest.hm.load_hm + storage.sink_frames: articles, customers and transactions
                         validated line by line, quarantine written, canonical schema, row accounting

Usage: python bench/ingest.py [--rows 3000000] [--real-size] [--repeat 3]   (--real-size = 31,788,324 rows, ~3.5 GB)
With --repeat N the contenders run N rounds, interleaved (wall times on a shared 2-core machine drift by up to
1.5x between minutes, so each round's ratio compares neighbours); the table shows medians.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
REAL_ROWS = 31_788_324
REAL_CUSTOMERS = 1_371_980
REAL_ARTICLES = 105_542


def generate(directory: Path, rows: int, seed: int = 0) -> None:
    """H&M-format files with the real files' shapes: 64-hex customer ids, zero-padded 10-digit article ids."""
    import numpy as np
    import polars as pl

    from ops.sample import ARTICLE_COLUMNS

    rng = np.random.default_rng(seed)
    scale = rows / REAL_ROWS
    n_cust = max(1000, int(REAL_CUSTOMERS * scale))
    n_art = max(1000, int(REAL_ARTICLES * min(1.0, scale * 3)))
    arts = np.char.add("0", np.char.zfill(rng.choice(np.arange(108775015, 959461001), n_art, replace=False)
                                          .astype(str), 9))
    cust = np.array([f"{a:016x}{b:016x}{c:016x}{d:016x}" for a, b, c, d in rng.integers(0, 2**62, (n_cust, 4))])
    directory.mkdir(parents=True, exist_ok=True)
    art = {c: pl.Series([c.lower()] * n_art) for c in ARTICLE_COLUMNS}
    art["article_id"] = pl.Series(arts)
    art["detail_desc"] = pl.Series([f"Jersey top with {k % 50} buttons, soft cotton" for k in range(n_art)])
    pl.DataFrame(art).select(ARTICLE_COLUMNS).write_csv(directory / "articles.csv")
    pl.DataFrame({"customer_id": cust, "FN": [""] * n_cust, "Active": [""] * n_cust,
                  "club_member_status": ["ACTIVE"] * n_cust, "fashion_news_frequency": ["NONE"] * n_cust,
                  "age": rng.integers(18, 80, n_cust), "postal_code": cust}).write_csv(directory / "customers.csv")
    chunk = 2_000_000
    day0 = np.datetime64("2018-09-20")
    with open(directory / "transactions_train.csv", "wb") as fh:
        fh.write(b"t_dat,customer_id,article_id,price,sales_channel_id\n")
        done = 0
        while done < rows:
            n = min(chunk, rows - done)
            days = np.sort(rng.integers(0, 734, n))
            frame = pl.DataFrame({
                "t_dat": pl.Series(day0 + days.astype("timedelta64[D]")).dt.strftime("%Y-%m-%d"),
                "customer_id": cust[rng.integers(0, n_cust, n)],
                "article_id": arts[rng.integers(0, n_art, n)],
                "price": np.round(rng.random(n) * 0.1, 16),
                "sales_channel_id": rng.integers(1, 3, n),
            })
            frame.write_csv(fh, include_header=False)
            done += n


CONTENDERS = {
    "pandas_read_csv": """
import pandas as pd
df = pd.read_csv(D / "transactions_train.csv", dtype={"customer_id": str, "article_id": str})
rows = len(df)
""",
    "pandas_to_parquet": """
import pandas as pd
df = pd.read_csv(D / "transactions_train.csv", dtype={"customer_id": str, "article_id": str})
df.to_parquet(OUT / "pandas.parquet", compression="zstd")
rows = len(df)
""",
    "polars_streaming": """
import polars as pl
pl.scan_csv(D / "transactions_train.csv", schema_overrides={"customer_id": pl.String, "article_id": pl.String}
            ).sink_parquet(OUT / "polars.parquet", compression="zstd")
rows = pl.scan_parquet(OUT / "polars.parquet").select(pl.len()).collect().item()
""",
    "polars_streaming_zstd1": """
import polars as pl
from storage.parquet import PARQUET_OPTIONS
pl.scan_csv(D / "transactions_train.csv", schema_overrides={"customer_id": pl.String, "article_id": pl.String}
            ).sink_parquet(OUT / "polars.parquet", **PARQUET_OPTIONS)
rows = pl.scan_parquet(OUT / "polars.parquet").select(pl.len()).collect().item()
""",
    "ours": """
from bench.ingest import ingest_ours
rows = ingest_ours(D, OUT)
""",
}


def ingest_ours(data: Path, out: Path) -> int:
    """Our ingestion of an H&M directory into `out` (items, interactions, quarantine .parquet); rows written."""
    from ops.ingest.hm import load_hm
    from storage import sink_frames, write_frame

    res = load_hm(data, "bench", workdir=out)
    write_frame(res.items, out / "items.parquet")
    written = sink_frames({out / "interactions.parquet": res.interactions, out / "quarantine.parquet": res.quarantine})
    res.finalize({"interactions": written[str(out / "interactions.parquet")],
                  "quarantine": written[str(out / "quarantine.parquet")]})
    assert all(a.balanced for a in res.accounts), [a.as_row() for a in res.accounts]
    return written[str(out / "interactions.parquet")] + written[str(out / "quarantine.parquet")]


def run_contender(name: str, data: Path, out: Path) -> dict[str, float]:
    code = (f"import sys, time, json; sys.path.insert(0, {str(ROOT)!r}); from pathlib import Path\n"
            f"D = Path({str(data)!r}); OUT = Path({str(out)!r}); t0 = time.perf_counter()\n"
            f"{CONTENDERS[name]}\n"
            "print(json.dumps({'rows': rows, 'seconds': time.perf_counter() - t0}))\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"{name} failed with status {status}")
    result = json.loads(output.decode().strip().splitlines()[-1])
    result["peak_rss_gb"] = usage.ru_maxrss / 1024**2  # ru_maxrss is KiB on Linux
    # CPU of the child and of the children it waited for (our line-count process): on 2 busy cores the wall-time
    # ratio cannot fall below the ratio of CPU work, so it shows how much of a gap is work and how much waiting
    result["cpu_s"] = usage.ru_utime + usage.ru_stime
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=3_000_000)
    ap.add_argument("--real-size", action="store_true", help=f"{REAL_ROWS:,} rows like the real file")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--only", nargs="*", choices=sorted(CONTENDERS))
    ap.add_argument("--repeat", type=int, default=1, help="rounds, interleaved; medians are reported")
    ap.add_argument("--generate-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    rows = REAL_ROWS if args.real_size else args.rows
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-ingest-"))
    data = work / f"hm_{rows}"
    if args.generate_only:
        generate(data, rows)
        return
    if not (data / "transactions_train.csv").is_file():
        t = time.perf_counter()
        # In a child: Linux children inherit the parent's peak RSS as their ru_maxrss, so the parent stays small.
        subprocess.run([sys.executable, __file__, "--generate-only", "--rows", str(rows), "--workdir", str(work)],
                       check=True)
        print(f"generated {rows:,} rows in {time.perf_counter() - t:.1f} s at {data}")
    size_gb = (data / "transactions_train.csv").stat().st_size / 1e9
    print(f"transactions_train.csv: {rows:,} rows, {size_gb:.2f} GB; cores: {os.cpu_count()}")
    rounds: dict[str, list[dict[str, float]]] = {}
    for _ in range(args.repeat):
        for name in args.only or CONTENDERS:
            out = work / f"out_{name}"
            out.mkdir(exist_ok=True)
            result = run_contender(name, data, out)
            # Parquet written (ours: interactions + quarantine + items), so a codec choice shows its size cost too
            result["out_gb"] = sum(f.stat().st_size for f in out.glob("*.parquet")) / 1e9
            rounds.setdefault(name, []).append(result)
            for f in out.iterdir():
                f.unlink()
    results = {name: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for name, runs in rounds.items()}
    ours = results.get("ours")
    print(f"\n| contender | wall s (median of {args.repeat}) | CPU s | rows/s | peak RSS GB | Parquet GB "
          "| ours faster by |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        ratio = f"{r['seconds'] / ours['seconds']:.2f}x" if ours else "-"
        print(f"| {name} | {r['seconds']:.1f} | {r['cpu_s']:.1f} | {r['rows'] / r['seconds']:,.0f} "
              f"| {r['peak_rss_gb']:.2f} | {r['out_gb']:.3f} | {ratio} |")
    for base in ("polars_streaming", "polars_streaming_zstd1"):
        if not ours or base not in results:
            continue
        for key, what in (("seconds", "wall time"), ("cpu_s", "CPU time")):
            per_round = [o[key] / p[key] for o, p in zip(rounds["ours"], rounds[base])]
            print(f"ours / {base} {what}: {ours[key] / results[base][key]:.2f}"
                  f" (medians); per round: {', '.join(f'{x:.2f}' for x in per_round)}")


if __name__ == "__main__":
    main()
