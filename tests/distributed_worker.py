"""One process of the data-parallel palette run of tests/test_distributed.py (importable: torch's spawn start
method re-imports the function it runs)."""
import json
import os
from pathlib import Path

import torch


def train_palette(rank: int, world_size: int, backbone: str, raw: str, out: str, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from ops.distributed import world
    from ops.ingest.mind import load_mind
    from ops.palette import PaletteConfig, PaletteModel, prepare_data
    from ops.palette.train import train

    w = world()  # joins the gloo group from the environment, as under torchrun
    assert (w.rank, w.size) == (rank, world_size)
    items = load_mind(Path(raw), "m").items
    tasks = ["title", "abstract", "category", "subcategory"]
    cfg = PaletteConfig(model=backbone, lora_rank=8, lora_alpha=16, max_content_tokens=32, max_answer_tokens=8,
                        device="cpu", dtype="float32", lr=1e-2, batch_size=16, micro_batch_size=4, max_steps=4,
                        checkpoint_every=2)
    model = PaletteModel(cfg, tasks)
    data = prepare_data(items, tasks, 2, model.tokenizer, cfg)
    result = train(model, data, Path(out) / "checkpoints")
    weights = torch.cat([p.detach().reshape(-1) for p in model.trainable_parameters()])
    Path(out, f"rank{rank}.json").write_text(json.dumps({
        "losses": [row["loss"] for row in result.history], "weights": weights.tolist()}))
    import torch.distributed as dist

    if dist.is_initialized():  # one process never joins a group
        dist.destroy_process_group()
