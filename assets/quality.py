"""ID quality: `id_quality/<tokenizer>` per code table (ops.quality: collisions, codebook use, prefix balance,
neighbour preservation, NMI with the dataset's known attributes, position agreement, each against random codes of
the same shape) with the blocking collapse check that keeps recommenders off a collapsed table, and
`id_quality_comparison`: every tokenizer of a dataset in one table and one plot."""

import base64
import io
import time
from typing import Any

import dagster as dg
import numpy as np
import polars as pl

from assets.codes import TRAINED_SOURCES, published_table
from assets.common import DATASETS, FOLLOWS_UPSTREAM, job_tag
from assets.configs import OpsConfig, config_class, takes_config
from assets.metadata import lineage, markdown_table, table_metadata
from assets.resources import StorageResource
from assets.versions import code_version
from ops import datasets, tokenizers
from ops.quality import QualityConfig, collapse_check, quality_report
from ops.tokenizers import TokenizerEntry
from storage import Store, write_frame

GROUP = "quality"
QUALITY_CODE_VERSION = code_version("ops.quality")
QualityRunConfig = config_class("QualityRunConfig", QualityConfig)
CHECK = "codes_not_collapsed"
EMBEDDINGS = "item_embeddings"  # one embedding space for every tokenizer, so that their figures compare


def quality_key(tokenizer: str) -> dg.AssetKey:
    return dg.AssetKey(["id_quality", tokenizer])


def _table(tokenizer: str) -> str:
    return f"id_quality__{tokenizer}"


def _embeddings(store: Store, ds: str, ids: list[str]) -> np.ndarray | None:
    if not store.exists(ds, EMBEDDINGS):
        return None
    frame = store.read(ds, EMBEDDINGS).select("item_id", "embedding")
    aligned = pl.DataFrame({"item_id": ids}).join(frame, on="item_id", how="left", maintain_order="left")
    if aligned["embedding"].null_count():
        return None  # embeddings of another catalog than the code table's
    return aligned["embedding"].to_numpy()


def build_quality_asset(entry: TokenizerEntry) -> dg.AssetsDefinition:
    key = quality_key(entry.name)

    @dg.asset(key=key, deps=[dg.AssetKey(["code_table", entry.name]), "items", EMBEDDINGS], partitions_def=DATASETS,
              group_name=GROUP, kinds={"parquet"}, code_version=QUALITY_CODE_VERSION,
              tags=job_tag(TRAINED_SOURCES.get(entry.source or "", "tokenize")), automation_condition=FOLLOWS_UPSTREAM,
              description=f"ID quality of `code_table/{entry.name}` (latest), each figure beside random codes of the "
                          "same L and K: collision rate and items per colliding tuple; per position utilization, "
                          "perplexity, entropy, largest bucket; prefix balance per depth (prefixes, largest share, "
                          "Gini); neighbour preservation in item_embeddings space; NMI of each position with the "
                          "dataset's known attributes; position agreement (AMI).",
              check_specs=[dg.AssetCheckSpec(CHECK, asset=key, blocking=True, partitions_def=DATASETS,
                                             description="no collapsed codebook: each position's perplexity above "
                                                         "a floor, no first code holding most items")])
    @takes_config(QualityRunConfig)
    def _asset(context: dg.AssetExecutionContext, config: OpsConfig, storage: StorageResource):
        spec = datasets.get(context.partition_key)
        store = storage.store()
        tables, version, table = published_table(store, spec.name, entry.name)
        k = int(tables.manifest(version)["metadata"]["k"])  # written by every code-table run
        ids = table["item_id"].to_list()
        items = store.read(spec.name, "items")
        labels = [c for c in spec.labels if c in items.columns]
        aligned = pl.DataFrame({"item_id": ids}).join(items.select("item_id", *labels), on="item_id", how="left",
                                                      maintain_order="left").drop("item_id")
        cfg: QualityConfig = config.build()
        started = time.perf_counter()
        report = quality_report(table, k, _embeddings(store, spec.name, ids), aligned if labels else None, cfg)
        outcome = collapse_check(report, cfg)
        row = pl.DataFrame([{"tokenizer": entry.name, "version": version, **report.figures,
                             "collapsed": not outcome.passed}])
        path = store.table_path(spec.name, _table(entry.name))
        write_frame(row, path, lineage(context, dataset=spec.name, tokenizer=entry.name, version=version,
                                       code_version=QUALITY_CODE_VERSION, config=config.model_dump(),
                                       positions=report.positions.to_dicts(), balance=report.balance.to_dicts(),
                                       labels=report.labels.to_dicts()))
        metadata: dict[str, Any] = {
            **{k: v for k, v in report.figures.items() if isinstance(v, (int, float))},
            "version": version, "seconds": round(time.perf_counter() - started, 2),
            "positions": dg.MetadataValue.md(markdown_table(report.positions)),
            "prefix_balance": dg.MetadataValue.md(markdown_table(report.balance)),
        }
        if report.labels.height:
            metadata["attribute_nmi"] = dg.MetadataValue.md(markdown_table(report.labels.with_columns(
                pl.col("nmi_per_position").cast(pl.List(pl.String)).list.join(" / "))))
        return dg.MaterializeResult(
            metadata=table_metadata(path, row.schema, row.height, **metadata),
            check_results=[dg.AssetCheckResult(check_name=CHECK, passed=outcome.passed,
                                               description=outcome.description, metadata=outcome.metadata)])

    return _asset


def _plot(frame: pl.DataFrame) -> str:
    """Per tokenizer: neighbour preservation and best label NMI, each beside random codes (a PNG in Markdown)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = [(c, f"random_{c}") for c in frame.columns
             if (c == "neighbour_preservation" or c.startswith("nmi_")) and f"random_{c}" in frame.columns]
    fig, axes = plt.subplots(1, max(1, len(pairs)), figsize=(4 * max(1, len(pairs)), 3), squeeze=False)
    names = frame["tokenizer"].to_list()
    x = np.arange(len(names))
    for ax, (ours, rand) in zip(axes[0], pairs):
        ax.bar(x - 0.2, frame[ours].fill_null(0).to_numpy(), 0.4, label="codes")
        ax.bar(x + 0.2, frame[rand].fill_null(0).to_numpy(), 0.4, label="random codes")
        ax.set_xticks(x, names, rotation=45, ha="right", fontsize=7)
        ax.set_title(ours, fontsize=9)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return f"![ID quality](data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()})"


@dg.asset(partitions_def=DATASETS, group_name=GROUP, kinds={"parquet"}, code_version=QUALITY_CODE_VERSION,
          tags=job_tag("tokenize"), deps=[quality_key(name) for name in tokenizers.REGISTRY],
          automation_condition=FOLLOWS_UPSTREAM,
          description="Every tokenizer's ID quality on this dataset in one table (one row each: the figures of "
                      "id_quality/<tokenizer> and those of random codes of the same shape) and one plot, so that a "
                      "user sees which tokenizer gives well-spread, meaningful IDs before training a recommender.")
def id_quality_comparison(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    spec = datasets.get(context.partition_key)
    store = storage.store()
    rows = [store.read(spec.name, _table(name)) for name in tokenizers.REGISTRY if store.exists(spec.name,
                                                                                                  _table(name))]
    if not rows:
        raise dg.Failure(f"no id_quality table for {spec.name}: materialize id_quality/<tokenizer> first")
    frame = pl.concat(rows, how="diagonal_relaxed")
    path = store.table_path(spec.name, "id_quality")
    write_frame(frame, path, lineage(context, dataset=spec.name, code_version=QUALITY_CODE_VERSION))
    shown: list[str] = [c for c in ("tokenizer", "collision_rate", "random_collision_rate", "min_perplexity",
                         "largest_first_bucket_share", "neighbour_preservation", "random_neighbour_preservation",
                         "position_agreement_ami") if c in frame.columns]
    shown += [c for c in frame.columns if c.startswith("nmi_") or c.startswith("random_nmi_")]
    return dg.MaterializeResult(metadata=table_metadata(
        path, frame.schema, frame.height, dataset=spec.name,
        comparison=dg.MetadataValue.md(markdown_table(frame.select(shown))),
        plot=dg.MetadataValue.md(_plot(frame))))


ASSETS = [*(build_quality_asset(entry) for entry in tokenizers.REGISTRY.values()), id_quality_comparison]

# this stage's part of the code location (pipeline/definitions.py merges every stage's)
defs = dg.Definitions(assets=ASSETS)
