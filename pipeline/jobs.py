"""The jobs of the code location: each stage's assets by their `semid/job` tag, the whole pipeline, and the two
re-tokenization jobs (incremental on a schedule, refit by hand; DESIGN §4, README "IDs that do not move")."""
from __future__ import annotations

import dagster as dg

from assets import codes, embed, quality, serving
from assets.common import DATASETS, JOB_TAG
from assets.palette import palette_embeddings
from ops import tokenizers


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

# What re-tokenization recomputes: embeddings, palettes (with the trained palette model: nothing is retrained),
# every code table, its ID quality and its serving index. Ingestion is the raw-files sensors' job; models and
# recommenders are trained by hand.
RETOKENIZE_KEYS = [a.key for a in (*embed.ASSETS, palette_embeddings, *codes.ASSETS, *quality.ASSETS,
                                   *serving.ASSETS)]
# what needs a trained palette model: left out of a dataset's scheduled run until one has been trained
_PALETTE_TOKENIZERS = [name for name, entry in tokenizers.REGISTRY.items() if "palette_embeddings" in entry.upstream]
PALETTE_KEYS = {palette_embeddings.key, *(dg.AssetKey(["code_table", name]) for name in _PALETTE_TOKENIZERS),
                *(quality.quality_key(name) for name in _PALETTE_TOKENIZERS),
                *(serving.serving_key(name) for name in _PALETTE_TOKENIZERS)}
RETOKENIZE_SELECTION = dg.AssetSelection.assets(*RETOKENIZE_KEYS)


def code_table_ops(**config: object) -> dict[str, dict[str, object]]:
    """Run config giving every code-table op these settings."""
    return {"ops": {"__".join(a.key.path): {"config": dict(config)} for a in codes.ASSETS}}


retokenize_job = dg.define_asset_job(
    "retokenize_job", selection=RETOKENIZE_SELECTION, partitions_def=DATASETS, config=code_table_ops(
        mode="incremental"),
    description="Incremental re-tokenization (the weekly schedule's job): embeddings and palettes of the current "
                "items, then every code table in mode incremental: items whose text did not change keep their "
                "semantic ID byte-identical, new and changed items are coded by the fitted tokenizer, removed "
                "items' IDs are retired and stay reserved.")
refit_job = dg.define_asset_job(
    "refit_job", selection=RETOKENIZE_SELECTION, partitions_def=DATASETS, config=code_table_ops(mode="refit"),
    description="Full refit, by hand only: every code table fitted anew. IDs may move: each version gets an "
                "id_migration table, and `latest` stays where it was while more than max_moved_share of the "
                "unchanged items would change ID, unless the run sets accept_moved_ids: true.")

JOBS = [ingest_job, tokenize_job, palette_job, evaluate_job, full_pipeline_job, retokenize_job, refit_job]
