"""Work over items cut into shards that any number of workers share, each shard an atomically written `.npy` under
one directory: worker w of N computes shards w, w + N, …, skipping those already on disk (a retried or resumed
worker), and a last pass with no worker loads every shard in order (computing any still missing). A shard's file
is named by its position and a hash of its items' keys (item id and text, or content hash), so changed items or
another model (another directory) never reuse a stale shard. Used by the embedding stage and palette extraction:
the vectors do not depend on how many workers there were, only on the shards."""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from storage import atomic_path


def shard_ranges(n: int, size: int) -> list[tuple[int, int]]:
    return [(start, min(n, start + size)) for start in range(0, n, size)]


def shard_name(index: int, ids: Sequence[str], keys: Sequence[str]) -> str:
    h = hashlib.sha256()
    for i, t in zip(ids, keys):
        h.update(i.encode())
        h.update(b"\x1f")
        h.update(t.encode())
        h.update(b"\x1e")
    return f"shard-{index:05d}-{h.hexdigest()[:12]}.npy"


@dataclass
class ShardRun:
    vectors: np.ndarray | None  # every shard in order (the last pass); None for a worker
    computed: int
    reused: int


def run_shards(ids: Sequence[str], keys: Sequence[str], compute: Callable[[int, int], np.ndarray], shard_dir: Path,
               shard_size: int, worker: int | None = None, workers: int = 1,
               on_shard: Callable[[int, int], None] | None = None,
               on_reused: Callable[[int, int], None] | None = None) -> ShardRun:
    """`compute(a, b)` gives rows a..b; `on_shard(done, total)` after each of this call's shards, `on_reused(a, b)`
    for each one found on disk."""
    if len(ids) != len(keys):
        raise ValueError(f"{len(ids)} item ids but {len(keys)} keys")
    if worker is not None and not 0 <= worker < workers:
        raise ValueError(f"worker {worker} of {workers}")
    shard_dir.mkdir(parents=True, exist_ok=True)
    ranges = shard_ranges(len(ids), shard_size)
    mine = [k for k in range(len(ranges)) if worker is None or k % workers == worker]
    parts, computed, reused = [], 0, 0
    for step, k in enumerate(mine, 1):
        a, b = ranges[k]
        path = shard_dir / shard_name(k, ids[a:b], keys[a:b])
        if path.is_file():
            if worker is None:
                parts.append(np.load(path))
            reused += 1
            if on_reused is not None:
                on_reused(a, b)
        else:
            vec = compute(a, b)
            with atomic_path(path) as tmp, open(tmp, "wb") as fh:
                np.save(fh, vec)
            parts.append(vec)
            computed += 1
        if on_shard is not None:
            on_shard(step, len(mine))
    vectors = (np.concatenate(parts) if parts else None) if worker is None else None
    return ShardRun(vectors, computed, reused)
