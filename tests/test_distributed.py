"""Data-parallel training in the shared loop (ops.distributed), on CPU with two gloo processes: the palette's loss
curve and trained weights equal one process's at the same global batch (within float tolerance: the gradients are
summed in another order), and only rank 0 writes checkpoints."""
from __future__ import annotations

import json
import socket
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch.multiprocessing as mp

from ops.sample import generate
from ops.tiny_models import save_random_model
from tests.distributed_worker import train_palette


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_train_the_palette_as_one_does(tmp_path):
    backbone = str(save_random_model("opt", tmp_path / "opt", hidden=32, layers=2, heads=2, causal_lm=True,
                                     init_std=0.2))
    raw = str(generate("mind", tmp_path / "raw" / "m", "tiny", seed=0))
    for size in (1, 2):
        mp.start_processes(train_palette, args=(size, backbone, raw, str(tmp_path / f"w{size}"), _free_port()),
                           nprocs=size, start_method="spawn")
    one = json.loads((tmp_path / "w1" / "rank0.json").read_text())
    two = [json.loads((tmp_path / "w2" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert len(one["losses"]) == 4
    assert two[0]["losses"] == pytest.approx(one["losses"], rel=1e-5, abs=1e-6)  # the same curve
    # Adam divides by the root of the squared gradients: float-order noise in a near-zero gradient shows in its
    # weight at about the learning rate x 1e-3 (lr 1e-2 here)
    np.testing.assert_allclose(two[0]["weights"], one["weights"], rtol=1e-4, atol=1e-4)
    assert two[0]["weights"] == two[1]["weights"]  # both processes took the same steps
    written = sorted(p.name for p in (tmp_path / "w2" / "checkpoints").iterdir() if p.name.startswith("step-"))
    assert written == ["step-0000002", "step-0000004"]  # by rank 0 alone (two writers would collide)


def test_the_palette_step_launches_its_training_over_processes_with_one_process_curve(tmp_path):
    """`processes: 2` in palette_model's run config: the step launches two gloo processes (ops.distributed.launch,
    torch's elastic launcher), publishes rank 0's final checkpoint and reports its curve: one process's curve."""
    import dagster as dg

    from assets import ingest, palette
    from pipeline.resources import ComputeResource, StorageResource

    generate("mind", tmp_path / "raw" / "sample_mind", "tiny", seed=0)
    backbone = str(save_random_model("opt", tmp_path / "opt", hidden=32, layers=2, heads=2, causal_lm=True,
                                     init_std=0.2))
    model_asset = next(a for a in palette.ASSETS if a.key == dg.AssetKey("palette_model"))
    curves = {}
    for processes in (1, 2):
        store = tmp_path / f"store{processes}"
        result = dg.materialize(
            [*ingest.ASSETS, model_asset], partition_key="sample_mind",
            resources={"storage": StorageResource(raw_root=str(tmp_path / "raw"), storage_root=str(store)),
                       "compute": ComputeResource(device="cpu", dtype="float32", torch_threads=2)},
            run_config={"ops": {"palette_model": {"config": {
                "model": backbone, "lora_rank": 8, "lora_alpha": 16, "max_content_tokens": 32,
                "max_answer_tokens": 8, "lr": 1e-2, "batch_size": 16, "micro_batch_size": 4, "max_steps": 4,
                "checkpoint_every": 2, "processes": processes}}}})
        assert result.success
        (meta,) = [m.materialization.metadata for m in result.get_asset_materialization_events()
                   if m.asset_key == dg.AssetKey("palette_model")]
        assert meta["processes"].value == processes and meta["steps"].value == 4
        curves[processes] = [float(line.split("|")[2]) for line in meta["loss_curve"].value.splitlines()[2:]]
        published = store / "sample_mind" / "palette_model"
        steps = sorted(p.name.rsplit("-", 1)[1] for p in published.iterdir() if "-step-" in p.name)
        assert steps == ["0000002", "0000004"]  # written once (rank 0), not per process
    # (the curve table rounds to 4 decimals: a last-digit flip is the only difference allowed)
    assert len(curves[1]) == 4 and curves[2] == pytest.approx(curves[1], abs=2e-4)


def test_the_generative_recommender_trains_on_two_gloo_processes_as_one_does(tmp_path):
    """The LM recommender's data-parallel path (ops.recommend.generative.train_data_parallel, torch's elastic
    launcher): early stopping included (each process validates every other row, the ranks gathered), the loss and
    validation curves, the best epoch and its weights equal one process's at the same global batch, dropout on."""
    import polars as pl
    import torch

    from ops.codetable import build_code_table
    from ops.recommend.decoding import PrefixIndex
    from ops.recommend.generative import (
        GenerativeConfig,
        GenerativeRecommender,
        examples,
        train_data_parallel,
        train_early_stopping,
    )
    from ops.recommend.tokens import SemanticVocab

    codes = np.array([[i % 3, (i // 3) % 4] for i in range(12)])
    table, _ = build_code_table([f"i{n}" for n in range(12)], codes, k=4)
    vocab = SemanticVocab.from_code_table(table, "code_table/toy")
    rng = np.random.default_rng(1)
    seqs = pl.DataFrame([{"user_id": f"u{u}", "history": [f"i{a}", f"i{b}"], "target": f"i{(b + 5) % 12}",
                          "split": "train" if u < 24 else "valid"}
                         for u, (a, b) in enumerate(rng.integers(0, 12, (34, 2)))])  # 10 valid rows: 5 each
    train_rows, valid_rows = examples(seqs, vocab, "train"), examples(seqs, vocab, "valid")
    index = PrefixIndex.build(vocab.item_codes)
    cfg = GenerativeConfig(layers=1, d_model=32, heads=2, d_ff=64, dropout=0.1, lr=3e-3, batch_size=8,
                           micro_batch_size=4, epochs=4, patience=4, device="cpu", dtype="float32")
    one_model = GenerativeRecommender(cfg, vocab)
    one = train_early_stopping(one_model, train_rows, valid_rows, index, tmp_path / "one")
    two = train_data_parallel(replace(cfg, processes=2), vocab, None, train_rows, valid_rows, index,
                              tmp_path / "two", threads=1)
    losses = [[row["loss"] for row in r.result.history] for r in (one, two)]
    assert len(losses[0]) == 12  # 4 epochs of 3 steps
    assert losses[1] == pytest.approx(losses[0], rel=1e-5, abs=1e-6)
    assert two.valid_ndcg10 == pytest.approx(one.valid_ndcg10, abs=1e-6) and two.best_epoch == one.best_epoch
    assert two.tokens == one.tokens  # summed over the processes' micro-batches
    best = GenerativeRecommender(cfg, vocab)
    best.load_weights(Path(two.checkpoint))
    for a, b in zip(one_model.trainable_parameters(), best.trainable_parameters()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)  # Adam: see the palette's test
    written = sorted(p.name.rsplit("-", 1)[1] for p in (tmp_path / "two").iterdir() if "step-" in p.name)
    assert written == ["0000003", "0000006", "0000009", "0000012"]  # one checkpoint per epoch, rank 0's alone
