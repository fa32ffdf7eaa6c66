"""A new recommender is one `Recommender` subclass plus one registration: the asset factory gives it its asset (seeds
loop, metric rows, write), the demo selects it, and the evaluation expects its rows and checks them."""
import dagster as dg
import numpy as np
import polars as pl
import pytest

from assets import evaluation, ingest
from assets.recommend import build_recommender_asset, recommender_assets
from ops import recommend
from ops.metrics import ranks_from_scores
from ops.recommend import RecData, Recommender, RecommenderEntry, SeedRun
from ops.recommend.base import ranking_run
from ops.recommend.sasrec import item_sequences
from ops.sample import generate
from pipeline.demo import runs_on
from pipeline.resources import ComputeResource, StorageResource

PARTITION = "sample_mind"


class SeededNoise(Recommender):
    """Test-only: a seeded random score per (user, item): the floor any learned model must clear."""

    def prepare(self, data: RecData) -> None:
        self.data, self.n = data, data.items.height
        self.test = item_sequences(data.sequences, data.item_index(), "test")

    def run(self, seed: int) -> SeedRun:
        scores = np.random.default_rng(seed).random((len(self.test), self.n))
        return ranking_run(ranks_from_scores(scores, self.test.targets), self.test.users, self.data, self.name, seed)


TOY = RecommenderEntry("noise", SeededNoise, "seeded random scores (test-only).", trains=False,
                       kinds=frozenset({"parquet"}))


@pytest.fixture
def toy():
    recommend.register(TOY)
    yield TOY
    recommend.REGISTRY.pop("noise")


def test_a_registered_recommender_gets_its_asset_its_demo_slot_and_its_evaluation_rows(toy, tmp_path):
    generate("mind", tmp_path / "raw" / PARTITION, "tiny", seed=0)
    resources = {"storage": StorageResource(raw_root=str(tmp_path / "raw"), storage_root=str(tmp_path / "store")),
                 "compute": ComputeResource(device="cpu")}
    key = dg.AssetKey(["recommender", "noise"])
    assert key in {a.key for a in recommender_assets()}  # the factory builds it from the registry
    assert runs_on(key, PARTITION)  # and the demo runs it
    skip = ["generative", "generative_llm", "sasrec", "popularity", "ctr"]  # the others are tested elsewhere
    run_config = {"ops": {"evaluation": {"config": {"seeds": [0, 1], "skip": skip}},
                          "recommender__noise": {"config": {"seeds": [0, 1]}}}}
    noise = build_recommender_asset(TOY)
    gather = evaluation.build_evaluation_asset([noise])  # (the code location's waits for every registered family)
    result = dg.materialize([*ingest.ASSETS, noise, gather], partition_key=PARTITION,
                            resources=resources, run_config=run_config)
    assert result.success
    check = next(e for e in result.get_asset_check_evaluations() if e.check_name == "evaluation_complete")
    assert check.passed, check.metadata
    long = resources["storage"].store().read(PARTITION, "evaluation")
    assert set(long.select("recommender", "seed").unique().iter_rows()) == {("noise", 0), ("noise", 1)}
    assert long.filter(pl.col("metric") == "ndcg")["value"].is_between(0, 1).all()

    # the evaluation expects the registered family: without its rows the check fails and names them
    resources["storage"].store().table_path(PARTITION, "metrics__noise__ids").unlink()
    result = dg.materialize([gather], partition_key=PARTITION, resources=resources, raise_on_error=False,
                            run_config={"ops": {"evaluation": run_config["ops"]["evaluation"]}})
    check = next(e for e in result.get_asset_check_evaluations() if e.check_name == "evaluation_complete")
    assert not check.passed and "noise/-/seed 0" in check.metadata["missing"].value
