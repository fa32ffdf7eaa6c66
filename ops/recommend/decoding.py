"""Decoding that only yields items that exist: a prefix index of a code table held as arrays, batched constrained
beam search over it, and exact scoring of every item.

An item is a path of P = L + 1 position-local codes (its L codes, then its dedup index). Level l of the index holds
the distinct prefixes of length l as nodes; its edges are sorted keys `parent * V_l + code`, so the valid next codes
of any batch of nodes are a CSR gather and the child of (node, code) a `searchsorted`: a beam step is a gather and a
mask on the logits, never a Python walk over a trie. The model is a step function
`step(users, prefixes, level) -> log-probabilities (B, V_level)` over the position-local codes of that level, for
B (user, prefix) pairs; generative recommenders provide one (teacher-forced, KV-cached or parallel heads). A step
function that also takes `parents` is told, by beam search, which row of its previous call each row extends (its
prefix is that row's plus one code), so it can keep its key/value cache from call to call and run one new token.

The index is read from the serving index (ops.serving), the tables a service loads: the same prefixes, the same
allowed codes, and the same exclusion rule (a code survives while some item under it is not excluded).
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ops.serving import ServingIndex

StepFn = Callable[..., torch.Tensor]  # (users, prefix, level[, parents=...]) -> scores over the level's codes


@dataclass
class PrefixIndex:
    sizes: tuple[int, ...]  # V_l per level
    keys: list[torch.Tensor]  # level l: sorted parent * V_l + code, one per edge
    starts: list[torch.Tensor]  # level l: CSR row starts of each node's edges (n_nodes_l + 1)
    child: list[torch.Tensor]  # level l: the node at level l + 1 an edge leads to; the item index at the last level
    prefixes: list[torch.Tensor]  # level l: each node's prefix codes (n_nodes_l x l)
    n_items: int
    first: list[torch.Tensor]  # level l: the first serving-index row (path order) under each edge
    count: list[torch.Tensor]  # level l: how many items are under each edge
    row_item: torch.Tensor  # serving-index row -> item index

    @classmethod
    def build(cls, item_codes: np.ndarray, device: torch.device | str = "cpu") -> PrefixIndex:
        """From items x P position-local codes (codes then dedup; every row distinct, as in a code table); item i
        is row i."""
        codes = np.asarray(item_codes, dtype=np.int64)
        ids = [str(i) for i in range(len(codes))]
        return cls.from_serving(ServingIndex.from_paths(codes, ids), ids, device)

    @classmethod
    def from_serving(cls, serving: ServingIndex, item_ids: list[str] | tuple[str, ...] | None = None,
                     device: torch.device | str = "cpu") -> PrefixIndex:
        """The decoder's arrays of a serving index; item index i is `item_ids[i]` (default: the index's row order).
        Every item of the index must be in `item_ids` and the other way round."""
        items = serving.items["item_id"].to_list()
        if item_ids is None:
            row_item = np.arange(len(items))
        else:
            position = {item: i for i, item in enumerate(item_ids)}
            missing = [i for i in items if i not in position]
            if missing or len(item_ids) != len(items):
                raise ValueError(f"the serving index and the model's items differ ({len(items)} vs {len(item_ids)} "
                                 f"items, e.g. {missing[:3]}): rebuild serving_index from this code table")
            row_item = np.array([position[i] for i in items], dtype=np.int64)
        keys, starts, child, prefixes, first, count, sizes = [], [], [], [], [], [], []
        levels = serving.depth
        for level, nodes in enumerate(serving.prefixes.partition_by("depth", maintain_order=True)):
            lengths = nodes["allowed_next"].list.len().to_numpy().astype(np.int64)
            codes = nodes["allowed_next"].explode().to_numpy().astype(np.int64)
            size = int(codes.max()) + 1
            sizes.append(size)
            keys.append(np.repeat(np.arange(nodes.height), lengths) * size + codes)  # ascending: nodes, then codes
            starts.append(np.concatenate([[0], np.cumsum(lengths)]))
            prefixes.append(np.stack(nodes["prefix"].to_list()).reshape(nodes.height, level).astype(np.int64)
                            if level else np.zeros((1, 0), dtype=np.int64))
            first.append(nodes["next_first"].explode().to_numpy().astype(np.int64))
            count.append(nodes["next_count"].explode().to_numpy().astype(np.int64))
            # the next level's nodes are this level's edges, in order; at the last level an edge is one item
            child.append(row_item[first[-1]] if level == levels - 1 else np.arange(len(codes)))
        as_t = lambda arrays: [torch.as_tensor(a, dtype=torch.long, device=device) for a in arrays]  # noqa: E731
        return cls(tuple(sizes), as_t(keys), as_t(starts), as_t(child), as_t(prefixes), len(items), as_t(first),
                   as_t(count), torch.as_tensor(row_item, dtype=torch.long, device=device))

    @property
    def levels(self) -> int:
        return len(self.sizes)

    def allowed(self, level: int, nodes: torch.Tensor, excluded: torch.Tensor | None = None,
                owners: torch.Tensor | None = None) -> torch.Tensor:
        """(B, V_level) bool: the codes that continue each node's prefix towards some item, and with `excluded`
        (users x (items + 1) running counts of excluded items, see `excluded_counts`; row `owners[b]` for node b,
        default b) towards some item that user does not exclude: ServingIndex.allowed_next's rule."""
        starts = self.starts[level]
        lo, hi = starts[nodes], starts[nodes + 1]
        counts = hi - lo
        rows = torch.repeat_interleave(torch.arange(len(nodes), device=nodes.device), counts)
        offsets = torch.arange(int(counts.sum()), device=nodes.device) - torch.repeat_interleave(
            torch.cumsum(counts, 0) - counts, counts)
        edges = torch.repeat_interleave(lo, counts) + offsets
        mask = torch.zeros(len(nodes), self.sizes[level], dtype=torch.bool, device=nodes.device)
        if excluded is not None:
            a, n = self.first[level][edges], self.count[level][edges]
            user = rows if owners is None else owners[rows]
            keep = excluded[user, a + n] - excluded[user, a] < n
            rows, edges = rows[keep], edges[keep]
        mask[rows, self.keys[level][edges] % self.sizes[level]] = True
        return mask

    def excluded_counts(self, exclude: torch.Tensor) -> torch.Tensor:
        """users x items bool (item index order) -> users x (items + 1) running counts in serving-index row order:
        the excluded items under an edge are `c[:, first + count] - c[:, first]`."""
        ordered = exclude[:, self.row_item].to(torch.int32)
        return torch.nn.functional.pad(torch.cumsum(ordered, dim=1, dtype=torch.int32), (1, 0))

    def next(self, level: int, nodes: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """The child of each (node, code) edge: a node of level + 1, or an item index at the last level. Only
        meaningful for allowed pairs."""
        keys = self.keys[level]
        pos = torch.searchsorted(keys, nodes * self.sizes[level] + codes).clamp(max=len(keys) - 1)
        return self.child[level][pos]


def beam_search(step: StepFn, index: PrefixIndex, users: torch.Tensor, k: int, width: int | None = None,
                exclude: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k items per user (users x k item indices, -1 where fewer than k exist, and their log-probabilities),
    batched over users: at each level every beam's next-code log-probabilities are masked to the codes that lead
    to an item, and the `width` best (beam, code) pairs per user are kept. `exclude` (users x items bool) removes
    at every level the codes under which every item is excluded (the serving index's rule), so an excluded item can
    never come out and no beam is spent on a dead prefix. Width at least the number of prefixes per level makes it
    exact."""
    width = max(width or k, k)
    incremental = "parents" in inspect.signature(step).parameters
    parents: torch.Tensor | None = None
    n_users = len(users)
    logp = torch.zeros(n_users, 1, device=users.device)
    nodes = torch.zeros(n_users, 1, dtype=torch.long, device=users.device)
    prefix = torch.zeros(n_users, 1, 0, dtype=torch.long, device=users.device)
    counts = index.excluded_counts(exclude) if exclude is not None else None
    for level in range(index.levels):
        beams = nodes.shape[1]
        flat_nodes = nodes.reshape(-1)
        rows = (users.repeat_interleave(beams), prefix.reshape(n_users * beams, level), level)
        scores = (step(*rows, parents=parents) if incremental else step(*rows)).float()
        owners = torch.arange(n_users, device=users.device).repeat_interleave(beams)
        allowed = index.allowed(level, flat_nodes, counts, owners)
        total = (logp.reshape(-1, 1) + scores.masked_fill(~allowed, float("-inf"))).reshape(n_users, -1)
        top = total.topk(min(width, total.shape[1]), dim=1)
        beam, code = top.indices // index.sizes[level], top.indices % index.sizes[level]
        parents = (torch.arange(n_users, device=users.device)[:, None] * beams + beam).reshape(-1)
        parent = nodes.gather(1, beam)
        nodes = index.next(level, parent.reshape(-1), code.reshape(-1)).reshape(parent.shape)
        prefix = torch.cat([prefix.gather(1, beam[..., None].expand(-1, -1, level)), code[..., None]], dim=2)
        logp = top.values
    alive = torch.isfinite(logp)
    items = torch.where(alive, nodes, torch.full_like(nodes, -1))
    if items.shape[1] < k:  # a catalog smaller than k
        pad = k - items.shape[1]
        items = torch.cat([items, items.new_full((n_users, pad), -1)], dim=1)
        logp = torch.cat([logp, logp.new_full((n_users, pad), float("-inf"))], dim=1)
    return items[:, :k], logp[:, :k]


@torch.inference_mode()
def exact_scores(step: StepFn, index: PrefixIndex, users: torch.Tensor, max_batch: int = 4096) -> torch.Tensor:
    """Every item's log-probability for every user (users x items): the sum of its codes' log-probabilities, each
    prefix evaluated once per user (teacher-forced over the index's nodes, in batches of `max_batch` pairs). The
    full ranking; every prefix costs a model step per user, so on a CPU it suits catalogs of a few thousand items
    (bench/RESULTS.md: 0.09 users/s at 50 k items). The natural decoder for parallel codes."""
    n_users = len(users)
    acc = torch.zeros(n_users, 1, device=users.device)  # log-probability of each node's prefix
    out = torch.full((n_users, index.n_items), float("-inf"), device=users.device)
    for level in range(index.levels):
        prefixes, size = index.prefixes[level], index.sizes[level]
        n_nodes = len(prefixes)
        per_node = torch.empty(n_users, n_nodes, size, device=users.device)
        chunk = max(1, max_batch // max(n_users, 1))
        for a in range(0, n_nodes, chunk):
            b = min(n_nodes, a + chunk)
            u = users.repeat_interleave(b - a)
            p = prefixes[a:b].repeat(n_users, 1)
            per_node[:, a:b] = step(u, p, level).float().reshape(n_users, b - a, size)
        keys = index.keys[level]
        parent, code = keys // size, keys % size
        edge = acc[:, parent] + per_node[:, parent, code]
        if level == index.levels - 1:
            out[:, index.child[level]] = edge
        else:
            acc = edge  # the next level's nodes are this level's edges, in order
    return out
