"""The Dagster code location: `dagster dev -w workspace.yaml` or `dagster definitions validate -w workspace.yaml`."""
from __future__ import annotations

import dagster as dg

from assets import codes, embed, evaluation, ingest, palette, recommend
from assets.common import DATASETS, JOB_TAG
from pipeline.resources import default_resources

STAGES = (ingest, embed, palette, codes, recommend, evaluation)  # each exports its own `defs`


def _job(name: str, description: str) -> dg.UnresolvedAssetJobDefinition:
    """The assets tagged `semid/job: <name>` (assets.common.job_tag), with their checks."""
    return dg.define_asset_job(f"{name}_job", selection=dg.AssetSelection.tag(JOB_TAG, name),
                               partitions_def=DATASETS, description=description)


ingest_job = _job("ingest", "Raw files -> items, interactions, quarantine, user_sequences (with their checks).")
tokenize_job = _job("tokenize", "items -> item_embeddings -> the code tables of training-free tokenizers "
                                "(ingestion must have run).")
palette_job = _job("palette", "LAMIA: train the palette model, extract every item's palette, quantize it into "
                              "code_table/lamia (a GPU job for real datasets; configs/lamia_mind_opt350m_gpu.yaml is "
                              "the paper's recipe).")
evaluate_job = _job("evaluate", "user_sequences + code tables -> recommenders (generative on every code table, "
                                "SASRec, popularity), impressions + code tables -> CTR models (DeepFM, DCNv2 with "
                                "and without codes), one model per seed -> the evaluation table.")
full_pipeline_job = dg.define_asset_job(
    "full_pipeline_job",
    selection=dg.AssetSelection.all(),
    partitions_def=DATASETS,
    description="Every stage for one dataset partition.",
)

defs = dg.Definitions.merge(
    *(stage.defs for stage in STAGES),
    dg.Definitions(jobs=[ingest_job, tokenize_job, palette_job, evaluate_job, full_pipeline_job],
                   resources=default_resources()),
)
