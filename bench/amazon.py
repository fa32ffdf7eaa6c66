"""Amazon reviews ingestion: our block-vectorised reader against the line-by-line Python reading, same file.

  line_by_line   ops.ingest.amazon.read_reviews_line_by_line: json.loads and Python objects per line (the
                 specification; equal outputs are tested in tests/test_ingest_amazon.py)
  ours           ops.ingest.amazon._read_reviews (what load_amazon uses): polars reads blocks of whole lines,
                 lines it cannot vouch for go through the same per-line rule

Each contender runs in its own subprocess so that its peak RSS is its own. The file has the 2023 release's
shape (user_id / parent_asin / rating / timestamp in ms, review title and text with escaped non-ASCII, ~0.5 kB a
line); --real-size writes 23.9 M lines like Beauty_and_Personal_Care.jsonl (~11 GB). The meta file is not part
of this benchmark (its reading did not change).

Usage: python bench/amazon.py [--rows 2000000] [--real-size] [--gz]
"""
from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
REAL_ROWS = 23_911_390  # Beauty_and_Personal_Care, Amazon Reviews 2023
WORDS = ("great", "product", "skin", "hair", "smell", "love", "would", "buy", "again", "price", "quality", "not",
         "very", "soft", "dry", "works", "bottle", "cream", "don\u2019t", "it\u2019s", "recommend", "caf\u00e9")


def generate(path: Path, rows: int, seed: int = 0, gz: bool = False) -> None:
    import numpy as np

    rng = np.random.default_rng(seed)
    alphabet = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"))
    users = ["A" + "".join(rng.choice(alphabet, 27)) for _ in range(max(1, rows // 9))]
    items = ["B0" + "".join(rng.choice(alphabet, 8)) for _ in range(max(1, rows // 25))]
    words = np.array(WORDS)
    opener = gzip.open if gz else open
    with opener(path, "wt", encoding="utf-8") as fh:
        for start in range(0, rows, 100_000):
            n = min(100_000, rows - start)
            u, it = rng.integers(0, len(users), n), rng.integers(0, len(items), n)
            stars, ts = rng.integers(1, 6, n), 1_500_000_000_000 + rng.integers(0, 10**11, n)
            lengths = np.minimum(rng.lognormal(3.4, 0.8, n).astype(int) + 3, 400)
            lines = []
            for k in range(n):
                text = " ".join(words[rng.integers(0, len(words), lengths[k])])
                item = items[it[k]]
                lines.append(json.dumps({  # the field order and types of the 2023 files
                    "rating": float(stars[k]), "title": text[:40], "text": text, "images": [], "asin": item,
                    "parent_asin": item, "user_id": users[u[k]], "timestamp": int(ts[k]),
                    "helpful_vote": int(lengths[k] % 7), "verified_purchase": bool(k % 5)}))
            fh.write("\n".join(lines) + "\n")


CONTENDERS = {
    "line_by_line": "from ops.ingest.amazon import read_reviews_line_by_line as read",
    "ours": "from ops.ingest.amazon import _read_reviews as read",
}
CHILD = """
import json, resource, sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
from ops.ingest.amazon import release
from ops.ingest.common import Quarantine
{imp}
started, cpu = time.perf_counter(), time.process_time()
account, frame = read(Path({data!r}), "reviews", release("2023", "Bench"), Quarantine())
wall, cpu = time.perf_counter() - started, time.process_time() - cpu
print(json.dumps({{"wall": wall, "cpu": cpu, "rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                  "lines": account.rows_in, "kept": frame.height, "quarantined": account.quarantined,
                  "digest": int(frame.hash_rows(seed=1).sum())}}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--real-size", action="store_true", help=f"{REAL_ROWS:,} lines")
    ap.add_argument("--gz", action="store_true", help="gzip the file (both contenders decompress while reading)")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    rows = REAL_ROWS if args.real_size else args.rows
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-amazon-"))
    data = work / f"Bench_{rows}.jsonl{'.gz' if args.gz else ''}"
    if not data.is_file():
        started = time.perf_counter()
        work.mkdir(parents=True, exist_ok=True)
        generate(data, rows, gz=args.gz)
        print(f"generated in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    results = {}
    for name, imp in CONTENDERS.items():
        out = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT), imp=imp, data=str(data))],
                             check=True, capture_output=True, text=True)
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
    r = results["ours"]
    assert all(results["line_by_line"][k] == r[k] for k in ("lines", "kept", "quarantined", "digest")), results
    print(f"{data.name}: {r['lines']:,} reviews, {data.stat().st_size / 1e9:.2f} GB; the same {r['kept']:,} rows "
          f"kept by both contenders (equal row hashes)")
    print("\n| contender | wall s | CPU s | lines/s | peak RSS GB | ours faster by |")
    print("|---|---|---|---|---|---|")
    for name, x in results.items():
        print(f"| {name} | {x['wall']:.1f} | {x['cpu']:.1f} | {x['lines'] / x['wall']:,.0f} | {x['rss_gb']:.2f} "
              f"| {x['wall'] / r['wall']:.2f}x |")


if __name__ == "__main__":
    main()
