"""pipeline/automation.py: the raw-files sensors fire once per new or changed set of files and never again for the
same files; the re-tokenization schedule asks for one incremental run per ingested dataset; the jobs and
automation conditions the UI's Automation tab shows."""
import datetime
import os
import time

import dagster as dg
import polars as pl
import pytest

from assets.palette import palette_store
from ops.sample import generate
from ops.tokenizers import REGISTRY
from pipeline import automation
from pipeline.definitions import defs
from pipeline.jobs import PALETTE_KEYS, RETOKENIZE_KEYS, refit_job, retokenize_job
from pipeline.resources import StorageResource
from storage import Store

OLD = time.time() - 3600  # mtimes an hour back: settled files


def _age(path, when=OLD):
    for p in [path, *path.rglob("*")]:
        os.utime(p, (when, when))


@pytest.fixture
def raw(tmp_path):
    generate("mind", tmp_path / "raw" / "sample_mind", "tiny", seed=0)
    _age(tmp_path / "raw" / "sample_mind")
    return tmp_path, StorageResource(raw_root=str(tmp_path / "raw"), storage_root=str(tmp_path / "store"))


def _tick(storage, cursor):
    sensor = defs.get_sensor_def("raw_files__sample_mind")
    with dg.build_sensor_context(cursor=cursor, resources={"storage": storage},
                                 repository_def=defs.get_repository_def()) as context:
        data = sensor.evaluate_tick(context)
    return data.run_requests or [], data.cursor, data.skip_message


def test_raw_files_sensor_fires_once_per_new_or_changed_file(raw):
    tmp, storage = raw
    folder = tmp / "raw" / "sample_mind"
    requests, cursor, _ = _tick(storage, None)
    assert len(requests) == 1 and requests[0].partition_key == "sample_mind"
    assert defs.get_sensor_def("raw_files__sample_mind").job_name == "ingest_job"
    assert requests[0].tags["semid/new_files"] != "0"
    first_key = requests[0].run_key
    again, cursor2, skip = _tick(storage, cursor)
    assert again == [] and "no new or changed files" in skip and cursor2 in (None, cursor)

    with open(folder / "news.tsv", "a") as fh:  # a changed file
        fh.write("N99999\tnews\tnewsus\tA new title\tAn abstract\thttp://x\t[]\t[]\n")
    _age(folder / "news.tsv")
    requests, cursor3, _ = _tick(storage, cursor)
    assert len(requests) == 1 and requests[0].tags["semid/changed_files"] == "1"
    assert requests[0].tags["semid/new_files"] == "0" and requests[0].run_key != first_key
    assert _tick(storage, cursor3)[0] == []  # not again for the same files

    (folder / "extra.tsv").write_text("x\n")  # a new file
    _age(folder / "extra.tsv")
    requests, cursor4, _ = _tick(storage, cursor3)
    assert len(requests) == 1 and requests[0].tags["semid/new_files"] == "1"
    (folder / ".extra.tsv.swp").write_text("editor")  # hidden files and partial downloads are not data
    (folder / "big.tsv.part").write_text("half")
    assert _tick(storage, cursor4)[0] == []

    (folder / "fresh.tsv").write_text("still copying")  # modified just now: wait for it to settle
    requests, cursor5, skip = _tick(storage, cursor4)
    assert requests == [] and "still being written" in skip and "fresh.tsv" in skip and cursor5 in (None, cursor4)


def test_sensor_skips_a_missing_raw_directory(tmp_path):
    storage = StorageResource(raw_root=str(tmp_path / "nothing"), storage_root=str(tmp_path / "store"))
    requests, _, skip = _tick(storage, None)
    assert requests == [] and "no raw files" in skip


def test_schedule_requests_an_incremental_run_per_ingested_dataset(raw):
    tmp, storage = raw
    schedule = defs.get_schedule_def("retokenize_schedule")
    assert schedule.cron_schedule == automation.DEFAULT_CRON and schedule.job_name == "retokenize_job"
    when = datetime.datetime(2026, 12, 7, 3, 0, tzinfo=datetime.timezone.utc)

    def tick():
        with dg.build_schedule_context(scheduled_execution_time=when, resources={"storage": storage},
                                       repository_def=defs.get_repository_def()) as context:
            return schedule.evaluate_tick(context)

    empty = tick()
    assert not empty.run_requests and "no dataset has been ingested" in empty.skip_message
    store = Store(storage.storage_root)
    path = store.table_path("sample_mind", "items")
    path.parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame({"item_id": ["a"], "content_hash": ["h"]}).write_parquet(path)
    (requests,) = tick().run_requests
    assert requests.partition_key == "sample_mind" and requests.run_key == "retokenize-sample_mind-20261207T0300"
    assert set(requests.asset_selection) == set(RETOKENIZE_KEYS) - PALETTE_KEYS  # no palette model trained yet
    code_ops = {op: c for op, c in requests.run_config["ops"].items() if op.startswith("code_table__")}
    assert len(code_ops) == 9 and all(c["config"]["mode"] == "incremental" for c in code_ops.values())
    checkpoints = palette_store(store, "sample_mind")
    checkpoints.write("run-step-1", lambda d: (d / "adapter.safetensors").write_bytes(b"x"))
    checkpoints.publish("run-step-1")
    (requests,) = tick().run_requests
    assert set(requests.asset_selection) == set(RETOKENIZE_KEYS)  # with the palette and code_table/lamia


def test_jobs_automation_and_the_refit_job():
    repo = defs.get_repository_def()
    sensors = {s.name for s in repo.sensor_defs}
    assert {"raw_files__sample_mind", "raw_files__mind", "raw_files__amazon_beauty", "follow_upstream"} <= sensors
    assert {s.name for s in repo.schedule_defs} == {"retokenize_schedule"}
    modes = {job.name: {c["config"]["mode"] for c in job.config["ops"].values()} for job in (refit_job, retokenize_job)}
    assert modes == {"refit_job": {"refit"}, "retokenize_job": {"incremental"}}
    keys = {k.to_user_string() for k in repo.get_job("retokenize_job").asset_layer.executable_asset_keys}
    assert {"item_embeddings", "palette_embeddings", "code_table/pca_kmeans", "code_table/lamia"} <= keys
    assert "palette_model" not in keys and "items" not in keys  # nothing is retrained by re-tokenization
    follow = {spec.key.to_user_string() for spec in defs.resolve_all_asset_specs() if spec.automation_condition}
    assert follow == {"item_embeddings", "item_embeddings_lm", "palette_embeddings", "id_quality_comparison",
                      *(f"code_table/{t}" for t in REGISTRY), *(f"id_quality/{t}" for t in REGISTRY),
                      *(f"serving_index/{t}" for t in REGISTRY)}


def test_a_bad_cron_is_refused_naming_its_variable(monkeypatch):
    monkeypatch.setenv("SEMID_RETOKENIZE_CRON", "every monday")
    with pytest.raises(ValueError, match="SEMID_RETOKENIZE_CRON"):
        automation._retokenize_schedule()
