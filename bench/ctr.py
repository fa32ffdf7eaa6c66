"""CTR with semantic codes (issue 24, the Mixture-of-Codes downstream): DeepFM and DCNv2 on `impressions` with
each tokenizer's codes, against the reviewers' baselines, in one table of test AUC / logloss.

Rows (3 seeds each, mean ± std, paired t-test over seeds against the ID-only model of the same architecture):
- `ids`: user + item ID only (no semantic features); `ME M`: M item-ID tables (ID-embedding scaling, no codes);
- the scaling study: MoC with N = 1, 2, 3, 7 codebooks and RQ-VAE with L = 1, 2, 3, 7 levels, gate fusion;
- codes per item 4 -> 32: PQ with M = 4, 8, 16, 32 sub-spaces (K 256);
- the fusion choices on MoC N = 3: gate (the paper's), concat, mlp, attention, none;
- the other code tables: pca_kmeans, rqkmeans, opq, the published `lamia`, random.
Tokenizers are fitted here (seed 0, registry defaults otherwise) on the stored `item_embeddings`; the CTR models'
settings are the demo's (configs/lamia_demo_cpu.yaml, recommender__ctr__*), or --epochs.

Usage (after `make demo`, alone on the box or with OMP_NUM_THREADS=1): python bench/ctr.py [--store data/store]
                           [--datasets sample_mind] [--seeds 3]
                           [--groups ids scaling width fusion others]
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

from assets.metadata import markdown_table  # noqa: E402
from ops import tokenizers  # noqa: E402
from ops.codetable import build_code_table  # noqa: E402
from ops.recommend.ctr import CTRConfig, ctr_rows, prepare, train_and_test  # noqa: E402
from ops.recommend.evaluation import CTR_MODELS, ctr_comparison  # noqa: E402
from pipeline import runconfig  # noqa: E402

DEMO = Path(__file__).resolve().parents[1] / "configs" / "lamia_demo_cpu.yaml"
GROUPS = {
    "scaling": [("moc", {"length": n}) for n in (1, 2, 3, 7)] + [("rqvae", {"length": n}) for n in (1, 2, 3, 7)],
    "width": [("pq", {"length": m}) for m in (4, 8, 16, 32)],
    "others": [("pca_kmeans", {}), ("rqkmeans", {}), ("opq", {}), ("random", {})],
}
FUSIONS = ("concat", "mlp", "attention", "none")
ME = (2, 3, 7)


def demo_ctr_settings() -> dict:
    ops = runconfig.load(DEMO).get("ops", {})
    found = next((v.get("config", {}) for k, v in ops.items() if k.startswith("recommender__ctr__")), {})
    names = set(CTRConfig.__dataclass_fields__)
    return {k: v for k, v in found.items() if k in names}


def label(name: str, overrides: dict) -> str:
    return name + "".join(f" {k}={v}" for k, v in overrides.items())


def fit_codes(name: str, overrides: dict, x: np.ndarray, ids: list[str]) -> pl.DataFrame:
    entry = tokenizers.get(name)
    tok = entry.tokenizer(replace(entry.config_type(), **overrides))
    codes = tok.fit(x if entry.source else None, ids)
    return build_code_table(ids, codes, tok.k)[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", default="data/store")
    ap.add_argument("--datasets", nargs="*", default=["sample_mind"])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--models", nargs="*", default=list(CTR_MODELS))
    ap.add_argument("--groups", nargs="*", default=["ids", "scaling", "width", "fusion", "others"])
    ap.add_argument("--epochs", type=int, default=0, help="override the demo's CTR epochs")
    args = ap.parse_args()
    store = Path(args.store)
    settings = demo_ctr_settings() | ({"epochs": args.epochs} if args.epochs else {})
    for ds in args.datasets:
        if not (store / ds / "impressions.parquet").is_file():
            print(f"{ds}: no impressions under {store} (run `make demo` first)")
            continue
        impressions = pl.read_parquet(store / ds / "impressions.parquet")
        emb = pl.read_parquet(store / ds / "item_embeddings.parquet")
        ids, x = emb["item_id"].to_list(), np.stack(emb["embedding"].to_numpy()).astype(np.float32)
        tables: dict[str, pl.DataFrame | None] = {}
        if "ids" in args.groups:
            tables["ids"] = None
        for group in ("scaling", "width", "others"):
            if group in args.groups:
                for name, overrides in GROUPS[group]:
                    tables[label(name, overrides)] = fit_codes(name, overrides, x, ids)
        lamia = store / ds / "code_tables" / "lamia" / "latest" / "codes.parquet"
        if "others" in args.groups and lamia.is_file():
            tables["lamia (published)"] = pl.read_parquet(lamia)
        if "fusion" in args.groups and "moc length=3" not in tables:
            tables["moc length=3"] = fit_codes("moc", {"length": 3}, x, ids)
        longs, seconds = [], {}
        for tname, table in tables.items():
            inputs = prepare(impressions, ids, table)
            runs = [(m, {"use_codes": False}) for m in args.models] if table is None else [
                (m, {"use_codes": True}) for m in args.models]
            if table is None and "ids" in args.groups:
                runs += [(m, {"use_codes": False, "id_embeddings": k}) for m in args.models for k in ME]
            if tname == "moc length=3" and "fusion" in args.groups:
                runs += [(m, {"use_codes": True, "fusion": f}) for m in args.models for f in FUSIONS]
            for model, extra in runs:
                began = time.perf_counter()
                for seed in range(args.seeds):
                    cfg = CTRConfig(**{**settings, "model": model, "seed": seed, **extra})
                    _, result = train_and_test(inputs, cfg)
                    longs.append(ctr_rows(result.metrics, ds, result.recommender,
                                          None if table is None else tname, seed))
                seconds[(model, tname, str(extra))] = time.perf_counter() - began
                pl.concat(longs).write_parquet(store / ds / "bench_ctr.parquet")  # partial rows survive a stop
                print(f"{ds}: {model} {tname} {extra} {seconds[(model, tname, str(extra))]:.1f} s", file=sys.stderr,
                      flush=True)
        long = pl.concat(longs)
        print(f"\n### {ds}: {impressions.height:,} impressions "
              f"({', '.join(f'{s} {n:,}' for s, n in impressions.group_by('split').len().sort('split').iter_rows())}); "
              f"CTR settings {settings}\n")
        print(markdown_table(ctr_comparison(long)))
        out = store / ds / "bench_ctr.parquet"
        print(f"\n(rows: {out}; {sum(seconds.values()):.0f} s of training)")


if __name__ == "__main__":
    main()
