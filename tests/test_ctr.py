"""ops.recommend.ctr on synthetic impressions with a planted click rule that only the items' codes reveal for cold
items: users click items whose code 0 (the item's topic) is in their favoured set."""
from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
import torch

from ops.recommend.ctr import (
    FUSIONS,
    CodeFusion,
    CTRConfig,
    ctr_metrics,
    ctr_rows,
    item_code_matrix,
    prepare,
    recommender_name,
    train_and_test,
)
from ops.recommend.evaluation import EVALUATION_SCHEMA, architecture

N_ITEMS, TOPICS, N_USERS = 240, 8, 120


@pytest.fixture(autouse=True)
def one_thread():
    """Models this small train ~100x faster on one thread than on two on this 2-core box (thread start-up and
    contention dominate a 1 ms step); restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def planted():
    return planted_impressions()


def planted_impressions():
    """Items 0..179 are shown in train, 180..239 only in valid / test (cold): their ID embeddings never train."""
    rng = np.random.default_rng(0)
    item_ids = [f"i{i}" for i in range(N_ITEMS)]
    topic = rng.integers(0, TOPICS, N_ITEMS)
    codes = np.stack([topic, rng.integers(0, 5, N_ITEMS)], axis=1).astype(np.int32)  # code 1 is noise
    table = pl.DataFrame({"item_id": item_ids, "codes": codes.tolist()}).with_columns(
        pl.col("codes").cast(pl.Array(pl.Int32, 2)))
    favoured = [set(rng.choice(TOPICS, 2, replace=False).tolist()) for _ in range(N_USERS)]
    rows = []
    for u in range(N_USERS):
        for split, pool, n in (("train", range(0, 180), 60), ("valid", range(180, N_ITEMS), 8),
                               ("test", range(180, N_ITEMS), 12)):
            for i in rng.choice(list(pool), n, replace=False):
                p = 0.9 if topic[i] in favoured[u] else 0.05
                rows.append({"user_id": f"u{u}", "item_id": f"i{i}", "label": int(rng.random() < p), "split": split})
    frame = pl.DataFrame(rows).with_columns(pl.col("label").cast(pl.Int8))
    return frame, item_ids, table


TINY = dict(embed_dim=8, mlp_layers=[32], batch_size=256, epochs=25, lr=2e-2, weight_decay=1e-5, dropout=0.0,
            patience=5, device="cpu")


@pytest.mark.parametrize("model", ["deepfm", "dcnv2"])
def test_codes_learn_the_planted_rule_on_cold_items_where_ids_cannot(planted, model):
    frame, item_ids, table = planted
    inputs = prepare(frame, item_ids, table)
    trained, with_codes = train_and_test(inputs, CTRConfig(model=model, **TINY))
    _, ids_only = train_and_test(inputs, CTRConfig(model=model, use_codes=False, **TINY))
    assert with_codes.metrics["auc"] > 0.75, with_codes.metrics
    assert with_codes.metrics["auc"] > ids_only.metrics["auc"] + 0.1, (with_codes.metrics, ids_only.metrics)
    assert with_codes.metrics["logloss"] < ids_only.metrics["logloss"]
    fit = with_codes.fit
    assert fit.valid_auc[fit.best_epoch - 1] == max(fit.valid_auc)  # the best epoch's weights are kept
    assert ctr_metrics(inputs.valid.labels, trained.predict(inputs.valid))["auc"] == pytest.approx(max(fit.valid_auc))
    assert fit.epochs_run == 25 or fit.epochs_run - fit.best_epoch == 5  # stopped by patience
    assert with_codes.recommender == model and ids_only.recommender == model


@pytest.mark.parametrize("fusion", FUSIONS)
def test_every_fusion_trains_to_finite_metrics(planted, fusion):
    frame, item_ids, table = planted
    inputs = prepare(frame, item_ids, table)
    for model in ("deepfm", "dcnv2"):
        _, result = train_and_test(inputs, CTRConfig(model=model, fusion=fusion, **{**TINY, "epochs": 2}))
        assert all(math.isfinite(v) for v in result.metrics.values()) and 0 <= result.metrics["auc"] <= 1
        assert result.recommender == (model if fusion == "gate" else f"{model}+{fusion}")


def test_fusions_give_their_fields_and_the_gate_multiplies_by_a_sigmoid():
    e = torch.randn(5, 3, 4)
    for kind in FUSIONS:
        out = CodeFusion(kind, 3, 4, 0.0)(e)
        assert out.shape == ((5, 3, 4) if kind == "none" else (5, 1, 4)), kind
    gate = CodeFusion("gate", 3, 4, 0.0)
    c = e.flatten(1)
    torch.testing.assert_close(gate(e), gate.out(c * torch.sigmoid(gate.gate(c))).unsqueeze(1))


def test_same_seed_same_metrics_and_another_seed_differs(planted):
    frame, item_ids, table = planted
    inputs = prepare(frame, item_ids, table)
    cfg = CTRConfig(model="dcnv2", **{**TINY, "epochs": 2, "dropout": 0.2})
    a, b = train_and_test(inputs, cfg)[1], train_and_test(inputs, cfg)[1]
    c = train_and_test(inputs, CTRConfig(model="dcnv2", seed=1, **{**TINY, "epochs": 2, "dropout": 0.2}))[1]
    assert a.metrics == b.metrics and a.fit.train_loss == b.fit.train_loss
    assert c.metrics != a.metrics


def test_the_multi_embedding_baseline_runs_with_m_item_tables(planted):
    frame, item_ids, _ = planted
    inputs = prepare(frame, item_ids)  # no code table at all
    model, result = train_and_test(inputs, CTRConfig(id_embeddings=4, use_codes=False, **{**TINY, "epochs": 2}))
    assert len(model.items) == 4 and model.fields == 5 and result.recommender == "deepfm_me4"
    assert math.isfinite(result.metrics["auc"]) and architecture("deepfm_me4+concat") == "deepfm"
    with pytest.raises(ValueError, match="use_codes needs"):
        train_and_test(inputs, CTRConfig(**TINY))


def test_unknown_items_get_the_padding_codes_and_rows_fit_the_evaluation_table():
    table = pl.DataFrame({"item_id": ["a", "b"], "codes": [[0, 3], [2, 1]]}).with_columns(
        pl.col("codes").cast(pl.Array(pl.Int32, 2)))
    codes, sizes = item_code_matrix(table, ["b", "x", "a"])
    assert sizes == [3, 4] and codes.tolist() == [[3, 4], [2, 1], [3, 4], [0, 3]]  # row 0 and "x": padding
    rows = ctr_rows({"auc": 0.7, "logloss": 1.3}, "d", "deepfm+mlp", "random", 2)
    assert rows.schema == pl.Schema(EVALUATION_SCHEMA) and rows["k"].null_count() == 2
    assert rows.select("metric", "value").rows() == [("auc", 0.7), ("logloss", 1.3)]
    assert recommender_name(CTRConfig(fusion="none", use_codes=False)) == "deepfm"  # fusion only names code models
    m = ctr_metrics(np.array([0, 1, 1, 0]), np.array([0.1, 0.9, 0.8, 0.3]))
    assert m["auc"] == 1.0 and m["logloss"] == pytest.approx(-np.mean(np.log([0.9, 0.9, 0.8, 0.7])))
    with pytest.raises(ValueError, match="both labels"):
        ctr_metrics(np.array([1, 1]), np.array([0.5, 0.6]))
    with pytest.raises(ValueError, match="unknown CTR model"):
        CTRConfig(model="autoint")  # type: ignore[arg-type]  # an invalid model, on purpose


# --- the evaluation of CTR rows --------------------------------------------------------------------------------------
def _ctr_long(values):
    """values: (recommender, tokenizer) -> [auc per seed]; logloss 1.5 (above 1: legal) for every run."""
    return pl.concat([ctr_rows({"auc": auc, "logloss": 1.5}, "d", r, t, seed)
                      for (r, t), aucs in values.items() for seed, auc in enumerate(aucs)])


def test_the_evaluation_check_takes_ctr_rows_beside_ranking_rows():
    from ops.recommend.evaluation import check_evaluation, ctr_comparison, expected_models, rows_for

    ranking = pl.concat([rows_for(np.array([0, 3, 30]), ["u1", "u2", "u3"], "d", "sasrec", None, s)[0]
                         for s in (0, 1, 2)])
    ctr = _ctr_long({("deepfm", "random"): [0.71, 0.74, 0.72], ("deepfm", None): [0.70, 0.71, 0.69],
                     ("dcnv2_me4", None): [0.705, 0.70, 0.69]})
    long = pl.concat([ranking, ctr])
    expected = [("sasrec", None, [0, 1, 2]), ("deepfm", "random", [0, 1, 2]), ("deepfm", None, [0, 1, 2])]
    passed, meta = check_evaluation(long, expected)
    assert passed, meta  # logloss 1.5 is fine; 2 rows per CTR model, 8 per ranking model
    assert meta["metric_rows_per_model"] == {"ranking": [8], "ctr": [2]}
    assert not check_evaluation(long.with_columns(
        pl.when(pl.col("metric") == "auc").then(1.2).otherwise(pl.col("value")).alias("value")), expected)[0]
    assert not check_evaluation(long.with_columns(
        pl.when(pl.col("metric") == "logloss").then(float("inf")).otherwise(pl.col("value")).alias("value")),
        expected)[0]
    assert not check_evaluation(long.filter(~((pl.col("metric") == "logloss") & (pl.col("seed") == 1)
                                              & pl.col("tokenizer").is_null())), expected)[0]  # a row lost
    table = ctr_comparison(long)
    assert table["recommender"].to_list() == ["dcnv2_me4", "deepfm", "deepfm"]
    codes = table.filter(pl.col("tokenizer") == "random").row(0, named=True)
    assert codes["vs"] == "deepfm/ids" and codes["auc gain"] == pytest.approx(0.07 / 3, abs=1e-4)
    from scipy.stats import ttest_rel

    want = ttest_rel([0.71, 0.74, 0.72], [0.70, 0.71, 0.69]).pvalue  # paired by seed
    assert codes["p (paired t, seeds)"] == pytest.approx(want, abs=1e-6) and 0 < want < 1
    assert table.filter(pl.col("tokenizer") == "ids", pl.col("recommender") == "deepfm")["vs"].item() is None
    assert table.filter(pl.col("recommender") == "dcnv2_me4")["vs"].item() is None  # no dcnv2/ids ran
    assert codes["auc"] == "0.7233 ± 0.0153"
    models = [("deepfm", "random", "ctr/random"), ("deepfm", None, "ctr/ids"), ("generative", "random")]
    assert expected_models(models, ["ctr/random"]) == [("deepfm", None), ("generative", "random")]
    assert expected_models(models, ["ctr"]) == [("generative", "random")]
    assert expected_models(models, ["deepfm/ids"]) == [("deepfm", "random"), ("generative", "random")]
