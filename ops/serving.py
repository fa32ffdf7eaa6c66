"""The serving index of a code table: its valid semantic IDs as two plain tables that another service loads without
this project (pyarrow, duckdb, any Parquet reader), and the answers a constrained decoder needs from them.

An item's *path* is its L codes then its dedup index (P = L + 1 values). `items` holds one row per item, sorted by
path, so that the items under any prefix are one contiguous run of rows:

    row int64 · semantic_id string · item_id string · path list<int32>

`prefixes` holds one row per distinct prefix (depth 0 = the empty prefix, up to depth P - 1), sorted by depth then
prefix:

    depth int16 · prefix list<int32> · prefix_id string ('12-200', '' at depth 0) · first int64 · count int64 ·
    allowed_next list<int32> · next_first list<int64> · next_count list<int64>

`[first, first + count)` are the `items` rows under the prefix; `allowed_next` the codes that continue it towards
some item (ascending), and `[next_first[j], next_first[j] + next_count[j])` the rows under `prefix + [allowed_next[j]]`.
So `allowed_next(prefix, exclude)` is one row lookup and, per candidate, a count of the excluded rows in a range:
a code survives while its range holds an item not excluded. The generative recommenders decode on this same index
(ops.recommend.decoding.PrefixIndex.from_serving): what is evaluated is what is served.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from ops.codetable import codes_array

ITEMS_SCHEMA: dict[str, pl.DataType] = {"row": pl.Int64(), "semantic_id": pl.String(), "item_id": pl.String(),
                                        "path": pl.List(pl.Int32())}
PREFIXES_SCHEMA: dict[str, pl.DataType] = {
    "depth": pl.Int16(), "prefix": pl.List(pl.Int32()), "prefix_id": pl.String(), "first": pl.Int64(),
    "count": pl.Int64(), "allowed_next": pl.List(pl.Int32()), "next_first": pl.List(pl.Int64()),
    "next_count": pl.List(pl.Int64()),
}


def item_paths(table: pl.DataFrame) -> np.ndarray:
    """A code table's items x P paths: codes then the dedup index."""
    return np.concatenate([codes_array(table), table["dedup"].to_numpy().astype(np.int64)[:, None]], axis=1)


def _prefix_rows(paths: np.ndarray) -> pl.DataFrame:
    """The `prefixes` table of path-sorted items (see the module docstring)."""
    n, depth_count = paths.shape
    # changed[d][i]: item i starts a new prefix of length d (row 0 always does)
    changed = [np.arange(n) == 0]
    for d in range(1, depth_count + 1):
        step = np.ones(n, dtype=bool)
        step[1:] = (paths[1:, d - 1] != paths[:-1, d - 1]) | changed[d - 1][1:]
        changed.append(step)
    frames = []
    for d in range(depth_count):
        starts = np.flatnonzero(changed[d])
        counts = np.diff(np.append(starts, n))
        child = np.flatnonzero(changed[d + 1])
        child_counts = np.diff(np.append(child, n))
        parent = np.searchsorted(starts, child, side="right") - 1
        edges = pl.DataFrame({"node": parent, "code": paths[child, d].astype(np.int32),
                              "first": child.astype(np.int64), "count": child_counts.astype(np.int64)})
        grouped = edges.group_by("node", maintain_order=True).agg(
            pl.col("code").alias("allowed_next"), pl.col("first").alias("next_first"),
            pl.col("count").alias("next_count"))
        prefix = paths[starts, :d].astype(np.int32)
        nodes = pl.DataFrame({
            "depth": np.full(len(starts), d, dtype=np.int16),
            "prefix": pl.Series(prefix.tolist() if d else [[]] * len(starts), dtype=pl.List(pl.Int32)),
            "first": starts.astype(np.int64), "count": counts.astype(np.int64),
        })
        nodes = nodes.with_columns(pl.col("prefix").cast(pl.List(pl.String)).list.join("-").alias("prefix_id"))
        frames.append(pl.concat([nodes, grouped.drop("node")], how="horizontal"))
    return pl.concat(frames).select(list(PREFIXES_SCHEMA)).cast(PREFIXES_SCHEMA)  # type: ignore[arg-type]


@dataclass
class ServingIndex:
    """The two tables and the lookups over them (built once, lazily)."""

    prefixes: pl.DataFrame
    items: pl.DataFrame
    _rows: dict[tuple[int, ...], int] = field(default_factory=dict, init=False, repr=False)
    _item_rows: dict[str, int] = field(default_factory=dict, init=False, repr=False)

    @classmethod
    def from_code_table(cls, table: pl.DataFrame) -> ServingIndex:
        """The index of a code table (item_id, codes, dedup, semantic_id; every path distinct)."""
        return cls.from_paths(item_paths(table), table["item_id"].to_list(), table["semantic_id"].to_list())

    @classmethod
    def from_paths(cls, paths: np.ndarray, item_ids: Sequence[str], semantic_ids: Sequence[str] | None = None
                   ) -> ServingIndex:
        """The index of items x P paths (`semantic_ids` default: the path joined by '-')."""
        paths = np.asarray(paths, dtype=np.int64)
        if not len(paths):
            raise ValueError("an empty code table has no serving index")
        if len(np.unique(paths, axis=0)) != len(paths):
            raise ValueError("two items share all codes and dedup index: not a valid code table")
        order = np.lexsort(paths.T[::-1])
        sids = pl.Series(list(semantic_ids) if semantic_ids is not None else
                         ["-".join(map(str, p)) for p in paths.tolist()], dtype=pl.String)
        items = pl.DataFrame({
            "row": np.arange(len(order), dtype=np.int64), "semantic_id": sids.gather(order),
            "item_id": pl.Series(list(item_ids), dtype=pl.String).gather(order),
            "path": pl.Series(paths[order].tolist(), dtype=pl.List(pl.Int32)),
        }, schema=ITEMS_SCHEMA)
        return cls(_prefix_rows(paths[order]), items)

    @classmethod
    def from_tables(cls, prefixes: pl.DataFrame, items: pl.DataFrame, source: str = "serving index") -> ServingIndex:
        """Tables read back from Parquet, checked against the documented schema."""
        for name, frame, schema in (("prefixes", prefixes, PREFIXES_SCHEMA), ("items", items, ITEMS_SCHEMA)):
            wrong = {c: str(frame.schema.get(c)) for c, t in schema.items() if frame.schema.get(c) != t}
            if wrong:
                raise ValueError(f"{source}: table `{name}` does not have the serving-index schema: {wrong} "
                                 f"(expected {({c: str(t) for c, t in schema.items()})})")
        return cls(prefixes, items)

    @property
    def depth(self) -> int:
        """P: codes per path (the L codes and the dedup index)."""
        return len(self.items["path"][0])

    def _row(self, prefix: Sequence[int]) -> int:
        if not self._rows:
            self._rows = {tuple(p): i for i, p in enumerate(self.prefixes["prefix"].to_list())}
        key = tuple(int(c) for c in prefix)
        if key not in self._rows:
            raise KeyError(f"prefix {'-'.join(map(str, key)) or '(empty)'} is not a prefix of any item's path "
                           f"(paths have {self.depth} values: the codes, then the dedup index)")
        return self._rows[key]

    def excluded_rows(self, exclude: Iterable[str]) -> np.ndarray:
        """Sorted `items` rows of the excluded item ids; ids not in the catalog exclude nothing."""
        if not self._item_rows:
            self._item_rows = dict(zip(self.items["item_id"].to_list(), range(self.items.height)))
        rows = [self._item_rows[i] for i in exclude if i in self._item_rows]
        return np.unique(np.asarray(rows, dtype=np.int64))

    def allowed_next(self, prefix: Sequence[int], exclude: Iterable[str] = ()) -> list[int]:
        """The codes that continue `prefix` towards some item not in `exclude` (ascending). A prefix of no item's
        path is a KeyError."""
        row = self.prefixes.row(self._row(prefix), named=True)
        codes = np.asarray(row["allowed_next"], dtype=np.int64)
        first, count = np.asarray(row["next_first"]), np.asarray(row["next_count"])
        excluded = self.excluded_rows(exclude)
        if len(excluded):
            inside = np.searchsorted(excluded, first + count) - np.searchsorted(excluded, first)
            codes = codes[count > inside]
        return codes.tolist()

    def items_under(self, prefix: Sequence[int]) -> pl.DataFrame:
        """The `items` rows whose path starts with `prefix`."""
        row = self.prefixes.row(self._row(prefix), named=True)
        return self.items.slice(row["first"], row["count"])

    def item_of(self, path: Sequence[int]) -> str | None:
        """The item at a full path, None where no item has it."""
        if len(path) != self.depth:
            return None
        try:
            row = self.prefixes.row(self._row(path[:-1]), named=True)
        except KeyError:
            return None
        codes = list(row["allowed_next"])
        if int(path[-1]) not in codes:
            return None
        return str(self.items["item_id"][row["next_first"][codes.index(int(path[-1]))]])
