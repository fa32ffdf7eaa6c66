"""Resources: where raw files and tables live. Chosen per environment, never edited in code."""
from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from storage import Store

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _default(env: str, fallback: str) -> str:
    value = os.environ.get(env)
    return value if value else str(PROJECT_ROOT / fallback)


class StorageResource(dg.ConfigurableResource):
    """Raw-data root (where each dataset's original files are) and the table store root."""

    raw_root: str = _default("SEMID_RAW_ROOT", "data/raw")
    storage_root: str = _default("SEMID_STORAGE_ROOT", "data/store")

    def store(self) -> Store:
        return Store(self.storage_root)

    def workdir(self, dataset: str) -> Path:
        """Scratch space on the same disk as the store (e.g. for decompressing a large .gz)."""
        path = Path(self.storage_root) / "_work" / dataset
        path.mkdir(parents=True, exist_ok=True)
        return path


class ComputeResource(dg.ConfigurableResource):
    """Where model work runs. `auto` = CUDA (bf16, fp16 where bf16 is unsupported) when present, else CPU fp32.
    On a GPU worker set SEMID_DEVICE=cuda (Dagster does not pick devices; CUDA_VISIBLE_DEVICES does)."""

    device: str = os.environ.get("SEMID_DEVICE", "auto")
    dtype: str = os.environ.get("SEMID_DTYPE", "auto")
    torch_threads: int = int(os.environ.get("SEMID_TORCH_THREADS", "0"))  # 0: torch's default (one per core)

    def apply_threads(self) -> None:
        if self.torch_threads > 0:
            import torch

            torch.set_num_threads(self.torch_threads)
