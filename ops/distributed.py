"""Data-parallel training across processes (one per GPU of a node), as `torchrun --nproc_per_node=N` starts them:
every process runs the same loop on the same model; each optimizer step's micro-batches are dealt out round-robin
(process r takes micro-batches r, r + N, …: the micro-batch boundaries, and so the in-batch negatives, are those of
one process), and the gradients are summed across processes before the step, so every process takes the same step
as one process would at the same global batch (up to the order of float additions). Only rank 0 writes
checkpoints and reports steps. The gradient sum is an explicit all-reduce of the trainable parameters' gradients
after each step's backward passes: the shared loop calls its models through loss functions, not through a module a
DistributedDataParallel wrapper could own; the cost is that communication does not overlap the backward pass.

Dropout draws come from one seed per step in each process, so with dropout the N-process run draws differently
from the one-process run (still reproducible for a given N).

`launch` starts such processes from inside a running step (a Dagster step on a multi-GPU pod or host): torch's own
elastic launcher, what `torchrun --standalone --nproc_per_node=N` runs, called as a library."""
from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def world() -> World:
    """This process's place: initializes the default process group from torchrun's environment (WORLD_SIZE > 1:
    NCCL on CUDA, gloo elsewhere) on first use; one process otherwise."""
    import torch.distributed as dist

    if not dist.is_available():
        return World()
    if not dist.is_initialized():
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return World()
        dist.init_process_group("nccl" if torch.cuda.is_available() and os.environ.get("LOCAL_RANK") else "gloo")
    return World(dist.get_rank(), dist.get_world_size())


def local_device(device: str) -> str:
    """`cuda` names this process's GPU under torchrun (LOCAL_RANK); anything else is left as it is."""
    if device == "cuda" and os.environ.get("LOCAL_RANK") is not None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return device


def sum_gradients(parameters: list[torch.nn.Parameter], w: World) -> None:
    """Sum each parameter's gradient over the processes (a parameter without one counts as zeros)."""
    if w.size == 1:
        return
    import torch.distributed as dist

    for p in parameters:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)


def gather(obj: Any, w: World) -> list[Any]:
    """Every process's `obj` (picklable), in rank order, on every process."""
    if w.size == 1:
        return [obj]
    import torch.distributed as dist

    parts: list[Any] = [None] * w.size
    dist.all_gather_object(parts, obj)
    return parts


def sum_terms(row: dict[str, float], w: World) -> dict[str, float]:
    """The step's loss terms summed over the processes (each holds its micro-batches' weighted share; a process
    that had no micro-batch this step holds none)."""
    if w.size == 1:
        return row
    total: dict[str, float] = {}
    for part in gather(row, w):  # in rank order: every process adds the same numbers in the same order
        for k, v in (part or {}).items():
            total[k] = total.get(k, 0.0) + v
    return total


def barrier(w: World) -> None:
    """Wait for every process (e.g. until rank 0's checkpoint is on disk)."""
    if w.size > 1:
        import torch.distributed as dist

        dist.barrier()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _member(fn: Callable[..., Any], threads: int, *args: Any) -> Any:
    """One launched process: its CPU threads, `fn`, and the process group left cleanly."""
    import torch.distributed as dist

    if threads:
        torch.set_num_threads(threads)
    try:
        return fn(*args)
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def launch(fn: Callable[..., Any], args: tuple[Any, ...], processes: int, threads: int = 0) -> Any:
    """`fn(*args)` in `processes` data-parallel processes of this node, each with torchrun's environment (RANK,
    LOCAL_RANK, WORLD_SIZE, MASTER_ADDR / PORT on a free local port), each `threads` CPU threads (0: torch's
    default); rank 0's return value. `fn` must be importable (the processes are spawned) and its args picklable.
    A failed process fails the launch with its rank and traceback (torch's ChildFailedError); nothing restarts."""
    if processes < 1:
        raise ValueError(f"processes = {processes}: at least 1")
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=processes, run_id=f"semid-{uuid.uuid4().hex[:8]}",
                          rdzv_backend="c10d", rdzv_endpoint=f"127.0.0.1:{_free_port()}", max_restarts=0,
                          start_method="spawn", monitor_interval=0.5)
    results = elastic_launch(config, _member)(fn, threads, *args)
    return results[0]
