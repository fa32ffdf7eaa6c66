"""Automation (the UI's Automation tab): a raw-files sensor per declared dataset, the declarative automation that
makes derived tables follow a new ingest, and the weekly incremental re-tokenization schedule. The full refit is
`refit_job`, launched by hand.

All start stopped unless `SEMID_AUTOMATION=on` (a deployment's environment, pipeline/deploy/); in the UI each can
be turned on by itself. Settings from the environment, read when the code location loads:
- `SEMID_RETOKENIZE_CRON`: when the schedule runs (default `0 3 * * 1`, Mondays 03:00), `SEMID_TIMEZONE` (UTC);
- `SEMID_SENSOR_INTERVAL_SECONDS`: how often a raw-files sensor looks (default 30);
- `SEMID_RAW_SETTLE_SECONDS`: a raw file must be this old before a sensor acts on it (default 60: a copy or
  download still under way is not ingested half-written);
- `SEMID_RUN_CONFIG`: a run-config file (pipeline.runconfig) every requested run carries, so that scheduled runs
  use the same models and settings as the runs that made the tables.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from typing import Any

import dagster as dg

from assets.palette import palette_store
from ops.datasets import DatasetSpec, load_registry
from pipeline import runconfig
from pipeline.jobs import PALETTE_KEYS, RETOKENIZE_KEYS, code_table_ops, ingest_job, retokenize_job
from pipeline.resources import StorageResource

DEFAULT_CRON = "0 3 * * 1"


def _status() -> dg.DefaultSensorStatus:
    return (dg.DefaultSensorStatus.RUNNING if os.environ.get("SEMID_AUTOMATION", "").lower() in {"on", "1", "true"}
            else dg.DefaultSensorStatus.STOPPED)


def _run_config() -> dict[str, Any]:
    path = os.environ.get("SEMID_RUN_CONFIG")
    return runconfig.load(path) if path else {}


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Run config `extra` over `base`, ops entries merged field by field."""
    ops = {op: dict(entry) for op, entry in (base.get("ops") or {}).items()}
    for op, entry in (extra.get("ops") or {}).items():
        ops[op] = {**ops.get(op, {}), "config": {**(ops.get(op, {}).get("config") or {}), **entry["config"]}}
    return {**base, **{k: v for k, v in extra.items() if k != "ops"}, "ops": ops}


def sensor_name(spec: DatasetSpec) -> str:
    return "raw_files__" + re.sub(r"[^A-Za-z0-9_]", "_", spec.name)


def raw_files_sensor(spec: DatasetSpec, job: dg.UnresolvedAssetJobDefinition | None = None) -> dg.SensorDefinition:
    """Watches the dataset's raw directory; one ingest run per new or changed set of files (the cursor holds the
    files' sizes and mtimes; the run key is their hash, so the same files never run twice)."""

    @dg.sensor(name=sensor_name(spec), job=job or ingest_job, default_status=_status(),
               minimum_interval_seconds=int(os.environ.get("SEMID_SENSOR_INTERVAL_SECONDS", "30")),
               description=f"New or changed raw files of `{spec.name}` ({spec.raw_dir}) -> one ingest_job run for "
                           "that partition; embeddings and code tables follow it (their automation conditions).")
    def _sensor(context: dg.SensorEvaluationContext, storage: StorageResource):
        files = spec.raw_signature(storage.raw_root)
        if not files:
            return dg.SkipReason(f"no raw files in {spec.raw_path(storage.raw_root)}")
        seen = json.loads(context.cursor) if context.cursor else {}
        if files == seen:
            return dg.SkipReason("no new or changed files since the last run")
        settle = float(os.environ.get("SEMID_RAW_SETTLE_SECONDS", "60"))
        young = [name for name, (_, mtime) in files.items() if time.time() - mtime / 1e9 < settle]
        if young:  # the cursor is left as it was: the next tick looks again
            return dg.SkipReason(f"still being written (changed in the last {settle:g} s): {', '.join(young)}")
        new = sorted(set(files) - set(seen))
        changed = sorted(name for name in set(files) & set(seen) if files[name] != seen[name])
        removed = sorted(set(seen) - set(files))
        context.update_cursor(json.dumps(files, sort_keys=True))
        key = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16]
        return dg.RunRequest(
            run_key=f"{spec.name}-{key}", partition_key=spec.name, run_config=_run_config(),
            tags={"semid/trigger": "raw_files", "semid/new_files": str(len(new)),
                  "semid/changed_files": str(len(changed)), "semid/removed_files": str(len(removed))})

    return _sensor


def retokenize_requests(storage: StorageResource, scheduled: str) -> list[dg.RunRequest]:
    """One incremental re-tokenization run per dataset that has been ingested; the LAMIA part only where a
    palette model has been trained for it."""
    store = storage.store()
    requests = []
    for spec in load_registry().values():
        if not store.exists(spec.name, "items"):
            continue
        trained = palette_store(store, spec.name).latest() is not None
        keys = [key for key in RETOKENIZE_KEYS if trained or key not in PALETTE_KEYS]
        requests.append(dg.RunRequest(
            run_key=f"retokenize-{spec.name}-{scheduled}", partition_key=spec.name, asset_selection=keys,
            run_config=_merge(_run_config(), code_table_ops(mode="incremental")), tags={"semid/trigger": "schedule"}))
    return requests


def _retokenize_schedule() -> dg.ScheduleDefinition:
    cron = os.environ.get("SEMID_RETOKENIZE_CRON", DEFAULT_CRON)

    def _schedule(context: dg.ScheduleEvaluationContext, storage: StorageResource):
        scheduled = context.scheduled_execution_time.strftime("%Y%m%dT%H%M") if context.scheduled_execution_time \
            else time.strftime("%Y%m%dT%H%M", time.gmtime())
        return retokenize_requests(storage, scheduled) or dg.SkipReason("no dataset has been ingested yet")

    try:
        return dg.schedule(
            name="retokenize_schedule", cron_schedule=cron, job=retokenize_job,
            execution_timezone=os.environ.get("SEMID_TIMEZONE", "UTC"),
            default_status=dg.DefaultScheduleStatus(_status().value),
            description=f"Incremental re-tokenization of every ingested dataset ({cron}): unchanged items keep "
                        "their semantic IDs; new and changed items are coded by the fitted tokenizers.")(_schedule)
    except dg.DagsterInvalidDefinitionError as e:
        raise ValueError(f"SEMID_RETOKENIZE_CRON / SEMID_TIMEZONE: {e}") from None


def definitions() -> dg.Definitions:
    follow = dg.AutomationConditionSensorDefinition(
        "follow_upstream", target=dg.AssetSelection.all(), default_status=_status(),
        description="Evaluates the assets' automation conditions: embeddings, palettes (trained model kept) and "
                    "code tables (incremental) follow a new ingest.")
    return dg.Definitions(
        sensors=[*(raw_files_sensor(spec) for spec in load_registry().values()), follow],
        schedules=[_retokenize_schedule()])
