"""Stage 5's end: `evaluation` gathers the metric rows of every recommender asset (assets/recommend.py) into one long
table with a comparison, a plot and a blocking check. The rows it expects come from the recommender registry
(ops.recommend): every family on every code table it runs on, with its seeds."""

import dagster as dg
import polars as pl

from assets.common import DATASETS, job_tag
from assets.configs import OpsConfig, config_class, takes_config
from assets.metadata import lineage, markdown_table, table_metadata
from assets.recommend import ASSETS as RECOMMENDERS
from assets.recommend import recommender_key
from assets.resources import StorageResource
from assets.results import EVALUATE, GROUP, metrics_tables
from assets.versions import code_version
from ops import datasets, recommend, tokenizers
from ops.recommend.evaluation import ExpectedConfig, expected_models
from storage import write_frame

EvaluationConfig = config_class("EvaluationConfig", ExpectedConfig,
                                doc="The seeds every learned recommender must have run with and the recommenders not "
                                    "run for this dataset (the check).")
EVALUATION_CHECK = "evaluation_complete"


def _plot(long: pl.DataFrame) -> str:
    """NDCG@K per recommender x tokenizer with the std over seeds as error bars, as a Markdown PNG."""
    import base64
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = (long.filter(pl.col("metric") == "ndcg").group_by("recommender", "tokenizer", "k")
             .agg(pl.col("value").mean().alias("mean"), pl.col("value").std().fill_null(0).alias("std"))
             .sort("recommender", "tokenizer", "k", nulls_last=False))
    fig, ax = plt.subplots(figsize=(8, 3.5))
    for (rec, tok), part in stats.group_by("recommender", "tokenizer", maintain_order=True):
        ax.errorbar(part["k"].to_list(), part["mean"].to_list(), yerr=part["std"].to_list(), marker="o", capsize=3,
                    label=f"{rec}/{tok}" if tok else rec)
    ax.set_xlabel("K")
    ax.set_ylabel("NDCG@K")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return f"![NDCG@K](data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()})"


def expected_rows(wanted: ExpectedConfig) -> list[tuple[str, str | None, str]]:
    """(recommender, tokenizer, asset after `recommender/`) of every model of every registered family's assets."""
    out = []
    for entry in recommend.REGISTRY.values():
        for tokenizer in entry.variants(list(tokenizers.REGISTRY)):
            asset = "/".join(recommender_key(entry, tokenizer).path[1:])
            out += [(name, tokenizer, asset) for name in entry.expected(tokenizer, wanted)]
    return out


def build_evaluation_asset(recommenders: list[dg.AssetsDefinition]) -> dg.AssetsDefinition:
    """`evaluation`, waiting for the given recommender assets (all registered families' in the code location)."""

    check = dg.AssetCheckSpec(EVALUATION_CHECK, asset="evaluation", blocking=True, partitions_def=DATASETS,
                              description="every recommender x code table x seed present, recall / ndcg / auc in "
                                          "[0, 1], logloss finite and >= 0")

    @dg.asset(key="evaluation", deps=[a.key for a in recommenders], partitions_def=DATASETS, group_name=GROUP,
              kinds={"parquet"}, tags=job_tag(EVALUATE), code_version=code_version("ops.recommend.evaluation"),
              check_specs=[check],
              description="One long table of every recommender's test metrics: dataset, recommender, tokenizer "
                          "(null for ID models), seed, metric, k, value (CTR models: auc and logloss, k null); the "
                          "comparison (mean ± std, 95 % interval, paired p-values against the best ID baseline), the "
                          "CTR comparison (against the ID-only model of the same architecture) and an NDCG@K plot "
                          "in the metadata.")
    @takes_config(EvaluationConfig)
    def evaluation(context: dg.AssetExecutionContext, config: OpsConfig,
                   storage: StorageResource):
        from ops.recommend.evaluation import (
            CTR_METRICS,
            EVALUATION_SCHEMA,
            check_evaluation,
            comparison,
            ctr_comparison,
        )

        ds = datasets.get(context.partition_key).name
        store = storage.store()
        wanted = config.build()
        # a deterministic family runs its fixed seeds only (popularity: 0)
        seeds_of = {**{e.name: list(e.fixed_seeds) for e in recommend.REGISTRY.values() if e.fixed_seeds},
                    **wanted.seeds_of}
        expected = [(r, t, seeds_of.get(r, wanted.seeds))
                    for r, t in expected_models(expected_rows(wanted), wanted.skip)]
        longs, users = [], []
        for recommender, tokenizer, _ in expected:
            metrics, per_user = metrics_tables(recommender, tokenizer)
            if store.exists(ds, metrics):
                longs.append(store.read(ds, metrics))
                if store.exists(ds, per_user):  # (ranking models only)
                    users.append(store.read(ds, per_user))
        long = pl.concat(longs) if longs else pl.DataFrame(schema=EVALUATION_SCHEMA)
        path = store.table_path(ds, "evaluation")
        write_frame(long, path, lineage(context, dataset=ds, table="evaluation"))
        passed, check_meta = check_evaluation(long, expected)
        metadata = table_metadata(path, long.schema, long.height, dataset=ds)
        ranking = long.filter(~pl.col("metric").is_in(CTR_METRICS))
        if ranking.height:
            metadata["comparison"] = dg.MetadataValue.md(markdown_table(comparison(ranking, pl.concat(users))))
            metadata["ndcg_plot"] = dg.MetadataValue.md(_plot(ranking))
        if ranking.height < long.height:
            metadata["ctr_comparison"] = dg.MetadataValue.md(markdown_table(ctr_comparison(long)))
        return dg.MaterializeResult(metadata=metadata, check_results=[dg.AssetCheckResult(
            check_name=EVALUATION_CHECK, passed=passed, metadata=check_meta)])

    return evaluation


evaluation = build_evaluation_asset(RECOMMENDERS)
ASSETS = [evaluation]
CHECKS: list = []

# this stage's part of the code location (pipeline/definitions.py merges every stage's)
defs = dg.Definitions(assets=ASSETS, asset_checks=CHECKS)
