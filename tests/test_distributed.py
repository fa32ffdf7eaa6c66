"""Data-parallel training in the shared loop (ops.distributed), on CPU with two gloo processes: the palette's loss
curve and trained weights equal one process's at the same global batch (within float tolerance: the gradients are
summed in another order), and only rank 0 writes checkpoints."""
from __future__ import annotations

import json
import socket

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
