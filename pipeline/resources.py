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
