"""The seams the next stages build on: the artifact store, run configs generated from the ops configs, the shared
training loop (with a second, non-palette trainer), source-derived code versions, resources."""
from __future__ import annotations

import dataclasses
import importlib
import os
from pathlib import Path

import dagster as dg
import pytest
import torch

from assets import codes, common, embed, ingest, palette, versions
from ops import tokenizers
from ops.codetable import CodeTableChecks
from ops.embed import EmbedConfig
from ops.palette import PaletteConfig
from ops.retokenize import RetokenizeConfig
from ops.sequences import SplitConfig
from ops.training import EarlyStopping, TrainingConfig, fit, latest_checkpoint, read_state
from pipeline.definitions import defs
from pipeline.resources import ComputeResource
from storage.artifacts import ArtifactStore, new_version


# --- artifact store --------------------------------------------------------------------------------------------------
def test_artifact_versions_are_whole_immutable_and_published_only_on_request(tmp_path):
    store = ArtifactStore(tmp_path / "a")
    assert store.versions() == [] and store.latest() is None
    v1 = store.write("v1", lambda d: (d / "w.txt").write_text("one"), {"rows": 1})
    assert store.versions() == ["v1"] and store.manifest("v1")["files"] == ["w.txt"]
    assert store.manifest("v1")["metadata"] == {"rows": 1} and store.latest() is None  # not published yet
    with pytest.raises(FileExistsError):
        store.write("v1", lambda d: (d / "w.txt").write_text("other"))
    assert (v1 / "w.txt").read_text() == "one"

    def crash(d: Path) -> None:
        (d / "half.txt").write_text("…")
        raise RuntimeError("killed while writing")

    with pytest.raises(RuntimeError):
        store.write("v2", crash)
    assert store.versions() == ["v1"] and sorted(p.name for p in store.dir.iterdir()) == ["v1"]  # no leftovers
    (store.dir / "v3").mkdir()  # a directory without a manifest is not a version
    assert store.versions() == ["v1"]
    with pytest.raises(FileNotFoundError):
        store.publish("v3")
    store.publish("v1")
    assert store.latest() == "v1" and (store.dir / "latest").resolve() == v1 and store.latest_path() == v1
    store.write("v4", lambda d: None)
    assert store.latest() == "v1" and store.newest() == "v4" and store.newest("v1") == "v1"
    store.publish("v4")
    assert (store.dir / "latest").resolve().name == "v4" and (store.dir / "LATEST").read_text() == "v4\n"
    assert new_version("0123abcd-ef45-6789").endswith("-0123abcd") and new_version("x").startswith("v20")
    made = [new_version(run) for run in ("ffffffff", "00000000", "88888888")]  # within one second
    assert sorted(made) == made


# --- run configs come from the ops configs ---------------------------------------------------------------------------
def _defaults(ops_type, exclude=()):
    return {f.name: getattr(ops_type(), f.name) for f in dataclasses.fields(ops_type) if f.name not in exclude}


@pytest.mark.parametrize("config_type,ops_types,exclude", [
    (embed.EmbeddingConfig, (EmbedConfig,), ("device",)),
    (embed.RUN_CONFIGS["item_embeddings_lm"], (embed.LMEmbedConfig,), ("device",)),
    (palette.PaletteModelConfig, (PaletteConfig,), ("device",)),
    (ingest.SequenceConfig, (SplitConfig,), ()),
    *[(codes.code_table_config(e), (e.config_type, CodeTableChecks, RetokenizeConfig), ())
      for e in tokenizers.REGISTRY.values()],
])
def test_run_configs_have_exactly_the_ops_fields_and_defaults(config_type, ops_types, exclude):
    expected = {k: v for t in ops_types for k, v in _defaults(t, exclude).items()}
    assert config_type().model_dump() == expected  # no field copied by hand, no default that can drift
    for t in ops_types:
        assert config_type().build(t, **{k: getattr(t(), k) for k in exclude}) == t()


def test_lamia_code_table_has_no_length_of_its_own_and_checkpoint_default_is_one():
    assert "length" not in codes.code_table_config(tokenizers.get("lamia"))().model_dump()
    assert palette.PaletteModelConfig().checkpoint_every == PaletteConfig().checkpoint_every == 50


@pytest.mark.parametrize("job,op,field,value", [
    ("palette_job", "palette_model", "layout", "diagonal"),
    ("palette_job", "palette_model", "lap_init", "zeros"),
    ("tokenize_job", "item_embeddings", "pooling", "max"),
    ("tokenize_job", "code_table__pca_kmeans", "init", "kmeans"),
    ("ingest_job", "user_sequences", "protocol", "last_two"),
])
def test_a_wrong_choice_is_refused_at_launch(job, op, field, value):
    job_def = defs.resolve_job_def(job)
    with pytest.raises(dg.DagsterInvalidConfigError, match=field):
        dg.validate_run_config(job_def, {"ops": {op: {"config": {field: value}}}})


def test_jobs_select_assets_by_their_job_tag():
    repo = defs.get_repository_def()
    jobs = ("ingest_job", "tokenize_job", "palette_job", "evaluate_job")
    for job in jobs:
        keys = repo.get_job(job).asset_layer.executable_asset_keys
        assert keys and all(defs.get_assets_def(k).tags_by_key[k][common.JOB_TAG] == job.removesuffix("_job")
                            for k in keys), job
    everything = {k for a in defs.assets for k in a.keys}  # type: ignore[union-attr]  # every entry is an AssetsDefinition
    assert set().union(*(repo.get_job(j).asset_layer.executable_asset_keys for j in jobs)) == everything


# --- code versions ---------------------------------------------------------------------------------------------------
def test_code_versions_follow_the_source_of_the_ops_they_call(monkeypatch):
    before = {a.key.to_user_string(): a.code_versions_by_key[a.key] for a in codes.code_table_assets()}
    # each tokenizer's module is in its version (pca_kmeans and pca_kmeans_lm: one tokenizer on two sources; pq
    # and opq: two tokenizers of one module)
    assert len(set(before.values())) == len({e.tokenizer.__module__ for e in tokenizers.REGISTRY.values()})
    assert before["code_table/pca_kmeans"] == before["code_table/pca_kmeans_lm"]
    assert before["code_table/pq"] == before["code_table/opq"] != before["code_table/rqkmeans"]
    real = versions._source

    def edited(module: str) -> str:  # as if someone changed a line of the quantizer
        return real(module) + ("\n# changed\n" if module == "ops.quantize" else "")

    monkeypatch.setattr(versions, "_source", edited)
    after = {a.key.to_user_string(): a.code_versions_by_key[a.key] for a in codes.code_table_assets()}
    assert after["code_table/pca_kmeans"] != before["code_table/pca_kmeans"]
    assert after["code_table/lamia"] != before["code_table/lamia"]
    assert after["code_table/random"] == before["code_table/random"]  # random codes do not use the quantizer
    # a module asset: its code_version is computed when its module is imported
    assert "ops.models" in versions.source_closure("ops.embed")
    old = embed.item_embeddings.code_versions_by_key[embed.item_embeddings.key]
    monkeypatch.setattr(versions, "_source", lambda m: real(m) + ("\n# changed\n" if m == "ops.models" else ""))
    try:
        reloaded = importlib.reload(embed)
        assert reloaded.item_embeddings.code_versions_by_key[reloaded.item_embeddings.key] != old
        assert versions.code_version("ops.sequences") == ingest.SEQUENCES_CODE_VERSION  # untouched by that edit
    finally:
        monkeypatch.setattr(versions, "_source", real)
        importlib.reload(embed)
    assert embed.item_embeddings.code_versions_by_key[embed.item_embeddings.key] == old


# --- the shared training loop, used by a second trainer --------------------------------------------------------------
class Regression(torch.nn.Module):
    """A second trainer's model: least squares y = x w, checkpointed as one safetensors file."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(3))
        self.device_, self.autocast_dtype = torch.device("cpu"), None

    def trainable_parameters(self):
        return [self.w]

    def save_weights(self, directory: Path) -> None:
        from safetensors.torch import save_file

        save_file({"w": self.w.detach().clone()}, directory / "w.safetensors")

    def load_weights(self, directory: Path) -> None:
        from safetensors.torch import load_file

        with torch.no_grad():
            self.w.copy_(load_file(directory / "w.safetensors")["w"])


def _regression(tmp, steps=24, stop_at=None):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5])
    model = Regression()

    def loss(idx):
        err = ((x[list(idx)] @ model.w - y[list(idx)]) ** 2).mean()
        return err, {"loss": float(err.detach())}

    def stop(row):
        if stop_at is not None and row["step"] == stop_at:
            raise KeyboardInterrupt

    cfg = TrainingConfig(lr=0.1, batch_size=16, micro_batch_size=4, max_steps=steps, checkpoint_every=8)
    return model, fit(model, cfg, len(x), loss, "run-a", tmp, state={"trainer": "regression"}, on_step=stop)


def test_a_second_trainer_trains_checkpoints_and_resumes_on_the_shared_loop(tmp_path):
    model, res = _regression(tmp_path / "a")
    assert res.history[-1]["loss"] < 0.1 * res.history[0]["loss"] and res.items_seen == 24 * 16
    ck = latest_checkpoint(tmp_path / "a")
    assert ck.name == "step-0000024" and read_state(ck)["trainer"] == "regression"
    assert ArtifactStore(tmp_path / "a").versions() == ["step-0000008", "step-0000016", "step-0000024"]
    with pytest.raises(KeyboardInterrupt):
        _regression(tmp_path / "b", stop_at=12)
    assert latest_checkpoint(tmp_path / "b").name == "step-0000008"
    resumed_model, resumed = _regression(tmp_path / "b")
    assert resumed.resumed_from == 8
    assert [r["loss"] for r in resumed.history] == pytest.approx([r["loss"] for r in res.history], rel=1e-6)
    torch.testing.assert_close(resumed_model.w, model.w)


def _scripted(scores, model):
    """An evaluation that returns the next scripted score and records the weights it saw."""
    seen = []

    def evaluate():
        seen.append(model.w.detach().clone())
        return scores[len(seen) - 1]

    return evaluate, seen


@pytest.mark.parametrize("store", [False, True])
def test_early_stopping_stops_after_patience_and_keeps_the_best_evaluation(tmp_path, store):
    """Evaluated every `every` steps: stops `patience` evaluations after the best and leaves the model at the
    weights the best evaluation saw (its checkpoint with a store, a copy in memory without)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5])
    model = Regression()
    evaluate, seen = _scripted([0.1, 0.5, 0.3, 0.4, 0.9], model)

    def loss(idx):
        err = ((x[list(idx)] @ model.w - y[list(idx)]) ** 2).mean()
        return err, {"loss": float(err.detach())}

    cfg = TrainingConfig(lr=0.1, batch_size=16, micro_batch_size=16, epochs=10, checkpoint_every=0)
    result = fit(model, cfg, len(x), loss, "run-s", tmp_path / "ck" if store else None,
                 stopping=EarlyStopping(evaluate, every=4, patience=2), batching="epoch")
    assert result.extra["evaluations"] == [0.1, 0.5, 0.3, 0.4]  # two without a better one after 0.5: stopped
    assert result.extra["best_evaluation"] == 2 and result.extra["best_step"] == 8 and len(result.history) == 16
    torch.testing.assert_close(model.w.detach(), seen[1])  # the weights of the best evaluation
    if store:
        assert Path(result.extra["best_checkpoint"]).name == "step-0000008"
        # a rerun resumes at the end: evaluations come from the checkpoint, nothing is trained or evaluated again
        again = Regression()
        evaluate, seen_again = _scripted([0.0] * 9, again)
        rerun = fit(again, cfg, len(x), loss, "run-s", tmp_path / "ck",
                    stopping=EarlyStopping(evaluate, every=4, patience=2), batching="epoch")
        assert rerun.extra["evaluations"] == [0.1, 0.5, 0.3, 0.4] and not seen_again
        torch.testing.assert_close(again.w.detach(), seen[1])


def test_epoch_batching_covers_every_row_once_per_epoch_with_a_smaller_last_batch():
    from ops.training import step_batch

    cfg = TrainingConfig(batch_size=16, seed=3)
    epoch = [step_batch(cfg, 40, s, "epoch")[0] for s in range(3)]
    assert [len(b) for b in epoch] == [16, 16, 8] and sorted(i for b in epoch for i in b) == list(range(40))
    assert step_batch(cfg, 40, 3, "epoch")[0] != epoch[0]  # the next epoch: another permutation
    assert len({step_batch(cfg, 40, s, "epoch")[1] for s in range(6)}) == 6  # a dropout seed per step


def test_checkpoints_of_another_run_are_never_overwritten(tmp_path):
    _regression(tmp_path / "a")
    model = Regression()
    cfg = TrainingConfig(max_steps=2, batch_size=4, micro_batch_size=4)
    with pytest.raises(FileExistsError, match="another run"):
        fit(model, cfg, 8, lambda idx: (model.w.sum() * 0, {}), "run-b", tmp_path / "a")


# --- resources -------------------------------------------------------------------------------------------------------
def test_thread_setting_is_applied_when_the_resource_is_set_up():
    before = torch.get_num_threads()
    try:
        with dg.build_resources({"compute": ComputeResource(torch_threads=1)}):
            assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_environment_variables_bind_resources_through_envvar(monkeypatch):
    from pipeline.resources import default_resources

    monkeypatch.setenv("SEMID_STORAGE_ROOT", "/somewhere/store")
    monkeypatch.setenv("SEMID_TORCH_THREADS", "3")
    resources = default_resources()
    assert isinstance(resources["storage"].storage_root, dg.EnvVar)  # resolved in each run's process
    assert resources["compute"].torch_threads == dg.EnvVar.int("SEMID_TORCH_THREADS")
    monkeypatch.delenv("SEMID_STORAGE_ROOT")
    assert default_resources()["storage"].storage_root.endswith(os.path.join("data", "store"))
