"""ops.serving: the serving index on a hand-made table with known answers, its Parquet round trip read back with
plain pyarrow (the reader another service writes), exclusion, and the decoder built from it (every generated ID
exists, an excluded item never comes out, the beam's masks are the index's answers)."""
from __future__ import annotations

import itertools

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from ops.codetable import build_code_table
from ops.recommend.decoding import PrefixIndex, beam_search
from ops.serving import ServingIndex
from storage.serving import ITEMS_FILE, PREFIXES_FILE, ServingIndexStore
from tests.test_recommend import _brute_force, _toy_step


def _hand_made():
    # a-b collide on (0, 1): dedup 0 and 1; c = (0, 2); d = (1, 0)
    return build_code_table(["a", "b", "c", "d"], np.array([[0, 1], [0, 1], [0, 2], [1, 0]]), k=3)[0]


def test_the_index_of_a_hand_made_table():
    index = ServingIndex.from_code_table(_hand_made())
    assert index.depth == 3
    assert index.items.select("row", "item_id", "path").rows() == [
        (0, "a", [0, 1, 0]), (1, "b", [0, 1, 1]), (2, "c", [0, 2, 0]), (3, "d", [1, 0, 0])]
    assert index.items["semantic_id"].to_list() == ["0-1/0", "0-1/1", "0-2/0", "1-0/0"]
    rows = index.prefixes.select("depth", "prefix_id", "first", "count", "allowed_next", "next_first",
                                 "next_count").rows()
    assert rows == [(0, "", 0, 4, [0, 1], [0, 3], [3, 1]),
                    (1, "0", 0, 3, [1, 2], [0, 2], [2, 1]),
                    (1, "1", 3, 1, [0], [3], [1]),
                    (2, "0-1", 0, 2, [0, 1], [0, 1], [1, 1]),
                    (2, "0-2", 2, 1, [0], [2], [1]),
                    (2, "1-0", 3, 1, [0], [3], [1])]
    assert index.allowed_next([]) == [0, 1]
    assert index.allowed_next([0], exclude=["a", "b"]) == [2]  # nothing left under 0-1
    assert index.allowed_next([], exclude=["a", "b", "c"]) == [1]
    assert index.allowed_next([0, 1], exclude=["a", "unknown"]) == [1]  # an id outside the catalog excludes nothing
    assert index.allowed_next([], exclude=["a", "b", "c", "d"]) == []
    assert index.items_under([0])["item_id"].to_list() == ["a", "b", "c"]
    assert index.item_of([0, 1, 1]) == "b" and index.item_of([0, 1, 2]) is None and index.item_of([2, 0, 0]) is None
    with pytest.raises(KeyError, match="0-3 is not a prefix"):
        index.allowed_next([0, 3])


def _random_table(seed=0, n=300, length=3, k=6):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, k, (n, length))
    codes[: n // 3, 0] = 0  # a crowded first code, and collisions
    return build_code_table([f"i{j}" for j in range(n)], codes, k=k)[0]


def _pyarrow_allowed_next(folder, prefix, exclude):
    """The documented algorithm on the Parquet files with pyarrow alone (README, 'Serve constrained decoding')."""
    prefixes = pq.read_table(folder / PREFIXES_FILE).to_pylist()
    items = pq.read_table(folder / ITEMS_FILE, columns=["row", "item_id"]).to_pylist()
    row_of = {r["item_id"]: r["row"] for r in items}
    node = next(r for r in prefixes if r["depth"] == len(prefix) and r["prefix"] == list(prefix))
    gone = sorted(row_of[i] for i in exclude if i in row_of)
    return [code for code, first, count in zip(node["allowed_next"], node["next_first"], node["next_count"])
            if sum(first <= g < first + count for g in gone) < count]


def test_a_round_trip_through_plain_pyarrow_gives_the_same_answers(tmp_path):
    table = _random_table()
    index = ServingIndex.from_code_table(table)
    store = ServingIndexStore(tmp_path, "ds", "tok")
    folder = store.write_index("v1", index.prefixes, index.items, {"dataset": "ds"})
    back = ServingIndex.from_tables(*store.read("v1"))
    assert back.prefixes.equals(index.prefixes) and back.items.equals(index.items)
    rng = np.random.default_rng(1)
    ids = table["item_id"].to_list()
    for row in index.prefixes.sample(40, seed=2).iter_rows(named=True):
        exclude = list(rng.choice(ids, 120, replace=False))
        want = _pyarrow_allowed_next(folder, row["prefix"], exclude)
        assert back.allowed_next(row["prefix"], exclude) == want
        assert index.allowed_next(row["prefix"]) == row["allowed_next"]
    # every item is reached by its semantic ID's path, and only items are
    for item, path in zip(index.items["item_id"], index.items["path"]):
        assert back.item_of(list(path)) == item
    with pytest.raises(ValueError, match="serving-index schema"):
        ServingIndex.from_tables(index.prefixes.drop("next_count"), index.items)


def test_the_decoder_built_from_the_index_answers_as_the_index_does():
    table = _random_table(n=120, length=2, k=5)
    serving = ServingIndex.from_code_table(table)
    order = list(reversed(table["item_id"].to_list()))  # a model's item order other than the index's
    index = PrefixIndex.from_serving(serving, order)
    rng = np.random.default_rng(3)
    exclude = torch.zeros(2, len(order), dtype=torch.bool)
    exclude[0, torch.as_tensor(rng.choice(len(order), 60, replace=False))] = True
    counts = index.excluded_counts(exclude)
    for level in range(index.levels):  # every node of the level, for a user with and one without exclusions
        nodes = torch.arange(len(index.prefixes[level]))
        for user in (0, 1):
            mask = index.allowed(level, nodes, counts, torch.full_like(nodes, user))
            banned = [order[i] for i in exclude[user].nonzero().squeeze(1).tolist()]
            for node, prefix in zip(nodes.tolist(), index.prefixes[level].tolist()):
                assert mask[node].nonzero().squeeze(1).tolist() == serving.allowed_next(prefix, banned)
    with pytest.raises(ValueError, match="rebuild serving_index"):
        PrefixIndex.from_serving(serving, order[:-1])


def test_beam_search_on_the_served_index_yields_existing_items_and_never_an_excluded_one():
    table = _random_table(seed=4, n=80, length=2, k=4)
    serving = ServingIndex.from_code_table(table)
    ids = table["item_id"].to_list()
    index = PrefixIndex.from_serving(serving, ids)
    codes = np.concatenate([np.stack(table["codes"].to_list()), table["dedup"].to_numpy()[:, None]], axis=1)
    users = torch.arange(4)
    step = _toy_step(4, index.sizes)
    truth = _brute_force(step, codes, users)
    exclude = torch.zeros(4, len(ids), dtype=torch.bool)
    for u in range(4):  # each user's ten favourites are out of stock
        exclude[u, torch.as_tensor(np.argsort(-truth[u])[:10].copy())] = True
    items, _ = beam_search(step, index, users, k=10, width=len(ids), exclude=exclude)
    assert ((items >= 0) & (items < len(ids))).all()
    assert not exclude.gather(1, items).any()
    for u in range(4):  # as wide as the catalog: exactly the best items left
        allowed = np.where(exclude[u].numpy(), -np.inf, truth[u])
        assert items[u].tolist() == np.argsort(-allowed, kind="stable")[:10].tolist()
        for i in items[u].tolist():  # each generated ID is a served one and names the same item
            assert serving.item_of(codes[i].tolist()) == ids[i]
    narrow, _ = beam_search(step, index, users, k=5, width=5, exclude=exclude)  # a narrow beam: still never
    assert (narrow >= 0).all() and not exclude.gather(1, narrow).any()


def test_the_store_keeps_versions_and_refuses_to_overwrite(tmp_path):
    index = ServingIndex.from_code_table(_hand_made())
    store = ServingIndexStore(tmp_path, "ds", "tok")
    store.write_index("v1", index.prefixes, index.items, {})
    with pytest.raises(FileExistsError):
        store.write_index("v1", index.prefixes, index.items, {})
    with pytest.raises(FileNotFoundError):
        store.read()  # nothing published
    store.publish("v1")
    assert store.read()[1].height == 4
    for a, b in itertools.pairwise(store.read()[0]["depth"].to_list()):
        assert a <= b
