"""Jobs that tests/test_sharding.py runs with the multiprocess executor (reconstructable jobs, so that each step
is a process of its own): ingest and `item_embeddings`, or ingest and `recommender/sasrec`, on the store and raw
root named by environment variables."""
import os

import dagster as dg

from assets import embed, ingest
from assets.common import DATASETS
from pipeline.resources import ComputeResource, StorageResource

EMBEDDINGS = next(a for a in embed.ASSETS if a.key.path[-1] == "item_embeddings")


def _job(name: str, asset: dg.AssetsDefinition) -> dg.JobDefinition:
    """Ingest and `asset` as job `name` with the multiprocess executor, one CPU thread per step."""
    storage = StorageResource(raw_root=os.environ["SEMID_TEST_RAW"], storage_root=os.environ["SEMID_TEST_STORE"])
    defs = dg.Definitions(
        assets=[*ingest.ASSETS, asset],
        jobs=[dg.define_asset_job(name, selection=dg.AssetSelection.assets(*ingest.ASSETS, asset),
                                  partitions_def=DATASETS, executor_def=dg.multiprocess_executor)],
        resources={"storage": storage, "compute": ComputeResource(device="cpu", dtype="float32",
                                                                  torch_threads=1)})
    return defs.resolve_job_def(name)


def embed_job() -> dg.JobDefinition:
    return _job("embed_job", EMBEDDINGS)


def sasrec_job() -> dg.JobDefinition:
    """Ingest and `recommender/sasrec` (its seeds as steps of their own)."""
    from assets import recommend

    return _job("sasrec_job", next(a for a in recommend.ASSETS if a.key == dg.AssetKey(["recommender", "sasrec"])))
