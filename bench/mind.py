"""MIND behaviors.tsv ingestion: our vectorised reader against the line-by-line Python reading, same files.

  line_by_line   tests/reference_mind.py's load_mind_line_by_line: one Python iteration per line and per
                 history / impression entry (the specification; equal outputs are tested)
  ours           ops.ingest.mind.load_mind: polars over whole columns, repeated histories split once

Each contender runs in its own subprocess so that its peak RSS is its own. The files have MIND-large's shapes:
each user's history is repeated verbatim on every one of their impression lines (~3.1 lines per user), histories
of ~33 news, ~37 impression tokens per line with ~4 % clicks, news ids `N<number>`, the real time format.

Usage: python bench/mind.py [--users 200000] [--real-size]   (--real-size = 711,222 users, ~2.2 M lines, ~1.6 GB)
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
REAL_USERS = 711_222
REAL_NEWS = 101_527


def generate(directory: Path, users: int, seed: int = 0) -> None:
    import numpy as np

    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    n_news = max(2000, int(REAL_NEWS * min(1.0, users / REAL_USERS * 3)))
    ids = np.array([f"N{10000 + i}" for i in range(n_news)])
    popularity = np.cumsum(rng.permutation((np.arange(n_news) + 1.0) ** -0.7))  # long-tailed, no news dominates
    popularity /= popularity[-1]

    def draw(k: int):  # news by popularity (inverse CDF: rng.choice(p=...) recomputes it on every call)
        return ids[np.minimum(np.searchsorted(popularity, rng.random(k)), n_news - 1)]
    with open(directory / "news.tsv", "w") as fh:
        for nid in ids:
            fh.write(f"{nid}\tnews\tnewsus\tA title of {nid}\tAn abstract.\thttps://x/{nid}.html\t[]\t[]\n")
    imp = 1
    with open(directory / "behaviors.tsv", "w") as fh:
        for u in range(users):
            history = " ".join(draw(rng.poisson(33)))
            for _ in range(rng.geometric(1 / 3.1)):
                shown = draw(max(2, rng.poisson(37)))
                labels = (rng.random(len(shown)) < 0.04).astype(int)
                tokens = " ".join(f"{n}-{c}" for n, c in zip(shown, labels))
                hour, minute, second = rng.integers(1, 13), rng.integers(0, 60), rng.integers(0, 60)
                fh.write(f"{imp}\tU{u}\t11/{rng.integers(9, 15)}/2019 {hour}:{minute:02d}:{second:02d} "
                         f"{'AM' if rng.random() < 0.5 else 'PM'}\t{history}\t{tokens}\n")
                imp += 1


CONTENDERS = {
    "line_by_line": "from tests.reference_mind import load_mind_line_by_line as load",
    "ours": "from ops.ingest.mind import load_mind as load",
}
CHILD = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
{imp}
started = time.perf_counter()
res = load({data!r}, "bench")
shown = res.shown_not_clicked.lazy().collect()  # the side table of not-clicked impressions, in both contenders
wall = time.perf_counter() - started
entries = [a for a in res.accounts if a.unit.startswith("history")]
print(json.dumps({{"wall": wall, "rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                  "lines": sum(a.rows_in for a in res.accounts if a.source_file.endswith("behaviors.tsv")
                               and a.unit == "line"),
                  "entries": sum(a.rows_in for a in entries), "kept": res.interactions.height,
                  "quarantined": res.quarantine.height, "shown": shown.height}}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=200_000)
    ap.add_argument("--real-size", action="store_true", help=f"{REAL_USERS:,} users like MIND-large's train split")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    users = REAL_USERS if args.real_size else args.users
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-mind-"))
    data = work / f"mind_{users}"
    if not (data / "behaviors.tsv").is_file():
        started = time.perf_counter()
        generate(data, users)
        print(f"generated in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    results = {}
    for name, imp in CONTENDERS.items():
        out = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT), imp=imp, data=str(data))],
                             check=True, capture_output=True, text=True)
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
    r = results["ours"]
    assert all(results["line_by_line"][k] == r[k] for k in ("entries", "kept", "quarantined", "shown")), results
    size = (data / "behaviors.tsv").stat().st_size / 1e9
    print(f"behaviors.tsv: {r['lines']:,} lines, {r['entries']:,} history + impression entries, {size:.2f} GB; "
          f"{r['kept']:,} interactions kept (both contenders)")
    print("\n| contender | wall s | entries/s | peak RSS GB | ours faster by |")
    print("|---|---|---|---|---|")
    for name, x in results.items():
        print(f"| {name} | {x['wall']:.1f} | {x['entries'] / x['wall']:,.0f} | {x['rss_gb']:.2f} "
              f"| {x['wall'] / r['wall']:.2f}x |")


if __name__ == "__main__":
    main()
