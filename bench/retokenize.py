"""Re-tokenization benchmark: an incremental run (embed only new and changed items, code them with the frozen
tokenizers) against a full one (embed every item, refit every tokenizer), side by side in one process, after the
same edit of a MIND-format catalog: `--changed` of the items get new text, `--added` new items, one removed.

Real models: the offline all-MiniLM-L6-v2 for embeddings; `pca_kmeans` (faiss) and `rqvae` (a trained encoder).
Both runs go through Dagster (dg.materialize) on the same store, one asset at a time, so that each asset's wall
time is its own. Prints seconds per asset, the ratio full / incremental, and what happened to the IDs: unchanged
items keep theirs byte-identical in the incremental run; the refit says how many moved.

Usage: python bench/retokenize.py [--items 5000] [--changed 0.01] [--added 0.005] [--threads 2]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
PARTITION = "sample_mind"
TOKENIZERS = ("pca_kmeans", "rqvae")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=5000)
    ap.add_argument("--changed", type=float, default=0.01)
    ap.add_argument("--added", type=float, default=0.005)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import dagster as dg
    import polars as pl
    import torch

    torch.set_num_threads(args.threads)
    from assets import codes, embed, ingest
    from ops.sample import SampleSize, generate
    from pipeline.resources import ComputeResource, StorageResource
    from storage.codes import CodeTableStore

    tmp = Path(tempfile.mkdtemp(prefix="semid-bench-retokenize-"))
    raw = tmp / "raw" / PARTITION
    generate("mind", raw, SampleSize(n_items=args.items, n_users=max(200, args.items // 4), mean_length=8), seed=0)
    storage = StorageResource(raw_root=str(tmp / "raw"), storage_root=str(tmp / "store"))
    resources = {"storage": storage, "compute": ComputeResource(device="cpu", dtype="float32")}
    by_name = {a.key.to_user_string(): a for a in [*embed.ASSETS, *codes.ASSETS]}

    def materialize(key: str, config: dict | None = None) -> float:
        op = key.replace("/", "__")
        started = time.perf_counter()
        result = dg.materialize([by_name[key]], partition_key=PARTITION, resources=resources,
                                run_config={"ops": {op: {"config": config or {}}}}, raise_on_error=False)
        seconds = time.perf_counter() - started
        if not result.success:
            raise SystemExit(f"{key} failed")
        return seconds

    def ingest_now() -> None:
        assert dg.materialize([*ingest.ASSETS], partition_key=PARTITION, resources=resources).success

    ingest_now()
    first = {"item_embeddings": materialize("item_embeddings")}
    for t in TOKENIZERS:
        first[t] = materialize(f"code_table/{t}")

    # the edit: new text for a share of the items, a few new ones, one removed
    lines = (raw / "news.tsv").read_text().splitlines()
    n_changed, n_added = int(len(lines) * args.changed), int(len(lines) * args.added)
    stride = max(1, len(lines) // max(1, n_changed))  # every stride-th item, n_changed of them
    edited = []
    for i, line in enumerate(lines[:-1]):  # the last one is removed
        fields = line.split("\t")
        if i % stride == 0 and i // stride < n_changed:
            fields[3] = f"{fields[3]} revised"
        edited.append("\t".join(fields))
    edited += [f"N{900000 + j}\tsports\tsports_nfl\tA new story {j}\tWith its abstract\thttp://x/{j}\t[]\t[]"
               for j in range(n_added)]
    (raw / "news.tsv").write_text("\n".join(edited) + "\n")
    ingest_now()
    before = {t: CodeTableStore(storage.storage_root, PARTITION, t).read() for t in TOKENIZERS}

    incremental = {"item_embeddings": materialize("item_embeddings")}
    for t in TOKENIZERS:
        incremental[t] = materialize(f"code_table/{t}")
    after = {t: CodeTableStore(storage.storage_root, PARTITION, t).read() for t in TOKENIZERS}
    full = {"item_embeddings": materialize("item_embeddings", {"reuse": False})}
    for t in TOKENIZERS:
        full[t] = materialize(f"code_table/{t}", {"mode": "refit", "accept_moved_ids": True})
    refit = {t: CodeTableStore(storage.storage_root, PARTITION, t) for t in TOKENIZERS}

    print(f"catalog {args.items} items; edit: {n_changed} changed, {n_added} added, 1 removed; "
          f"torch threads {torch.get_num_threads()}")
    print("\n| asset | first fit (s) | incremental (s) | full: re-embed + refit (s) | full / incremental |")
    print("|---|---|---|---|---|")
    for key in first:
        print(f"| {key} | {first[key]:.1f} | {incremental[key]:.1f} | {full[key]:.1f} | "
              f"{full[key] / incremental[key]:.1f}x |")
    total_i, total_f = sum(incremental.values()), sum(full.values())
    print(f"| total | {sum(first.values()):.1f} | {total_i:.1f} | {total_f:.1f} | {total_f / total_i:.1f}x |")
    print("\n| tokenizer | incremental: unchanged items with the same ID | refit: unchanged items whose ID moved |")
    print("|---|---|---|")
    for t in TOKENIZERS:
        edited_ids = set(after[t]["item_id"]) - set(before[t]["item_id"])
        changed = before[t].join(after[t], on="item_id", suffix="_new").filter(
            pl.col("content_hash") != pl.col("content_hash_new"))["item_id"].to_list()
        keep = before[t].filter(~pl.col("item_id").is_in(sorted(set(changed) | edited_ids)))
        same = keep.join(after[t], on=["item_id", "semantic_id", "codes", "dedup"], how="semi").height
        moves = refit[t].read_migration(refit[t].newest())
        moved = int(moves.filter(pl.col("change") == "unchanged")["moved"].sum())
        unchanged = moves.filter(pl.col("change") == "unchanged").height
        print(f"| {t} | {same} / {keep.height} | {moved} / {unchanged} ({moved / max(1, unchanged):.0%}) |")


if __name__ == "__main__":
    main()
