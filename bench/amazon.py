"""Amazon reviews + meta ingestion: our block-vectorised readers against the line-by-line Python reading.

  reviews: line_by_line   tests/reference_amazon.py's read_reviews_line_by_line: json.loads and Python objects per line
                          (the specification; equal outputs are tested in tests/test_ingest_amazon.py)
  reviews: ours           ops.ingest.amazon._read_reviews (what load_amazon uses): polars reads blocks of whole
                          lines, lines it cannot vouch for go through the same per-line rule
  meta: line_by_line      ops.ingest.amazon.read_meta_line_by_line: a Python regex finds each line's id, lines of
                          never-reviewed items are skipped, the others parsed (json.loads) into items
  meta: ours              ops.ingest.amazon._read_meta: the id prefilter through polars, the same per-line rule

Each contender runs in its own subprocess so that its peak RSS is its own. The file has the 2023 release's
shape (user_id / parent_asin / rating / timestamp in ms, review title and text with escaped non-ASCII, ~0.5 kB a
line); --real-size writes 23.9 M lines like Beauty_and_Personal_Care.jsonl (~11 GB). The meta file has the 2023
meta's shape (image URLs, features, details; ~1.7 kB a line, the id at the end) for the reviewed items plus
--unreviewed times as many others (a 5-core subset keeps a fraction of a category's items).

Usage: python bench/amazon.py [--rows 2000000] [--real-size] [--gz] [--unreviewed 2]
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
    (path.parent / f"{path.name}.items").write_text("\n".join(items) + "\n")


def generate_meta(path: Path, reviewed: list[str], unreviewed: int, seed: int = 0) -> None:
    import numpy as np

    rng = np.random.default_rng(seed)
    alphabet = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"))
    others = ["B1" + "".join(rng.choice(alphabet, 8)) for _ in range(len(reviewed) * unreviewed)]
    ids = np.array(reviewed + others)[rng.permutation(len(reviewed) + len(others))]
    words = np.array(WORDS)
    with open(path, "w", encoding="utf-8") as fh:
        for item in ids:
            text = " ".join(words[rng.integers(0, len(words), 12)])
            fh.write(json.dumps({  # the 2023 meta's fields, in its order
                "main_category": "All Beauty", "title": text.title(), "average_rating": 4.4,
                "rating_number": int(rng.integers(1, 500)), "features": [text] * int(rng.integers(0, 4)),
                "description": [text * 3] * int(rng.integers(0, 2)), "price": None,
                "images": [{"thumb": f"https://m.media-amazon.com/images/I/{item}{k}._SS40_.jpg",
                            "large": f"https://m.media-amazon.com/images/I/{item}{k}.jpg",
                            "variant": "MAIN", "hi_res": None} for k in range(int(rng.integers(1, 8)))],
                "videos": [], "store": "Brand", "categories": [],
                "details": {"Package Dimensions": "7.1 x 5.5 x 3 inches; 2.38 Pounds", "Brand": "Brand"},
                "parent_asin": str(item), "bought_together": None}) + "\n")


CONTENDERS = {
    "reviews: line_by_line": "from tests.reference_amazon import read_reviews_line_by_line as read",
    "reviews: ours": "from ops.ingest.amazon import _read_reviews as read",
    "meta: line_by_line": "from ops.ingest.amazon import read_meta_line_by_line as read",
    "meta: ours": "from ops.ingest.amazon import _read_meta as read",
}
CHILD = """
import json, resource, sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
from ops.ingest.amazon import ATTRIBUTES, release
from ops.ingest.common import ItemBuilder, Quarantine
{imp}
path, rel_ = Path({data!r}), release("2023", "Bench")
if {meta!r}:
    wanted = set(Path({items!r}).read_text().split())
    items = ItemBuilder("bench", ATTRIBUTES)
    started, cpu = time.perf_counter(), time.process_time()
    account = read(path, "meta", rel_, wanted, items, Quarantine(), False)
    frame = items.frame()
else:
    started, cpu = time.perf_counter(), time.process_time()
    account, frame = read(path, "reviews", rel_, Quarantine())
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
    ap.add_argument("--unreviewed", type=int, default=2, help="meta lines of never-reviewed items per reviewed item")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    rows = REAL_ROWS if args.real_size else args.rows
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-amazon-"))
    data = work / f"Bench_{rows}.jsonl{'.gz' if args.gz else ''}"
    meta = work / f"meta_Bench_{rows}_{args.unreviewed}.jsonl"
    items = work / f"{data.name}.items"
    if not data.is_file() or not items.is_file():
        started = time.perf_counter()
        work.mkdir(parents=True, exist_ok=True)
        generate(data, rows, gz=args.gz)
        print(f"generated in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    if not meta.is_file():
        generate_meta(meta, items.read_text().split(), args.unreviewed)
    results = {}
    for name, imp in CONTENDERS.items():
        is_meta = name.startswith("meta")
        child = CHILD.format(root=str(ROOT), imp=imp, data=str(meta if is_meta else data), meta=is_meta,
                             items=str(items))
        out = subprocess.run([sys.executable, "-c", child], check=True, capture_output=True, text=True)
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
    for part, path in (("reviews", data), ("meta", meta)):
        ref, r = results[f"{part}: line_by_line"], results[f"{part}: ours"]
        assert all(ref[k] == r[k] for k in ("lines", "kept", "quarantined", "digest")), results
        print(f"{path.name}: {r['lines']:,} lines, {path.stat().st_size / 1e9:.2f} GB; the same {r['kept']:,} "
              f"{'items' if part == 'meta' else 'rows'} kept by both contenders (equal row hashes)")
    print("\n| contender | wall s | CPU s | lines/s | peak RSS GB | ours faster by |")
    print("|---|---|---|---|---|---|")
    for name, x in results.items():
        ours = results[name.split(":")[0] + ": ours"]
        print(f"| {name} | {x['wall']:.1f} | {x['cpu']:.1f} | {x['lines'] / x['wall']:,.0f} | {x['rss_gb']:.2f} "
              f"| {x['wall'] / ours['wall']:.2f}x |")


if __name__ == "__main__":
    main()
