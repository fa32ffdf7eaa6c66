"""`make demo`: generate the bundled samples if missing, materialize every asset for each sample partition into
the local Dagster instance (so `make ui` shows the runs, metadata and checks), and print where outputs are."""
from __future__ import annotations

import argparse
import fnmatch
import functools
import os
import sys
import time
from pathlib import Path

import dagster as dg
import yaml

from ops.datasets import load_registry
from pipeline import runconfig
from pipeline.preflight import config_problems, model_problems
from pipeline.recovery import init_instance, process_tags, recover

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DEMO = CONFIGS / "demo.yaml"  # what runs where: the run config, overlays and asset rules (data, not code)


@functools.cache
def demo_settings() -> dict:
    settings = yaml.safe_load(DEMO.read_text())
    for rule in settings.get("assets", []):
        rule["match"] = [rule["match"]] if isinstance(rule["match"], str) else list(rule["match"])
    return settings


DEMO_CONFIG = CONFIGS / demo_settings()["run_config"]


def runs_on(key: dg.AssetKey, dataset: str) -> bool:
    """Does the demo materialize this asset for this sample? The first rule of configs/demo.yaml whose pattern
    matches the key decides; no match: every sample."""
    name = "/".join(key.path)
    for rule in demo_settings().get("assets", []):
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in rule["match"]):
            return dataset in rule["samples"]
    return True


def demo_config(dataset: str, base: dict) -> dict:
    """The base run config with the sample's overlays applied (op by op)."""
    ops = dict(base.get("ops", {}))
    for overlay in demo_settings().get("overlays", {}).get(dataset, []):
        ops.update(runconfig.load(CONFIGS / overlay).get("ops", {}))
    return {**base, "ops": ops}


def selection(job: dg.JobDefinition, dataset: str, run_config: dict) -> tuple[list[dg.AssetKey], dict]:
    """The job's assets for `dataset` without those the demo does not run there, and the run config telling the
    evaluation check not to expect their recommenders."""
    keys = sorted(job.asset_layer.executable_asset_keys, key=lambda k: tuple(k.path))
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
    run_config = runconfig.load(args.config) if args.config else {}
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
