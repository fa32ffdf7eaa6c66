"""Embedding benchmark: ours against a naive loop, sentence-transformers and the bare bucketed forward, same run.

Same model (default: the offline all-MiniLM-L6-v2), same texts (the bundled MIND demo sample, `title: …
abstract: …`), same thread count, one process:
  naive_max_length   fixed item order, batches of 64 padded to max_length (what most research code does)
  naive_longest      fixed item order, batches of 64 padded to the longest item in the batch
  st_encode          sentence-transformers `encode(batch_size=64)` (sorts by character length)
  bucketed_forward   our token-budget batches through the bare model forward, nothing else (the floor)
  ours               ops.embed.embed_items: tokenize, plan, forward, pool, write resumable shards

Every contender's vectors are compared with the naive loop's (mean pooling; sentence-transformers' are
L2-normalised, so they are compared after normalising ours).

Usage: python bench/embed.py [--items 2000] [--model PATH] [--token-budget N] [--threads 2]
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


def sample_texts(n: int) -> tuple[list[str], list[str]]:
    from ops.embed import item_texts
    from ops.ingest.mind import load_mind
    from ops.sample import generate

    raw = Path(tempfile.gettempdir()) / "semid-bench-embed" / "sample_mind"
    if not (raw / "news.tsv").is_file():
        generate("mind", raw, "demo", seed=0)
    items = load_mind(raw, "bench").items.head(n)
    return items["item_id"].to_list(), item_texts(items, ["title", "abstract"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--model", default="all-MiniLM-L6-v2")
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=64, help="batch size of the naive loops and of st_encode")
    ap.add_argument("--token-budget", type=int, default=0, help="0 = ours' default for the device")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip", nargs="*", default=[], help="contenders to skip (e.g. naive_max_length)")
    args = ap.parse_args()

    import numpy as np
    import torch

    from ops.embed import (
        EmbedConfig,
        collate,
        embed_items,
        forward_pooled,
        load_model,
        plan_batches,
        token_budget,
        tokenize,
    )

    torch.set_num_threads(args.threads)
    ids, texts = sample_texts(args.items)
    cfg = EmbedConfig(model=args.model, max_length=args.max_length, token_budget=args.token_budget, device="auto")
    lm = load_model(cfg)
    seqs = tokenize(lm, texts, args.max_length)
    n_tokens = sum(len(s) for s in seqs)
    print(f"model {lm.path} ({lm.describe()['parameters']:,} parameters, {lm.device}, {lm.dtype}), "
          f"{len(texts)} texts, {n_tokens:,} tokens ({n_tokens / len(texts):.1f}/item), threads {args.threads}")

    def naive(pad_to_max: bool) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for a in range(0, len(texts), args.batch_size):
                enc = lm.tokenizer(texts[a:a + args.batch_size], truncation=True, max_length=args.max_length,
                                   padding="max_length" if pad_to_max else "longest", return_tensors="pt")
                h = lm.model(**enc).last_hidden_state
                m = enc["attention_mask"].unsqueeze(-1).float()
                out.append(((h * m).sum(1) / m.sum(1)).numpy())
        return np.concatenate(out)

    def st_encode() -> np.ndarray:
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(lm.path, device=str(lm.device))
        st.max_seq_length = args.max_length
        return st.encode(texts, batch_size=args.batch_size, convert_to_numpy=True)

    def bucketed_forward() -> np.ndarray:
        out = np.empty((len(seqs), lm.dim), dtype=np.float32)
        with torch.inference_mode():
            for batch in plan_batches([len(s) for s in seqs], token_budget(cfg, lm.device), cfg.max_batch_size):
                ids_, mask = collate([seqs[i] for i in batch], lm.pad_id)
                out[batch] = forward_pooled(lm, ids_, mask, "right").numpy()
        return out

    def ours() -> np.ndarray:
        with tempfile.TemporaryDirectory() as shards:
            return embed_items(lm, ids, texts, cfg, Path(shards)).vectors

    contenders = {"naive_max_length": lambda: naive(True), "naive_longest": lambda: naive(False),
                  "st_encode": st_encode, "bucketed_forward": bucketed_forward, "ours": ours}
    with torch.inference_mode():  # warm up kernels and allocator once, outside every timing
        lm.model(**lm.tokenizer(texts[:8], padding=True, return_tensors="pt"))
    results, vectors = {}, {}
    for name, fn in contenders.items():
        if name in args.skip:
            continue
        t = time.perf_counter()
        vectors[name] = fn()
        results[name] = time.perf_counter() - t
        print(f"  {name}: {results[name]:.2f} s", flush=True)

    reference = vectors.get("naive_longest", vectors.get("naive_max_length"))
    unit = lambda v: v / np.linalg.norm(v, axis=1, keepdims=True)  # noqa: E731
    print("\n| contender | s | items/s | tokens/s | ours faster by | max abs diff vs naive |")
    print("|---|---|---|---|---|---|")
    for name, sec in results.items():
        v = vectors[name]
        if reference is None:
            diff = "-"
        elif name == "st_encode":
            diff = f"{np.abs(v - unit(reference)).max():.1e} (normalised)"
        else:
            diff = f"{np.abs(v - reference).max():.1e}"
        ratio = f"{sec / results['ours']:.2f}x" if "ours" in results else "-"
        print(f"| {name} | {sec:.2f} | {len(texts) / sec:.1f} | {n_tokens / sec:,.0f} | {ratio} | {diff} |")
    if "ours" in results and "bucketed_forward" in results:
        print(f"\noverhead of ours over the bare bucketed forward: "
              f"{100 * (results['ours'] / results['bucketed_forward'] - 1):+.1f} %")


if __name__ == "__main__":
    main()
