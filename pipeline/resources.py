"""Resources: where raw files and tables live, and where model work runs. Chosen per environment (run config or
environment variables, bound in pipeline/definitions.py with dg.EnvVar), never edited in code."""
from __future__ import annotations

import os
from pathlib import Path
import dagster as dg

from ops.models import Dtype
from storage import Store

PROJECT_ROOT = Path(__file__).resolve().parents[1]


class StorageResource(dg.ConfigurableResource):
    """Raw-data root (where each dataset's original files are) and the table store root
    (`$SEMID_RAW_ROOT`, `$SEMID_STORAGE_ROOT`). Every asset uses it, so its set-up is where a run checks, in its
    first step, every op's config against its declared ranges and that every model it will load can be loaded
    (pipeline.preflight): a bad value or a wrong model path fails the run in seconds, not after the stages before
    it."""

    raw_root: str = str(PROJECT_ROOT / "data" / "raw")
    storage_root: str = str(PROJECT_ROOT / "data" / "store")

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        from pipeline.preflight import run_problems

        if context.dagster_run is not None and (problems := run_problems(context.dagster_run)):
            raise dg.Failure("the run's settings cannot work:\n" + "\n".join(problems))

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


def env_or(name: str, default: str) -> str:
    """`dg.EnvVar(name)` where the variable is set (the UI shows where the value comes from, and it is read again
    in each run's process), else the default."""
    return dg.EnvVar(name) if os.environ.get(name) else default  # type: ignore[return-value]


def default_resources() -> dict[str, dg.ConfigurableResource]:
    storage = StorageResource.model_fields
    return {
        "storage": StorageResource(raw_root=env_or("SEMID_RAW_ROOT", storage["raw_root"].default),
                                   storage_root=env_or("SEMID_STORAGE_ROOT", storage["storage_root"].default)),
        "compute": ComputeResource(device=env_or("SEMID_DEVICE", "auto"), dtype=env_or("SEMID_DTYPE", "auto"),
                                   torch_threads=dg.EnvVar.int("SEMID_TORCH_THREADS")
                                   if os.environ.get("SEMID_TORCH_THREADS") else 0),
    }
