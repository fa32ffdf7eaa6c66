"""Stage 5: every registered recommender family (ops.recommend: generative, generative_llm, sasrec, popularity,
ctr) as assets, all built by one factory that owns the seeds loop, the metric rows and their write (assets/results.py);
`evaluation` (assets/evaluation.py) gathers the rows.

`recommender/<family>` for an ID model, `recommender/<family>/<tokenizer>` for a per-tokenizer family (one asset per
registered tokenizer: the same recommender on every code table), plus `recommender/<family>/ids` where the family
also runs without codes (CTR). A new family is registered in ops/recommend/__init__.py; nothing here changes.
"""

import dataclasses
import time
from typing import Any

import dagster as dg
import polars as pl

from assets.common import DATASETS, GPU_OP, job_tag
from assets.configs import OpsConfig, config_class, run_dtype
from assets.metadata import lineage, markdown_table
from assets.quality import quality_key
from assets.resources import ComputeResource, StorageResource
from assets.results import EVALUATE, GROUP, summary, write_metrics
from assets.serving import load_serving, serving_key
from assets.shards import fanout_asset
from assets.versions import code_version
from ops import datasets, recommend, tokenizers
from ops.recommend import RecData, RecommenderEntry
from ops.recommend.base import Recommender, SeedRun
from ops.recommend.evaluation import EvalConfig

IDS = "ids"  # the key of a per-tokenizer family's asset without codes


def _camel(*parts: str) -> str:
    return "".join(p.title() for part in parts for p in part.split("_"))


def run_config(entry: RecommenderEntry, tokenizer: str | None) -> type[OpsConfig]:
    """The run config of one of the family's assets: its ops configs + the evaluation settings, minus what the
    family fixes, what the resources set (device; dtype unless the family lets the run config name one) and the
    seed (set per run)."""
    types, exclude = entry.configs_for(tokenizer)
    variant = "" if tokenizer is not None or not entry.per_tokenizer else IDS
    return config_class(f"{_camel(entry.name, variant)}RunConfig", *types, EvalConfig,
                        exclude=(*exclude, *entry.overrides, "device", "seed"), loads_model=entry.loads_model,
                        doc=f"`recommender/{entry.name}`: {', '.join(t.__name__ for t in types)} (ops) and how it is "
                            "evaluated (EvalConfig); device and dtype come from the compute resource unless this "
                            "config names a dtype.")


def _ops_configs(entry: RecommenderEntry, tokenizer: str | None, config: OpsConfig, compute: ComputeResource
                 ) -> list[object]:
    """The family's ops configs from the run config, with the family's fixed values and the resource settings."""
    types, _ = entry.configs_for(tokenizer)
    fields = config.model_dump()
    out = []
    for ops_type in types:
        names = {f.name for f in dataclasses.fields(ops_type)}
        settings = {k: v for k, v in entry.overrides.items() if k in names}
        if "device" in names:
            settings["device"] = compute.device
        if "dtype" in names:
            settings["dtype"] = run_dtype(fields["dtype"], compute) if "dtype" in fields else compute.dtype
        out.append(config.build(ops_type, **settings))
    return out


def _metadata_value(value: object) -> Any:
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return dg.MetadataValue.md(markdown_table(pl.DataFrame(value)))
    if isinstance(value, (list, dict)):
        return dg.MetadataValue.json(value)
    return value


def recommender_key(entry: RecommenderEntry, tokenizer: str | None = None) -> dg.AssetKey:
    """`recommender/<family>`, or for a per-tokenizer family `recommender/<family>/<tokenizer|ids>`; the op's name
    (a run config's key) is its path joined by `__`."""
    return dg.AssetKey(["recommender", entry.name, *([tokenizer or IDS] if entry.per_tokenizer else [])])


def build_recommender_asset(entry: RecommenderEntry, tokenizer: str | None = None) -> dg.AssetsDefinition:
    """`recommender/<family>[/<tokenizer>|/ids]` as steps (assets/shards.fanout_asset): `__prepare` reads the data
    (and tunes, where the family does), one `__seed` step per seed fits and tests (in parallel where the executor
    runs steps side by side: processes, or pods on Kubernetes), `__gather` writes the rows per recommender name,
    publishes each seed's best checkpoint in seed order and sums up in metadata."""
    key = recommender_key(entry, tokenizer)
    name = key.path[2] if len(key.path) > 2 else None
    Config = run_config(entry, tokenizer)
    # a per-tokenizer recommender also waits on its table's ID quality: the blocking collapse check stops it there
    inputs: list[str | dg.AssetKey] = [*entry.inputs, "items", *(
        [dg.AssetKey(["code_table", tokenizer]), quality_key(tokenizer),
         *([serving_key(tokenizer)] if entry.serves else [])] if tokenizer else [])]
    on = f" on `code_table/{tokenizer}`" if tokenizer else (" without codes" if entry.per_tokenizer else "")
    model_op: dict[str, Any] = GPU_OP if entry.trains else {}  # SASRec tunes in its prepare step
    checkpoint_dir = f"{entry.name}-{name}" if name else entry.name  # the family's checkpoints, per code table

    def prepare(context: dg.OpExecutionContext, config: OpsConfig, storage: StorageResource,
                compute: ComputeResource) -> tuple[Recommender, list[tuple[str, int]]]:
        spec = datasets.get(context.partition_key)
        store = storage.store()
        started = time.perf_counter()
        tables = store.code_tables(spec.name, tokenizer) if tokenizer else None
        version = tables.latest() if tables is not None else None
        data = RecData(
            spec.name, store.read(spec.name, "items"), spec.attributes[: spec.content_attributes],
            sequences=store.read(spec.name, "user_sequences") if "user_sequences" in entry.inputs else None,
            impressions=store.read(spec.name, "impressions") if "impressions" in entry.inputs else None,
            code_table=tables.read(version) if tables is not None else None, tokenizer=tokenizer,
            serving=load_serving(store, spec.name, tokenizer, version) if tokenizer and version and entry.serves
            else None,
            checkpoints=store.artifacts(spec.name, "recommenders", checkpoint_dir))
        evaluation = config.build(EvalConfig)
        model = entry.factory(entry.name, _ops_configs(entry, tokenizer, config, compute), evaluation)
        model.prepare(data)
        seeds = list(entry.fixed_seeds) or evaluation.seeds
        context.log.info(f"{key.to_user_string()}: prepared in {time.perf_counter() - started:.0f} s; "
                         f"seeds {', '.join(map(str, seeds))} next")
        return model, [(f"seed_{seed}", seed) for seed in seeds]

    def run_seed(context: dg.OpExecutionContext, config: OpsConfig, storage: StorageResource,
                 compute: ComputeResource, model: Recommender, seed: int) -> SeedRun:
        started = time.perf_counter()
        run = model.run(seed)
        context.log.info(f"{key.to_user_string()}: seed {seed} done in {time.perf_counter() - started:.0f} s")
        return run

    def gather(context: dg.OpExecutionContext, config: OpsConfig, storage: StorageResource,
               compute: ComputeResource, model: Recommender, runs: list[SeedRun]) -> dg.Output:
        spec = datasets.get(context.partition_key)
        store = storage.store()
        checkpoints = store.artifacts(spec.name, "recommenders", checkpoint_dir)
        reports: dict[str, dict[str, object]] = {}
        curves: dict[str, Any] = {}
        for run in runs:
            seed = run.rows["seed"][0] if run.rows.height else None
            curves.update(run.curves)
            for figure, value in run.report.items():  # e.g. early_stopping: {seed: ...}
                reports.setdefault(figure, {})[str(seed)] = value
            if run.publish:  # in seed order, so the last seed's best model is the family's latest
                checkpoints.publish(run.publish)
        long = pl.concat([r.rows for r in runs])
        users = [r.per_user for r in runs if r.per_user is not None]
        meta = lineage(context, dataset=spec.name, recommender=entry.name, tokenizer=tokenizer,
                       config=config.model_dump())
        for recommender_name, part in long.group_by("recommender", maintain_order=True):
            mine = [u.filter(pl.col("recommender") == recommender_name[0]) for u in users]
            write_metrics(store, spec.name, str(recommender_name[0]), tokenizer, [part], mine, meta)
        ranking = long.filter(pl.col("k").is_not_null())
        return dg.Output(None, metadata={
            **(summary(ranking) if ranking.height else {}),
            **{k: _metadata_value(v) for k, v in model.metadata(runs).items()},
            **{figure: dg.MetadataValue.json(by_seed) for figure, by_seed in reports.items()},
            **({"loss_curves": dg.MetadataValue.json(curves)} if any(curves.values()) else {}),
            "seeds": len(runs)})

    return fanout_asset(
        "__".join(key.path), Config, prepare, run_seed, gather, deps=inputs, roles=("prepare", "seed", "gather"),
        op_kwargs=(model_op, model_op, {}), key=key, partitions_def=DATASETS, group_name=GROUP,
        kinds=set(entry.kinds), tags=job_tag(EVALUATE), code_version=code_version(*entry.modules),
        description=f"`{entry.name}`{on}: {entry.description}")


def recommender_assets() -> list[dg.AssetsDefinition]:
    """One asset per registered family and, per-tokenizer, per registered tokenizer (in registration order)."""
    return [build_recommender_asset(entry, tokenizer) for entry in recommend.REGISTRY.values()
            for tokenizer in entry.variants(list(tokenizers.REGISTRY))]


ASSETS = recommender_assets()
CHECKS: list = []

# this stage's part of the code location (pipeline/definitions.py merges every stage's)
defs = dg.Definitions(assets=ASSETS, asset_checks=CHECKS)
