"""How cost grows with the data: the bundled generator at fractions of a real dataset's size, every stage that is
feasible on 2 CPU cores materialized through Dagster (dg.materialize), each stage in its own child process so that
its wall time and peak RSS (VmHWM) are its own. Prints per stage and size: seconds, peak RSS, items/s, and
the fitted growth: the exponent b of seconds ~ size^b over the sizes (1 = linear) and the marginal bytes per item
of peak RSS between the smallest and largest size.

Real sizes (items, users, mean history): MIND-small 65,238 news / 50,000 users; Amazon 2014 Beauty 5-core 12,101 /
22,363 / 8.9; H&M 105,542 articles / 1,371,980 customers / 23 (31.8 M transactions; the generator draws samples
over 2 M events vectorized, ops.sample.LARGE_EVENTS).

Stages: ingest (items, interactions, quarantine, user_sequences, impressions), item_embeddings (MiniLM, offline),
code tables pca_kmeans / rqkmeans / opq / rqvae (10 epochs), SASRec (one setting, 2 epochs, seed 0), the scratch
generative recommender on pca_kmeans (1 epoch, seed 0; its test users decoded by constrained beam search over the
whole catalog), popularity. Raw files are generated once per size under --cache (generation is not a stage).

Usage: python bench/scale.py --dataset mind [--fractions 0.1 0.3 1.0] [--threads 2] [--stages ...]
       [--limit sasrec=0.1 ...] [--cache data/scale_raw] [--out /tmp/scale-mind.json]
--limit STAGE=F runs STAGE only at fractions up to F (a stage that would take hours at the largest size).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REAL = {  # source, partition, items, users, mean history length
    "mind": ("mind", "sample_mind", 65_238, 50_000, 14.0),
    "amazon": ("amazon", "sample_amazon", 12_101, 22_363, 8.9),
    "hm": ("hm", "sample_hm", 105_542, 1_371_980, 23.0),
}
TINY = {"layers": 2, "d_model": 64, "heads": 2, "d_ff": 128, "epochs": 1, "lr": 0.004, "max_history": 10,
        "batch_size": 256, "micro_batch_size": 256, "seeds": [0], "valid_users": 1000}
STAGES: dict[str, tuple[list[str], dict]] = {  # stage -> (asset keys, run config of their ops)
    "ingest": (["items", "user_sequences", "impressions"], {}),
    "item_embeddings": (["item_embeddings"], {}),
    "pca_kmeans": (["code_table/pca_kmeans"], {}),
    "rqkmeans": (["code_table/rqkmeans"], {}),
    "opq": (["code_table/opq"], {}),
    "rqvae": (["code_table/rqvae"], {"code_table__rqvae": {"config": {"epochs": 10}}}),
    "serving_index": (["serving_index/pca_kmeans"], {}),
    "sasrec": (["recommender/sasrec"], {"recommender__sasrec": {"config": {
        "grid_d_model": [64], "grid_layers": [1], "grid_dropout": [0.2], "grid_lr": [0.003], "heads": 2,
        "epochs": 2, "batch_size": 256, "micro_batch_size": 256, "seeds": [0]}}}),
    "generative": (["recommender/generative/pca_kmeans"],
                   {"recommender__generative__pca_kmeans": {"config": TINY}}),
    "popularity": (["recommender/popularity"], {}),
}


def run_stage(stage: str, raw: Path, store: Path, partition: str, threads: int) -> dict:
    """In the child: materialize the stage's assets, report seconds and this process's peak RSS."""
    import warnings

    warnings.simplefilter("ignore")
    import dagster as dg

    from pipeline.definitions import defs
    from pipeline.resources import ComputeResource, StorageResource

    keys, config = STAGES[stage]
    if stage == "rqvae":  # 10 epochs, but at least 300 steps of 256 items: 50 steps leave a 1,200-item catalog's
        # codebooks collapsed, and the blocking checks rightly refuse that table (utilization, collisions)
        import polars as pl

        items = pl.scan_parquet(store / partition / "items.parquet").select(pl.len()).collect().item()
        config = {"code_table__rqvae": {"config": {"epochs": max(10.0, math.ceil(300 * 256 / items))}}}
    wanted = {dg.AssetKey.from_user_string(k) for k in keys}
    assets = [a for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition) and set(a.keys) & wanted]
    resources = {"storage": StorageResource(raw_root=str(raw), storage_root=str(store)),
                 "compute": ComputeResource(device="cpu", dtype="auto", torch_threads=threads)}
    started = time.perf_counter()
    result = dg.materialize(assets, partition_key=partition, resources=resources, run_config={"ops": config},
                            raise_on_error=False)
    seconds = time.perf_counter() - started
    # a failed stage says why: the first failed step's error (or the blocking check that failed)
    errors = [f"{e.step_key}: {e.step_failure_data.error.message.strip() if e.step_failure_data.error else ''}"
              for e in result.all_events if e.is_step_failure]
    errors += [f"check {e.event_specific_data.check_name} failed" for e in result.all_events
               if e.event_type_value == "ASSET_CHECK_EVALUATION" and not e.event_specific_data.passed]
    return {"stage": stage, "ok": result.success, "seconds": round(seconds, 2),
            "peak_rss_mb": peak_rss_mb(),
            "error": "; ".join(errors)[:600]}


def peak_rss_mb() -> float:
    """This process's peak RSS. Linux keeps `ru_maxrss` across fork and exec, so a child started by a parent of
    1 GB reports at least 1 GB whatever it used; VmHWM belongs to the address space exec made."""
    try:
        with open("/proc/self/status") as fh:
            hwm = next(line for line in fh if line.startswith("VmHWM:"))
        return round(int(hwm.split()[1]) / 1024, 1)  # kB
    except (OSError, StopIteration):
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def fit_exponent(sizes: list[float], seconds: list[float]) -> float | None:
    """Least-squares slope of log(seconds) on log(size)."""
    pts = [(math.log(s), math.log(t)) for s, t in zip(sizes, seconds) if t > 0]
    if len(pts) < 2:
        return None
    mx, my = sum(p[0] for p in pts) / len(pts), sum(p[1] for p in pts) / len(pts)
    var = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / var if var else None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", choices=sorted(REAL), default="mind")
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.3, 1.0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--stages", nargs="+", default=list(STAGES), choices=list(STAGES))
    ap.add_argument("--limit", nargs="+", default=[], metavar="STAGE=F")
    ap.add_argument("--cache", default=str(ROOT / "data" / "scale_raw"))
    ap.add_argument("--out", default=None)
    ap.add_argument("--child", nargs=4, metavar=("STAGE", "RAW", "STORE", "PARTITION"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        stage, raw, store, partition = args.child
        print("RESULT " + json.dumps(run_stage(stage, Path(raw), Path(store), partition, args.threads)))
        return

    from ops.sample import SampleSize, generate

    limits = {stage: float(f) for stage, f in (item.split("=", 1) for item in args.limit)}
    unknown = set(limits) - set(STAGES)
    if unknown:
        ap.error(f"--limit names unknown stages {sorted(unknown)}")
    source, partition, n_items, n_users, mean_length = REAL[args.dataset]
    print(f"bench/scale.py: {args.dataset} at {args.fractions} of {n_items} items / {n_users} users, "
          f"{args.threads} threads, stages {args.stages}", flush=True)
    rows = []
    for fraction in args.fractions:
        size = SampleSize(max(200, int(n_items * fraction)), max(200, int(n_users * fraction)), mean_length)
        raw = Path(args.cache) / f"{args.dataset}-{size.n_items}-{size.n_users}"
        if not (raw / partition).is_dir():
            began = time.perf_counter()
            generate(source, raw / f".{partition}.tmp", size, seed=0)
            (raw / f".{partition}.tmp").rename(raw / partition)
            print(f"  generated {size.n_items} items / {size.n_users} users in {time.perf_counter() - began:.0f} s",
                  flush=True)
        store = Path(tempfile.mkdtemp(prefix=f"semid-scale-{args.dataset}-"))
        for stage in args.stages:
            if fraction > limits.get(stage, math.inf):
                continue
            env = {**os.environ, "DAGSTER_HOME": str(store / ".dagster")}
            (store / ".dagster").mkdir(exist_ok=True)
            done = subprocess.run([sys.executable, __file__, "--threads", str(args.threads), "--child", stage,
                                   str(raw), str(store), partition], capture_output=True, text=True, env=env)
            line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if line is None:
                print(f"  {stage}: child failed (rc {done.returncode}): {done.stderr[-1500:]}", flush=True)
                row = {"stage": stage, "ok": False, "seconds": None, "peak_rss_mb": None}
            else:
                row = json.loads(line[7:])
            row.update(fraction=fraction, items=size.n_items, users=size.n_users)
            rows.append(row)
            print(f"  {fraction:>4} {stage:<16} {'ok' if row['ok'] else 'FAILED':<6} {row['seconds']} s, "
                  f"peak {row['peak_rss_mb']} MB" + (f": {row['error']}" if row.get("error") else ""), flush=True)
    print("\n| stage | " + " | ".join(f"{f:.0%}: s / peak MB" for f in args.fractions)
          + " | growth exponent | items/s at largest | marginal peak bytes/item |")
    print("|---|" + "---|" * (len(args.fractions) + 3))
    for stage in args.stages:
        mine = [r for r in rows if r["stage"] == stage and r["ok"]]
        cells = []
        for f in args.fractions:
            r = next((r for r in mine if r["fraction"] == f), None)
            skipped = f > limits.get(stage, math.inf)
            cells.append(f"{r['seconds']:.1f} / {r['peak_rss_mb']:.0f}" if r else "not run" if skipped else "failed")
        b = fit_exponent([r["items"] for r in mine], [r["seconds"] for r in mine])
        last, first = (mine[-1], mine[0]) if mine else (None, None)
        rate = f"{last['items'] / last['seconds']:.0f}" if last else "-"
        per_item = (f"{(last['peak_rss_mb'] - first['peak_rss_mb']) * 2**20 / (last['items'] - first['items']):.0f}"
                    if last and first and last["items"] > first["items"] else "-")
        print(f"| {stage} | " + " | ".join(cells) + f" | {b:.2f} | {rate} | {per_item} |" if b is not None else
              f"| {stage} | " + " | ".join(cells) + f" | - | {rate} | {per_item} |")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
