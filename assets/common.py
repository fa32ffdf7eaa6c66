"""What every asset declaration shares: the dataset partitions, job tags, the GPU pool and the automation
condition. Run configs are in assets/configs.py, metadata builders in assets/metadata.py, code versions in
assets/versions.py."""
from __future__ import annotations

from typing import Any

import dagster as dg

from ops.datasets import load_registry

JOB_TAG = "semid/job"
DATASETS = dg.StaticPartitionsDefinition(sorted(load_registry()))
# Model-bound assets (embeddings, palettes, VQ tokenizers, trained recommenders): the "gpu" concurrency pool (one at
# a time on a one-GPU host, pipeline/deploy/dagster.yaml) and the op tag by which the Kubernetes executor gives
# their steps GPU pods (pipeline/k8s.py). Spread into @dg.asset so that every such asset is marked the same way.
GPU_ASSET: dict[str, Any] = {"pool": "gpu", "op_tags": {"semid/resource": "gpu"}}
GPU_OP: dict[str, Any] = {"pool": "gpu", "tags": {"semid/resource": "gpu"}}  # the same for an op of a graph asset
# Declarative automation (evaluated by pipeline/automation.py's sensor): derived tables follow their upstream, so a
# new ingest is followed by its embeddings, palettes (with the trained model: nothing is retrained) and code
# tables (in their default, incremental mode: unchanged items keep their IDs). Models and recommenders are not.
FOLLOWS_UPSTREAM = dg.AutomationCondition.eager()


def job_tag(job: str) -> dict[str, str]:
    """Asset tag naming the job an asset belongs to: jobs select assets by this tag (pipeline/definitions.py)."""
    return {JOB_TAG: job}
