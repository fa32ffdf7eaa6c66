"""Stage 4: code tables, one asset per tokenizer (`code_table/<tokenizer>`), same contract and checks for all.

Tokenizers are separate asset keys rather than a partition dimension because their lineage differs
(`pca_kmeans` reads `item_embeddings`, `random` only `items`, `lamia` a trained palette model …), which the graph
should show. Each materialization writes a new immutable version; the checks run inside the asset and only
when all pass does `latest` move to the new version, so a bad table is kept for inspection but never served.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import dagster as dg
import numpy as np
import polars as pl

from assets.common import DATASETS, lineage, markdown_table, table_metadata
from ops import datasets
from ops.codetable import CheckOutcome, aspect_scores, build_code_table, check_code_table
from ops.embed import embeddings_matrix
from ops.palette.train import palette_matrix
from ops.quantize import QuantizeConfig, Quantizer, quantize, quantize_pooled, random_codes
from pipeline.resources import StorageResource
from storage import Store, read_table_metadata
from storage.codes import CodeTableStore
from storage.schemas import CODE_TABLE_SCHEMA_VERSION

GROUP = "tokenize"
CODES_CODE_VERSION = "codes-1"
CHECK_NAMES = {
    "unique_item_id": "every item_id appears once",
    "unique_semantic_id": "every semantic_id maps to exactly one item",
    "codes_in_range": "codes are int32[L] within [0, K)",
    "covers_all_items": "exactly the items of the items table",
    "utilization_above_floor": "no collapsed codebook: each position uses at least the floor share of its codes",
}
_Q = QuantizeConfig()


class CodeTableConfig(dg.Config):
    """Shared by every tokenizer asset. Defaults: LAMIA's L = 4 positions, K = 256, PCA to d = 64."""

    length: int = 4
    k: int = _Q.k
    d: int = _Q.d
    niter: int = _Q.niter
    seed: int = _Q.seed
    backend: str = _Q.backend
    # Quality over speed here: greedy k-means++ costs ~0.2 s per position at 65 k items (nothing next to the
    # embedding stage) and does not merge well-separated clusters (bench/quantize.py); `afkmc2` is the fast one.
    init: str = "greedy_kmeans++"
    min_utilization: float = 0.1  # the collapse floor for the utilization check

    def quantize_config(self) -> QuantizeConfig:
        return QuantizeConfig(d=self.d, k=self.k, niter=self.niter, seed=self.seed, backend=self.backend,
                              init=self.init)


@dataclass
class Tokenized:
    codes: np.ndarray  # items x L, item order of `items`
    k: int
    quantizer: Quantizer | None = None
    figures: dict[str, object] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class TokenizerSpec:
    name: str
    upstream: tuple[str, ...]  # table/asset names read, recorded as lineage
    description: str
    run: Callable[[Store, str, list[str], CodeTableConfig], Tokenized]
    kinds: frozenset[str] = frozenset({"parquet"})


def _pca_kmeans(store: Store, ds: str, ids: list[str], cfg: CodeTableConfig) -> Tokenized:
    emb = store.read(ds, "item_embeddings")
    if emb["item_id"].to_list() != ids:
        raise dg.Failure(f"item_embeddings of {ds} do not match items (re-materialize item_embeddings)")
    res = quantize_pooled(embeddings_matrix(emb), cfg.length, cfg.quantize_config())
    return Tokenized(res.codes, res.k, res.quantizer, res.figures, res.warnings)


def _lamia(store: Store, ds: str, ids: list[str], cfg: CodeTableConfig) -> Tokenized:
    pal = store.read(ds, "palette_embeddings")
    if pal["item_id"].to_list() != ids:
        raise dg.Failure(f"palette_embeddings of {ds} do not match items (re-materialize palette_embeddings)")
    x = palette_matrix(pal)
    if x.shape[1] != cfg.length:
        raise dg.Failure(f"the palette has {x.shape[1]} positions but the code table length is {cfg.length}: "
                         "set code_table/lamia's `length` to palette_model's `palette_size`")
    res = quantize(x, cfg.quantize_config())  # each palette position on its own: PCA D -> d, K-Means K
    return Tokenized(res.codes, res.k, res.quantizer, res.figures, res.warnings)


def _random(store: Store, ds: str, ids: list[str], cfg: CodeTableConfig) -> Tokenized:
    return Tokenized(random_codes(ids, cfg.length, cfg.k, cfg.seed), cfg.k)


TOKENIZERS: dict[str, TokenizerSpec] = {
    "pca_kmeans": TokenizerSpec(
        "pca_kmeans", ("items", "item_embeddings"),
        "PCA + K-Means on the pooled LLM embedding: one PCA to L x d dims, split into L sub-spaces of d "
        "principal components (coarse to fine, uncorrelated), K-Means with K codes in each (faiss).",
        _pca_kmeans, frozenset({"faiss", "parquet"})),
    "lamia": TokenizerSpec(
        "lamia", ("items", "palette_embeddings"),
        "LAMIA: each of the L positions of the learned item palette quantized on its own (PCA D -> d, then "
        "K-Means with K codes, faiss), so every code comes from an independently trained aspect embedding.",
        _lamia, frozenset({"faiss", "parquet"})),
    "random": TokenizerSpec(
        "random", ("items",),
        "Uniform random codes per item (a pure function of seed and item_id): the sanity baseline every "
        "semantic tokenizer must beat.",
        _random),
}


def _utilization_md(figures: dict) -> str:
    rows = []
    for i, u in enumerate(figures["utilization"]):
        bar = "█" * round(20 * u) + "░" * (20 - round(20 * u))
        rows.append((i, f"{u:.1%}", bar, figures["perplexity"][i], figures["largest_bucket_share"][i]))
    return markdown_table(pl.DataFrame(rows, schema=["position", "utilization", "", "perplexity",
                                                     "largest bucket"], orient="row"))


def _aspect_metadata(storage: StorageResource, partition: str, frame: pl.DataFrame) -> dict[str, object]:
    """Where the dataset ships known aspects (the bundled samples' planted_aspects.csv), how well the codes
    recover them: best-position NMI per aspect, comparable across tokenizers of the same dataset."""
    truth_path = datasets.get(partition).raw_path(storage.raw_root) / "planted_aspects.csv"
    if not truth_path.is_file():
        return {}
    scores = aspect_scores(frame, pl.read_csv(truth_path, schema_overrides={"item_id": pl.String}))
    table = scores.with_columns(pl.col("nmi_per_position").cast(pl.List(pl.String)).list.join(" / "))
    return {"aspect_nmi": dg.MetadataValue.md(markdown_table(table)),
            **{f"nmi_{r['aspect']}": r["best_nmi"] for r in scores.iter_rows(named=True)}}


def _sources(store: Store, ds: str, upstream: tuple[str, ...]) -> dict[str, dict[str, object]]:
    keep = ("run_id", "created_at", "code_version", "fingerprint", "model", "revision")
    return {t: {k: v for k, v in read_table_metadata(store.table_path(ds, t)).items() if k in keep}
            for t in upstream}


def build_code_table_asset(spec: TokenizerSpec) -> dg.AssetsDefinition:
    key = dg.AssetKey(["code_table", spec.name])

    @dg.asset(
        key=key,
        deps=list(spec.upstream),
        partitions_def=DATASETS,
        group_name=GROUP,
        kinds=set(spec.kinds),
        code_version=CODES_CODE_VERSION,
        description=f"Code table `{spec.name}`: {spec.description} Columns item_id, codes (int32[L]), dedup, "
                    "semantic_id (`c1-…-cL/dedup`); a new immutable version per run, `latest` moved only when "
                    "every check passes.",
        check_specs=[dg.AssetCheckSpec(name, asset=key, description=text, blocking=True)
                     for name, text in CHECK_NAMES.items()],
    )
    def _asset(context: dg.AssetExecutionContext, config: CodeTableConfig, storage: StorageResource):
        ds = datasets.get(context.partition_key).name
        store = storage.store()
        ids = store.scan(ds, "items").select("item_id").collect()["item_id"].to_list()
        started = time.perf_counter()
        out = spec.run(store, ds, ids, config)
        frame, figures = build_code_table(ids, out.codes, out.k)
        seconds = round(time.perf_counter() - started, 3)
        tables = CodeTableStore(store.root, ds, spec.name)
        version = tables.new_version(context.run.run_id)
        meta = lineage(context, schema_version=CODE_TABLE_SCHEMA_VERSION, dataset=ds, tokenizer=spec.name,
                       config=config.model_dump(), length=config.length, k=out.k, code_version=CODES_CODE_VERSION,
                       version=version, sources=_sources(store, ds, spec.upstream), figures=figures,
                       warnings=out.warnings)
        extra = {"quantizer.npz": out.quantizer.save} if out.quantizer is not None else {}
        path = tables.write(version, frame, meta, extra)
        outcomes: list[CheckOutcome] = check_code_table(frame, ids, out.k, config.length, config.min_utilization)
        previous = tables.latest()
        published = all(o.passed for o in outcomes)
        if published:
            tables.publish(version)
        else:
            context.log.warning(f"code table {spec.name}/{ds} version {version} failed its checks; "
                                f"latest stays at {previous}")
        aspects = _aspect_metadata(storage, context.partition_key, frame)
        metadata = table_metadata(
            path, frame.schema, frame.height, dataset=ds, tokenizer=spec.name, version=version,
            published=published, latest=tables.latest() or "none",
            length=config.length, k=out.k, collision_rate=figures["collision_rate"],
            max_dedup=figures["max_dedup"], prefix_balance=figures["prefix_balance"],
            utilization=dg.MetadataValue.md(_utilization_md(figures)),
            utilization_min=min(figures["utilization"]), seconds=seconds,  # type: ignore[type-var]
            perplexity=str(figures["perplexity"]), warnings="; ".join(out.warnings) or "none",
            **{k: str(v) for k, v in out.figures.items()},
            **aspects,
        )
        return dg.MaterializeResult(metadata=metadata, check_results=[
            dg.AssetCheckResult(check_name=o.name, passed=o.passed, description=o.description,
                                metadata={k: str(v) if isinstance(v, list) else v for k, v in o.metadata.items()})
            for o in outcomes])

    return _asset


ASSETS = [build_code_table_asset(spec) for spec in TOKENIZERS.values()]
CHECKS: list = []  # the code-table checks are declared on each asset (check_specs) and evaluated in its body
