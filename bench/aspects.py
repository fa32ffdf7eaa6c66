"""How well each tokenizer's codes recover the planted aspects of the bundled samples (NMI), one run.

For every sample dataset and every published code table (`latest`), the normalized mutual information between
each planted aspect (ground truth in `planted_aspects.csv` beside the raw files) and each code position; the
table shows, per aspect, the best position. `random` is the floor every semantic tokenizer must clear.

Usage (after `make demo`): python bench/aspects.py [--store data/store] [--raw data/raw]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import polars as pl
from sklearn.metrics import normalized_mutual_info_score


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    root = Path(__file__).resolve().parents[1]
    ap.add_argument("--store", default=str(root / "data" / "store"))
    ap.add_argument("--raw", default=str(root / "data" / "raw"))
    args = ap.parse_args()
    print("| dataset | items | tokenizer | aspect | best NMI | at position |")
    print("|---|---|---|---|---|---|")
    for truth in sorted(Path(args.raw).glob("*/planted_aspects.csv")):
        ds = truth.parent.name
        aspects = pl.read_csv(truth, schema_overrides={"item_id": pl.String})
        for table in sorted((Path(args.store) / ds / "code_tables").glob("*/latest/codes.parquet")):
            tok = table.parent.parent.name
            codes = pl.read_parquet(table).join(aspects, on="item_id")
            length = codes["codes"].dtype.size
            for aspect in aspects.columns[1:]:
                scores = [normalized_mutual_info_score(codes[aspect], codes["codes"].arr.get(p))
                          for p in range(length)]
                best = max(range(length), key=scores.__getitem__)
                print(f"| {ds} | {codes.height:,} | {tok} | {aspect} | {scores[best]:.3f} | {best} |")


if __name__ == "__main__":
    main()
