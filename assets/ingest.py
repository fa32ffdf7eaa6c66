"""Stage 1: raw files -> canonical `items`, `interactions`, `quarantine`, then `user_sequences`."""

import time
from dataclasses import asdict

import dagster as dg
import polars as pl

from assets.common import DATASETS, code_version, config_class, job_tag, lineage, markdown_table, table_metadata
from ops import datasets, sample
from ops.impressions import ImpressionConfig
from ops.ingest import ingest
from ops.sequences import SplitConfig, build_user_sequences
from pipeline.resources import StorageResource
from storage import atomic_path, sink_frames, write_frame
from storage.atomic import remove_leftovers
from storage.parquet import write_parquet
from storage.schemas import IMPRESSION_SCHEMA, SHOWN_SCHEMA, USER_SEQUENCE_SCHEMA

GROUP = "ingest"
INGEST_CODE_VERSION = code_version("ops.ingest", "ops.sample")
SEQUENCES_CODE_VERSION = code_version("ops.sequences")
IMPRESSIONS_CODE_VERSION = code_version("ops.impressions")
ACCOUNTING = "ingest_accounting"  # side table (not an asset): per-file row accounting, read by the checks
# side table (not an asset): MIND impressions shown and not clicked, the label-0 rows of `impressions` (empty for
# sources that log no impressions)
SHOWN_TABLE = "shown_not_clicked"


def _ensure_sample(spec: datasets.DatasetSpec, raw_root: str, log: dg.DagsterLogManager) -> None:
    raw = spec.raw_path(raw_root)
    if spec.sample and not (raw.is_dir() and any(raw.iterdir())):
        extra = {"category": spec.category, "version": spec.version} if spec.source == "amazon" else {}
        sample.generate(spec.source, raw, "demo", seed=0, **extra)
        log.info(f"generated bundled sample {spec.name} at {raw}")


@dg.multi_asset(
    name="ingest_raw",
    specs=[
        dg.AssetSpec("items", group_name=GROUP, tags=job_tag("ingest"), kinds={"parquet", "polars"}, code_version=INGEST_CODE_VERSION,
                     description="Canonical items: item_id (unique), dataset, one text column per attribute in the "
                                 "dataset's attribute order, content_hash."),
        dg.AssetSpec("interactions", group_name=GROUP, tags=job_tag("ingest"), kinds={"parquet", "polars"},
                     code_version=INGEST_CODE_VERSION,
                     description="Canonical interactions: user_id, item_id, timestamp (unix s), event, seq, plus "
                                 "source extras (rating, price, impression_id …). Every item_id is in `items`."),
        dg.AssetSpec("quarantine", group_name=GROUP, tags=job_tag("ingest"), kinds={"parquet"}, code_version=INGEST_CODE_VERSION,
                     description="Every rejected raw record: source_file, line, reason, raw text. Row accounting "
                                 "per source file proves rows_in = kept + quarantined + filtered."),
    ],
    partitions_def=DATASETS,
    description="Read a dataset's original files (MIND, Amazon 2014/2018/2023, H&M; plain or gzipped) into "
                "canonical Parquet tables. Bundled sample datasets are generated on first use.",
    op_tags={"semid/resource": "cpu"},
)
def ingest_raw(context: dg.AssetExecutionContext, storage: StorageResource):
    spec = datasets.get(context.partition_key)
    _ensure_sample(spec, storage.raw_root, context.log)
    store = storage.store()
    # what a killed ingest of this dataset left (its pid is gone); a live writer's temporaries are kept
    for path in remove_leftovers(store.table_path(spec.name, "items").parent):
        context.log.warning(f"removed {path}, left by a killed writer")
    started = time.perf_counter()
    result = ingest(spec, storage.raw_root, storage.workdir(spec.name))
    meta = lineage(context, dataset=spec.name, source=spec.source, code_version=INGEST_CODE_VERSION,
                   raw_dir=str(spec.raw_path(storage.raw_root)))
    paths = {t: store.table_path(spec.name, t) for t in ("items", "interactions", "quarantine", SHOWN_TABLE)}
    shown = result.shown_not_clicked if result.shown_not_clicked is not None else pl.DataFrame(schema=SHOWN_SCHEMA)
    # The tables are separate files, so they cannot switch in one step: all are written first and renamed one after
    # the other (items when the sinks succeeded, the accounting last); storage.Store refuses a set of mixed runs.
    with atomic_path(paths["items"]) as items_tmp:
        write_parquet(result.items, items_tmp, {**meta, "table": "items", "attributes": list(spec.attributes)})
        written = sink_frames({paths["interactions"]: result.interactions, paths["quarantine"]: result.quarantine,
                               paths[SHOWN_TABLE]: shown},
                              {**meta, "table": "interactions+quarantine+shown_not_clicked"})
    rows = {"items": result.items.height, "interactions": written[str(paths["interactions"])],
            "quarantine": written[str(paths["quarantine"])]}
    if result.finalize is not None:
        result.finalize(rows)
    accounting = result.accounting_frame()
    write_frame(accounting, store.table_path(spec.name, ACCOUNTING), meta)  # last: completes the set
    elapsed = time.perf_counter() - started
    accounting_md = markdown_table(accounting.drop("filtered_reasons", "repaired_reasons", "kept_elsewhere_tables"))
    reasons = (pl.scan_parquet(paths["quarantine"]).group_by("reason")
               .len().sort("len", descending=True).collect())
    for table in ("items", "interactions", "quarantine"):
        schema = pl.read_parquet_schema(paths[table])
        extra = {"dataset": spec.name, "seconds": round(elapsed, 3), "row_accounting": dg.MetadataValue.md(accounting_md)}
        if table == "interactions":
            extra["rows_per_second"] = round(rows["interactions"] / max(elapsed, 1e-9))
        if table == "quarantine":
            extra["reasons"] = dg.MetadataValue.md(markdown_table(reasons) if reasons.height else "none")
        yield dg.MaterializeResult(asset_key=table, metadata=table_metadata(paths[table], schema, rows[table], **extra))


SequenceConfig = config_class(
    "SequenceConfig", SplitConfig,
    doc="Split protocol: `user` (LAMIA: random users to train/valid/test, last item = target) or `leave_one_out` "
        "(TIGER: last = test, second to last = valid, third to last = train); ops.sequences.SplitConfig.")


@dg.asset(
    deps=["interactions"],
    partitions_def=DATASETS,
    group_name=GROUP,
    tags=job_tag("ingest"),
    kinds={"parquet", "polars"},
    code_version=SEQUENCES_CODE_VERSION,
    op_tags={"semid/resource": "cpu"},
)
def user_sequences(context: dg.AssetExecutionContext, config: SequenceConfig,  # type: ignore[valid-type]
                   storage: StorageResource) -> dg.MaterializeResult:
    """User sequences: user_id, history (≤ max_history item ids before the target, oldest first), target, split.
    Users with fewer than `min_interactions` interactions are dropped and counted."""
    store = storage.store()
    split = config.build()
    frame, stats = build_user_sequences(store.scan(context.partition_key, "interactions"), split)
    path = store.table_path(context.partition_key, "user_sequences")
    write_frame(frame, path, lineage(context, code_version=SEQUENCES_CODE_VERSION, split=asdict(split)))
    return dg.MaterializeResult(metadata=table_metadata(
        path, USER_SEQUENCE_SCHEMA, frame.height,
        users_total=stats.users_total, users_kept=stats.users_kept,
        users_dropped_short=stats.users_dropped_short, events_used=stats.events_used,
        **{f"rows_{k}": v for k, v in stats.rows_per_split.items()},
        mean_history_length=round(float(frame["history"].list.len().mean() or 0.0), 2),
    ))


ImpressionsConfig = config_class(
    "ImpressionsConfig", ImpressionConfig,
    doc="CTR rows: `negatives` sampled per positive where the source logs no impressions (Amazon, H&M), the "
        "chronological valid / test fractions and the sampling seed; ops.impressions.ImpressionConfig.")


@dg.asset(
    deps=["items", "interactions"],
    partitions_def=DATASETS,
    group_name=GROUP,
    tags=job_tag("ingest"),
    kinds={"parquet", "polars"},
    code_version=IMPRESSIONS_CODE_VERSION,
    op_tags={"semid/resource": "cpu"},
)
def impressions(context: dg.AssetExecutionContext, config: ImpressionsConfig,  # type: ignore[valid-type]
                storage: StorageResource) -> dg.MaterializeResult:
    """Labelled CTR rows: user_id, item_id, label (1 clicked / 0 not), timestamp, impression_id, source
    (impression | sampled), split (chronological train / valid / test). MIND: its logged impressions (clicks and
    shown-not-clicked); Amazon, H&M: interactions as positives plus `negatives` uniformly sampled catalog items per
    positive that the user never interacted with (seeded)."""
    from ops.impressions import impression_figures, logged_impressions, sampled_impressions

    spec = datasets.get(context.partition_key)
    store = storage.store()
    cfg = config.build()
    started = time.perf_counter()
    interactions = store.scan(spec.name, "interactions")
    if spec.source == "mind":
        frame, stats = logged_impressions(interactions, store.scan(spec.name, SHOWN_TABLE), cfg)
    else:
        item_ids = store.scan(spec.name, "items").select("item_id").collect()["item_id"]
        frame, stats = sampled_impressions(interactions, item_ids, cfg)
    path = store.table_path(spec.name, "impressions")
    write_frame(frame, path, lineage(context, code_version=IMPRESSIONS_CODE_VERSION, config=asdict(cfg),
                                     rule="logged" if spec.source == "mind" else "sampled"))
    return dg.MaterializeResult(metadata=table_metadata(
        path, IMPRESSION_SCHEMA, frame.height, rule="logged impressions" if spec.source == "mind" else
        f"interactions + {cfg.negatives} sampled negatives each", positives=stats.positives,
        negatives=stats.negatives, units=stats.units, rows_without_timestamp=stats.rows_without_timestamp,
        users_without_negatives=stats.users_without_negatives,
        **{f"rows_{k}": v for k, v in stats.rows_per_split.items()},
        per_split=dg.MetadataValue.md(markdown_table(impression_figures(frame))),
        seconds=round(time.perf_counter() - started, 3)))


# ---------------------------------------------------------------- checks (blocking: gate everything downstream)

def _check(passed: bool, description: str, **metadata: object) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=bool(passed), description=description, metadata=metadata)


@dg.asset_check(asset="items", partitions_def=DATASETS, blocking=True)
def unique_item_ids(context: dg.AssetCheckExecutionContext, storage: StorageResource) -> dg.AssetCheckResult:
    """Every item_id appears once."""
    items = storage.store().scan(context.partition_key, "items")
    dup = items.group_by("item_id").len().filter(pl.col("len") > 1).collect()
    return _check(dup.height == 0, f"{dup.height} duplicated item ids",
                  duplicated=dup.height, examples=str(dup["item_id"].head(5).to_list()))


@dg.asset_check(asset="items", partitions_def=DATASETS, blocking=True)
def item_text_not_empty(context: dg.AssetCheckExecutionContext, storage: StorageResource) -> dg.AssetCheckResult:
    """Every item has some text in at least one attribute (the embedder needs text)."""
    spec = datasets.get(context.partition_key)
    items = storage.store().scan(spec.name, "items")
    empty = items.filter(pl.all_horizontal(pl.col(a).fill_null("").str.strip_chars() == "" for a in spec.attributes))
    n = empty.select(pl.len()).collect().item()
    per_attr = items.select(
        (pl.col(a).fill_null("").str.strip_chars() == "").mean().alias(a) for a in spec.attributes).collect()
    return _check(n == 0, f"{n} items with no text", empty_items=n,
                  **{f"empty_fraction_{a}": round(float(per_attr[a][0]), 4) for a in spec.attributes})


@dg.asset_check(asset="interactions", partitions_def=DATASETS, blocking=True, additional_deps=["items"])
def interactions_reference_known_items(context: dg.AssetCheckExecutionContext, storage: StorageResource
                                       ) -> dg.AssetCheckResult:
    """Every interaction's item_id exists in `items`, and no user_id is empty."""
    store = storage.store()
    items = store.scan(context.partition_key, "items").select("item_id")
    inter = store.scan(context.partition_key, "interactions")
    orphans = inter.join(items, on="item_id", how="anti").select(pl.len()).collect().item()
    empty_users = inter.filter(pl.col("user_id").fill_null("") == "").select(pl.len()).collect().item()
    return _check(orphans == 0 and empty_users == 0, f"{orphans} unknown items, {empty_users} empty users",
                  unknown_item_rows=orphans, empty_user_rows=empty_users)


@dg.asset_check(asset="quarantine", partitions_def=DATASETS, blocking=True,
                additional_deps=["items", "interactions"])
def row_accounting_balanced(context: dg.AssetCheckExecutionContext, storage: StorageResource
                            ) -> dg.AssetCheckResult:
    """Per source file rows_in = kept + kept_elsewhere + quarantined + filtered; kept rows match the written tables
    (kept_elsewhere: the side table of MIND's not-clicked impressions); quarantined rows match the quarantine
    table. Nothing is dropped silently."""
    import ast

    store = storage.store()
    ds = context.partition_key
    acc = store.read(ds, ACCOUNTING)
    unbalanced = acc.filter(pl.col("rows_in") != pl.col("kept") + pl.col("kept_elsewhere") + pl.col("quarantined")
                            + pl.col("filtered"))
    tables = ("items", "interactions", "quarantine", SHOWN_TABLE)
    counts = {t: store.scan(ds, t).select(pl.len()).collect().item() for t in tables}
    kept = dict(acc.filter(pl.col("table").is_not_null()).group_by("table").agg(pl.col("kept").sum()).iter_rows())
    for elsewhere in acc["kept_elsewhere_tables"]:
        for table, n in ast.literal_eval(elsewhere).items():
            kept[table] = kept.get(table, 0) + n
    mismatches = [f"{t}: accounted {kept.get(t, 0)} vs table {counts[t]}" for t in ("items", "interactions",
                                                                                    SHOWN_TABLE)
                  if kept.get(t, 0) != counts[t]]
    if acc["quarantined"].sum() != counts["quarantine"]:
        mismatches.append(f"quarantine: accounted {acc['quarantined'].sum()} vs table {counts['quarantine']}")
    ok = unbalanced.height == 0 and not mismatches
    return _check(ok, "; ".join(mismatches) or f"{unbalanced.height} unbalanced files",
                  unbalanced_files=unbalanced.height, mismatches="; ".join(mismatches) or "none",
                  rows_in=int(acc["rows_in"].sum()), quarantined=int(acc["quarantined"].sum()),
                  kept_elsewhere=int(acc["kept_elsewhere"].sum()))


@dg.asset_check(asset="user_sequences", partitions_def=DATASETS, blocking=True, additional_deps=["items"])
def sequences_well_formed(context: dg.AssetCheckExecutionContext, storage: StorageResource
                          ) -> dg.AssetCheckResult:
    """Targets and history items are known items, histories are non-empty and ≤ 20 (the configured maximum can
    only be lower), one row per (user, split), and train and test are non-empty."""
    store = storage.store()
    ds = context.partition_key
    seq = store.read(ds, "user_sequences")
    known = store.scan(ds, "items").select("item_id").collect()["item_id"].implode()
    unknown_targets = seq.filter(~pl.col("target").is_in(known)).height
    unknown_hist = seq.select(pl.col("history").explode()).filter(~pl.col("history").is_in(known)).height
    bad_len = seq.filter((pl.col("history").list.len() < 1) | (pl.col("history").list.len() > 20)).height
    dup = seq.height - seq.select("user_id", "split").unique().height
    splits = set(seq["split"].unique().to_list())
    ok = not (unknown_targets or unknown_hist or bad_len or dup) and {"train", "test"} <= splits
    return _check(ok, f"unknown targets {unknown_targets}, unknown history items {unknown_hist}, "
                      f"bad history lengths {bad_len}, duplicate (user, split) {dup}, splits {sorted(splits)}",
                  unknown_targets=unknown_targets, unknown_history_items=unknown_hist, bad_history_lengths=bad_len,
                  duplicate_user_split=dup)


@dg.asset_check(asset="impressions", partitions_def=DATASETS, blocking=True, additional_deps=["items"])
def impressions_well_formed(context: dg.AssetCheckExecutionContext, storage: StorageResource
                            ) -> dg.AssetCheckResult:
    """Labels in {0, 1}, every item in `items`, every user id non-empty, every split non-empty with both labels;
    rows per split and label and the CTR per split in the metadata."""
    from ops.impressions import impression_figures, impression_problems

    store = storage.store()
    ds = context.partition_key
    frame = store.read(ds, "impressions")
    problems = impression_problems(frame, store.scan(ds, "items").select("item_id").collect()["item_id"])
    figures = impression_figures(frame)
    return _check(not problems, "; ".join(problems) or "labels, items and splits as the contract says",
                  per_split=dg.MetadataValue.md(markdown_table(figures)),
                  **{f"rows_{split}_label_{label}": int(n) for split, n1, n0 in
                     figures.select("split", "label_1", "label_0").iter_rows() for label, n in ((1, n1), (0, n0))},
                  **{f"ctr_{split}": float(c) for split, c in figures.select("split", "ctr").iter_rows()})


ASSETS = [ingest_raw, user_sequences, impressions]
CHECKS = [unique_item_ids, item_text_not_empty, interactions_reference_known_items, row_accounting_balanced,
          sequences_well_formed, impressions_well_formed]
