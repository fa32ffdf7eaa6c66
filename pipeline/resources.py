"""The deployment's resources: the assets' resource types (assets/resources.py) bound per environment (run config
or environment variables through dg.EnvVar, never edited in code), the storage resource with the run-start
checks."""
from __future__ import annotations

import os
from typing import Any, cast

import dagster as dg

from assets.resources import PROJECT_ROOT, ComputeResource
from assets.resources import StorageResource as _StorageResource

__all__ = ["PROJECT_ROOT", "ComputeResource", "StorageResource", "default_resources", "env_or"]


class StorageResource(_StorageResource):
    """Raw-data root and table store root (`$SEMID_RAW_ROOT`, `$SEMID_STORAGE_ROOT`). Every asset uses it, so its
    set-up is where a run checks, in its first step, every op's config against its declared ranges and that every
    model it will load can be loaded (pipeline.preflight): a bad value or a wrong model path fails the run in
    seconds, not after the stages before it."""

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        from pipeline.preflight import run_problems
        from pipeline.recovery import die_with_run_worker

        die_with_run_worker()

        if context.dagster_run is not None and (problems := run_problems(context.dagster_run)):
            raise dg.Failure("the run's settings cannot work:\n" + "\n".join(problems))


def env_or(name: str, default: str) -> str:
    """`dg.EnvVar(name)` where the variable is set (the UI shows where the value comes from, and it is read again
    in each run's process), else the default."""
    return dg.EnvVar(name) if os.environ.get(name) else default


def default_resources() -> dict[str, dg.ConfigurableResource]:
    storage = StorageResource.model_fields
    return {
        "storage": StorageResource(raw_root=env_or("SEMID_RAW_ROOT", storage["raw_root"].default),
                                   storage_root=env_or("SEMID_STORAGE_ROOT", storage["storage_root"].default)),
        "compute": ComputeResource(device=env_or("SEMID_DEVICE", "auto"),
                                   dtype=cast(Any, env_or("SEMID_DTYPE", "auto")),  # a dg.EnvVar where set
                                   torch_threads=dg.EnvVar.int("SEMID_TORCH_THREADS")
                                   if os.environ.get("SEMID_TORCH_THREADS") else 0),
    }
