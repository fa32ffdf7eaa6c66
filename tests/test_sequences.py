import polars as pl
import pytest

from ops.sequences import SplitConfig, build_user_sequences


def _interactions(events):
    return pl.DataFrame(events, schema={"user_id": pl.String, "item_id": pl.String, "timestamp": pl.Int64,
                                        "seq": pl.Int64}, orient="row").lazy()


def test_order_history_cap_and_short_users():
    events = [("u1", f"i{k}", 100 + k, k) for k in range(30)][::-1]  # given out of order
    events += [("u2", "a", None, 5), ("u2", "b", 10, 1), ("u2", "c", 10, 2)]  # null timestamp first, seq breaks ties
    events += [("u3", "only", 1, 0)]
    seq, stats = build_user_sequences(_interactions(events), SplitConfig(max_history=20, test_fraction=0,
                                                                         valid_fraction=0))
    u1 = seq.filter(pl.col("user_id") == "u1").row(0, named=True)
    assert u1["target"] == "i29"
    assert u1["history"] == [f"i{k}" for k in range(9, 29)]  # the last 20 before the target, oldest first
    u2 = seq.filter(pl.col("user_id") == "u2").row(0, named=True)
    assert (u2["history"], u2["target"]) == (["a", "b"], "c")
    assert stats.users_total == 3 and stats.users_dropped_short == 1 and stats.users_kept == 2
    assert stats.rows_per_split == {"train": 2, "valid": 0, "test": 0}


def test_user_split_is_seeded_partition_of_users():
    events = [(f"u{u}", f"i{(u + k) % 7}", k, k) for u in range(100) for k in range(4)]
    a, sa = build_user_sequences(_interactions(events), SplitConfig(seed=1))
    b, _ = build_user_sequences(_interactions(events), SplitConfig(seed=1))
    c, _ = build_user_sequences(_interactions(events), SplitConfig(seed=2))
    assert a.equals(b) and not a.equals(c)
    assert sa.rows_per_split == {"train": 81, "valid": 9, "test": 10}
    assert a["user_id"].n_unique() == 100  # each user in exactly one split


def test_leave_one_out_protocol():
    events = [("u1", f"i{k}", k, k) for k in range(5)]
    seq, stats = build_user_sequences(_interactions(events), SplitConfig(protocol="leave_one_out"))
    rows = {r["split"]: (r["history"], r["target"]) for r in seq.iter_rows(named=True)}
    assert rows == {"train": (["i0", "i1"], "i2"), "valid": (["i0", "i1", "i2"], "i3"),
                    "test": (["i0", "i1", "i2", "i3"], "i4")}
    with pytest.raises(ValueError):
        build_user_sequences(_interactions(events), SplitConfig(protocol="nope"))
