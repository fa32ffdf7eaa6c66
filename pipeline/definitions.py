"""The Dagster code location: `dagster dev -w workspace.yaml` or `dagster definitions validate -w workspace.yaml`."""
from __future__ import annotations

import os

import dagster as dg

from assets import codes, embed, evaluation, ingest, palette, quality, recommend, serving
from pipeline import automation
from pipeline.jobs import JOBS
from pipeline.resources import default_resources

STAGES = (ingest, embed, palette, codes, quality, serving, recommend, evaluation)  # each exports its own `defs`


_stages = dg.Definitions.merge(*(stage.defs for stage in STAGES))
# SEMID_EXECUTOR=k8s (the Kubernetes deployment, pipeline/k8s.py): every step a Kubernetes Job sized by its kind
_executor = None
_resources: dict[str, object] = dict(default_resources())
if os.environ.get("SEMID_EXECUTOR", "") not in ("", "default", "multiprocess"):
    if os.environ["SEMID_EXECUTOR"] != "k8s":
        raise ValueError(f"SEMID_EXECUTOR={os.environ['SEMID_EXECUTOR']!r}: 'k8s' or unset (the multiprocess "
                         "executor)")
    from pipeline.k8s import Workers, executor

    _workers = Workers.load()
    _executor = executor(_stages.assets or [], _workers)
    # what steps hand each other (the shard steps' figures) on the store every pod mounts, not in a pod's own disk
    _resources["io_manager"] = dg.FilesystemIOManager(base_dir=_workers.io_root)
defs = dg.Definitions.merge(
    _stages,
    automation.definitions(),
    dg.Definitions(jobs=JOBS, resources=_resources, executor=_executor),
)
