"""The code location that tests/test_deployment.py serves to a real Dagster daemon: the real ingest assets and
`code_table/random` behind the real raw-files sensor (its job also makes the code table, so the run a new file
triggers ends with one), `item_embeddings` (a `gpu`-pool asset), and a `gpu`-pool asset that holds its slot until
it is killed (it records its run worker's pid and its own)."""
import os
import time
from pathlib import Path

import dagster as dg

from assets import codes, embed, ingest
from assets.common import DATASETS, GPU_ASSET
from ops import datasets
from pipeline.automation import raw_files_sensor
from pipeline.resources import StorageResource, default_resources

RANDOM = next(a for a in codes.ASSETS if a.key.path[-1] == "random")
EMBEDDINGS = next(a for a in embed.ASSETS if a.key.path[-1] == "item_embeddings")


@dg.asset(partitions_def=DATASETS, **GPU_ASSET)
def gpu_hold(context: dg.AssetExecutionContext, storage: StorageResource) -> None:
    pids = Path(storage.storage_root) / "pids"
    pids.mkdir(parents=True, exist_ok=True)
    (pids / context.run_id).write_text(f"{os.getppid()} {os.getpid()}")
    time.sleep(float(os.environ.get("SEMID_TEST_HOLD_SECONDS", "300")))


# in one process: the sensor's run is about the queue and the IDs, not about step processes (hold_job's are)
ingest_codes_job = dg.define_asset_job("ingest_codes_job", selection=dg.AssetSelection.assets(*ingest.ASSETS, RANDOM),
                                       partitions_def=DATASETS, executor_def=dg.in_process_executor)
embed_job = dg.define_asset_job("embed_job", selection=dg.AssetSelection.assets(EMBEDDINGS), partitions_def=DATASETS)
hold_job = dg.define_asset_job("hold_job", selection=dg.AssetSelection.assets(gpu_hold), partitions_def=DATASETS)

defs = dg.Definitions(
    assets=[*ingest.ASSETS, RANDOM, EMBEDDINGS, gpu_hold], asset_checks=ingest.CHECKS,
    jobs=[ingest_codes_job, embed_job, hold_job],
    sensors=[raw_files_sensor(datasets.get("sample_mind"), job=ingest_codes_job)],
    resources=default_resources())
