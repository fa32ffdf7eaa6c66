"""Codes are a pure function of data, config and seed on one machine at one thread count: the LAMIA palette is
trained in two separate processes, one of them with its memory laid out differently and a CPU hog beside it, and
the weights, palettes, codes and adapter files must be the same bits."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ops.sample import generate

ROOT = Path(__file__).resolve().parents[1]
WORKER = r'''
import hashlib, json, sys
from pathlib import Path
import numpy as np
args = json.loads(sys.argv[1])
ballast = np.random.default_rng().random(args["ballast"]) if args["ballast"] else None  # moves later allocations
import torch
torch.set_num_threads(2)  # > 1 thread: where atomic float adds would race
from ops.ingest.mind import load_mind
from ops.palette import PaletteConfig, PaletteModel, extract, prepare_data
from ops.palette.train import train
from ops.tokenizers import get
items = load_mind(Path(args["raw"]), "m").items
tasks = ["title", "abstract", "category", "subcategory"]
cfg = PaletteConfig(model="all-MiniLM-L6-v2", lora_rank=8, lora_alpha=8, lr=1e-3, batch_size=32, micro_batch_size=32,
                    max_steps=2, max_content_tokens=64, max_answer_tokens=16, answer_vocabulary="answers",
                    lap_init="summary", tasks=tasks, content_attributes=2, device="cpu", checkpoint_every=0)
model = PaletteModel(cfg, tasks)
data = prepare_data(items, tasks, 2, model.tokenizer, cfg)
result = train(model, data, args["checkpoints"])
palette = extract(model, data)
entry = get("lamia")
codes = entry.tokenizer(entry.config_type(k=16)).fit(palette, data.item_ids)
digest = lambda b: hashlib.sha256(b).hexdigest()
print(json.dumps({
    "weights": digest(b"".join(p.detach().numpy().tobytes() for p in model.trainable_parameters())),
    "palette": digest(palette.tobytes()), "codes": digest(codes.tobytes()),
    "adapter_config": digest((Path(result.checkpoint) / "adapter" / "adapter_config.json").read_bytes()),
    "adapter": digest((Path(result.checkpoint) / "adapter" / "adapter_model.safetensors").read_bytes()),
}))
'''


def _run(raw: Path, checkpoints: Path, ballast: int, hash_seed: str) -> dict[str, str]:
    env = {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONHASHSEED": hash_seed,
           "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", WORKER, json.dumps({"raw": str(raw), "checkpoints": str(checkpoints),
                                                                    "ballast": ballast})],
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_palette_codes_are_the_same_bits_in_two_processes_under_different_layouts_and_load(tmp_path):
    raw = generate("mind", tmp_path / "raw" / "m", "tiny", seed=0)
    plain = _run(raw, tmp_path / "a", ballast=0, hash_seed="0")
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # another process wants the cores
    try:
        loaded = _run(raw, tmp_path / "b", ballast=1_234_567, hash_seed="1")  # other allocations, other set order
    finally:
        hog.kill()
    assert loaded == plain
