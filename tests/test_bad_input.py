"""What a new user's usual mistakes meet: config values out of range (refused at launch, naming the op, the field,
the value and the range), empty or all-quarantined inputs, a mistyped raw root, names that would write outside
the store, and a trainer that would publish an untrained model."""
import dataclasses
import os
import time
import types
import typing

import dagster as dg
import polars as pl
import pytest

from assets import codes, ingest
from ops.config import ConfigError, declared_range, field_type
from ops.datasets import load_registry
from ops.recommend.generative import GenerativeConfig
from ops.sample import generate
from ops.tokenizers.random import RandomConfig
from ops.tokenizers.rqvae import RQVAEConfig
from pipeline.preflight import config_problems, run_config_classes
from pipeline.resources import ComputeResource, StorageResource
from storage import Store
from storage.artifacts import ArtifactStore
from storage.codes import CodeTableStore
from storage.paths import UnsafePathError

# --- config values: one family per block; each must be refused with its op, field, value and range ---------------
BAD_VALUES = [
    # tokenizers
    ("code_table__random", {"k": 0}, "ops.code_table__random.config.k = 0: Input should be greater than or equal to 2"),
    ("code_table__random", {"length": 0}, "code_table__random.config.length = 0: Input should be greater than or equal to 1"),
    ("code_table__random", {"k": -5}, "code_table__random.config.k = -5: Input should be greater than or equal to 2"),
    ("code_table__pca_kmeans", {"length": 0}, "code_table__pca_kmeans.config.length = 0: Input should be greater"),
    ("code_table__pca_kmeans", {"length": -2}, "code_table__pca_kmeans.config.length = -2: Input should be greater"),
    ("code_table__rqvae", {"lr": -1}, "ops.code_table__rqvae.config.lr = -1: Input should be greater than 0"),
    ("code_table__rqvae", {"epochs": 0}, "ops.code_table__rqvae.config.epochs = 0: Input should be greater than 0"),
    ("code_table__rqvae", {"epochs": -3}, "ops.code_table__rqvae.config.epochs = -3: Input should be greater than 0"),
    ("code_table__moc", {"hidden": [64, 0]}, "code_table__moc.config.hidden.1 = 0: Input should be greater than or equal to 1"),
    ("code_table__pq", {"k": 100}, "code_table__pq.config: PQConfig: k = 100: must be a power of 2"),
    ("code_table__lamia", {"collision_warn": 0.6}, "CodeTableChecks: collision_warn = 0.6 must be <= collision_block = 0.5"),
    # the palette
    ("palette_model", {"lora_rank": 0}, "ops.palette_model.config.lora_rank = 0: Input should be greater than or equal to 1"),
    ("palette_model", {"lr": 0}, "ops.palette_model.config.lr = 0: Input should be greater than 0"),
    ("palette_model", {"lora_dropout": 1.0}, "ops.palette_model.config.lora_dropout = 1.0: Input should be less than 1"),
    ("palette_model", {"alpha_inter": 2}, "ops.palette_model.config.alpha_inter = 2: Input should be less than or equal to 1"),
    ("palette_model", {"use_gen": False, "use_intra": False, "use_inter": False}, "at least one loss term"),
    # recommenders
    ("recommender__generative__pca_kmeans", {"heads": 3}, "GenerativeConfig: d_model = 128 must be a multiple of heads = 3"),
    ("recommender__generative__pca_kmeans", {"seeds": []}, "config.seeds = []: List should have at least 1 item"),
    ("recommender__generative__pca_kmeans", {"patience": 0}, "config.patience = 0: Input should be greater than or equal to 1"),
    ("recommender__sasrec", {"grid_lr": [0.001, -1]}, "ops.recommender__sasrec.config.grid_lr.1 = -1: Input should be greater than 0"),
    ("recommender__sasrec", {"max_length": 0}, "ops.recommender__sasrec.config.max_length = 0"),
    # CTR
    ("recommender__ctr__random", {"dropout": 1.5}, "ops.recommender__ctr__random.config.dropout = 1.5: Input should be less than 1"),
    ("recommender__ctr__ids", {"me_embeddings": [0]}, "ops.recommender__ctr__ids.config.me_embeddings.0 = 0"),
    ("recommender__ctr__random", {"epochs": 0}, "ops.recommender__ctr__random.config.epochs = 0"),
    # evaluation, ingest-side settings, embeddings
    ("evaluation", {"seeds": [-1]}, "ops.evaluation.config.seeds.0 = -1: Input should be greater than or equal to 0"),
    ("user_sequences", {"valid_fraction": 0.6, "test_fraction": 0.5}, "SplitConfig: valid_fraction + test_fraction = 1.1"),
    ("impressions", {"negatives": 0}, "ops.impressions.config.negatives = 0: Input should be greater than or equal to 1"),
    ("item_embeddings", {"max_length": 0}, "ops.item_embeddings.config.max_length = 0"),
]


@pytest.mark.parametrize("op,values,message", BAD_VALUES, ids=[f"{op}-{'-'.join(v)}" for op, v, _ in BAD_VALUES])
def test_a_bad_config_value_is_refused_naming_op_field_value_and_range(op, values, message):
    problems = config_problems({"ops": {op: {"config": values}}})
    assert any(message in p for p in problems), problems


def test_the_shipped_configs_and_the_defaults_pass():
    assert config_problems({"ops": {op: {"config": {}} for op in run_config_classes()}}) == []


def test_every_numeric_config_field_declares_its_range():
    """A new int / float field (or a list of them) without a range fails here, not in a user's run."""
    def numeric(tp) -> bool:
        tp = typing.get_args(tp)[0] if typing.get_origin(tp) is typing.Annotated else tp
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            return any(numeric(a) for a in typing.get_args(tp) if a is not type(None))
        if typing.get_origin(tp) is list:
            return numeric(typing.get_args(tp)[0])
        return tp in (int, float)

    missing = [f"{t.__name__}.{f.name}" for t in {t for c in run_config_classes().values() for t in c.ops_types}
               for f in dataclasses.fields(t) if numeric(field_type(t, f.name)) and not any(declared_range(t, f.name))]
    assert not missing, f"numeric config fields without a declared range: {missing}"


def test_ops_configs_refuse_out_of_range_values_when_built():
    """Bench scripts and direct users of ops/ get the same refusal, naming the class, field, value and range."""
    with pytest.raises(ConfigError, match=r"RQVAEConfig.epochs = 0: must be > 0"):
        RQVAEConfig(epochs=0)
    with pytest.raises(ConfigError, match=r"RandomConfig.length = 0: must be >= 1; RandomConfig.k = -5: must be >= 2"):
        RandomConfig(length=0, k=-5)
    with pytest.raises(ConfigError, match=r"GenerativeConfig.lr = nan: must be > 0"):
        GenerativeConfig(lr=float("nan"))
    with pytest.raises(ConfigError, match=r"GenerativeConfig.valid_users = 0: must be >= 1"):
        GenerativeConfig(valid_users=0)  # an optional field is checked when set
    assert GenerativeConfig(valid_users=None).valid_users is None


def test_a_trainer_that_ran_zero_steps_refuses_to_return(monkeypatch):
    """An untrained model must never reach a published table, whatever let the step count reach zero."""
    import numpy as np

    from ops import training
    from ops.tokenizers.rqvae import RQVAE

    monkeypatch.setattr(training, "total_steps", lambda cfg, n, batching="stream": 0)
    x = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
    with pytest.raises(RuntimeError, match="ran zero steps"):
        RQVAE(RQVAEConfig(k=4, length=2, hidden=[16], latent_dim=4, device="cpu")).fit(x, [str(i) for i in range(64)])


def test_a_bad_value_fails_the_run_in_its_first_step_and_nothing_is_published(tmp_path):
    raw = tmp_path / "raw"
    generate("mind", raw / "sample_mind", "tiny", seed=0)
    storage = StorageResource(raw_root=str(raw), storage_root=str(tmp_path / "store"))
    started = time.perf_counter()
    result = dg.materialize([*ingest.ASSETS, *codes.ASSETS], partition_key="sample_mind", raise_on_error=False,
                            resources={"storage": storage, "compute": ComputeResource(device="cpu")},
                            selection=["items", "interactions", "quarantine", "code_table/rqvae"],
                            run_config={"ops": {"code_table__rqvae": {"config": {"epochs": 0, "lr": -1}}}})
    assert not result.success and time.perf_counter() - started < 30
    message = str(next(e for e in result.all_events if e.is_failure).event_specific_data.error)
    assert "ops.code_table__rqvae.config.epochs = 0: Input should be greater than 0" in message
    assert "ops.code_table__rqvae.config.lr = -1: Input should be greater than 0" in message
    assert not any(e.is_step_success for e in result.all_events)  # not even ingestion ran
    assert not (tmp_path / "store").exists() or not list((tmp_path / "store").rglob("*.parquet"))


# --- inputs that are empty, all quarantined, or not there ------------------------------------------------------------
def _ingest(raw, store, partition="sample_mind"):
    storage = StorageResource(raw_root=str(raw), storage_root=str(store))
    return storage, dg.materialize([*ingest.ASSETS, *ingest.CHECKS], partition_key=partition,
                                   resources={"storage": storage}, raise_on_error=False)


def _failure(result) -> str:
    return str(next(e for e in result.all_events if e.is_step_failure).event_specific_data.error)


def test_an_empty_behaviors_file_fails_naming_it_and_writes_no_tables(tmp_path):
    raw = generate("mind", tmp_path / "raw" / "sample_mind", "tiny", seed=0)
    (raw / "behaviors.tsv").write_text("")
    _, result = _ingest(tmp_path / "raw", tmp_path / "store")
    assert not result.success
    message = _failure(result)
    assert "no interactions kept from" in message and "behaviors.tsv is empty (no records)" in message
    assert not list((tmp_path / "store").rglob("*.parquet"))  # no table of an empty run reaches the store


def test_an_all_quarantined_behaviors_file_fails_with_its_counts(tmp_path):
    raw = generate("mind", tmp_path / "raw" / "sample_mind", "tiny", seed=0)
    lines = (raw / "behaviors.tsv").read_text().splitlines()
    # every impression line names a user and news that do not exist: structurally fine, nothing usable
    (raw / "behaviors.tsv").write_text("".join(f"{i}\tU{i}\t11/15/2019 8:55:22 AM\tN999999\tN999998-1\n"
                                               for i in range(1, len(lines) + 1)))
    _, result = _ingest(tmp_path / "raw", tmp_path / "store")
    assert not result.success
    message = _failure(result)
    assert "no interactions kept from" in message and "behaviors.tsv:" in message and "none kept" in message
    assert f"{len(lines):,} lines read" in message


def test_an_empty_hm_transactions_file_fails_before_any_table_is_replaced(tmp_path):
    """H&M's transactions are streamed: the refusal comes after the sink, before any rename."""
    raw = generate("hm", tmp_path / "raw" / "sample_hm", "tiny", seed=0)
    header = (raw / "transactions_train.csv").read_text().splitlines()[0]
    (raw / "transactions_train.csv").write_text(header + "\n")
    _, result = _ingest(tmp_path / "raw", tmp_path / "store", "sample_hm")
    assert not result.success
    message = _failure(result)
    assert "no interactions kept from" in message and "transactions_train.csv is empty (no records)" in message
    assert not list((tmp_path / "store").rglob("*.parquet"))


def test_empty_news_fails_naming_the_directory(tmp_path):
    raw = generate("mind", tmp_path / "raw" / "sample_mind", "tiny", seed=0)
    (raw / "news.tsv").write_text("")
    _, result = _ingest(tmp_path / "raw", tmp_path / "store")
    assert not result.success and "MIND: no valid news in" in _failure(result)


def test_a_missing_raw_directory_is_an_error_naming_path_and_variable_and_nothing_is_generated(tmp_path, monkeypatch):
    typo = tmp_path / "raw_typo"
    monkeypatch.setenv("SEMID_RAW_ROOT", str(typo))
    _, result = _ingest(typo, tmp_path / "store")
    assert not result.success
    message = _failure(result)
    assert f"raw directory {typo / 'sample_mind'} does not exist" in message
    assert f"$SEMID_RAW_ROOT={typo}" in message and "python -m ops.sample" in message
    assert not typo.exists()  # no synthetic data written at a mistyped root


# --- names that would write outside the store -------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../../escape", "/tmp/absolute", "a/b", "..", ".hidden", ""])
def test_a_dataset_name_that_is_no_plain_directory_name_is_refused_when_the_registry_loads(tmp_path, name):
    registry = tmp_path / "datasets.toml"
    registry.write_text(f'["{name}"]\nsource = "mind"\nraw_dir = "mind"\n')
    with pytest.raises(ValueError, match=f"{registry}.*dataset name .* is not allowed"):
        load_registry(registry)


def test_store_paths_stay_under_the_root(tmp_path):
    store = Store(tmp_path / "store")
    for dataset, table in (("..", "items"), ("../escape", "items"), ("/etc", "items"), ("ok", "../../x"),
                           ("ok", "/abs")):
        with pytest.raises(UnsafePathError):
            store.table_path(dataset, table)
    with pytest.raises(UnsafePathError):
        CodeTableStore(tmp_path / "store", "ok", "../../tok")
    with pytest.raises(UnsafePathError):
        ArtifactStore(tmp_path / "store" / "ok").path("../../v1")
    with pytest.raises(UnsafePathError):
        store.artifacts("ok", "..", "x")
    assert store.table_path("sample_mind", "items") == store.root / "sample_mind" / "items.parquet"


def test_a_dataset_directory_symlinked_outside_the_root_is_refused(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    store = Store(tmp_path / "store")
    store.root.mkdir(parents=True)
    os.symlink(outside, store.root / "linked")
    with pytest.raises(UnsafePathError, match="outside the store root"):
        store.table_path("linked", "items")
    with pytest.raises(UnsafePathError, match="outside the store root"):
        store.code_tables("linked", "random")
    # a symlink that stays inside the root (code tables' `latest`) is fine
    (store.root / "real").mkdir()
    os.symlink(store.root / "real", store.root / "alias")
    assert store.table_path("alias", "items").name == "items.parquet"


def test_a_tokenizer_name_with_a_path_in_it_cannot_be_registered():
    from ops.tokenizers import REGISTRY, register

    entry = dataclasses.replace(REGISTRY["random"], name="../random")
    with pytest.raises(UnsafePathError, match="tokenizer name '../random'"):
        register(entry)
    assert "../random" not in REGISTRY


def test_the_ingested_tables_of_a_good_run_are_unaffected(tmp_path):
    """The guards refuse bad input only: the bundled sample still ingests with every table written."""
    generate("mind", tmp_path / "raw" / "sample_mind", "tiny", seed=0)
    storage, result = _ingest(tmp_path / "raw", tmp_path / "store")
    assert result.success
    assert pl.read_parquet(storage.store().table_path("sample_mind", "interactions")).height > 0
