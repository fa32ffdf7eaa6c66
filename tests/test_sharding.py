"""Work split into steps. Embedding extraction over workers (ops.embed.embed_shards, the graph-backed
`item_embeddings`): worker steps each embed every N-th shard and the merged table equals the single-step one bit
for bit, in one process and with the multiprocess executor, where the workers are processes of their own. A
recommender's seeds (assets/recommend.py): one step each after one prepare step, the same rows either way."""
from __future__ import annotations

import os

import dagster as dg
import numpy as np
import polars as pl
import pytest

from ops.embed import EmbedConfig, embed_items, embed_shards, load_model
from ops.sample import generate
from ops.tiny_models import save_random_model

PARTITION = "sample_mind"
TEXTS = [f"title: item {i} " + "word " * (i % 23) for i in range(150)]


def test_workers_write_the_shards_that_one_process_would(tmp_path):
    model = save_random_model("bert", tmp_path / "bert")
    cfg = EmbedConfig(model=str(model), shard_size=16, workers=3, device="cpu", dtype="float32")
    lm = load_model(cfg)
    ids = [f"i{i}" for i in range(len(TEXTS))]
    alone = embed_items(lm, ids, TEXTS, cfg, tmp_path / "alone")
    runs = [embed_shards(lm, ids, TEXTS, cfg, tmp_path / "split", w) for w in (2, 0, 1)]
    assert sum(r.stats.shards_computed for r in runs) == 10 and [len(r.vectors) for r in runs] == [0, 0, 0]
    assert [r.stats.shards_computed for r in runs] == [3, 4, 3]  # shards 2, 5, 8 / 0, 3, 6, 9 / 1, 4, 7
    merged = embed_items(lm, ids, TEXTS, cfg, tmp_path / "split")
    assert merged.stats.shards_computed == 0 and merged.stats.shards_reused == 10
    assert merged.vectors.tobytes() == alone.vectors.tobytes()
    again = embed_shards(lm, ids, TEXTS, cfg, tmp_path / "split", 0)  # a retried worker finds its shards done
    assert again.stats.shards_computed == 0 and again.stats.shards_reused == 4
    with pytest.raises(ValueError, match="worker 3 of 3"):
        embed_shards(lm, ids, TEXTS, cfg, tmp_path / "split", 3)


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    generate("mind", root / PARTITION, "tiny", seed=0)
    model = save_random_model("bert", root.parent / "bert-shard")
    return root, str(model)


def _materialize(raw_root, store, model, workers):
    from assets import embed, ingest
    from pipeline.resources import ComputeResource, StorageResource

    resources = {"storage": StorageResource(raw_root=str(raw_root), storage_root=str(store)),
                 "compute": ComputeResource(device="cpu", dtype="float32")}
    result = dg.materialize([*ingest.ASSETS, *embed.ASSETS[:1]], partition_key=PARTITION, resources=resources,
                            run_config={"ops": {"item_embeddings": {"config": {
                                "model": model, "shard_size": 16, "workers": workers}}}})
    assert result.success
    return result


def test_the_sharded_asset_equals_the_single_step_one(raw, tmp_path):
    root, model = raw
    one = _materialize(root, tmp_path / "one", model, 1)
    three = _materialize(root, tmp_path / "three", model, 3)
    a = pl.read_parquet(tmp_path / "one" / PARTITION / "item_embeddings.parquet")
    b = pl.read_parquet(tmp_path / "three" / PARTITION / "item_embeddings.parquet")
    assert a["item_id"].equals(b["item_id"])
    assert np.stack(a["embedding"].to_numpy()).tobytes() == np.stack(b["embedding"].to_numpy()).tobytes()
    steps = {e.step_key for e in three.all_events if e.event_type_value == "STEP_SUCCESS"}
    assert {f"item_embeddings.item_embeddings__shard[w{w}]" for w in range(3)} <= steps
    meta = {e.asset_key.to_user_string(): e.materialization.metadata for e in three.get_asset_materialization_events()}
    emb = meta["item_embeddings"]
    assert emb["workers"].value == 3 and emb["shards_computed"].value == -(-a.height // 16)
    assert sorted(w["worker"] for w in emb["per_worker"].value) == [0, 1, 2]
    assert one.success  # the shard files only outlive a failed run
    assert not list((tmp_path / "three" / "_work" / PARTITION / "item_embeddings_shards").rglob("*.npy"))


def test_the_multiprocess_executor_runs_the_workers_in_processes_of_their_own(raw, tmp_path, monkeypatch):
    root, model = raw
    monkeypatch.setenv("SEMID_TEST_RAW", str(root))
    monkeypatch.setenv("SEMID_TEST_STORE", str(tmp_path / "mp"))
    from tests import sharding_location

    with dg.instance_for_test() as instance:
        result = dg.execute_job(
            dg.reconstructable(sharding_location.embed_job), instance=instance, tags={"dagster/partition": PARTITION},
            run_config={"ops": {"item_embeddings": {"config": {"model": model, "shard_size": 16, "workers": 2}}}})
        assert result.success
        pids = {}
        for record in instance.all_logs(result.run_id):
            event = record.dagster_event
            if event is not None and event.event_type_value == "STEP_START" and "__shard[" in (event.step_key or ""):
                pids[event.step_key] = event.pid
    assert len(pids) == 2 and len(set(pids.values())) == 2 and os.getpid() not in pids.values()
    single = _materialize(root, tmp_path / "single", model, 1)
    assert single.success
    a = pl.read_parquet(tmp_path / "single" / PARTITION / "item_embeddings.parquet")
    b = pl.read_parquet(tmp_path / "mp" / PARTITION / "item_embeddings.parquet")
    assert np.stack(a["embedding"].to_numpy()).tobytes() == np.stack(b["embedding"].to_numpy()).tobytes()


SASREC = {"grid_d_model": [16], "grid_layers": [1], "grid_dropout": [0.2, 0.5], "grid_lr": [0.003], "heads": 1,
          "epochs": 2, "batch_size": 64, "micro_batch_size": 64, "seeds": [0, 1, 2]}


def test_a_recommenders_seeds_are_steps_of_their_own_with_the_rows_of_one_process(raw, tmp_path, monkeypatch):
    """SASRec tunes its dropout in the prepare step (the winning trial is seed 0's model, handed over pickled),
    then each seed trains in a process of its own; the metric rows equal those of a single-process run."""
    from assets import ingest, recommend
    from pipeline.resources import ComputeResource, StorageResource

    root, _ = raw
    monkeypatch.setenv("SEMID_TEST_RAW", str(root))
    monkeypatch.setenv("SEMID_TEST_STORE", str(tmp_path / "mp"))
    from tests import sharding_location

    run_config = {"ops": {"recommender__sasrec": {"config": SASREC}}}
    with dg.instance_for_test() as instance:
        result = dg.execute_job(dg.reconstructable(sharding_location.sasrec_job), instance=instance,
                                tags={"dagster/partition": PARTITION}, run_config=run_config)
        assert result.success
        pids = {}
        for record in instance.all_logs(result.run_id):
            event = record.dagster_event
            if event is not None and event.event_type_value == "STEP_START" and ".recommender__sasrec__" in (
                    event.step_key or ""):
                pids[event.step_key.split(".", 1)[1]] = event.pid
        (meta,) = [e.materialization.metadata for e in result.get_asset_materialization_events()
                   if e.asset_key == dg.AssetKey(["recommender", "sasrec"])]
    assert set(pids) == {"recommender__sasrec__prepare", "recommender__sasrec__gather",
                         *(f"recommender__sasrec__seed[seed_{s}]" for s in (0, 1, 2))}
    assert len(set(pids.values())) == 5 and os.getpid() not in pids.values()
    tuning = meta["tuning"].value.splitlines()  # a markdown table: header, rule, the two dropout trials, once
    assert meta["seeds"].value == 3 and len(tuning) == 4 and "0.5" in tuning[3]
    sasrec = next(a for a in recommend.ASSETS if a.key == dg.AssetKey(["recommender", "sasrec"]))
    one = dg.materialize([*ingest.ASSETS, sasrec], partition_key=PARTITION, run_config=run_config, resources={
        "storage": StorageResource(raw_root=str(root), storage_root=str(tmp_path / "one")),
        "compute": ComputeResource(device="cpu", dtype="float32", torch_threads=1)})
    assert one.success
    for table in ("metrics__sasrec__ids", "per_user__sasrec__ids"):
        a = pl.read_parquet(tmp_path / "one" / PARTITION / f"{table}.parquet")
        b = pl.read_parquet(tmp_path / "mp" / PARTITION / f"{table}.parquet")
        assert a.height and a.equals(b), table
    assert sorted(a["seed"].unique()) == [0, 1, 2]
