"""Serving index: `serving_index/<tokenizer>` per code table (ops.serving): the table's valid semantic IDs as a
prefix table and a reverse table that a service loads with any Parquet reader, written under the code table's
version name; the generative recommenders decode on it (so what is evaluated is what is served)."""

import time

import dagster as dg
import numpy as np
import polars as pl

from assets.codes import TRAINED_SOURCES, published_table
from assets.common import DATASETS, FOLLOWS_UPSTREAM, job_tag
from assets.metadata import lineage, markdown_table
from assets.resources import StorageResource
from assets.versions import code_version
from ops import datasets, tokenizers
from ops.serving import ServingIndex, item_paths
from ops.tokenizers import TokenizerEntry
from storage import Store

GROUP = "serving"
SERVING_CODE_VERSION = code_version("ops.serving")
CHECK = "index_matches_code_table"


def serving_key(tokenizer: str) -> dg.AssetKey:
    return dg.AssetKey(["serving_index", tokenizer])


def load_serving(store: Store, dataset: str, tokenizer: str, version: str) -> ServingIndex:
    """The serving index of code table `version`; a clear failure where it was not built for that version."""
    indexes = store.serving_indexes(dataset, tokenizer)
    if version not in indexes.versions():
        raise dg.Failure(f"serving_index/{tokenizer} of {dataset} has no version {version} (the code table's "
                         f"latest; it has {indexes.versions()[-3:] or 'none'}): materialize serving_index/{tokenizer}")
    prefixes, items = indexes.read(version)
    return ServingIndex.from_tables(prefixes, items, f"serving_index/{tokenizer} {version}")


def _matches(index: ServingIndex, table: pl.DataFrame) -> tuple[bool, dict[str, int]]:
    """Every code-table item is in the index at its own path and semantic ID, and nothing else is."""
    served = index.items.select("item_id", "semantic_id", "path").sort("item_id")
    own = table.select("item_id", "semantic_id").with_columns(
        pl.Series("path", item_paths(table).tolist(), dtype=pl.List(pl.Int32))).sort("item_id")
    same = served.height == own.height and served["item_id"].equals(own["item_id"]) and \
        served["semantic_id"].equals(own["semantic_id"]) and \
        np.array_equal(np.stack(served["path"].to_list()), np.stack(own["path"].to_list()))
    root = index.prefixes.row(0, named=True)
    return same and root["count"] == table.height, {"items": served.height, "code_table_rows": table.height}


def build_serving_asset(entry: TokenizerEntry) -> dg.AssetsDefinition:
    key = serving_key(entry.name)

    @dg.asset(key=key, deps=[dg.AssetKey(["code_table", entry.name])], partitions_def=DATASETS, group_name=GROUP,
              kinds={"parquet"}, code_version=SERVING_CODE_VERSION, automation_condition=FOLLOWS_UPSTREAM,
              tags=job_tag(TRAINED_SOURCES.get(entry.source or "", "tokenize")),
              description=f"The valid semantic IDs of `code_table/{entry.name}` (latest) for serving, under the code "
                          "table's version name: `prefixes.parquet` (depth, prefix, allowed_next, and the item rows "
                          "under each prefix and next code) and `items.parquet` (semantic_id -> item_id, sorted by "
                          "path). Any Parquet reader answers allowed_next(prefix, exclude) from them (README, "
                          "'Serve constrained decoding'); the generative recommenders decode on this index.",
              check_specs=[dg.AssetCheckSpec(CHECK, asset=key, blocking=True, partitions_def=DATASETS,
                                             description="every item of the code table is in the index at its "
                                                         "path and semantic ID, and nothing else")])
    def _asset(context: dg.AssetExecutionContext, storage: StorageResource):
        spec = datasets.get(context.partition_key)
        store = storage.store()
        _, version, table = published_table(store, spec.name, entry.name)
        started = time.perf_counter()
        index = ServingIndex.from_code_table(table)
        seconds = time.perf_counter() - started
        passed, figures = _matches(index, table)
        indexes = store.serving_indexes(spec.name, entry.name)
        if version not in indexes.versions():  # a rerun on the same code table leaves its index as it is
            indexes.write_index(version, index.prefixes, index.items, lineage(
                context, dataset=spec.name, tokenizer=entry.name, code_table_version=version,
                code_version=SERVING_CODE_VERSION))
        if passed:
            indexes.publish(version)
        per_depth = index.prefixes.group_by("depth", maintain_order=True).agg(
            prefixes=pl.len(), widest=pl.col("allowed_next").list.len().max())
        size = sum(f.stat().st_size for f in indexes.path(version).glob("*.parquet"))
        return dg.MaterializeResult(
            metadata={"version": version, "items": index.items.height, "prefixes": index.prefixes.height,
                      "bytes": size, "build_seconds": round(seconds, 3), "path": str(indexes.path(version)),
                      "per_depth": dg.MetadataValue.md(markdown_table(per_depth))},
            check_results=[dg.AssetCheckResult(check_name=CHECK, passed=passed, metadata=figures)])

    return _asset


ASSETS = [build_serving_asset(entry) for entry in tokenizers.REGISTRY.values()]

# this stage's part of the code location (pipeline/definitions.py merges every stage's)
defs = dg.Definitions(assets=ASSETS)
