"""The Dagster code location: `dagster dev -w workspace.yaml` or `dagster definitions validate -w workspace.yaml`."""
from __future__ import annotations

import dagster as dg

from assets import codes, embed, ingest
from assets.common import DATASETS
from pipeline.resources import ComputeResource, StorageResource

ASSETS = [*ingest.ASSETS, *embed.ASSETS, *codes.ASSETS]
CHECKS = [*ingest.CHECKS, *embed.CHECKS, *codes.CHECKS]

ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.groups(ingest.GROUP),
    partitions_def=DATASETS,
    description="Raw files -> items, interactions, quarantine, user_sequences (with their checks).",
)
tokenize_job = dg.define_asset_job(
    "tokenize_job",
    selection=dg.AssetSelection.groups(embed.GROUP, codes.GROUP),
    partitions_def=DATASETS,
    description="items -> item_embeddings -> every code table (ingestion must have run for the partition).",
)
full_pipeline_job = dg.define_asset_job(
    "full_pipeline_job",
    selection=dg.AssetSelection.all(),
    partitions_def=DATASETS,
    description="Every stage for one dataset partition.",
)

defs = dg.Definitions(
    assets=ASSETS,
    asset_checks=CHECKS,
    jobs=[ingest_job, tokenize_job, full_pipeline_job],
    resources={"storage": StorageResource(), "compute": ComputeResource()},
)
