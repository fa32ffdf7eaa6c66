"""How well each tokenizer's codes recover the planted aspects of the bundled samples (NMI).

For every sample dataset and every published code table (`latest`), the normalized mutual information between
each planted aspect (ground truth in `planted_aspects.csv` beside the raw files) and each code position; the
table shows, per aspect, the best position and its homogeneity (ops.codetable.aspect_scores, the same figures
the code-table assets write to their metadata). `random` is the floor every semantic tokenizer must clear.

--seeds N re-quantizes the stored inputs of `pca_kmeans` (item_embeddings) and `lamia` (palette_embeddings) with
the code-table assets' settings (L = 4, K = 256, PCA d = 64, greedy k-means++) for seeds 0..N-1, and draws
`random` with the same seeds: best-position NMI as mean ± std over the seeds, and lamia - pca_kmeans per seed.
This is the spread of the quantization alone; the palette itself is the one `make demo` trained (one seed).
--train-seeds N retrains that palette (configs/lamia_demo_cpu.yaml, in a temporary directory) with seeds 0..N-1
and quantizes each with seed 0: the spread that comes from training.

Usage (after `make demo`): python bench/aspects.py [--store data/store] [--raw data/raw] [--seeds 5]
                           [--train-seeds 3]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ops import tokenizers  # noqa: E402
from ops.codetable import aspect_scores, build_code_table  # noqa: E402

LENGTH, K = 4, 256  # the tokenizers' defaults (L = 4 for pca_kmeans / random; lamia's L is the palette's)


def codes_of(name: str, x: np.ndarray | None, ids: list[str], seed: int) -> np.ndarray:
    """A registered tokenizer at its defaults (greedy k-means++, d = 64) with this seed, fitted on x."""
    entry = tokenizers.get(name)
    return entry.tokenizer(entry.config_type(seed=seed)).fit(x, ids)


def published(store: Path, raw: Path) -> None:
    print("| dataset | items | tokenizer | aspect | best NMI | at position | homogeneity |")
    print("|---|---|---|---|---|---|---|")
    for truth in sorted(raw.glob("*/planted_aspects.csv")):
        ds = truth.parent.name
        aspects = pl.read_csv(truth, schema_overrides={"item_id": pl.String})
        for table in sorted((store / ds / "code_tables").glob("*/latest/codes.parquet")):
            tok = table.parent.parent.name
            for r in aspect_scores(pl.read_parquet(table), aspects).iter_rows(named=True):
                print(f"| {ds} | {r['items']:,} | {tok} | {r['aspect']} | {r['best_nmi']:.3f} | {r['position']} "
                      f"| {r['homogeneity']:.3f} |")


def seed_study(store: Path, raw: Path, seeds: int) -> None:
    print(f"best-position NMI, mean ± std over quantization seeds 0..{seeds - 1} (L = {LENGTH}, K = {K}, d = 64, "
          "greedy k-means++)\n")
    print("| dataset | aspect | random | pca_kmeans | lamia | lamia - pca_kmeans (min .. max over seeds) |")
    print("|---|---|---|---|---|---|")
    for truth in sorted(raw.glob("*/planted_aspects.csv")):
        ds = truth.parent.name
        if not (store / ds / "palette_embeddings.parquet").is_file():
            continue
        aspects = pl.read_csv(truth, schema_overrides={"item_id": pl.String})
        ids = pl.read_parquet(store / ds / "items.parquet", columns=["item_id"])["item_id"].to_list()
        emb = pl.read_parquet(store / ds / "item_embeddings.parquet")
        pal = pl.read_parquet(store / ds / "palette_embeddings.parquet")
        assert emb["item_id"].to_list() == ids and pal["item_id"].to_list() == ids
        x = {"random": None, "pca_kmeans": emb["embedding"].to_numpy(), "lamia": pal["palette"].to_numpy()}
        nmi: dict[str, list[dict[str, float]]] = {"random": [], "pca_kmeans": [], "lamia": []}
        for seed in range(seeds):
            codes = {tok: codes_of(tok, x[tok], ids, seed) for tok in nmi}
            for tok, c in codes.items():
                scores = aspect_scores(build_code_table(ids, c, K)[0], aspects)
                nmi[tok].append(dict(zip(scores["aspect"], scores["best_nmi"])))
        for aspect in aspects.columns[1:]:
            cell = {tok: np.array([run[aspect] for run in runs]) for tok, runs in nmi.items()}
            diff = cell["lamia"] - cell["pca_kmeans"]
            print(f"| {ds} | {aspect} | " + " | ".join(
                f"{cell[t].mean():.3f} ± {cell[t].std(ddof=1):.3f}" for t in ("random", "pca_kmeans", "lamia"))
                + f" | {diff.mean():+.3f} ({diff.min():+.3f} .. {diff.max():+.3f}) |")


def _demo_palette(items: pl.DataFrame, dataset: str, seed: int, workdir: Path) -> np.ndarray:
    """The palette `make demo` trains (its run config), with another training seed; items x L x D."""
    import yaml

    from ops.datasets import get
    from ops.palette import PaletteConfig, PaletteModel, extract, prepare_data
    from ops.palette.train import train

    root = Path(__file__).resolve().parents[1]
    run = yaml.safe_load((root / "configs" / "lamia_demo_cpu.yaml").read_text())["ops"]["palette_model"]["config"]
    spec = get(dataset)
    cfg = PaletteConfig(**run, seed=seed, tasks=list(spec.attributes), content_attributes=spec.content_attributes)
    model = PaletteModel(cfg, cfg.tasks)
    data = prepare_data(items, cfg.tasks, cfg.content_attributes or 1, model.tokenizer, cfg)
    train(model, data, workdir / f"{dataset}-{seed}")
    return extract(model, data)


def training_study(store: Path, raw: Path, seeds: int) -> None:
    import tempfile

    print(f"best-position NMI of `lamia`, mean ± std over palette training seeds 0..{seeds - 1} (the demo config; "
          "quantization seed 0), against `pca_kmeans` with quantization seed 0\n")
    print("| dataset | aspect | pca_kmeans | lamia | lamia per training seed |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="aspects-") as tmp:
        for truth in sorted(raw.glob("*/planted_aspects.csv")):
            ds = truth.parent.name
            if not (store / ds / "items.parquet").is_file():
                continue
            aspects = pl.read_csv(truth, schema_overrides={"item_id": pl.String})
            items = pl.read_parquet(store / ds / "items.parquet")
            ids = items["item_id"].to_list()
            emb = pl.read_parquet(store / ds / "item_embeddings.parquet")
            assert emb["item_id"].to_list() == ids
            base = aspect_scores(build_code_table(ids, codes_of("pca_kmeans", emb["embedding"].to_numpy(), ids, 0),
                                                  K)[0], aspects)
            runs = []
            for seed in range(seeds):
                x = _demo_palette(items, ds, seed, Path(tmp))
                scores = aspect_scores(build_code_table(ids, codes_of("lamia", x, ids, 0), K)[0], aspects)
                runs.append(dict(zip(scores["aspect"], scores["best_nmi"])))
            for aspect, pca in zip(base["aspect"], base["best_nmi"]):
                values = np.array([run[aspect] for run in runs])
                print(f"| {ds} | {aspect} | {pca:.3f} | {values.mean():.3f} ± {values.std(ddof=1):.3f} | "
                      + ", ".join(f"{v:.3f}" for v in values) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    root = Path(__file__).resolve().parents[1]
    ap.add_argument("--store", default=str(root / "data" / "store"))
    ap.add_argument("--raw", default=str(root / "data" / "raw"))
    ap.add_argument("--seeds", type=int, default=0, help="re-quantize with this many seeds (mean ± std)")
    ap.add_argument("--train-seeds", type=int, default=0, help="retrain the demo palette with this many seeds")
    args = ap.parse_args()
    if args.train_seeds > 1:
        training_study(Path(args.store), Path(args.raw), args.train_seeds)
    elif args.seeds > 1:
        seed_study(Path(args.store), Path(args.raw), args.seeds)
    else:
        published(Path(args.store), Path(args.raw))


if __name__ == "__main__":
    main()
