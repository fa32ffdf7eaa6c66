"""A job that tests/test_sharding.py runs with the multiprocess executor (a reconstructable job, so that each step
is a process of its own): ingest and `item_embeddings` on the store, raw root and model named by environment
variables."""
import os

import dagster as dg

from assets import embed, ingest
from assets.common import DATASETS
from pipeline.resources import ComputeResource, StorageResource

EMBEDDINGS = next(a for a in embed.ASSETS if a.key.path[-1] == "item_embeddings")


def embed_job() -> dg.JobDefinition:
    storage = StorageResource(raw_root=os.environ["SEMID_TEST_RAW"], storage_root=os.environ["SEMID_TEST_STORE"])
    defs = dg.Definitions(
        assets=[*ingest.ASSETS, EMBEDDINGS],
        jobs=[dg.define_asset_job("embed_job", selection=dg.AssetSelection.assets(*ingest.ASSETS, EMBEDDINGS),
                                  partitions_def=DATASETS, executor_def=dg.multiprocess_executor)],
        resources={"storage": storage, "compute": ComputeResource(device="cpu", dtype="float32",
                                                                  torch_threads=1)})
    return defs.resolve_job_def("embed_job")
