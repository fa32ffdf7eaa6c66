"""The resource types the assets take: where raw files and tables live, and where model work runs. They live here,
below `pipeline/`, so that assets never import upwards; `pipeline/resources.py` binds them per environment (run
config or environment variables through dg.EnvVar) and adds the run-start checks."""
from __future__ import annotations

from pathlib import Path

import dagster as dg

from ops.models import Dtype
from storage import Store

PROJECT_ROOT = Path(__file__).resolve().parents[1]


class StorageResource(dg.ConfigurableResource):
    """Raw-data root (where each dataset's original files are) and the table store root
    (`$SEMID_RAW_ROOT`, `$SEMID_STORAGE_ROOT`)."""

    raw_root: str = str(PROJECT_ROOT / "data" / "raw")
    storage_root: str = str(PROJECT_ROOT / "data" / "store")

    def store(self) -> Store:
        return Store(self.storage_root)

    def workdir(self, dataset: str) -> Path:
        """Scratch space on the same disk as the store (e.g. for decompressing a large .gz)."""
        return self.store().workdir(dataset)


class ComputeResource(dg.ConfigurableResource):
    """Where model work runs. `auto` = CUDA (bf16, fp16 where bf16 is unsupported) when present, else CPU fp32
    (`$SEMID_DEVICE`, `$SEMID_DTYPE`). On a GPU worker set SEMID_DEVICE=cuda (Dagster does not pick devices;
    CUDA_VISIBLE_DEVICES does). `torch_threads` (`$SEMID_TORCH_THREADS`, 0 = the libraries' default of one per
    core) sets torch's and faiss' thread pools once per step process, when the resource is set up: trained weights
    and codes are the same bits for the same data, config, seed and thread count."""

    device: str = "auto"
    dtype: Dtype = "auto"
    torch_threads: int = 0

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        if self.torch_threads > 0:  # torch's and faiss' thread pools: results are reproducible per thread count
            import faiss
            import torch

            torch.set_num_threads(self.torch_threads)
            faiss.omp_set_num_threads(self.torch_threads)
