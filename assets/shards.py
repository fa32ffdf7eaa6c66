"""Assets whose work is split into steps: a graph of ops instead of one. A plan step fans out one part step per
part, then a gather step assembles the asset from the parts and reports the materialization. Two uses:

- `sharded_asset` (extraction): `<name>__workers` fans out one `<name>__shard` step per worker (the `gpu` pool: on
  Kubernetes a GPU pod each, with the multiprocess executor a process each), every worker computing its share of
  the shard files, then `<name>__merge` assembles the table from them.
- the recommenders (assets/recommend.py): `<name>__prepare` reads the data once (and tunes, where a family does),
  `<name>__seed` trains and tests one seed each, `<name>__gather` writes the metric rows.

The run config stays the asset's own (`ops: {<name>: {config: …}}`): a config mapping gives it to every step. What
the plan step hands the part steps goes through the IO manager: in memory in a single-process run (`make demo`),
pickled on the shared store across processes and pods."""

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import dagster as dg

from assets.common import GPU_OP
from assets.configs import OpsConfig, takes_config
from assets.resources import ComputeResource, StorageResource

# (context, config, storage, compute) -> (what every part step gets, [(mapping key, the part)])
PlanFn = Callable[[dg.OpExecutionContext, OpsConfig, StorageResource, ComputeResource],
                  tuple[Any, list[tuple[str, Any]]]]
# (context, config, storage, compute, shared, part) -> what the gather step gets for this part
PartFn = Callable[[dg.OpExecutionContext, OpsConfig, StorageResource, ComputeResource, Any, Any], Any]
# (context, config, storage, compute, shared, every part's result in plan order) -> the asset's Output (value None)
GatherFn = Callable[[dg.OpExecutionContext, OpsConfig, StorageResource, ComputeResource, Any, list[Any]],
                    dg.Output]


def fanout_asset(name: str, run_config: type[OpsConfig], plan: PlanFn, part: PartFn, gather: GatherFn,
                 deps: Sequence[str | dg.AssetKey], roles: tuple[str, str, str],
                 op_kwargs: tuple[dict[str, Any], dict[str, Any], dict[str, Any]], **asset: Any
                 ) -> dg.AssetsDefinition:
    """`name` as `<name>__<roles[0]>` -> `<name>__<roles[1]>` per part -> `<name>__<roles[2]>`; `op_kwargs` go to
    the three ops (e.g. GPU_OP), `deps` (asset keys) are upstream without data, the rest of `asset` goes to
    dg.graph_asset (partitions, group, kinds, tags, code version, automation, …)."""
    names = [f"{name}__{role}" for role in roles]
    keys = [dg.AssetKey.from_user_string(d) if isinstance(d, str) else d for d in deps]
    upstream = {"__".join(k.path): k for k in keys}

    @dg.config_mapping(config_schema=run_config.to_config_schema().as_field())
    def _every_step(values: dict) -> dict:
        return {op: {"config": dict(values)} for op in names}

    @dg.op(name=names[0], ins={arg: dg.In(dg.Nothing) for arg in upstream},
           out={"shared": dg.Out(), "parts": dg.DynamicOut()}, **op_kwargs[0])
    @takes_config(run_config)
    def _plan(context: dg.OpExecutionContext, config: OpsConfig, storage: StorageResource,
              compute: ComputeResource):
        shared, parts = plan(context, config, storage, compute)
        yield dg.Output(shared, "shared")
        for i, (key, value) in enumerate(parts):
            yield dg.DynamicOutput((i, value), output_name="parts", mapping_key=key)

    @dg.op(name=names[1], **op_kwargs[1])
    @takes_config(run_config)
    def _part(context: dg.OpExecutionContext, config: OpsConfig, storage: StorageResource,
              compute: ComputeResource, shared: Any, numbered: tuple[int, Any]) -> tuple[int, Any]:
        return numbered[0], part(context, config, storage, compute, shared, numbered[1])

    @dg.op(name=names[2], out=dg.Out(dg.Nothing), **op_kwargs[2])
    @takes_config(run_config)
    def _gather(context: dg.OpExecutionContext, config: OpsConfig, storage: StorageResource,
                compute: ComputeResource, shared: Any, results: list[tuple[int, Any]]) -> dg.Output:
        return gather(context, config, storage, compute, shared, [r for _, r in sorted(results, key=lambda r: r[0])])

    def _compose(**inputs: Any) -> Any:
        shared, parts = _plan(**inputs)
        return _gather(shared, parts.map(lambda p: _part(shared, p)).collect())

    # dg.graph_asset reads its inputs off the signature: one parameter per upstream asset
    _compose.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(arg, inspect.Parameter.POSITIONAL_OR_KEYWORD) for arg in upstream])
    # a multi-part key (recommender/<family>/<tokenizer>) names the graph by its path joined with `__` (= `name`)
    naming = {"key": asset.pop("key")} if "key" in asset else {"name": name}
    return dg.graph_asset(**naming, config=_every_step,
                          ins={arg: dg.AssetIn(key=key, dagster_type=dg.Nothing) for arg, key in upstream.items()},
                          **asset)(_compose)


# (context, config, storage, compute, worker) -> what the merge step sums up (plain numbers)
ShardFn = Callable[[dg.OpExecutionContext, OpsConfig, StorageResource, ComputeResource, int], dict]
# (context, config, storage, compute, every worker's dict) -> the asset's Output (value None, metadata, version)
MergeFn = Callable[[dg.OpExecutionContext, OpsConfig, StorageResource, ComputeResource, list[dict]], dg.Output]


def sharded_asset(name: str, run_config: type[OpsConfig], shard: ShardFn, merge: MergeFn, deps: Sequence[str],
                  **asset: Any) -> dg.AssetsDefinition:
    """`name` as fan-out -> shard x config.workers -> merge (both in the `gpu` pool)."""
    return fanout_asset(
        name, run_config,
        plan=lambda context, config, storage, compute: (None, [(f"w{w}", w) for w in range(config.workers)]),
        part=lambda context, config, storage, compute, _, worker: shard(context, config, storage, compute, worker),
        gather=lambda context, config, storage, compute, _, workers: merge(context, config, storage, compute,
                                                                          workers),
        deps=deps, roles=("workers", "shard", "merge"), op_kwargs=({}, GPU_OP, GPU_OP), **asset)


def summed(workers: list[dict], *fields: str) -> dict[str, int]:
    """Per field, the workers' total."""
    return {f: int(sum(w.get(f, 0) for w in workers)) for f in fields}
