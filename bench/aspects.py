"""How well each tokenizer's codes recover the planted aspects of the bundled samples (NMI), one run.

For every sample dataset and every published code table (`latest`), the normalized mutual information between
each planted aspect (ground truth in `planted_aspects.csv` beside the raw files) and each code position; the
table shows, per aspect, the best position and its homogeneity (ops.codetable.aspect_scores, the same figures
the code-table assets write to their metadata). `random` is the floor every semantic tokenizer must clear.

Usage (after `make demo`): python bench/aspects.py [--store data/store] [--raw data/raw]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ops.codetable import aspect_scores  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    root = Path(__file__).resolve().parents[1]
    ap.add_argument("--store", default=str(root / "data" / "store"))
    ap.add_argument("--raw", default=str(root / "data" / "raw"))
    args = ap.parse_args()
    print("| dataset | items | tokenizer | aspect | best NMI | at position | homogeneity |")
    print("|---|---|---|---|---|---|---|")
    for truth in sorted(Path(args.raw).glob("*/planted_aspects.csv")):
        ds = truth.parent.name
        aspects = pl.read_csv(truth, schema_overrides={"item_id": pl.String})
        for table in sorted((Path(args.store) / ds / "code_tables").glob("*/latest/codes.parquet")):
            tok = table.parent.parent.name
            for r in aspect_scores(pl.read_parquet(table), aspects).iter_rows(named=True):
                print(f"| {ds} | {r['items']:,} | {tok} | {r['aspect']} | {r['best_nmi']:.3f} | {r['position']} "
                      f"| {r['homogeneity']:.3f} |")


if __name__ == "__main__":
    main()
