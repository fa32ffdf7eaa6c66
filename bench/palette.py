"""LAMIA palette throughput: training and extraction items/s, with their baselines side by side in one process.

  train    our split passes ([content; LaP] once per item, then [LdP; task; answer] per task) against the paper's
           single-row layout ([content; LaP; LdP; task; answer] per (item, task), both passes), same batches
  extract  palette extraction (pass 1, length-sorted batches) against the embedding stage's pooled forward of
           the same backbone over the same content texts (ops.embed.embed_texts)

Reports device, dtype, parameter counts. Runs on CPU here; on a GPU host the same command uses CUDA + bf16.
Usage: python bench/palette.py [--model all-MiniLM-L6-v2 | PATH | opt-small] [--items 256] [--steps 4]
  opt-small = a random-weight OPT-shaped model (hidden 256, 4 layers) written to a temp dir, for the decoder path.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    import torch

    from ops.embed import EmbedConfig, embed_texts, item_texts, load_model
    from ops.ingest.mind import load_mind
    from ops.palette import PaletteConfig, PaletteModel, extract, prepare_data
    from ops.palette.train import loss_terms
    from ops.sample import generate
    from ops.tiny_models import save_random_model

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="all-MiniLM-L6-v2")
    ap.add_argument("--items", type=int, default=256)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-palette-"))
    model_path = args.model
    if model_path == "opt-small":
        model_path = str(save_random_model("opt", tmp / "opt", hidden=256, layers=4, heads=4, causal_lm=True))
    items = load_mind(generate("mind", tmp / "raw", "demo", seed=0), "bench").items.head(args.items)
    tasks = ["title", "abstract", "category", "subcategory"]
    results = {}
    for layout in ("split", "full"):
        cfg = PaletteConfig(model=model_path, layout=layout, lora_rank=32, lora_alpha=32, batch_size=args.batch,
                            micro_batch_size=args.batch, max_content_tokens=64, max_answer_tokens=16,
                            device=args.device, seed=0)
        model = PaletteModel(cfg, tasks)
        data = prepare_data(items, tasks, 2, model.tokenizer, cfg)
        opt = torch.optim.Adam(model.trainable_parameters(), lr=1e-4)
        model.train()
        loss_terms(model, data, list(range(args.batch)))[0].backward()  # warm-up step, not timed
        opt.zero_grad()
        started = time.perf_counter()
        for s in range(args.steps):
            idx = [(s * args.batch + i) % len(data) for i in range(args.batch)]
            loss_terms(model, data, idx)[0].backward()
            opt.step()
            opt.zero_grad()
        results[layout] = args.steps * args.batch / (time.perf_counter() - started)
    described = model.describe()
    print(f"model {described['model']} ({described['architecture']}, decoder_only={described['decoder_only']}), "
          f"{described['parameters']:,} parameters, {described['trainable_parameters']:,} trainable "
          f"(LoRA r=32 on {', '.join(described['lora_target_modules'])} + palette and task tokens); "
          f"device {described['device']}, dtype {described['dtype']}, {torch.get_num_threads()} threads; "
          f"{len(data)} MIND-sample items, 4 tasks each, batch {args.batch}, {args.steps} timed steps")
    print("\n| stage | ours items/s | baseline | baseline items/s | ours faster by |")
    print("|---|---|---|---|---|")
    print(f"| train (L_gen + intra + inter, forward + backward) | {results['split']:.1f} | full single-row layout "
          f"| {results['full']:.1f} | {results['split'] / results['full']:.2f}x |")
    model.eval()
    extract(model, data)  # warm-up
    started = time.perf_counter()
    extract(model, data)
    ours = len(data) / (time.perf_counter() - started)
    lm = load_model(EmbedConfig(model=model_path, device=args.device, max_length=64))
    texts = item_texts(items, tasks[:2])
    embed_texts(lm, texts[:32], EmbedConfig(model=model_path, device=args.device, max_length=64))  # warm-up
    started = time.perf_counter()
    embed_texts(lm, texts, EmbedConfig(model=model_path, device=args.device, max_length=64))
    base = len(texts) / (time.perf_counter() - started)
    print(f"| extract (pass 1, inference) | {ours:.1f} | embedding stage, pooled forward | {base:.1f} "
          f"| {ours / base:.2f}x |")


if __name__ == "__main__":
    main()
