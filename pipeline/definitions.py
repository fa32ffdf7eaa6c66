"""The Dagster code location: `dagster dev -w workspace.yaml` or `dagster definitions validate -w workspace.yaml`."""
from __future__ import annotations

import dagster as dg

from assets import ingest
from assets.common import DATASETS
from pipeline.resources import StorageResource

ASSETS = [*ingest.ASSETS]
CHECKS = [*ingest.CHECKS]

ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.groups(ingest.GROUP),
    partitions_def=DATASETS,
    description="Raw files -> items, interactions, quarantine, user_sequences (with their checks).",
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
    jobs=[ingest_job, full_pipeline_job],
    resources={"storage": StorageResource()},
)
