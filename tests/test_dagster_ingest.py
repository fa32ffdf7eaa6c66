"""Assets through dg.materialize with the real storage resource into a temp dir (not in-memory IO)."""
import dagster as dg
import polars as pl
import pytest

from assets import ingest
from ops.sample import generate
from pipeline.resources import ComputeResource, StorageResource


@pytest.fixture
def storage(tmp_path):
    raw = tmp_path / "raw"
    generate("mind", raw / "sample_mind", "tiny", seed=0, corrupt=True)
    generate("hm", raw / "sample_hm", "tiny", seed=0, corrupt=True)
    return StorageResource(raw_root=str(raw), storage_root=str(tmp_path / "store"))


def _materialize(storage, partition):
    return dg.materialize([*ingest.ASSETS, *ingest.CHECKS], partition_key=partition,
                          resources={"storage": storage}, raise_on_error=False)


@pytest.mark.parametrize("partition", ["sample_mind", "sample_hm"])
def test_ingest_assets_materialize_with_green_checks(storage, partition):
    result = _materialize(storage, partition)
    assert result.success
    evaluations = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert evaluations == {"unique_item_ids": True, "item_text_not_empty": True,
                           "interactions_reference_known_items": True, "row_accounting_balanced": True,
                           "sequences_well_formed": True, "impressions_well_formed": True}
    store = storage.store()
    for table in ("items", "interactions", "quarantine", "user_sequences", "impressions", "shown_not_clicked"):
        assert store.table_path(partition, table).is_file()
    imp = store.read(partition, "impressions")
    positives = imp.filter(pl.col("label") == 1).height
    if partition == "sample_mind":  # logged: clicks and the side table's shown-not-clicked rows
        assert set(imp["source"]) == {"impression"}
        assert imp.height - positives == store.read(partition, "shown_not_clicked").height > 0
        assert positives == store.read(partition, "interactions").filter(pl.col("event") == "click").height
        acc = store.read(partition, "ingest_accounting")
        assert acc["kept_elsewhere"].sum() == imp.height - positives
    else:  # sampled: 4 negatives per interaction
        assert positives == store.read(partition, "interactions").height and imp.height == 5 * positives
        assert store.read(partition, "shown_not_clicked").height == 0
    check = next(e for e in result.get_asset_check_evaluations() if e.check_name == "impressions_well_formed")
    assert 0 < check.metadata["ctr_test"].value < 1 and check.metadata["rows_valid_label_0"].value > 0
    mats = {m.asset_key.to_user_string(): m for m in result.get_asset_materialization_events()}
    items_meta = mats["items"].materialization.metadata
    assert items_meta["dagster/row_count"].value == store.read(partition, "items").height
    assert store.read(partition, "quarantine").height == (5 if partition == "sample_mind" else 5)


def test_failed_check_blocks_downstream(storage, monkeypatch):
    """Simulate a loader bug that duplicates an item: the blocking check fails and user_sequences never runs."""
    from ops.ingest.common import ItemBuilder

    original = ItemBuilder.frame
    monkeypatch.setattr(ItemBuilder, "frame", lambda self, keep=None: pl.concat([original(self, keep)] * 2))
    result = _materialize(storage, "sample_hm")
    assert not result.success
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert evaluations["unique_item_ids"].passed is False
    assert evaluations["unique_item_ids"].metadata["duplicated"].value == storage.store().read(
        "sample_hm", "items")["item_id"].n_unique()
    # everything that depends on `items` waits for its blocking checks: not evaluated at all
    assert "row_accounting_balanced" not in evaluations
    materialized = {m.asset_key.to_user_string() for m in result.get_asset_materialization_events()}
    assert "items" in materialized and "user_sequences" not in materialized
    assert not storage.store().exists("sample_hm", "user_sequences")


def test_missing_raw_files_give_clear_failure(tmp_path):
    storage = StorageResource(raw_root=str(tmp_path / "raw"), storage_root=str(tmp_path / "store"))
    result = dg.materialize(ingest.ASSETS, partition_key="mind", resources={"storage": storage},
                            raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = failure.step_failure_data.error.message
    assert f"raw directory {tmp_path / 'raw' / 'mind'} does not exist" in message and "raw_root" in message
    (tmp_path / "raw" / "mind").mkdir(parents=True)  # there, but without news.tsv
    (tmp_path / "raw" / "mind" / "behaviors.tsv").write_text("1\tU1\t11/15/2019 8:55:22 AM\tN1\tN1-1\n")
    result = dg.materialize(ingest.ASSETS, partition_key="mind", resources={"storage": storage},
                            raise_on_error=False)
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = failure.step_failure_data.error.cause.message  # the loader's own message, not a parser traceback
    assert "MIND news" in message and "no file news.tsv[.gz]" in message


def test_definitions_load():
    from pipeline.definitions import defs

    repo = defs.get_repository_def()
    keys = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    assert {"items", "interactions", "quarantine", "user_sequences", "item_embeddings", "code_table/pca_kmeans",
            "code_table/random"} <= keys
    checks = {k.name for k in repo.asset_graph.asset_check_keys}
    assert {"unique_item_ids", "item_text_not_empty", "interactions_reference_known_items",
            "row_accounting_balanced", "sequences_well_formed", "embeddings_complete_and_finite",
            "unique_semantic_id", "utilization_above_floor"} <= checks
    assert {"ingest_job", "tokenize_job", "palette_job", "full_pipeline_job"} <= {j.name for j in repo.get_all_jobs()}
    assert {"palette_model", "palette_embeddings", "code_table/lamia"} <= keys
    assert "palette_complete_and_finite" in checks

    def selected(job: str) -> set[str]:
        return {k.to_user_string() for k in repo.get_job(job).asset_layer.executable_asset_keys}

    # training is a job of its own (a GPU job on real data); tokenize_job stays cheap
    assert selected("palette_job") == {"palette_model", "palette_embeddings", "code_table/lamia", "id_quality/lamia",
                                       "serving_index/lamia"}
    assert "code_table/lamia" not in selected("tokenize_job") and "code_table/random" in selected("tokenize_job")
    for key in ("item_embeddings", "palette_model", "palette_embeddings"):  # model work is routed to GPU workers
        ops = {op.name: op for op in defs.get_assets_def(key).node_def.iterate_op_defs()}
        model_ops = [op for name, op in ops.items() if not name.endswith("__workers")]  # the fan-out is not
        assert model_ops and all(op.tags["semid/resource"] == "gpu" and op.pool == "gpu" for op in model_ops), key
    from ops.tokenizers import REGISTRY  # CTR: impressions (ingest) and one CTR asset per code table + ids (evaluate)

    assert {"impressions", "recommender/ctr/ids", *(f"recommender/ctr/{t}" for t in REGISTRY)} <= keys
    assert "impressions_well_formed" in checks and "impressions" in selected("ingest_job")
    assert {"recommender/ctr/ids", "recommender/ctr/random", "evaluation"} <= selected("evaluate_job")


def test_sequence_config_mirrors_split_config():
    from dataclasses import asdict

    from ops.sequences import SplitConfig

    assert ingest.SequenceConfig().model_dump() == asdict(SplitConfig())


def test_a_model_that_cannot_be_loaded_fails_the_run_in_its_first_step(tmp_path):
    """The palette model comes last in the graph; a wrong `model` must not cost the stages before it."""
    import time

    from assets import embed, palette

    storage = StorageResource(raw_root=str(tmp_path / "raw"), storage_root=str(tmp_path / "store"))
    started = time.perf_counter()
    result = dg.materialize([*ingest.ASSETS, *embed.ASSETS, *palette.ASSETS], partition_key="sample_mind",
                            resources={"storage": storage, "compute": ComputeResource(device="cpu")},
                            raise_on_error=False,
                            run_config={"ops": {"palette_model": {"config": {"model": "facebook/opt-350m"}},
                                                "item_embeddings": {"config": {"model": str(tmp_path / "nope")}}}})
    assert not result.success and time.perf_counter() - started < 30
    failure = next(e for e in result.all_events if e.is_failure)
    message = str(failure.event_specific_data.error)
    assert "ops.palette_model.config.model = 'facebook/opt-350m' cannot be loaded" in message
    assert f"ops.item_embeddings.config.model = '{tmp_path / 'nope'}'" in message and "no config.json" in message
    assert "SmolLM2-135M-Instruct" in message and "all-MiniLM-L6-v2" in message  # the offline choices
    assert not list((tmp_path / "store").rglob("*.parquet"))  # nothing ran: not even ingestion
    assert not any(e.is_step_success for e in result.all_events)
