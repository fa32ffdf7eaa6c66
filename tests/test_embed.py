"""ops.embed on tiny random-config models: pooling, padding sides, bucketing, resumable shards."""
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from ops.embed import (
    EmbedConfig,
    collate,
    embed_items,
    embed_texts,
    embeddings_frame,
    item_texts,
    load_model,
    plan_batches,
    pool,
)
from ops.tiny_models import save_random_model
from storage import write_frame

TEXTS = [
    "title: Storm hits the coast  abstract: Heavy rain and wind closed roads.",
    "title: Cup final",
    "title: New phone  abstract: A review of the latest model with a long abstract that goes on and on.",
    "short",
    "title: Markets rally as rates hold steady",
    "a b c d e f g h i j k l m n o p q r s t u v w x y z",
]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {f: str(save_random_model(f, root / f)) for f in ("bert", "gpt2", "opt", "opt-350m")}


def _alone(lm, text, max_length=128):
    """Reference: one item, no padding at all, the model's own output pooled by hand."""
    ids = lm.tokenizer([text], truncation=True, max_length=max_length, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        h = lm.model(input_ids=ids).last_hidden_state[0].float()
    return (h.mean(0) if lm.pooling == "mean" else h[-1]).numpy()


@pytest.mark.parametrize("family,pooling", [("bert", "auto"), ("gpt2", "auto"), ("gpt2", "mean"), ("opt", "auto"),
                                            ("opt-350m", "auto")])
@pytest.mark.parametrize("side", ["right", "left"])
def test_padded_batches_equal_unpadded_items(models, family, pooling, side):
    # A small token budget forces several batches with padding inside each.
    # float32: an exact comparison (`auto` embeds decoder-only models in bf16 on a CPU with native bf16)
    cfg = EmbedConfig(model=models[family], pooling=pooling, padding_side=side, token_budget=64,
                      max_length=32, dtype="float32")
    lm = load_model(cfg)
    assert lm.pooling == (pooling if pooling != "auto" else ("mean" if family == "bert" else "last"))
    assert lm.decoder_only is (family != "bert")
    out = embed_texts(lm, TEXTS, cfg)
    # OPT-350M's output is projected back to its 16-wide embedding space (project_out)
    assert out.shape == (len(TEXTS), 16 if family == "opt-350m" else 32) and out.dtype == np.float32
    ref = np.stack([_alone(lm, t, 32) for t in TEXTS])
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=1e-4)
    assert np.abs(out[0] - out[1]).max() > 1e-3  # different texts, different vectors


def test_pool_on_hand_made_tensors():
    h = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)
    right = torch.tensor([[1, 1, 0], [1, 1, 1]])
    left = torch.tensor([[0, 1, 1], [1, 1, 1]])
    assert pool(h, right, "mean").tolist() == [[1.0, 2.0], [8.0, 9.0]]
    assert pool(h, right, "last").tolist() == [[2.0, 3.0], [10.0, 11.0]]
    assert pool(h, left, "last").tolist() == [[4.0, 5.0], [10.0, 11.0]]
    assert pool(h, left, "cls").tolist() == [[2.0, 3.0], [6.0, 7.0]]


def test_collate_sides():
    ids, mask = collate([[5, 6, 7], [8]], pad_id=0, side="left")
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    ids, mask = collate([[5, 6, 7], [8]], pad_id=0, side="right")
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_plan_batches_respects_budget_and_covers_everything():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 128, 500)
    batches = plan_batches(lengths, token_budget=1024, max_batch_size=64)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(500))
    for b in batches:
        assert len(b) <= 64 and len(b) * lengths[b].max() <= 1024
    # longest first, and within a batch the lengths are close (that is the point of bucketing)
    assert lengths[batches[0]].max() == lengths.max()
    padded = sum(len(b) * lengths[b].max() for b in batches)
    assert padded / lengths.sum() < 1.1


def test_item_texts_follow_attribute_order_and_skip_empty():
    items = pl.DataFrame({"title": ["A", "B"], "abstract": ["x y", ""], "category": ["c", None]})
    assert item_texts(items, ["title", "abstract"]) == ["title: A  abstract: x y", "title: B"]


def test_killed_run_resumes_without_recomputing_finished_shards(models, tmp_path, monkeypatch):
    cfg = EmbedConfig(model=models["bert"], shard_size=2, max_length=32)
    lm = load_model(cfg)
    ids = [f"i{k}" for k in range(len(TEXTS))]

    def crash_after_two(done, total):
        if done == 2:
            raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        embed_items(lm, ids, TEXTS, cfg, tmp_path / "shards", on_shard=crash_after_two)
    calls = []
    import ops.embed as embed_mod

    real = embed_mod.embed_texts
    monkeypatch.setattr(embed_mod, "embed_texts", lambda lm_, texts, *a, **k: calls.append(len(texts)) or real(
        lm_, texts, *a, **k))
    resumed = embed_items(lm, ids, TEXTS, cfg, tmp_path / "shards")
    assert resumed.stats.shards_reused == 2 and resumed.stats.shards_computed == 1 and calls == [2]
    clean = embed_items(lm, ids, TEXTS, cfg, tmp_path / "clean")
    np.testing.assert_array_equal(resumed.vectors, clean.vectors)
    # a changed text invalidates only its own shard
    changed = list(TEXTS)
    changed[5] = "something else entirely"
    again = embed_items(lm, ids, changed, cfg, tmp_path / "shards")
    assert (again.stats.shards_reused, again.stats.shards_computed) == (2, 1)


def test_embedding_table_schema_with_plain_pyarrow(tmp_path):
    vec = np.arange(12, dtype=np.float32).reshape(3, 4)
    frame = embeddings_frame(["a", "b", "c"], vec)
    write_frame(frame, tmp_path / "e.parquet", {"model": "m"})
    table = pq.read_table(tmp_path / "e.parquet")
    t = table.schema.field("embedding").type
    assert pa.types.is_fixed_size_list(t) and t.list_size == 4 and t.value_type == pa.float32()
    np.testing.assert_array_equal(np.stack(table.column("embedding").to_pylist()), vec)


def test_shards_are_small_enough_that_a_kill_loses_little():
    from ops.embed import auto_shard_size

    # 2,000 items (a MIND-small subset; ~30 s to a few minutes on 2 cores): 8 shards, not one of 4,096
    assert auto_shard_size(2000) == 256 and -(-2000 // auto_shard_size(2000)) == 8
    assert auto_shard_size(65_000) == 4063 and auto_shard_size(1_000_000) == 4096  # big catalogs: >= 16 shards
    assert EmbedConfig().shard_size == 0  # auto unless configured
