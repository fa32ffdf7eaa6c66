"""Stage 4: code tables, one asset per tokenizer (`code_table/<tokenizer>`), same contract and checks for all.

Tokenizers are separate asset keys rather than a partition dimension because their lineage differs
(`pca_kmeans` reads `item_embeddings`, `random` only `items`, `lamia` a trained palette model …), which the graph
should show. Each materialization writes a new immutable version; the checks run inside the asset and only
when all pass does `latest` move to the new version, so a bad table is kept for inspection but never served.
"""

import time
from typing import Any

import dagster as dg
import polars as pl

from assets.common import DATASETS, FOLLOWS_UPSTREAM, GPU_ASSET, job_tag
from assets.configs import OpsConfig, config_class, takes_config
from assets.metadata import frame_version, lineage, markdown_table, table_metadata
from assets.resources import StorageResource
from assets.versions import code_version
from ops import datasets, tokenizers
from ops.codetable import CheckOutcome, CodeTableChecks, aspect_scores, check_code_table, check_collisions
from ops.retokenize import IncompatibleVersion, RetokenizeConfig, retokenize, stability_check
from ops.tokenizers import TokenizerEntry
from storage import Store, read_table_metadata
from storage.artifacts import new_version
from storage.codes import CodeTableStore
from storage.schemas import CODE_TABLE_SCHEMA_VERSION

GROUP = "tokenize"
CODES_MODULE = "ops.codetable"  # + the tokenizer's own module: the code behind every code table (code_version)
PER_POSITION = ("utilization", "entropy_bits", "perplexity", "largest_bucket_share")  # ops.codetable.code_figures
# Code tables whose source is made by a trained model run in that model's job; the rest in `tokenize_job`.
TRAINED_SOURCES = {"palette_embeddings": "palette"}


def published_table(store: Store, dataset: str, tokenizer: str) -> tuple[CodeTableStore, str, pl.DataFrame]:
    """The code tables of `tokenizer`, their published version and its table: what the assets that follow a code
    table (ID quality, serving index) read; a clear failure before the first publish."""
    tables = store.code_tables(dataset, tokenizer)
    version = tables.latest()
    if version is None:
        raise dg.Failure(f"code_table/{tokenizer} has no published version for {dataset}")
    return tables, version, tables.read(version)
CHECK_NAMES = {
    "unique_item_id": "every item_id appears once",
    "unique_semantic_id": "every semantic_id maps to exactly one item",
    "codes_in_range": "codes are int32[L] within [0, K)",
    "covers_all_items": "exactly the items of the items table",
    "utilization_above_floor": "no collapsed codebook: each position uses at least the floor share of its codes",
    "collision_rate_within_limits": "collision rate before dedup: a warning above `collision_warn`, blocking above "
                                    "`collision_block`",
    "ids_stable": "items whose text did not change keep their semantic ID (at most `max_moved_share` move; blocking "
                  "unless the run sets `accept_moved_ids`)",
}


def code_table_config(entry: TokenizerEntry) -> type[OpsConfig]:
    """Run config of `code_table/<name>`: the tokenizer's own config, the checks' settings and how the run relates
    to the previous version (incremental or refit)."""
    camel = "".join(part.title() for part in entry.name.split("_"))
    return config_class(f"{camel}CodeTableConfig", entry.config_type, CodeTableChecks, RetokenizeConfig)


def _fit_rows(store: Store, ds: str, ids: list[str], entry: TokenizerEntry):
    """What the tokenizer fits on: the `column` of its source table as an array in item order (None: ids only)."""
    if entry.source is None or entry.column is None:
        return None
    frame = store.read(ds, entry.source)
    if frame["item_id"].to_list() != ids:
        raise dg.Failure(f"{entry.source} of {ds} does not match items (re-materialize {entry.source})")
    return frame[entry.column].to_numpy()


def _utilization_md(figures: dict) -> str:
    rows = []
    for i, u in enumerate(figures["utilization"]):
        bar = "█" * round(20 * u) + "░" * (20 - round(20 * u))
        rows.append((i, f"{u:.1%}", bar, figures["perplexity"][i], figures["largest_bucket_share"][i]))
    return markdown_table(pl.DataFrame(rows, schema=["position", "utilization", "bar", "perplexity",
                                                     "largest bucket"], orient="row"))


def _aspect_metadata(storage: StorageResource, partition: str, frame: pl.DataFrame) -> dict[str, Any]:
    """Where the dataset ships known aspects (the bundled samples' planted_aspects.csv), how well the codes
    recover them: best-position NMI per aspect, comparable across tokenizers of the same dataset."""
    truth_path = datasets.get(partition).raw_path(storage.raw_root) / "planted_aspects.csv"
    if not truth_path.is_file():
        return {}
    scores = aspect_scores(frame, pl.read_csv(truth_path, schema_overrides={"item_id": pl.String}))
    table = scores.with_columns(pl.col("nmi_per_position").cast(pl.List(pl.String)).list.join(" / "))
    return {"aspect_nmi": dg.MetadataValue.md(markdown_table(table)),
            **{f"nmi_{r['aspect']}": r["best_nmi"] for r in scores.iter_rows(named=True)}}


def _data_version(context: dg.AssetExecutionContext, table: str) -> str | None:
    """The Dagster data version of the upstream table's latest materialization for this partition."""
    record = context.instance.get_latest_data_version_record(dg.AssetKey(table), partition_key=context.partition_key)
    mat = record.event_log_entry.asset_materialization if record is not None else None
    return (mat.tags or {}).get("dagster/data_version") if mat is not None else None


def _sources(context: dg.AssetExecutionContext, store: Store, ds: str,
             upstream: tuple[str, ...]) -> dict[str, dict[str, object]]:
    keep = ("run_id", "created_at", "code_version", "fingerprint", "model", "revision")
    return {t: {**{k: v for k, v in read_table_metadata(store.table_path(ds, t)).items() if k in keep},
                "data_version": _data_version(context, t)} for t in upstream}


def build_code_table_asset(entry: TokenizerEntry) -> dg.AssetsDefinition:
    key = dg.AssetKey(["code_table", entry.name])
    Config = code_table_config(entry)
    version_of_code = code_version(CODES_MODULE, entry.tokenizer.__module__)

    @dg.asset(
        key=key,
        deps=list(entry.upstream),
        partitions_def=DATASETS,
        group_name=GROUP,
        kinds=set(entry.kinds),
        tags=job_tag(TRAINED_SOURCES.get(entry.source or "", "tokenize")),
        code_version=version_of_code,
        automation_condition=FOLLOWS_UPSTREAM,
        description=f"Code table `{entry.name}`: {entry.description} Columns item_id, codes (int32[L]), dedup, "
                    "semantic_id (`c1-…-cL/dedup`); a new immutable version per run, `latest` moved only when "
                    "every check passes.",
        check_specs=[dg.AssetCheckSpec(name, asset=key, description=text, blocking=True, partitions_def=DATASETS)
                     for name, text in CHECK_NAMES.items()],
        **(GPU_ASSET if "pytorch" in entry.kinds else {}),  # a VQ autoencoder trains: a GPU step
    )
    @takes_config(Config)
    def _asset(context: dg.AssetExecutionContext, config: OpsConfig, storage: StorageResource):
        ds = datasets.get(context.partition_key).name
        store = storage.store()
        items = store.scan(ds, "items").select("item_id", "content_hash").collect()
        ids = items["item_id"].to_list()
        tables = store.code_tables(ds, entry.name)
        previous = tables.latest()
        plan = config.build(RetokenizeConfig)
        mode = plan.mode if previous else "initial"
        sources = _sources(context, store, ds, entry.upstream)
        version = new_version(context.run.run_id)
        started = time.perf_counter()
        try:
            tokenizer, result = retokenize(entry.tokenizer, tables, previous, items, _fit_rows(store, ds, ids, entry),
                                           config.build(entry.config_type), plan, sources, version)
        except IncompatibleVersion as e:
            raise dg.Failure(f"code_table/{entry.name} ({ds}): {e}") from e
        frame, figures = result.frame, result.figures
        seconds = round(time.perf_counter() - started, 3)
        context.log.info(f"code_table/{entry.name} ({ds}): {mode} from {previous or 'nothing'}: "
                         + ", ".join(f"{k} {v}" for k, v in result.churn.items()))
        for note in result.notes:
            context.log.warning(note)
        meta = lineage(context, schema_version=CODE_TABLE_SCHEMA_VERSION, dataset=ds, tokenizer=entry.name,
                       config=config.model_dump(), length=tokenizer.length, k=tokenizer.k,
                       code_version=version_of_code, version=version, sources=sources, mode=mode,
                       based_on=previous, churn=result.churn, figures=figures, warnings=tokenizer.warnings)
        path = tables.write_table(version, frame, meta, tokenizer.save, retired=result.retired,
                                  migration=result.migration)
        checks = config.build(CodeTableChecks)
        outcomes: list[CheckOutcome] = [
            *check_code_table(frame, ids, tokenizer.k, tokenizer.length, checks.min_utilization),
            check_collisions(figures, checks.collision_warn, checks.collision_block),
            stability_check(result.churn, plan)]
        published = not any(o.blocks for o in outcomes)  # a warning does not hold `latest` back
        if published:
            tables.publish(version)
        else:
            context.log.warning(f"code table {entry.name}/{ds} version {version} failed its checks; "
                                f"latest stays at {previous}")
        aspects = _aspect_metadata(storage, context.partition_key, frame)
        metadata = table_metadata(
            path, frame.schema, frame.height, dataset=ds, tokenizer=entry.name, version=version,
            published=published, latest=tables.latest() or "none", mode=mode, based_on=previous or "none",
            **{f"churn_{k}": v for k, v in result.churn.items()}, retired=result.retired.height,
            length=tokenizer.length, k=tokenizer.k, collision_rate=figures["collision_rate"],
            max_dedup=figures["max_dedup"], prefix_balance=figures["prefix_balance"],
            position_agreement_ami=figures["position_agreement_ami"],
            utilization_table=dg.MetadataValue.md(_utilization_md(figures)),
            utilization_min=min(figures["utilization"]), seconds=seconds,
            warnings="; ".join([*tokenizer.warnings, *result.notes]) or "none",
            # per-position figures as JSON lists of numbers (plottable), not text
            **{name: dg.MetadataValue.json(figures[name]) for name in PER_POSITION},
            **{k: dg.MetadataValue.json(v) if isinstance(v, (list, dict)) else v for k, v in tokenizer.figures.items()},
            **aspects,
        )
        return dg.MaterializeResult(metadata=metadata, data_version=frame_version(frame), check_results=[
            dg.AssetCheckResult(check_name=o.name, passed=o.passed, description=o.description,
                                severity=dg.AssetCheckSeverity.ERROR if o.blocking else dg.AssetCheckSeverity.WARN,
                                metadata={k: dg.MetadataValue.json(v) if isinstance(v, list) else v
                                          for k, v in o.metadata.items()})
            for o in outcomes])

    return _asset


def code_table_assets() -> list[dg.AssetsDefinition]:
    """One asset per registered tokenizer (ops.tokenizers.REGISTRY), in registration order."""
    return [build_code_table_asset(entry) for entry in tokenizers.REGISTRY.values()]


ASSETS = code_table_assets()
CHECKS: list = []  # the code-table checks are declared on each asset (check_specs) and evaluated in its body

# this stage's part of the code location (pipeline/definitions.py merges every stage's)
defs = dg.Definitions(assets=ASSETS, asset_checks=CHECKS)
