"""LAMIA on SmolLM2: the ablations (configs/lamia_ablations.yaml) and the like-for-like baselines, in one table.

Runs the pipeline's own assets (dg.materialize) on a copy of a demo store's tables (run `make demo` first), one
variant at a time: palette_model -> palette_embeddings -> code_table/lamia -> recommender/generative/lamia (3
seeds), with the demo's settings (configs/lamia_demo_cpu.yaml, without the per-sample encoder overlay: SmolLM2 on
every sample) changed as the variant says. The baselines are the demo store's own code tables and recommenders:
`pca_kmeans` (MiniLM), `pca_kmeans_lm` (SmolLM2's last-token pooled embeddings; materialized here where the demo
did not) and `random`. Per row: best-position NMI of each planted aspect, the smallest per-position code
utilization, the collision rate before dedup, position agreement (mean adjusted mutual information between the
codes of two positions: 0 = independent, as random codes), the palette's position correlation (mean |cos| between
an item's positions; at the first training step -> extracted), and test NDCG@10 / Recall@10 of the generative
recommender, mean ± std over seeds, with a paired Wilcoxon p-value on per-user NDCG@10 (mean over seeds) against
the `full` variant (or, where `full` is not among --variants, the demo store's own `lamia`, which the demo ran with
the full settings). The code-table check does not block here: every variant gets its row.

Usage: python bench/lamia.py [--store data/store] [--raw data/raw] [--datasets sample_mind]
                             [--variants full no_intra ...] [--out /tmp/bench-lamia]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

BASELINES = ("pca_kmeans", "pca_kmeans_lm", "random")
LAMIA_KEYS = (("palette_model",), ("palette_embeddings",), ("code_table", "lamia"),
              ("recommender", "generative", "lamia"))
LM_KEYS = (("item_embeddings_lm",), ("code_table", "pca_kmeans_lm"), ("recommender", "generative", "pca_kmeans_lm"))


def materialize(ds: str, keys, run_config: dict, store: Path, raw: Path) -> dict[str, dict]:
    """Materialize `keys` for partition `ds` with the pipeline's assets and checks; metadata by asset key."""
    import dagster as dg

    from pipeline.definitions import defs
    from pipeline.resources import ComputeResource, StorageResource

    asset_keys = [dg.AssetKey(list(k)) for k in keys]
    names = {"__".join(k) for k in keys}
    config = {"ops": {op: c for op, c in run_config["ops"].items() if op in names}}
    result = dg.materialize([*defs.assets, *defs.asset_checks], selection=asset_keys, partition_key=ds,
                            run_config=config,
                            resources={"storage": StorageResource(raw_root=str(raw), storage_root=str(store)),
                                       "compute": ComputeResource()})
    if not result.success:
        raise SystemExit(f"{ds}: materializing {names} failed")
    return {e.asset_key.to_user_string(): {k: v.value for k, v in e.materialization.metadata.items()}
            for e in result.get_asset_materialization_events()}


def code_row(store: Path, raw: Path, ds: str, tokenizer: str) -> dict[str, object]:
    """Figures of a code table's latest version (the same functions the code-table asset reports with)."""
    from ops import datasets
    from ops.codetable import aspect_scores, code_figures

    frame = pl.read_parquet(store / ds / "code_tables" / tokenizer / "latest" / "codes.parquet")
    codes = np.stack(frame["codes"].to_numpy()).astype(np.int64)
    k = int(codes.max()) + 1
    meta = json.loads((store / ds / "code_tables" / tokenizer / "latest" / "tokenizer.json").read_text())
    figures = code_figures(codes, frame["dedup"].to_numpy(), int(meta.get("k", k)))
    truth = pl.read_csv(datasets.get(ds).raw_path(raw) / "planted_aspects.csv", schema_overrides={"item_id": pl.String})
    scores = list(aspect_scores(frame, truth).iter_rows(named=True))
    return {"L": codes.shape[1], **{f"nmi {r['aspect']}": r["best_nmi"] for r in scores},
            "_per_position": {r["aspect"]: r["nmi_per_position"] for r in scores},
            "utilization min": min(figures["utilization"]), "collision rate": figures["collision_rate"],
            "position agreement (AMI)": figures["position_agreement_ami"]}


def recommender_rows(store: Path, ds: str, tokenizer: str) -> tuple[dict[str, object], pl.DataFrame]:
    long = pl.read_parquet(store / ds / f"metrics__generative__{tokenizer}.parquet").filter(pl.col("k") == 10)
    out: dict[str, object] = {}
    for metric, name in (("ndcg", "NDCG@10"), ("recall", "R@10")):
        v = long.filter(pl.col("metric") == metric).sort("seed")["value"].to_numpy()
        out[name] = f"{v.mean():.4f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.4f}"
        out[f"_{metric}"] = float(v.mean())
    out["seeds"] = long["seed"].n_unique()
    per_user = (pl.read_parquet(store / ds / f"per_user__generative__{tokenizer}.parquet")
                .group_by("user_id").agg(pl.col("ndcg_10").mean()).sort("user_id"))
    return out, per_user


def main() -> None:
    from scipy.stats import wilcoxon

    from pipeline import runconfig
    from pipeline.ablations import ablation_config, ablations
    from pipeline.demo import DEMO_CONFIG

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", default="data/store")
    ap.add_argument("--raw", default="data/raw")
    ap.add_argument("--datasets", nargs="+", default=["sample_mind"])
    ap.add_argument("--variants", nargs="+", default=None, help="default: every variant of the ablations file")
    ap.add_argument("--out", default="/tmp/bench-lamia", help="work store (a copy of the demo store's tables)")
    args = ap.parse_args()
    demo, raw, out = Path(args.store), Path(args.raw).resolve(), Path(args.out)
    base = runconfig.load(DEMO_CONFIG)
    variants = args.variants or list(ablations())
    rows = []
    for ds in args.datasets:
        work = out / ds
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        for table in (demo / ds).glob("*.parquet"):  # items, user_sequences, embeddings, the demo's metrics ...
            shutil.copy2(table, work / table.name)
        if (demo / ds / "code_tables").is_dir():
            shutil.copytree(demo / ds / "code_tables", work / "code_tables", symlinks=True)  # `latest` is a link
        if not (work / "code_tables" / "pca_kmeans_lm").is_dir():  # the demo does not build the LM's pooled baseline
            started = time.perf_counter()
            materialize(ds, LM_KEYS, base, out, raw)
            print(f"{ds}: pca_kmeans_lm materialized in {time.perf_counter() - started:.0f} s", flush=True)
        reference = None
        if "full" not in variants:  # the reference of the p-values: the demo's own lamia (run with the full settings)
            reference = recommender_rows(out, ds, "lamia")[1]
        for name in (["full"] if "full" in variants else []) + [v for v in variants if v != "full"]:
            started = time.perf_counter()
            config = ablation_config(name, base)
            # figures, not gating: a variant whose codes collide more than the blocking limit still gets its row
            config["ops"]["code_table__lamia"] = {"config": {**config["ops"].get("code_table__lamia", {}).get(
                "config", {}), "collision_block": 1.0}}
            meta = materialize(ds, LAMIA_KEYS, config, out, raw)
            pm, pe = meta["palette_model"], meta["palette_embeddings"]
            rec, per_user = recommender_rows(out, ds, "lamia")
            if name == "full":
                reference = per_user
            p = None if name == "full" else float(wilcoxon(per_user["ndcg_10"], reference["ndcg_10"]).pvalue)
            row = {"dataset": ds, "codes": f"lamia {name}", **code_row(out, raw, ds, "lamia"),
                   "correlation (step 1 -> extracted)": f"{pm['initial_correlation']:.3f} -> "
                                                         f"{pe['position_correlation']:.3f}",
                   **rec, "p vs full": "—" if p is None else f"{p:.2g}",
                   "palette train s": round(float(pm["seconds"]), 0), "items/s train / extract":
                   f"{pm['train_items_per_second']} / {pe['extract_items_per_second']}",
                   "bench s": round(time.perf_counter() - started)}
            rows.append(row)
            print(json.dumps(row), flush=True)
        for tok in BASELINES:
            rec, per_user = recommender_rows(out, ds, tok)
            p = float(wilcoxon(per_user["ndcg_10"], reference["ndcg_10"]).pvalue)
            rows.append({"dataset": ds, "codes": tok, **code_row(out, raw, ds, tok), **rec,
                         "p vs full": "—" if p is None else f"{p:.2g}"})
            print(json.dumps(rows[-1]), flush=True)
    positions = pl.DataFrame([{"dataset": r["dataset"], "codes": r["codes"], "aspect": a,
                               "NMI per position": " / ".join(f"{v:.3f}" for v in nmi)}
                              for r in rows for a, nmi in r["_per_position"].items()])
    with pl.Config(tbl_formatting="MARKDOWN", tbl_hide_column_data_types=True, tbl_hide_dataframe_shape=True,
                   tbl_rows=-1, tbl_cols=-1, tbl_width_chars=10_000, fmt_str_lengths=200):
        for ds in dict.fromkeys(r["dataset"] for r in rows):  # one table per dataset: its aspects are its own
            mine = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows if r["dataset"] == ds]
            print(pl.DataFrame(mine, infer_schema_length=None), "\n")
        print(positions)
    (out / "lamia_table.json").write_text(json.dumps(rows, indent=1, default=str))


if __name__ == "__main__":
    main()
