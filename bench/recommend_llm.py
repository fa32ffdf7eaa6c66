"""The generative recommender on the pretrained backbone (SmolLM2-135M + LoRA by default), trained longer than the
demo's smoke run, on a code table of a store that `make demo` filled: the asset's code path
(`GenerativeRecommender(backbone="pretrained")`, `train_early_stopping` with L_rip + L_align then L_rip), one seed,
test Recall / NDCG over the full catalog. Prints one JSON line (phases, training time and tokens/s, test metrics).

Usage: python bench/recommend_llm.py [--store data/store] [--dataset sample_mind] [--tokenizer lamia]
       [--steps 120] [--batch 16] [--lora-rank 32] [--lr 1e-3] [--history 10] [--valid-users 48] [--seed 0]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", default=str(ROOT / "data" / "store"))
    ap.add_argument("--dataset", default="sample_mind")
    ap.add_argument("--tokenizer", default="lamia")
    ap.add_argument("--model", default="SmolLM2-135M-Instruct")
    ap.add_argument("--steps", type=int, default=120, help="optimizer steps per phase")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lora-rank", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--history", type=int, default=10)
    ap.add_argument("--valid-users", type=int, default=48)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import polars as pl

    from ops import datasets
    from ops.embed import item_texts
    from ops.recommend.decoding import PrefixIndex
    from ops.recommend.generative import (
        GenerativeConfig,
        GenerativeRecommender,
        evaluate,
        examples,
        train_early_stopping,
    )
    from ops.recommend.tokens import SemanticVocab
    from storage.codes import CodeTableStore

    root = Path(args.store)
    spec = datasets.get(args.dataset)
    seqs = pl.read_parquet(root / args.dataset / "user_sequences.parquet")
    table = CodeTableStore(root, args.dataset, args.tokenizer).read()
    items = table.select("item_id").join(pl.read_parquet(root / args.dataset / "items.parquet"), on="item_id",
                                         how="left", maintain_order="left")
    vocab = SemanticVocab.from_code_table(table, f"code_table/{args.tokenizer} of {args.dataset}")
    cfg = GenerativeConfig(backbone="pretrained", model=args.model, lora_rank=args.lora_rank,
                           lora_alpha=2 * args.lora_rank, lr=args.lr, batch_size=args.batch,
                           micro_batch_size=args.batch, max_steps=args.steps, max_history=args.history,
                           valid_users=args.valid_users, seed=args.seed)
    model = GenerativeRecommender(cfg, vocab, item_texts(items, spec.attributes[: spec.content_attributes]))
    train_rows, valid_rows, test_rows = (examples(seqs, vocab, s, cfg.max_history) for s in ("train", "valid", "test"))
    index = PrefixIndex.build(vocab.item_codes)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-recommend-llm-") as ck:
        stopped = train_early_stopping(model, train_rows, valid_rows, index, ck, "beam", width=10)
    train_s = time.perf_counter() - started
    started = time.perf_counter()
    metrics = evaluate(model, test_rows, index, (5, 10, 20), "beam", 20)
    print(json.dumps({"dataset": args.dataset, "tokenizer": args.tokenizer, "settings": vars(args),
                      "describe": model.describe(), "phases": stopped.phases, "train_s": round(train_s),
                      "tokens_per_s": round(stopped.tokens / train_s, 1),
                      "test": {f"{m}@{k}": round(v, 4) for (m, k), v in metrics.items()},
                      "test_s": round(time.perf_counter() - started)}))


if __name__ == "__main__":
    main()
