"""Every tokenizer on the same embeddings, in one table (issue 24): fit and encode time, reconstruction error,
collision rate, utilization, perplexity and planted-aspect NMI, then each tokenizer's rows of the evaluation table.

For each bundled sample (after `make demo`: its `item_embeddings`, MiniLM, and `planted_aspects.csv`), every
tokenizer on the pooled embedding at its registry defaults is fitted with seeds 0..N-1 (figures: mean over seeds,
NMI mean ± std); `lamia` (palette) is read as published. --scaling adds the paper's scaling study on the
tokenizer side: MoC with N = 1, 2, 3, 7 codebooks (shared and per-codebook decoders) and RQ-VAE with L = 1, 2, 3, 7
levels. The last table is the demo's evaluation table: NDCG@10 of the generative recommender per code table
(mean ± std over its seeds) and, where CTR models ran, their test AUC.

Usage: python bench/codebooks.py [--store data/store] [--raw data/raw] [--datasets sample_mind ...] [--seeds 3]
                                  [--scaling]

(Named codebooks.py, not tokenizers.py: run as `python bench/<name>.py`, a bench/tokenizers.py shadows the
Hugging Face `tokenizers` package for every bench script.)
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ops import tokenizers  # noqa: E402
from ops.codetable import aspect_scores, build_code_table  # noqa: E402

POOLED = ("pca_kmeans", "rqkmeans", "pq", "opq", "rqvae", "moc", "random")
SCALING = [("moc", {"length": n}) for n in (1, 2, 3, 7)] + [
    ("moc", {"length": n, "decoder": "per_codebook"}) for n in (3, 7)] + [
    ("rqvae", {"length": n}) for n in (1, 2, 3, 7)]


def variant_name(name: str, overrides: dict) -> str:
    return name + "".join(f" {k}={v}" for k, v in overrides.items())


def run(name: str, overrides: dict, x: np.ndarray, ids: list[str], truth: pl.DataFrame | None, seeds: int) -> dict:
    entry = tokenizers.get(name)
    rows = []
    for seed in range(seeds):
        tok = entry.tokenizer(replace(entry.config_type(), seed=seed, **overrides))
        began = time.perf_counter()
        codes = tok.fit(x if entry.source else None, ids)
        fit_s = time.perf_counter() - began
        began = time.perf_counter()
        tok.encode(x if entry.source else None, ids)
        enc_s = time.perf_counter() - began
        frame, figures = build_code_table(ids, codes, tok.k)
        nmi = ({r["aspect"]: r["best_nmi"] for r in aspect_scores(frame, truth).iter_rows(named=True)}
               if truth is not None else {})
        rows.append({"fit_s": fit_s, "encode_ms_per_1k": 1e3 * enc_s / len(ids) * 1e3,
                     "rel_recon": tok.figures.get("relative_reconstruction_error", float("nan")),
                     "collision": figures["collision_rate"], "util_min": min(figures["utilization"]),
                     "perplexity": float(np.mean(figures["perplexity"])), "L": tok.length, "K": tok.k,
                     "agreement": figures["position_agreement_ami"],
                     **{f"nmi_{a}": v for a, v in nmi.items()}})
    out = pl.DataFrame(rows)
    return {c: (out[c].mean(), out[c].std() or 0.0) for c in out.columns}


def published_lamia(store: Path, ds: str, truth: pl.DataFrame | None) -> dict | None:
    path = store / ds / "code_tables" / "lamia" / "latest" / "codes.parquet"
    if not path.is_file():
        return None
    frame = pl.read_parquet(path)
    codes = np.stack(frame["codes"].to_numpy())
    _, figures = build_code_table(frame["item_id"].to_list(), codes, int(codes.max()) + 1)
    nmi = ({f"nmi_{r['aspect']}": (r["best_nmi"], 0.0) for r in aspect_scores(frame, truth).iter_rows(named=True)}
           if truth is not None else {})
    return {"fit_s": (float("nan"), 0), "encode_ms_per_1k": (float("nan"), 0), "rel_recon": (float("nan"), 0),
            "collision": (figures["collision_rate"], 0), "util_min": (min(figures["utilization"]), 0),
            "perplexity": (float(np.mean(figures["perplexity"])), 0), "L": (codes.shape[1], 0),
            "K": (int(codes.max()) + 1, 0), "agreement": (figures["position_agreement_ami"], 0), **nmi}


def print_table(ds: str, results: dict[str, dict], seeds: int) -> None:
    aspects = sorted({c for r in results.values() for c in r if c.startswith("nmi_")})
    print(f"\n### {ds} ({seeds} seeds; NMI mean ± std)\n")
    print("| tokenizer | L x K | fit s | encode ms / 1k items | rel. recon. error | collision | min util. | "
          "mean perplexity | agreement (AMI) | " + " | ".join(a.removeprefix("nmi_") + " NMI" for a in aspects) + " |")
    print("|---" * (9 + len(aspects)) + "|")
    for name, r in results.items():
        cells = [f"{int(r['L'][0])} x {int(r['K'][0])}", f"{r['fit_s'][0]:.2f}", f"{r['encode_ms_per_1k'][0]:.1f}",
                 f"{r['rel_recon'][0]:.3f}", f"{r['collision'][0]:.2%}", f"{r['util_min'][0]:.2f}",
                 f"{r['perplexity'][0]:.1f}", f"{r['agreement'][0]:.3f}",
                 *[f"{r[a][0]:.3f} ± {r[a][1]:.3f}" if a in r else "" for a in aspects]]
        print(f"| {name} | " + " | ".join(cells) + " |")


def evaluation_rows(store: Path, ds: str) -> None:
    path = store / ds / "evaluation.parquet"
    if not path.is_file():
        return
    long = pl.read_parquet(path)
    ranking = (long.filter(pl.col("metric") == "ndcg", pl.col("k") == 10)
               .group_by("recommender", "tokenizer").agg(pl.col("value").mean().alias("mean"),
                                                          pl.col("value").std().alias("std"), pl.len().alias("seeds"))
               .sort("mean", descending=True))
    print(f"\n{ds}, evaluation table (NDCG@10 on the test split):\n")
    print("| recommender | tokenizer | NDCG@10 | seeds |\n|---|---|---|---|")
    for r in ranking.iter_rows(named=True):
        print(f"| {r['recommender']} | {r['tokenizer'] or '-'} | {r['mean']:.4f} ± {r['std'] or 0:.4f} "
              f"| {r['seeds']} |")
    ctr = long.filter(pl.col("metric") == "auc")
    if ctr.height:
        print("\n| CTR model | tokenizer | test AUC | seeds |\n|---|---|---|---|")
        for r in (ctr.group_by("recommender", "tokenizer").agg(pl.col("value").mean().alias("mean"),
                                                               pl.col("value").std().alias("std"),
                                                               pl.len().alias("seeds"))
                  .sort("recommender", "mean", descending=[False, True]).iter_rows(named=True)):
            print(f"| {r['recommender']} | {r['tokenizer'] or '-'} | {r['mean']:.4f} ± {r['std'] or 0:.4f} | "
                  f"{r['seeds']} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", default="data/store")
    ap.add_argument("--raw", default="data/raw")
    ap.add_argument("--datasets", nargs="*", default=["sample_mind", "sample_amazon", "sample_hm"])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--scaling", action="store_true")
    args = ap.parse_args()
    store, raw = Path(args.store), Path(args.raw)
    for ds in args.datasets:
        emb_path = store / ds / "item_embeddings.parquet"
        if not emb_path.is_file():
            print(f"{ds}: no item_embeddings under {store} (run `make demo` first)")
            continue
        emb = pl.read_parquet(emb_path)
        x, ids = np.stack(emb["embedding"].to_numpy()).astype(np.float32), emb["item_id"].to_list()
        truth_path = raw / ds / "planted_aspects.csv"
        truth = pl.read_csv(truth_path, schema_overrides={"item_id": pl.String}) if truth_path.is_file() else None
        variants = [(n, {}) for n in POOLED] + (SCALING if args.scaling else [])
        results = {}
        for name, overrides in variants:
            results[variant_name(name, overrides)] = run(name, overrides, x, ids, truth, args.seeds)
            print(f"{ds}: {variant_name(name, overrides)} done", file=sys.stderr, flush=True)
        lamia = published_lamia(store, ds, truth)
        if lamia is not None:
            results["lamia (published palette codes)"] = lamia
        print_table(f"{ds}: {len(ids):,} items, {x.shape[1]}-d {emb_path.stem}", results, args.seeds)
        evaluation_rows(store, ds)


if __name__ == "__main__":
    main()
