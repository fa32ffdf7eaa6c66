"""LAMIA palette throughput: training and extraction items/s, with their baselines side by side in one process.

  train    our split passes ([content; LaP] once per item, then [LdP; task; answer] per task) against the paper's
           single-row layout ([content; LaP; LdP; task; answer] per (item, task), both passes), same batches
  extract  palette extraction (pass 1, length-sorted batches) against the embedding stage's pooled forward of
           the same backbone over the same content texts (ops.embed.embed_texts)

Reports device, dtype, parameter counts and peak memory. Runs on CPU here; on a GPU host the same command uses
CUDA + bf16.
Usage: python bench/palette.py [--model all-MiniLM-L6-v2 | PATH | opt-small | opt-350m-random] [--items 256]
                               [--steps 4] [--batch 32] [--config configs/lamia_mind_opt350m_gpu.yaml]
                               [--layouts split full]
  opt-small        a random-weight OPT-shaped model (hidden 256, 4 layers) written to a temp dir: the decoder path
  opt-350m-random  OPT-350M's architecture at full size with random weights (331 M parameters, 24 layers of 1024,
                   512-wide embeddings, vocabulary 50,272): the GPU recipe's model cost, without its weights
  --config         take the palette settings (L, LoRA rank / alpha, token limits, softmax, LaP init, dtype) from a run
                   config file such as the GPU recipe; the default is LoRA r 32, 64 content / 16 answer tokens
  --layouts split  skip the single-row baseline (it costs ~3x more; at full OPT-350M size minutes per step)
"""
from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_SETTINGS = {"lora_rank": 32, "lora_alpha": 32, "max_content_tokens": 64, "max_answer_tokens": 16}
FROM_CONFIG = ("palette_size", "lora_rank", "lora_alpha", "lora_dropout", "target_modules", "max_content_tokens",
               "max_answer_tokens", "answer_vocabulary", "lap_init", "content_attention", "gamma", "alpha_intra",
               "alpha_inter", "contrastive_reduction", "dtype")


def settings(config_file: str | None) -> dict[str, object]:
    if not config_file:
        return dict(DEFAULT_SETTINGS)
    import yaml

    run_config = yaml.safe_load(Path(config_file).read_text())
    given = run_config["ops"]["palette_model"]["config"]
    return {k: given[k] for k in FROM_CONFIG if k in given}


def peak_memory_gb(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


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
    ap.add_argument("--config", default=None, help="run config file to take the palette settings from")
    ap.add_argument("--layouts", nargs="+", choices=("split", "full"), default=["split", "full"])
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-palette-"))
    model_path = args.model
    if model_path == "opt-small":
        model_path = str(save_random_model("opt", tmp / "opt", hidden=256, layers=4, heads=4, causal_lm=True))
    elif model_path == "opt-350m-random":
        model_path = str(save_random_model("opt-350m", tmp / "opt-350m", hidden=1024, layers=24, heads=16,
                                           max_positions=2048, vocab_size=50272, causal_lm=True))
    chosen = settings(args.config)
    items = load_mind(generate("mind", tmp / "raw", "demo", seed=0), "bench").items.head(args.items)
    tasks = ["title", "abstract", "category", "subcategory"]
    results, memory = {}, {}
    for layout in args.layouts:
        cfg = PaletteConfig(model=model_path, layout=layout, batch_size=args.batch, micro_batch_size=args.batch,
                            device=args.device, seed=0, **chosen)
        model = PaletteModel(cfg, tasks)
        data = prepare_data(items, tasks, 2, model.tokenizer, cfg)
        model.restrict_vocabulary(data)
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
        memory[layout] = peak_memory_gb(model.device_)
    described = model.describe()
    mem = "peak RSS" if model.device_.type == "cpu" else "peak CUDA memory"
    print(f"model {described['model']} ({described['architecture']}, decoder_only={described['decoder_only']}, "
          f"palette width {described['dim']}), {described['parameters']:,} parameters, "
          f"{described['trainable_parameters']:,} trainable (LoRA r={cfg.lora_rank} on "
          f"{', '.join(described['lora_target_modules'])} + palette and task tokens); device {described['device']}, "
          f"dtype {described['dtype']}, {torch.get_num_threads()} threads; {len(data)} MIND-sample items, 4 tasks "
          f"each, batch {args.batch}, {args.steps} timed steps; L {cfg.palette_size}, content <= "
          f"{cfg.max_content_tokens} / answers <= {cfg.max_answer_tokens} tokens, softmax over "
          f"{'the whole vocabulary' if cfg.answer_vocabulary == 'full' else 'answer tokens'}; "
          f"{mem} after training: " + ", ".join(f"{k} {v:.2f} GB" for k, v in memory.items()))
    print("\n| stage | ours items/s | baseline | baseline items/s | ours faster by |")
    print("|---|---|---|---|---|")
    if "full" in results:
        print(f"| train (L_gen + intra + inter, forward + backward) | {results['split']:.2f} | full single-row "
              f"layout | {results['full']:.2f} | {results['split'] / results['full']:.2f}x |")
    else:
        print(f"| train (L_gen + intra + inter, forward + backward) | {results['split']:.2f} | (not run) | - | - |")
    model.eval()
    extract(model, data)  # warm-up
    started = time.perf_counter()
    extract(model, data)
    ours = len(data) / (time.perf_counter() - started)
    del model
    # the same dtype as the palette (a config's bfloat16 autocast runs the pooled forward in bf16 too)
    embed_cfg = EmbedConfig(model=model_path, device=args.device, max_length=cfg.max_content_tokens, dtype=cfg.dtype)
    lm = load_model(embed_cfg)
    texts = item_texts(items, tasks[:2])
    embed_texts(lm, texts[:32], embed_cfg)  # warm-up
    started = time.perf_counter()
    embed_texts(lm, texts, embed_cfg)
    base = len(texts) / (time.perf_counter() - started)
    print(f"| extract (pass 1, inference) | {ours:.1f} | embedding stage, pooled forward | {base:.1f} "
          f"| {ours / base:.2f}x |")


if __name__ == "__main__":
    main()
