"""`make demo`'s run configs: valid for full_pipeline_job on every bundled sample, with the LM work where the demo
budget puts it (pipeline/demo.py)."""
import dagster as dg
import pytest

from ops.datasets import load_registry
from pipeline import runconfig
from pipeline.definitions import defs
from pipeline.demo import DEMO_CONFIG, selection

SAMPLES = [s.name for s in load_registry().values() if s.sample]


@pytest.mark.parametrize("dataset", SAMPLES)
def test_demo_config_is_valid_and_puts_the_palette_lm_on_the_mind_sample_only(dataset):
    job = defs.resolve_job_def("full_pipeline_job")
    keys, config = selection(job, dataset, runconfig.load(DEMO_CONFIG))
    dg.validate_run_config(job, config)  # raises on an unknown key or a wrong type
    chosen = {k.to_user_string() for k in keys}
    palette = config["ops"]["palette_model"]["config"]
    skip = set(config["ops"]["evaluation"]["config"]["skip"])
    lm = {"item_embeddings_lm", "code_table/pca_kmeans_lm", "recommender/generative/pca_kmeans_lm"}
    assert {"palette_model", "item_embeddings", "code_table/lamia", "recommender/generative/lamia"} <= chosen
    assert not any(k.startswith("recommender/generative_llm/") for k in chosen)
    from ops.tokenizers import REGISTRY

    skipped_llm = {f"generative_llm/{t}" for t in REGISTRY}
    ctr = {f"recommender/ctr/{t}" for t in ("ids", "random", "moc", "rqvae", "lamia")}
    all_ctr = {f"ctr/{t}" for t in [*REGISTRY, "ids"]}
    assert "impressions" in chosen  # CTR rows are built on every sample
    assert {f"code_table/{t}" for t in REGISTRY if t != "pca_kmeans_lm"} <= chosen  # every tokenizer's table
    not_in_demo = {f"generative/{t}" for t in ("rqkmeans", "pq", "opq")}  # make bench-codebooks trains them
    assert not chosen & lm  # the LM's pooled baseline is bench-lamia's (pipeline/demo.py)
    if dataset == "sample_mind":
        # the causal LM, one epoch over a sample of the items
        assert palette["model"] == "SmolLM2-135M-Instruct" and palette["epochs"] == 1 and palette["train_items"]
        # CTR on MIND's logged impressions, on a few code tables and the ID-only baseline
        assert {k for k in chosen if k.startswith("recommender/ctr/")} == ctr
        assert skip == skipped_llm | {"generative/pca_kmeans_lm"} | not_in_demo | (
            all_ctr - {k.removeprefix("recommender/") for k in ctr})
        assert config["ops"]["recommender__ctr__ids"]["config"]["epochs"] == 4
    else:
        assert palette["model"] == "all-MiniLM-L6-v2" and "train_items" not in palette  # the encoder overlay
        assert not any(k.startswith("recommender/ctr/") for k in chosen)
        mind_only = {"generative/moc", "generative/rqvae"}  # the trained VQ tables' recommender: MIND only
        assert skip == skipped_llm | {"generative/pca_kmeans_lm"} | all_ctr | not_in_demo | mind_only
        assert not {f"recommender/{t}" for t in mind_only} & chosen
    assert not {f"recommender/{t}" for t in not_in_demo} & chosen


def test_every_ablation_renders_a_valid_run_config_that_changes_only_the_palette():
    from pipeline.ablations import ablation_config, ablations

    job = defs.resolve_job_def("full_pipeline_job")
    base = runconfig.load(DEMO_CONFIG)
    names = ablations()
    assert {"full", "no_intra", "no_inter", "no_contrastive", "no_gen", "palette_2", "palette_8"} <= set(names)
    for name, change in names.items():
        config = ablation_config(name)
        dg.validate_run_config(job, config)
        palette = config["ops"]["palette_model"]["config"]
        assert palette == {**base["ops"]["palette_model"]["config"], **(change or {})}
        assert {k: v for k, v in config["ops"].items() if k != "palette_model"} == {
            k: v for k, v in base["ops"].items() if k != "palette_model"}
    with pytest.raises(KeyError, match="unknown ablation"):
        ablation_config("nope")


def test_a_family_is_named_once_and_reaches_every_asset_of_it_an_ops_own_entry_winning():
    from ops.tokenizers import REGISTRY

    expanded = runconfig.expand({"families": {"generative": {"epochs": 4, "lr": 0.004}, "ctr": {"epochs": 2}},
                                 "ops": {"recommender__generative__random": {"config": {"lr": 0.01}}}})
    ops = expanded["ops"]
    assert "families" not in expanded
    assert {op for op in ops if op.startswith("recommender__generative__")} == {
        f"recommender__generative__{t}" for t in REGISTRY}  # a new tokenizer gets the family's settings too
    assert ops["recommender__generative__lamia"]["config"] == {"epochs": 4, "lr": 0.004}
    assert ops["recommender__generative__random"]["config"] == {"epochs": 4, "lr": 0.01}  # its own entry wins
    assert ops["recommender__ctr__ids"]["config"] == {"epochs": 2}  # the ID-only variant is part of the family
    with pytest.raises(KeyError, match="unknown recommender 'generativ'; registered: generative"):
        runconfig.expand({"families": {"generativ": {}}})


def test_the_demo_selection_is_data_and_an_unnamed_asset_runs_everywhere():
    from pipeline.demo import demo_settings, runs_on

    assert demo_settings()["run_config"] == DEMO_CONFIG.name
    assert not runs_on(dg.AssetKey(["recommender", "ctr", "opq"]), "sample_mind")  # recommender/ctr/* on none
    assert runs_on(dg.AssetKey(["recommender", "ctr", "moc"]), "sample_mind")  # an earlier rule matched first
    assert runs_on(dg.AssetKey(["code_table", "some_new_tokenizer"]), "sample_hm")
