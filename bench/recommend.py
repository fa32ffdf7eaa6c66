"""Constrained decoding benchmark: our batched beam search over the array prefix index against the per-user
dictionary-trie beam search that public TIGER re-implementations use (a `prefix_allowed_tokens_fn` over a dict
trie, one user at a time), with the same trained model, catalog, width and K, side by side in one run; plus exact
scoring of every item against beam search (agreement of the top-K lists, time).

The catalog is the bundled MIND sample with `random` codes (L = 4, K = 256, + dedup) and a generative recommender
trained for a few epochs on it, so the decoders see a real, peaked model.

"ours" attends to one copy of each user's context per layer (the scratch body's shared-context step); the row
"ours, HF forward on a context cache copied per beam" is the same search on Hugging Face's forward with the
key / value cache carried per beam (the step before it).

Usage: python bench/recommend.py [--size demo | --items 50000] [--users 150] [--k 10] [--width 10] [--epochs 2]
       [--exact-users N]  (exact scoring on the first N test users only: its cost grows with the catalog)
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ops.codetable import build_code_table  # noqa: E402
from ops.ingest.mind import load_mind  # noqa: E402
from ops.recommend.decoding import PrefixIndex, exact_scores  # noqa: E402
from ops.recommend.generative import GenerativeConfig, GenerativeRecommender, examples, recommend, train  # noqa: E402
from ops.recommend.tokens import SemanticVocab  # noqa: E402
from ops.sample import SampleSize, generate  # noqa: E402
from ops.sequences import SplitConfig, build_user_sequences  # noqa: E402
from ops.tokenizers.random import random_codes  # noqa: E402


def dict_trie_beam_search(model: GenerativeRecommender, contexts: list[list[int]], codes: np.ndarray, k: int,
                          width: int) -> np.ndarray:
    """The peers' way: a Python dict from each prefix to its allowed next codes, walked per beam, one user at a
    time (the model still scores the user's beams in one batch)."""
    trie: dict[tuple[int, ...], set[int]] = {}
    item_of = {}
    for item, path in enumerate(codes.tolist()):
        for level in range(len(path)):
            trie.setdefault(tuple(path[:level]), set()).add(path[level])
        item_of[tuple(path)] = item
    out = np.full((len(contexts), k), -1, dtype=np.int64)
    for u, context in enumerate(contexts):
        model.prepare([context])
        beams: list[tuple[tuple[int, ...], float]] = [((), 0.0)]
        for level in range(codes.shape[1]):
            prefixes = torch.tensor([list(p) for p, _ in beams], dtype=torch.long).reshape(len(beams), level)
            logp = model.step(torch.zeros(len(beams), dtype=torch.long), prefixes, level)
            candidates = [(p + (c,), s + float(logp[b, c])) for b, (p, s) in enumerate(beams)
                          for c in sorted(trie[p])]
            beams = sorted(candidates, key=lambda t: -t[1])[:width]
        out[u, : min(k, len(beams))] = [item_of[p] for p, _ in beams[:k]]
    return out


def hf_generate_beam_search(model: GenerativeRecommender, contexts: list[list[int]], codes: np.ndarray, k: int,
                            width: int) -> np.ndarray:
    """The peers' way as most public code has it: Hugging Face `generate` with beam search, one user at a time, and
    a logits processor that walks a Python dict from each beam's generated prefix to its allowed next tokens (what
    `prefix_allowed_tokens_fn` does; here it also renormalises over the level's own codes, so the scores are
    exactly the model's level distributions and the lists comparable with ours)."""
    from transformers import LogitsProcessor, LogitsProcessorList

    vocab = model.vocab
    tokens = codes + np.asarray(vocab.offsets)[None, :]
    trie: dict[tuple[int, ...], list[int]] = {}
    for path in tokens.tolist():
        for level in range(len(path)):
            allowed = trie.setdefault(tuple(path[:level]), [])
            if path[level] not in allowed:
                allowed.append(path[level])
    item_of = {tuple(p): i for i, p in enumerate(tokens.tolist())}
    lm = model.hf_model()

    class TrieConstraint(LogitsProcessor):
        def __init__(self, context_length: int):
            self.n = context_length

        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            level = input_ids.shape[1] - self.n
            lo = vocab.offsets[level]
            hi = lo + vocab.sizes[level]
            level_logp = scores[:, lo:hi] - torch.logsumexp(scores[:, lo:hi], dim=1, keepdim=True)
            out = torch.full_like(scores, float("-inf"))
            for row, generated in enumerate(input_ids[:, self.n:].tolist()):
                allowed = torch.as_tensor(trie[tuple(generated)])
                out[row, allowed] = level_logp[row, allowed - lo]
            return out

    out = np.full((len(contexts), k), -1, dtype=np.int64)
    for u, context in enumerate(contexts):
        ids = torch.tensor([context])
        got = lm.generate(ids, attention_mask=torch.ones_like(ids), num_beams=width, num_return_sequences=k,
                          max_new_tokens=codes.shape[1], min_new_tokens=codes.shape[1], do_sample=False,
                          early_stopping=True, length_penalty=1.0, pad_token_id=0, eos_token_id=None,
                          logits_processor=LogitsProcessorList([TrieConstraint(len(context))]))
        out[u] = [item_of[tuple(row)] for row in got[:, len(context):].tolist()]
    return out


CARRIED = "ours, HF forward on a context cache copied per beam"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="demo")
    ap.add_argument("--users", type=int, default=150)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--width", type=int, default=10)
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--items", type=int, default=0, help="a catalog of this many items (users: 3/4 of it)")
    ap.add_argument("--exact-users", type=int, default=0, help="exact scoring on this many users (0: all)")
    args = ap.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    with tempfile.TemporaryDirectory(prefix="bench-recommend-") as tmp:
        size = SampleSize(args.items, args.items * 3 // 4, 14) if args.items else args.size
        raw = generate("mind", Path(tmp) / "m", size, seed=0)
        res = load_mind(raw, "m")
    seqs, _ = build_user_sequences(res.interactions.lazy(), SplitConfig())
    ids = res.items["item_id"].to_list()
    frame, _ = build_code_table(ids, random_codes(ids, 4, 256, seed=0), 256)
    vocab = SemanticVocab.from_code_table(frame, "code_table/random")
    train_rows, test_rows = examples(seqs, vocab, "train"), examples(seqs, vocab, "test")
    cfg = GenerativeConfig(layers=2, d_model=64, heads=2, d_ff=128, epochs=args.epochs, batch_size=64,
                           micro_batch_size=64, checkpoint_every=0)
    model = GenerativeRecommender(cfg, vocab)
    started = time.perf_counter()
    result = train(model, train_rows)
    train_s = time.perf_counter() - started
    tokens = (sum(len(c) + vocab.positions for c in train_rows.contexts) * result.steps * cfg.batch_size
              / len(train_rows))
    n = min(args.users, len(test_rows))
    test_rows.users, test_rows.contexts = test_rows.users[:n], test_rows.contexts[:n]
    test_rows.targets, test_rows.target_items = test_rows.targets[:n], test_rows.target_items[:n]
    index = PrefixIndex.build(vocab.item_codes)
    model.eval()

    timings, lists = {}, {}
    started = time.perf_counter()
    lists["ours"] = recommend(model, test_rows, index, k=args.k, width=args.width)
    timings["ours"] = time.perf_counter() - started
    model.shared_context = False  # the step before the shared context: HF's forward on a cache copied per beam
    started = time.perf_counter()
    lists[CARRIED] = recommend(model, test_rows, index, k=args.k, width=args.width)
    timings[CARRIED] = time.perf_counter() - started
    model.shared_context = True
    started = time.perf_counter()
    with torch.inference_mode():
        lists["dict trie"] = dict_trie_beam_search(model, test_rows.contexts, vocab.item_codes, args.k, args.width)
    timings["dict trie"] = time.perf_counter() - started
    started = time.perf_counter()
    with torch.inference_mode():
        lists["HF generate + dict trie"] = hf_generate_beam_search(model, test_rows.contexts, vocab.item_codes,
                                                                   args.k, args.width)
    timings["HF generate + dict trie"] = time.perf_counter() - started
    started = time.perf_counter()
    scores = []
    n_exact = min(n, args.exact_users or n)
    with torch.inference_mode():
        for a in range(0, n_exact, 16):
            model.prepare(test_rows.contexts[a: min(n_exact, a + 16)])
            scores.append(exact_scores(model.step, index, torch.arange(len(model._contexts))))
    exact_top = torch.cat(scores).topk(args.k, dim=1).indices.numpy()
    exact_seconds = time.perf_counter() - started

    same = {name: float((lists["ours"] == got).all(axis=1).mean()) for name, got in lists.items() if name != "ours"}
    overlap = np.mean([len(set(a) & set(b)) / args.k for a, b in zip(lists["ours"][:n_exact], exact_top)])
    print(f"{len(ids):,} items (L = 4 random codes, K = 256, + dedup), {n} test users, k = {args.k}, beam width "
          f"{args.width}; model {cfg.layers} x {cfg.d_model}, trained {result.steps} steps in {train_s:.1f} s "
          f"({tokens / train_s:,.0f} tokens/s, {model.device_}, {model.autocast_dtype or 'float32'}); "
          f"{torch.get_num_threads()} threads\n")
    peer = "HF generate + dict trie"
    print(f"| decoder | seconds | users/s | vs {peer} | vs dict trie (our model step) |")
    print("|---|---|---|---|---|")
    for name, s in timings.items():
        print(f"| {name} | {s:.2f} | {n / s:.1f} | {timings[peer] / s:.2f}x | {timings['dict trie'] / s:.2f}x |")
    exact_rate, peer_rate = n_exact / exact_seconds, n / timings[peer]
    print(f"| exact scoring ({n_exact} users; {sum(len(p) for p in index.prefixes):,} prefixes each) | "
          f"{exact_seconds:.2f} | {exact_rate:.2f} | {exact_rate / peer_rate:.3f}x | "
          f"{exact_rate / (n / timings['dict trie']):.3f}x |")
    print(f"\nidentical top-{args.k} lists with ours: " + ", ".join(f"{k}: {v:.1%}" for k, v in same.items())
          + f" of users; beam top-{args.k} ∩ exact top-{args.k}: {overlap:.1%}")


if __name__ == "__main__":
    main()
