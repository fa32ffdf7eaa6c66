"""Assets whose work is split over workers (ops.shards): a graph of steps instead of one op. `<name>__workers` fans
out one `<name>__shard` step per worker (the `gpu` pool: on Kubernetes a GPU pod each, with the multiprocess
executor a process each), every worker computing its share of the shard files, then `<name>__merge` assembles the
table from them and reports the materialization. The run config stays the asset's own (`ops: {<name>: {config:
…}}`): a config mapping gives it to every step, so a `workers: N` field is all a user sets."""

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import dagster as dg

from assets.common import GPU_OP
from assets.configs import OpsConfig, takes_config
from assets.resources import ComputeResource, StorageResource

# (context, config, storage, compute, worker) -> what the merge step sums up (plain numbers)
ShardFn = Callable[[dg.OpExecutionContext, OpsConfig, StorageResource, ComputeResource, int], dict]
# (context, config, storage, compute, every worker's dict) -> the asset's Output (value None, metadata, version)
MergeFn = Callable[[dg.OpExecutionContext, OpsConfig, StorageResource, ComputeResource, list[dict]], dg.Output]


def sharded_asset(name: str, run_config: type[OpsConfig], shard: ShardFn, merge: MergeFn, deps: Sequence[str],
                  **asset: Any) -> dg.AssetsDefinition:
    """`name` as fan-out -> shard x config.workers -> merge; `deps` (asset keys) are upstream without data, the
    rest of `asset` goes to dg.graph_asset (partitions, group, kinds, tags, code version, automation, …)."""
    names = {role: f"{name}__{role}" for role in ("workers", "shard", "merge")}
    upstream = {dep.replace("/", "__"): dep for dep in deps}

    @dg.config_mapping(config_schema=run_config.to_config_schema().as_field())
    def _every_step(values: dict) -> dict:
        return {op: {"config": dict(values)} for op in names.values()}

    @dg.op(name=names["workers"], out=dg.DynamicOut(int), ins={arg: dg.In(dg.Nothing) for arg in upstream})
    @takes_config(run_config)
    def _workers(config: OpsConfig):
        for worker in range(config.workers):
            yield dg.DynamicOutput(worker, mapping_key=f"w{worker}")

    @dg.op(name=names["shard"], **GPU_OP)
    @takes_config(run_config)
    def _shard(context: dg.OpExecutionContext, config: OpsConfig, storage: StorageResource,
               compute: ComputeResource, worker: int) -> dict:
        return shard(context, config, storage, compute, worker)

    @dg.op(name=names["merge"], out=dg.Out(dg.Nothing), **GPU_OP)
    @takes_config(run_config)
    def _merge(context: dg.OpExecutionContext, config: OpsConfig, storage: StorageResource,
               compute: ComputeResource, workers: list[dict]) -> dg.Output:
        return merge(context, config, storage, compute, workers)

    def _compose(**inputs: Any) -> Any:
        return _merge(_workers(**inputs).map(_shard).collect())

    # dg.graph_asset reads its inputs off the signature: one parameter per upstream asset
    _compose.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(arg, inspect.Parameter.POSITIONAL_OR_KEYWORD) for arg in upstream])
    return dg.graph_asset(name=name, config=_every_step,
                          ins={arg: dg.AssetIn(key=dg.AssetKey.from_user_string(dep), dagster_type=dg.Nothing)
                               for arg, dep in upstream.items()}, **asset)(_compose)


def summed(workers: list[dict], *fields: str) -> dict[str, int]:
    """Per field, the workers' total."""
    return {f: int(sum(w.get(f, 0) for w in workers)) for f in fields}
