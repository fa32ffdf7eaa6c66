"""ops.metrics and ops.recommend: metrics on hand-computed cases, the prefix index and its decoders on toy models
with fixed probabilities, semantic-ID tokens, popularity."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from ops.codetable import build_code_table
from ops.metrics import (
    paired_test,
    per_user_metrics,
    ranks_from_lists,
    ranks_from_scores,
    ranks_from_shared_scores,
    recall_ndcg,
    summarize,
)
from ops.recommend.decoding import PrefixIndex, beam_search, exact_scores
from ops.recommend.popularity import popularity_scores
from ops.recommend.tokens import BOS, SPECIALS, SemanticVocab
from storage.artifacts import ArtifactStore


# --- metrics -------------------------------------------------------------------------------------------------------
def test_ranks_break_ties_towards_the_lower_item_index_and_respect_exclusions():
    scores = np.array([[0.5, 0.9, 0.5, 0.1],   # target 2 ties with item 0 (lower index): rank 2
                       [0.5, 0.9, 0.5, 0.1],   # target 0 ties with item 2 (higher index): rank 1
                       [0.3, 0.3, 0.3, 0.3]])  # all tied, target 3: rank 3
    assert ranks_from_scores(scores, np.array([2, 0, 3])).tolist() == [2, 1, 3]
    exclude = np.array([[False, True, False, False], [True, True, True, True], [False] * 4])
    assert ranks_from_scores(scores, np.array([2, 0, 3]), exclude).tolist() == [1, 0, 3]  # the target stays
    assert ranks_from_lists(np.array([[3, 1, 2], [0, -1, -1]]), np.array([2, 5])).tolist() == [2, 3]
    with pytest.raises(ValueError, match="outside the catalog"):
        ranks_from_scores(scores, np.array([0, 0, 4]))


def test_one_ranking_for_every_user_ranks_as_the_users_x_items_matrix_would():
    rng = np.random.default_rng(0)
    shared = rng.integers(0, 5, 300).astype(float)  # many ties
    targets = rng.integers(0, 300, 1000)
    want = ranks_from_scores(np.tile(shared, (len(targets), 1)), targets)
    assert ranks_from_shared_scores(shared, targets).tolist() == want.tolist()
    with pytest.raises(ValueError, match="outside the catalog"):
        ranks_from_shared_scores(shared, np.array([300]))


def test_recall_and_ndcg_equal_their_formulas_and_cap_at_the_catalog():
    ranks = np.array([0, 1, 4, 9, 30])
    got = recall_ndcg(ranks, ks=(1, 5, 10, 20))
    assert got[("recall", 1)] == 0.2 and got[("recall", 5)] == 0.6 and got[("recall", 10)] == 0.8
    assert got[("recall", 20)] == 0.8
    assert got[("ndcg", 5)] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(6)) / 5)
    assert got[("ndcg", 1)] == pytest.approx(0.2)
    # K larger than a 3-item catalog: every target is within K
    small = ranks_from_scores(np.array([[0.1, 0.2, 0.3]] * 3), np.array([0, 1, 2]))
    assert recall_ndcg(small, ks=(20,))[("recall", 20)] == 1.0
    assert per_user_metrics(ranks, ks=(5,))[("recall", 5)].tolist() == [1, 1, 1, 0, 0]


def test_seed_summary_and_paired_test():
    s = summarize([0.1, 0.2, 0.3])
    assert s.mean == pytest.approx(0.2) and s.std == pytest.approx(0.1) and s.n == 3
    assert s.ci95[0] == pytest.approx(0.2 - 4.302653 * 0.1 / math.sqrt(3), rel=1e-5)
    assert summarize([0.4]).ci95 == (0.4, 0.4)
    rng = np.random.default_rng(0)
    base = rng.random(300)
    assert paired_test(base + 0.2, base) < 1e-10 and paired_test(base, base) == 1.0
    assert paired_test(base + rng.normal(0, 0.01, 300), base) > 0.01


# --- tokens --------------------------------------------------------------------------------------------------------
def _table(codes):
    frame, _ = build_code_table([f"i{n}" for n in range(len(codes))], np.array(codes), k=4)
    return frame


def test_semantic_tokens_have_a_vocabulary_per_position_and_name_missing_items():
    frame = _table([[0, 1], [0, 1], [3, 2]])
    vocab = SemanticVocab.from_code_table(frame, "code_table/test")
    assert vocab.sizes == (4, 3, 2) and vocab.offsets == (3, 7, 10) and vocab.size == len(SPECIALS) + 9
    assert vocab.item_tokens.tolist() == [[3, 8, 10], [3, 8, 11], [6, 9, 10]]  # code c at position l: its own token
    assert vocab.history_tokens(["i2", "i0"]) == [BOS, 6, 9, 10, 3, 8, 10]
    assert vocab.history_tokens(["i0", "i1", "i2"], max_items=1) == [BOS, 6, 9, 10]
    with pytest.raises(KeyError, match=r"not in code_table/test, e.g. \['nope'\]"):
        vocab.history_tokens(["i0", "nope"])


# --- prefix index and decoders -------------------------------------------------------------------------------------
def _catalog(seed=0, n=60, sizes=(4, 5, 3)):
    rng = np.random.default_rng(seed)
    codes = np.unique(np.stack([rng.integers(0, s, 4 * n) for s in sizes], axis=1), axis=0)[:n]
    return codes[rng.permutation(len(codes))]


def _toy_step(n_users, sizes, seed=1):
    """Fixed log-probabilities for every (user, prefix) -> code: a pure function of its arguments."""
    def step(users, prefixes, level):
        out = []
        for u, p in zip(users.tolist(), prefixes.tolist()):
            g = torch.Generator().manual_seed(hash((seed, u, level, tuple(p))) % (2**31))
            out.append(torch.log_softmax(3 * torch.randn(sizes[level], generator=g), 0))
        return torch.stack(out)
    return step


def _brute_force(step, codes, users):
    """Each item's log-probability by walking its path, one item at a time."""
    out = np.zeros((len(users), len(codes)))
    for col, path in enumerate(codes):
        for level in range(codes.shape[1]):
            prefix = torch.tensor([path[:level].tolist()] * len(users), dtype=torch.long).reshape(len(users), level)
            out[:, col] += step(users, prefix, level)[:, path[level]].numpy()
    return out


def test_prefix_index_knows_exactly_the_paths_of_the_items():
    codes = _catalog()
    index = PrefixIndex.build(codes)
    assert index.levels == 3 and index.n_items == len(codes)
    root = index.allowed(0, torch.tensor([0]))[0]
    assert root.nonzero().squeeze(1).tolist() == sorted(set(codes[:, 0].tolist()))
    for item, path in enumerate(codes):  # walking an item's path through the index ends at that item
        node = torch.tensor([0])
        for level, c in enumerate(path):
            assert index.allowed(level, node)[0, c]
            node = index.next(level, node, torch.tensor([int(c)]))
        assert int(node) == item
    with pytest.raises(ValueError, match="share all codes"):
        PrefixIndex.build(np.array([[0, 1], [0, 1]]))


def test_beam_search_yields_only_existing_items_and_equals_brute_force_when_wide():
    codes = _catalog()
    index, users = PrefixIndex.build(codes), torch.arange(5)
    step = _toy_step(5, index.sizes)
    truth = _brute_force(step, codes, users)
    items, logp = beam_search(step, index, users, k=10, width=len(codes))
    assert ((items >= 0) & (items < len(codes))).all()
    for u in range(5):
        order = np.argsort(-truth[u], kind="stable")[:10]
        assert items[u].tolist() == order.tolist()
        np.testing.assert_allclose(logp[u].numpy(), truth[u, order], atol=1e-5)
    narrow, _ = beam_search(step, index, users, k=10, width=10)  # approximate, but still only real items
    assert ((narrow >= 0) & (narrow < len(codes))).all() and all(len(set(r)) == 10 for r in narrow.tolist())


def test_excluded_items_never_come_out():
    codes = _catalog()
    index, users = PrefixIndex.build(codes), torch.arange(4)
    step = _toy_step(4, index.sizes)
    best, _ = beam_search(step, index, users, k=5, width=len(codes))
    exclude = torch.zeros(4, len(codes), dtype=torch.bool)
    exclude[torch.arange(4)[:, None], best[:, :3]] = True  # each user's three favourites
    items, _ = beam_search(step, index, users, k=5, width=8, exclude=exclude)
    assert not exclude.gather(1, items.clamp(min=0)).any()
    assert items[:, :2].tolist() == best[:, 3:5].tolist()  # the next best ones move up


def test_exact_scores_equal_a_per_item_loop_and_rank_like_wide_beam_search():
    codes = _catalog(seed=3, n=40)
    index, users = PrefixIndex.build(codes), torch.arange(3)
    step = _toy_step(3, index.sizes, seed=7)
    scores = exact_scores(step, index, users, max_batch=17)  # small batches: every chunk boundary exercised
    np.testing.assert_allclose(scores.numpy(), _brute_force(step, codes, users), atol=1e-5)
    items, _ = beam_search(step, index, users, k=5, width=len(codes))
    assert items.tolist() == scores.topk(5, dim=1).indices.tolist()


def test_a_catalog_smaller_than_k_pads_with_minus_one():
    codes = np.array([[0, 0], [1, 0], [1, 1]])
    index = PrefixIndex.build(codes)
    items, logp = beam_search(_toy_step(1, index.sizes), index, torch.arange(1), k=5)
    assert sorted(items[0, :3].tolist()) == [0, 1, 2] and items[0, 3:].tolist() == [-1, -1]
    assert torch.isinf(logp[0, 3:]).all()


# --- popularity ----------------------------------------------------------------------------------------------------
def test_popularity_counts_the_train_split_only():
    seqs = pl.DataFrame({"user_id": ["u1", "u2", "u3"], "history": [["a", "b"], ["a"], ["c", "c"]],
                         "target": ["b", "c", "a"], "split": ["train", "train", "test"]})
    scores = popularity_scores(seqs, {"a": 0, "b": 1, "c": 2, "d": 3})
    assert scores.tolist() == [2, 2, 1, 0]  # u3's test row does not count
    ranks = ranks_from_scores(np.tile(scores, (2, 1)), np.array([1, 2]))
    assert ranks.tolist() == [1, 2]  # b ties with a (lower index first), c is third


# --- the generative recommender ------------------------------------------------------------------------------------
def test_a_tiny_generative_recommender_overfits_a_tiny_dataset_to_recall_at_1(tmp_path):
    from ops.recommend.generative import (
        GenerativeConfig,
        GenerativeRecommender,
        evaluate,
        examples,
        recommend,
        train,
    )

    rng = np.random.default_rng(0)
    n_items = 12
    frame = _table([[i % 3, (i // 3) % 4] for i in range(n_items)])  # 12 distinct 2-code items
    vocab = SemanticVocab.from_code_table(frame, "code_table/toy")
    rows = []
    for u in range(24):  # the next item is a function of the last one: learnable exactly
        a, b = rng.integers(0, n_items, 2)
        rows.append({"user_id": f"u{u}", "history": [f"i{a}", f"i{b}"], "target": f"i{(b + 5) % n_items}",
                     "split": "train"})
    seqs = pl.DataFrame(rows)
    data = examples(seqs, vocab, "train")
    cfg = GenerativeConfig(layers=2, d_model=32, heads=2, d_ff=64, dropout=0.0, lr=3e-3, batch_size=24,
                           micro_batch_size=24, max_steps=150, checkpoint_every=0, device="cpu",
                           train_on="last")  # the histories themselves are random: only the target is learnable
    model = GenerativeRecommender(cfg, vocab)
    result = train(model, data, tmp_path / "ck")
    assert result.history[-1]["loss"] < 0.05 < result.history[0]["loss"]
    index = PrefixIndex.build(vocab.item_codes)
    for decoder in ("beam", "exact"):
        got = evaluate(model, data, index, ks=(1, 5), decoder=decoder)
        assert got[("recall", 1)] == 1.0 and got[("ndcg", 5)] == 1.0, decoder
    top = recommend(model, data, index, k=3, exclude_history=True)
    hist = [[int(x[1:]) for x in h] for h in seqs["history"]]
    assert all(not set(t) & set(h) for t, h in zip(top.tolist(), hist))  # history items never come out
    with pytest.raises(KeyError, match="code_table/toy"):
        examples(seqs.with_columns(pl.lit("i99").alias("target")), vocab, "train")


def test_beam_search_carrying_the_cache_equals_running_every_prefix():
    """The KV cache carried from level to level (one new token per beam and step) gives the same beams as
    re-running each beam's whole prefix on the context cache, both with the scratch body's own attention over one
    shared copy of each user's context and with Hugging Face's forward on a cache carried per beam."""
    from ops.recommend.decoding import beam_search
    from ops.recommend.generative import (
        GenerativeConfig,
        GenerativeRecommender,
        examples,
    )

    rng = np.random.default_rng(3)
    frame = _table([[int(a), int(b), int(c)] for a, b, c in rng.integers(0, [5, 6, 4], (90, 3))])
    vocab = SemanticVocab.from_code_table(frame, "code_table/toy")
    assert vocab.positions >= 4  # three codes + dedup: the cache is carried over three levels
    ids = list(vocab.item_ids)
    seqs = pl.DataFrame([{"user_id": f"u{u}", "history": [ids[j] for j in rng.integers(0, len(ids), 1 + u % 4)],
                          "target": ids[u], "split": "test"} for u in range(7)])
    data = examples(seqs, vocab, "test")
    model = GenerativeRecommender(GenerativeConfig(layers=2, d_model=32, heads=2, d_ff=64, dropout=0.0,
                                                   device="cpu"), vocab).eval()
    index = PrefixIndex.build(vocab.item_codes)
    model.prepare(data.contexts)
    users = torch.arange(len(data))
    shared = beam_search(model.step, index, users, k=8, width=12)
    assert isinstance(model._beam[1], list)  # the shared-context step ran
    rerun = beam_search(lambda u, p, level: model.step(u, p, level), index, users, k=8, width=12)
    model.shared_context = False
    carried = beam_search(model.step, index, users, k=8, width=12)
    assert not isinstance(model._beam[1], list)
    for got in (shared, carried):
        assert torch.equal(got[0], rerun[0])
        assert torch.allclose(got[1], rerun[1], atol=1e-5)


def test_training_on_all_positions_is_the_mean_over_every_prefix_as_its_own_example():
    """One causal pass over history + target scores every item after the first exactly as the prefixes ending in
    it would score as separate `last` examples (left padding, positions from each row's start)."""
    from dataclasses import replace

    from ops.recommend.generative import (
        GenerativeConfig,
        GenerativeRecommender,
        examples,
    )

    frame = _table([[i % 3, (i // 3) % 4] for i in range(12)])
    vocab = SemanticVocab.from_code_table(frame, "code_table/toy")
    seqs = pl.DataFrame([{"user_id": "u0", "history": ["i3", "i7", "i1"], "target": "i9", "split": "train"},
                         {"user_id": "u1", "history": ["i2"], "target": "i4", "split": "train"}])
    cfg = GenerativeConfig(layers=1, d_model=16, heads=2, d_ff=32, dropout=0.0, device="cpu")
    model = GenerativeRecommender(cfg, vocab).eval()
    full, logs = model.loss(examples(seqs, vocab, "train"), [0, 1])
    model.cfg = replace(cfg, train_on="last")
    prefixes = pl.DataFrame([{"user_id": "u0", "history": ["i3"], "target": "i7", "split": "train"},
                             {"user_id": "u0", "history": ["i3", "i7"], "target": "i1", "split": "train"},
                             {"user_id": "u0", "history": ["i3", "i7", "i1"], "target": "i9", "split": "train"},
                             {"user_id": "u1", "history": ["i2"], "target": "i4", "split": "train"}])
    last, _ = model.loss(examples(prefixes, vocab, "train"), [0, 1, 2, 3])
    assert abs(full.item() - last.item()) < 1e-5
    assert set(logs) == {"loss", "loss_0", "loss_1", "loss_2"}  # two codes + dedup


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """The bundled MIND sample (small): users move Markov-like between planted aspects, so history predicts."""
    from ops.ingest.mind import load_mind
    from ops.sample import generate
    from ops.sequences import SplitConfig, build_user_sequences

    raw = generate("mind", tmp_path_factory.mktemp("rec") / "m", "small", seed=0)
    res = load_mind(raw, "m")
    seqs, _ = build_user_sequences(res.interactions.lazy(), SplitConfig(protocol="leave_one_out"))
    return res.items, seqs


def test_sasrec_and_popularity_beat_random_ranking_on_a_planted_sample(planted):
    from ops.recommend.sasrec import (
        SASRec,
        SASRecConfig,
        evaluate,
        item_sequences,
        train,
    )

    items, seqs = planted
    index = {item: i for i, item in enumerate(items["item_id"].to_list())}
    train_rows, test_rows = item_sequences(seqs, index, "train"), item_sequences(seqs, index, "test")
    rng = np.random.default_rng(0)
    random = recall_ndcg(ranks_from_scores(rng.random((len(test_rows), len(index))), test_rows.targets), (10,))
    popular = popularity_scores(seqs, index)
    pop = recall_ndcg(ranks_from_scores(np.tile(popular, (len(test_rows), 1)), test_rows.targets), (10,))
    cfg = SASRecConfig(d_model=32, layers=1, heads=2, dropout=0.1, lr=3e-3, batch_size=64, micro_batch_size=64,
                       epochs=15, checkpoint_every=0, device="cpu")
    model = SASRec(cfg, len(index))
    result = train(model, train_rows)
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    sas = evaluate(model, test_rows, (10,))
    # scored through the tied output embeddings at the last position only: Hugging Face's full head's logits there
    from ops.embed import collate
    from ops.recommend.sasrec import PAD

    ids, mask = collate([[i + 1 for i in h] for h in test_rows.histories], PAD, "right")
    with torch.no_grad():
        full = model.lm(input_ids=ids, attention_mask=mask).logits[..., 1:]
    last = torch.as_tensor([len(h) - 1 for h in test_rows.histories])
    np.testing.assert_allclose(model.scores(test_rows), full[torch.arange(len(last)), last].numpy(), atol=1e-5)
    # ranked a few rows at a time (memory: one batch x catalog), as the whole matrix ranks them
    assert model.ranks(test_rows, batch=7).tolist() == ranks_from_scores(model.scores(test_rows),
                                                                         test_rows.targets).tolist()
    assert pop[("ndcg", 10)] > 1.5 * random[("ndcg", 10)], (pop, random)
    assert sas[("ndcg", 10)] > 1.5 * random[("ndcg", 10)], (sas, random)


def test_sasrec_tuning_picks_the_best_validation_setting_and_records_every_trial(planted):
    from ops.recommend.sasrec import SASRecConfig, item_sequences, tune

    items, seqs = planted
    index = {item: i for i, item in enumerate(items["item_id"].to_list())}
    base = SASRecConfig(d_model=32, layers=1, heads=2, batch_size=64, micro_batch_size=64, epochs=4,
                        checkpoint_every=0, device="cpu")
    best, trials, (model, _) = tune(base, len(index), item_sequences(seqs, index, "train"),
                                    item_sequences(seqs, index, "valid"), grid={"lr": (1e-4, 3e-3), "dropout": (0.1,)})
    assert model.cfg == best  # the winning trial's model, reusable for the base seed
    assert [t["lr"] for t in trials] == [1e-4, 3e-3] and all(0 <= t["valid_ndcg@10"] <= 1 for t in trials)
    winner = max(trials, key=lambda t: t["valid_ndcg@10"])
    assert best.lr == winner["lr"] and best.d_model == 32 and best.epochs == 4  # only the grid's fields move


def test_the_evaluation_check_fails_when_a_seed_is_missing_or_a_value_is_off():
    from ops.recommend.evaluation import check_evaluation, comparison, rows_for

    ranks = np.array([0, 3, 30])
    parts = [rows_for(ranks + s, ["u1", "u2", "u3"], "d", "generative", "pca_kmeans", s) for s in (0, 1, 2)]
    parts.append(rows_for(ranks + 1, ["u1", "u2", "u3"], "d", "popularity", None, 0))
    long = pl.concat([p[0] for p in parts])
    users = pl.concat([p[1] for p in parts])
    expected = [("generative", "pca_kmeans", [0, 1, 2]), ("popularity", None, [0])]
    assert check_evaluation(long, expected)[0]
    passed, meta = check_evaluation(long.filter(pl.col("seed") != 2), expected)
    assert not passed and meta["missing"] == "generative/pca_kmeans/seed 2"
    assert not check_evaluation(long.with_columns(pl.col("value") * 2), expected)[0]  # NDCG@1 = 2 > 1
    table = comparison(long, users)
    assert table["seeds"].to_list() == [3, 1] and "p vs popularity" in table.columns
    generative = table.filter(pl.col("recommender") == "generative")
    assert generative["ndcg@10"].item().startswith("**") and generative["recall@10"].item().endswith("**")
    assert not table.filter(pl.col("recommender") == "popularity")["ndcg@10"].item().startswith("**")
    # a learned code table is also tested against random codes with the same recommender, user by user
    worse = [rows_for(ranks + 5 + s, ["u1", "u2", "u3"], "d", "generative", "random", s) for s in (0, 1, 2)]
    table = comparison(pl.concat([long, *(w[0] for w in worse)]), pl.concat([users, *(w[1] for w in worse)]))
    p_random = table.filter(pl.col("tokenizer") == "pca_kmeans")["p vs random codes"].item()
    assert 0 < p_random <= 1 and table.filter(pl.col("tokenizer") == "random")["p vs random codes"].item() is None


def test_cached_decoding_steps_equal_a_full_forward_of_context_and_prefix():
    from ops.recommend.generative import GenerativeConfig, GenerativeRecommender

    frame = _table([[i % 3, (i // 3) % 4] for i in range(12)])
    vocab = SemanticVocab.from_code_table(frame)
    model = GenerativeRecommender(GenerativeConfig(layers=2, d_model=32, heads=2, d_ff=64, device="cpu"), vocab).eval()
    contexts = [vocab.history_tokens(["i1", "i4", "i7"]), vocab.history_tokens(["i2"]), [1]]  # ragged lengths
    model.prepare(contexts)
    users = torch.tensor([0, 1, 2, 1])
    for level in range(vocab.positions):
        prefixes = torch.tensor([[1, 2][:level], [0, 3][:level], [2, 0][:level], [1, 1][:level]], dtype=torch.long)
        got = model.step(users, prefixes.reshape(4, level), level)
        rows = [contexts[u] + [int(c) + vocab.offsets[j] for j, c in enumerate(p)] for u, p in zip(users.tolist(),
                                                                                                    prefixes.tolist())]
        with torch.no_grad():
            logits = model._logits(rows)
        want = torch.log_softmax(model.level_logits(logits[:, -1], level), dim=-1)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_early_stopping_keeps_the_best_validation_epoch_and_resumes_epoch_by_epoch(tmp_path):
    from ops.recommend.generative import (
        GenerativeConfig,
        GenerativeRecommender,
        evaluate,
        examples,
        train_early_stopping,
    )

    rng = np.random.default_rng(1)
    frame = _table([[i % 3, (i // 3) % 4] for i in range(12)])
    vocab = SemanticVocab.from_code_table(frame, "code_table/toy")
    rows = [{"user_id": f"u{u}", "history": [f"i{a}", f"i{b}"], "target": f"i{(b + 5) % 12}",
             "split": "train" if u < 24 else "valid"} for u, (a, b) in enumerate(rng.integers(0, 12, (32, 2)))]
    seqs = pl.DataFrame(rows)
    train_rows, valid_rows = examples(seqs, vocab, "train"), examples(seqs, vocab, "valid")
    index = PrefixIndex.build(vocab.item_codes)
    cfg = GenerativeConfig(layers=1, d_model=32, heads=2, d_ff=64, dropout=0.0, lr=3e-3, batch_size=8,
                           micro_batch_size=8, epochs=12, patience=4, device="cpu")
    model = GenerativeRecommender(cfg, vocab)
    stopped = train_early_stopping(model, train_rows, valid_rows, index, tmp_path / "ck")
    curve = stopped.valid_ndcg10
    assert stopped.best_epoch == int(np.argmax(curve)) + 1 and max(curve) > curve[0]
    assert stopped.epochs_run == len(curve) and (stopped.epochs_run == 12 or
                                                 stopped.epochs_run - stopped.best_epoch == 4)
    assert evaluate(model, valid_rows, index, (10,))[("ndcg", 10)] == pytest.approx(max(curve), abs=1e-5)  # best back
    steps = [int(v.rsplit("-", 1)[1]) for v in ArtifactStore(tmp_path / "ck").versions()]
    assert steps == [3 * e for e in range(1, stopped.epochs_run + 1)]  # one checkpoint per epoch, resumed
    again = GenerativeRecommender(cfg, vocab)  # a rerun resumes from the checkpoints: the same curve, no training
    assert train_early_stopping(again, train_rows, valid_rows, index, tmp_path / "ck").valid_ndcg10 == curve


@pytest.mark.parametrize("family", ["llama", "bert", "opt-350m"])
def test_a_pretrained_backbone_trains_lora_and_code_tokens_only_and_decodes_alike(tmp_path, family):
    """A (tiny, random) pretrained LM: LoRA + the new code tokens train, its own weights stay frozen and out of
    the checkpoint; L_rip and L_align both fall; the carried cache decodes like a rerun (RoPE for Llama, absolute
    positions for BERT run as a causal decoder); a reloaded checkpoint scores the same."""
    from ops.recommend.decoding import beam_search
    from ops.recommend.generative import (
        GenerativeConfig,
        GenerativeRecommender,
        examples,
        train,
    )
    from ops.tiny_models import save_random_model

    path = str(save_random_model(family, tmp_path / family, causal_lm=family != "bert", init_std=0.2))
    rng = np.random.default_rng(0)
    frame = _table([[i % 3, (i // 3) % 4] for i in range(12)])
    vocab = SemanticVocab.from_code_table(frame, "code_table/toy")
    texts = [f"topic {i % 3} style {(i // 3) % 4}" for i in range(12)]
    seqs = pl.DataFrame([{"user_id": f"u{u}", "history": [f"i{a}", f"i{b}"], "target": f"i{(b + 5) % 12}",
                          "split": "train"} for u, (a, b) in enumerate(rng.integers(0, 12, (24, 2)))])
    data = examples(seqs, vocab, "train")
    cfg = GenerativeConfig(backbone="pretrained", model=path, lora_rank=4, lora_alpha=8, lr=3e-3, batch_size=12,
                           micro_batch_size=6, max_steps=30, checkpoint_every=0, device="cpu", train_on="last")
    model = GenerativeRecommender(cfg, vocab, texts)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n == "codes.weight" for n in trainable)
    frozen = next(p for n, p in model.named_parameters() if not p.requires_grad and "embed" in n).detach().clone()
    assert all(t < model.text_size for t in model.prompt) and len(model.align_rows) == 12
    result = train(model, data, tmp_path / "ck", align=True)
    first, last = result.history[0], result.history[-1]
    assert last["loss"] < first["loss"] and last["align_loss"] < first["align_loss"]
    assert torch.equal(frozen, next(p for n, p in model.named_parameters() if not p.requires_grad and "embed" in n))
    from safetensors.torch import load_file

    checkpoint = Path(result.checkpoint)
    assert set(load_file(str(checkpoint / "model.safetensors"))) == trainable  # not the frozen LM

    model.eval()
    index = PrefixIndex.build(vocab.item_codes)
    model.prepare(data.contexts[:6])
    users = torch.arange(6)
    carried = beam_search(model.step, index, users, k=5, width=6)
    rerun = beam_search(lambda u, p, level: model.step(u, p, level), index, users, k=5, width=6)
    assert torch.equal(carried[0], rerun[0]) and torch.allclose(carried[1], rerun[1], atol=1e-4)
    again = GenerativeRecommender(cfg, vocab, texts).eval()
    again.load_weights(checkpoint)
    again.prepare(data.contexts[:6])
    torch.testing.assert_close(again.step(users, torch.zeros(6, 0, dtype=torch.long), 0),
                               model.step(users, torch.zeros(6, 0, dtype=torch.long), 0))
