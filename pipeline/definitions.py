"""The Dagster code location: `dagster dev -w workspace.yaml` or `dagster definitions validate -w workspace.yaml`."""
from __future__ import annotations

import dagster as dg

from assets import codes, embed, ingest, palette
from assets.common import DATASETS
from pipeline.resources import ComputeResource, StorageResource

ASSETS = [*ingest.ASSETS, *embed.ASSETS, *palette.ASSETS, *codes.ASSETS]
CHECKS = [*ingest.CHECKS, *embed.CHECKS, *palette.CHECKS, *codes.CHECKS]
LAMIA = dg.AssetKey(["code_table", "lamia"])

ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.groups(ingest.GROUP),
    partitions_def=DATASETS,
    description="Raw files -> items, interactions, quarantine, user_sequences (with their checks).",
)
tokenize_job = dg.define_asset_job(
    "tokenize_job",
    selection=dg.AssetSelection.groups(embed.GROUP, codes.GROUP) - dg.AssetSelection.assets(LAMIA),
    partitions_def=DATASETS,
    description="items -> item_embeddings -> the code tables that need no training (ingestion must have run).",
)
palette_job = dg.define_asset_job(
    "palette_job",
    selection=dg.AssetSelection.groups(palette.GROUP) | dg.AssetSelection.assets(LAMIA),
    partitions_def=DATASETS,
    description="LAMIA: train the palette model, extract every item's palette, quantize it into code_table/lamia "
                "(a GPU job for real datasets; configs/lamia_mind_opt350m_gpu.yaml is the paper's recipe).",
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
    jobs=[ingest_job, tokenize_job, palette_job, full_pipeline_job],
    resources={"storage": StorageResource(), "compute": ComputeResource()},
)
