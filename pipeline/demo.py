"""`make demo`: generate the bundled samples if missing, materialize every asset for each sample partition into
the local Dagster instance (so `make ui` shows the runs, metadata and checks), and print where outputs are."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import dagster as dg
import yaml

from ops.datasets import load_registry
from pipeline.preflight import config_problems, model_problems
from pipeline.recovery import init_instance, process_tags, recover

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DEMO_CONFIG = CONFIGS / "lamia_demo_cpu.yaml"
# Work on the pretrained causal LM (SmolLM2-135M) costs minutes per sample on 2 CPU cores, so within its time budget
# the demo trains the LAMIA palette on it for the MIND sample only. The LM's pooled embeddings (`item_embeddings_lm`)
# and their code table `pca_kmeans_lm`, lamia's like-for-like baseline, are not in the demo (~2 min with their
# recommender): `make bench-lamia` materializes them beside the palette's figures. The generative recommender *on*
# the LM (`recommender/generative_llm/*`) is not run either: at a CPU-affordable step count it learns nothing
# (NDCG@10 0.0 in 6 steps, 74 s of the budget); bench/recommend_llm.py trains it for real and the test suite
# materializes the family.
LM_SAMPLES = ()
PRETRAINED_FAMILY = "generative_llm"
LM_EMBEDDINGS, LM_TOKENIZER = "item_embeddings_lm", "pca_kmeans_lm"
# CTR models (recommender/ctr/*) on MIND's logged impressions only, on the Mixture-of-Codes paper's code tables (moc,
# rqvae), lamia's, random codes and the ID-only baseline
# (~37 k impressions in the demo sample: seconds per model); the other samples' sampled negatives are built
# (`impressions`) but not trained on.
CTR_SAMPLES = ("sample_mind",)
CTR_TOKENIZERS = ("ids", "random", "moc", "rqvae", "lamia")
# The generative recommender on the training-free codebook tables (residual K-Means, PQ, OPQ) is not in the demo, and
# on the trained VQ tables (MoC, RQ-VAE) only on the MIND sample: so that the demo fits its 15 minutes on a CPU
# without native bf16, where the palette runs in float32 (bench/RESULTS.md, "Stage times"). Every code table is
# built on every sample, and `make bench-codebooks` trains and compares the recommender on all of them.
GENERATIVE_SAMPLES_ONLY: dict[str, tuple[str, ...]] = {"rqkmeans": (), "pq": (), "opq": (),
                                                       "moc": ("sample_mind",), "rqvae": ("sample_mind",)}
# Run-config overlays per sample, each op's config replacing the base file's: the other samples learn their palette
# on the MiniLM encoder (the explicit encoder option; its differences are in the file).
OVERLAYS = {"sample_amazon": [CONFIGS / "lamia_demo_cpu_encoder.yaml"],
            "sample_hm": [CONFIGS / "lamia_demo_cpu_encoder.yaml"]}


def runs_on(key: dg.AssetKey, dataset: str) -> bool:
    """Does the demo materialize this asset for this sample?"""
    path = key.path
    if path[:2] == ["recommender", PRETRAINED_FAMILY]:
        return False
    if path[:2] == ["recommender", "generative"] and path[2] in GENERATIVE_SAMPLES_ONLY:
        return dataset in GENERATIVE_SAMPLES_ONLY[path[2]]
    if path[:2] == ["recommender", "ctr"]:
        return dataset in CTR_SAMPLES and path[2] in CTR_TOKENIZERS
    return dataset in LM_SAMPLES or not (path == [LM_EMBEDDINGS] or path[-1] == LM_TOKENIZER)


def demo_config(dataset: str, base: dict) -> dict:
    """The base run config with the sample's overlays applied (op by op)."""
    ops = dict(base.get("ops", {}))
    for overlay in OVERLAYS.get(dataset, []):
        ops.update(yaml.safe_load(Path(overlay).read_text()).get("ops", {}))
    return {**base, "ops": ops}


def selection(job: dg.JobDefinition, dataset: str, run_config: dict) -> tuple[list[dg.AssetKey], dict]:
    """The job's assets for `dataset` without those the demo does not run there, and the run config telling the
    evaluation check not to expect their recommenders."""
    keys = sorted(job.asset_layer.executable_asset_keys, key=lambda k: k.path)
    run_config = demo_config(dataset, run_config)
    dropped = [k for k in keys if not runs_on(k, dataset)]
    kept = [k for k in keys if k not in dropped]
    names = {"__".join(k.path) for k in kept}  # op names: a subset run refuses config for ops it lacks
    ops = {op: c for op, c in run_config.get("ops", {}).items() if op in names}
    if "evaluation" in names and dropped:
        evaluation = dict(ops.get("evaluation", {}).get("config", {}))
        skipped = {"/".join(k.path[1:]) for k in dropped if k.path[0] == "recommender"}
        evaluation["skip"] = sorted({*evaluation.get("skip", []), *skipped})
        ops["evaluation"] = {"config": evaluation}
    return kept, {**run_config, "ops": ops}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--datasets", nargs="*", help="partitions to run (default: every bundled sample)")
    ap.add_argument("--job", default="full_pipeline_job")
    ap.add_argument("--config", default=str(DEMO_CONFIG), help="run config YAML (default: the CPU demo settings)")
    args = ap.parse_args(argv)

    from pipeline.definitions import defs
    from pipeline.resources import default_resources

    with dg.build_resources({"storage": default_resources()["storage"]}) as built:  # EnvVar values resolved
        storage = built.storage
    names = args.datasets or [s.name for s in load_registry().values() if s.sample]
    job = defs.resolve_job_def(args.job)
    run_config = yaml.safe_load(Path(args.config).read_text()) if args.config else {}
    if os.environ.get("DAGSTER_HOME"):
        init_instance(os.environ["DAGSTER_HOME"])  # once, under a lock: concurrent first runs race on the schemas
    instance = dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else dg.DagsterInstance.ephemeral()
    # every sample's settings checked before the first run starts: a bad value costs seconds, not a stage
    plans = {name: selection(job, name, run_config) for name in names}
    problems = sorted({p for keys, config in plans.values() for ops in [{"__".join(k.path) for k in keys}]
                       for p in (*config_problems(config, ops), *model_problems(config, ops))})
    if problems:
        print(f"{args.config}: the run config cannot work:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    for line in recover(instance, storage.storage_root):  # runs killed earlier would hold the gpu slot for ever
        print(line)
    failures = 0
    for name in names:
        started = time.perf_counter()
        keys, config = plans[name]
        result = job.execute_in_process(partition_key=name, instance=instance, raise_on_error=False,
                                        run_config=config, asset_selection=keys,
                                        tags=process_tags())  # lets a later start tell this run died
        checks = result.get_asset_check_evaluations()
        # a failed check of WARN severity published its asset with a warning; only ERROR ones fail the demo
        failed_checks = [c.check_name for c in checks if not c.passed and c.severity == dg.AssetCheckSeverity.ERROR]
        warned = [f"{c.asset_key.to_user_string()}:{c.check_name}" for c in checks
                  if not c.passed and c.severity == dg.AssetCheckSeverity.WARN]
        status = "ok" if result.success and not failed_checks else "FAILED"
        failures += status != "ok"
        print(f"[{status}] {name}: {len(checks)} checks, {len(failed_checks)} failed"
              f"{' ' + str(failed_checks) if failed_checks else ''}"
              f"{', warnings: ' + ', '.join(warned) if warned else ''} ({time.perf_counter() - started:.1f} s)")
    print(f"\nraw files:  {storage.raw_root}\ntables:     {storage.storage_root}/<dataset>/<table>.parquet"
          f"\ncodes:      {storage.storage_root}/<dataset>/code_tables/<tokenizer>/latest/codes.parquet")
    if os.environ.get("DAGSTER_HOME"):
        print(f"runs:       {os.environ['DAGSTER_HOME']} (see them with `make ui`)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
