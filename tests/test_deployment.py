"""The production deployment against the real PostgreSQL server (pipeline/deploy/dagster.yaml): a Dagster daemon
in its own process group, a raw-files sensor requesting a run for new files, the run queue and its `gpu` pool, and
recovery from a run worker killed with SIGKILL. Skipped, saying why, where no PostgreSQL server answers."""
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from ops.sample import generate
from ops.tiny_models import save_random_model
from pipeline.deployment import postgres_problem
from storage.codes import CodeTableStore

ROOT = Path(__file__).resolve().parents[1]
PG = {"DAGSTER_PG_HOST": os.environ.get("SEMID_TEST_PG_HOST", "127.0.0.1"),
      "DAGSTER_PG_PORT": os.environ.get("SEMID_TEST_PG_PORT", "5432"),
      "DAGSTER_PG_USER": os.environ.get("SEMID_TEST_PG_USER", "postgres"), "DAGSTER_PG_PASSWORD": "",
      "DAGSTER_PG_DB": os.environ.get("SEMID_TEST_PG_DB", "test")}
_problem = postgres_problem(PG)
pytestmark = pytest.mark.skipif(_problem is not None, reason=f"no PostgreSQL for the deployment tests: {_problem}")
PARTITION = "sample_mind"


def _admin(sql: str) -> None:
    import psycopg2

    conn = psycopg2.connect(host=PG["DAGSTER_PG_HOST"], port=int(PG["DAGSTER_PG_PORT"]), user=PG["DAGSTER_PG_USER"],
                            dbname=PG["DAGSTER_PG_DB"])
    conn.autocommit = True  # CREATE / DROP DATABASE cannot run in a transaction
    with conn.cursor() as cur:
        cur.execute(sql)
    conn.close()


def _wait(predicate, timeout_s: float, what: str, daemon_log: Path | None = None):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if (value := predicate()):
            return value
        time.sleep(0.5)
    tail = daemon_log.read_text()[-3000:] if daemon_log and daemon_log.is_file() else ""
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}\n{tail}")


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("deploy")
    db = f"semid_test_{uuid.uuid4().hex[:8]}"
    _admin(f"CREATE DATABASE {db}")
    env = {**os.environ, **PG, "DAGSTER_PG_DB": db, "DAGSTER_HOME": str(tmp / "home"),
           "SEMID_RAW_ROOT": str(tmp / "raw"), "SEMID_STORAGE_ROOT": str(tmp / "store"), "SEMID_AUTOMATION": "on",
           "SEMID_SENSOR_INTERVAL_SECONDS": "1", "SEMID_RAW_SETTLE_SECONDS": "0", "SEMID_DEVICE": "cpu",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    (tmp / "raw").mkdir()
    subprocess.run([sys.executable, "-m", "pipeline.deployment", "--home", env["DAGSTER_HOME"], "--gpu-slots", "1"],
                   env=env, cwd=ROOT, check=True, capture_output=True, text=True)
    workspace = tmp / "workspace.yaml"
    workspace.write_text(json.dumps({"load_from": [{"python_file": {
        "relative_path": str(ROOT / "tests" / "deploy_location.py"), "working_directory": str(ROOT),
        "location_name": "deploy_test"}}]}))
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # this process reads the same instance
    log = tmp / "daemon.log"
    with open(log, "w") as fh:
        daemon = subprocess.Popen([str(Path(sys.executable).with_name("dagster-daemon")), "run", "-w", str(workspace)],
                                  env=env, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT,
                                  start_new_session=True)  # its code server and run workers: one process group
    from dagster._daemon.controller import all_daemons_live

    instance = dg.DagsterInstance.get()
    try:
        _wait(lambda: daemon.poll() is not None or all_daemons_live(instance), 120, "the daemon", log)
        assert daemon.poll() is None, log.read_text()[-3000:]
        yield {"tmp": tmp, "env": env, "instance": instance, "workspace": workspace, "log": log,
               "model": str(save_random_model("bert", tmp / "bert"))}
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
        instance.dispose()
        _kill_leftovers(env["DAGSTER_HOME"])
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _admin(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


def _kill_leftovers(home: str) -> None:
    """Processes of this test's instance that outlived it (a code server that `_submit` started can miss its
    heartbeat shutdown after the run it served was killed): found by their DAGSTER_HOME, ended."""
    marker = f"DAGSTER_HOME={home}".encode()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if int(proc.name) != os.getpid() and marker in (proc / "environ").read_bytes().split(b"\0"):
                os.kill(int(proc.name), signal.SIGKILL)
        except (OSError, ValueError):
            continue


def _submit(d, job: str, n: int, run_config: dict | None = None) -> list[str]:
    """Queue n runs of a job of the test location for the partition, as `dagster job launch` does."""
    from dagster._core.definitions.selector import JobSubsetSelector
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget

    instance = d["instance"]
    with WorkspaceProcessContext(instance, WorkspaceFileTarget(paths=[str(d["workspace"])])) as wpc:
        ctx = wpc.create_request_context()
        location = ctx.get_code_location("deploy_test")
        repo = next(iter(location.get_repositories().values()))
        remote = location.get_job(JobSubsetSelector(location_name="deploy_test", repository_name=repo.name,
                                                    job_name=job, op_selection=None))
        plan = location.get_execution_plan(remote, run_config or {}, step_keys_to_execute=None, known_state=None,
                                           instance=instance)
        ids = []
        for _ in range(n):
            run = instance.create_run(
                job_name=job, run_id=None, run_config=run_config or {}, resolved_op_selection=None,
                step_keys_to_execute=None, op_selection=None, status=None, root_run_id=None, parent_run_id=None,
                tags={**remote.tags, "dagster/partition": PARTITION}, job_snapshot=remote.job_snapshot,
                execution_plan_snapshot=plan.execution_plan_snapshot, parent_job_snapshot=remote.parent_job_snapshot,
                remote_job_origin=remote.get_remote_origin(), job_code_origin=remote.get_python_origin(),
                asset_selection=None, asset_check_selection=None, asset_graph=repo.asset_graph)
            ids.append(instance.submit_run(run.run_id, ctx).run_id)
    return ids


def _status(instance, run_id):
    return instance.get_run_by_id(run_id).status


def _done(instance, run_ids):
    statuses = [_status(instance, r) for r in run_ids]
    failed = [r for r, s in zip(run_ids, statuses) if s in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)]
    assert not failed, f"runs failed: {failed}"
    return all(s == dg.DagsterRunStatus.SUCCESS for s in statuses)


def _gpu_spans(instance, run_id, asset):
    """(start, end) of each `gpu`-pool step of a graph-backed asset (its shard and merge steps, not the fan-out)."""
    times: dict[str, dict] = {}
    for e in instance.all_logs(run_id):
        if (e.dagster_event and e.step_key and e.step_key.startswith(f"{asset}.")
                and not e.step_key.endswith("__workers")
                and e.dagster_event.event_type in (dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS)):
            times.setdefault(e.step_key, {})[e.dagster_event.event_type] = e.timestamp
    spans = sorted((t[dg.DagsterEventType.STEP_START], t[dg.DagsterEventType.STEP_SUCCESS]) for t in times.values())
    assert spans, f"no gpu step of {asset} in run {run_id}"
    return spans


def test_the_sensor_runs_new_raw_files_through_the_queue_and_ids_stay(deployment):
    d = deployment
    instance = d["instance"]

    def sensor_runs():
        return instance.get_runs(dg.RunsFilter(tags={"semid/trigger": "raw_files"}))

    assert sensor_runs() == []
    folder = d["tmp"] / "raw" / PARTITION
    # written beside it and moved in at once, as a deployment expects files to arrive: with the test's settle time
    # of 0 s a sensor tick between two of the generator's files would otherwise ingest half a dataset
    staging = d["tmp"] / "raw" / f".{PARTITION}.staging"
    generate("mind", staging, "tiny", seed=0)
    staging.rename(folder)
    first = _wait(lambda: [r for r in sensor_runs() if r.status == dg.DagsterRunStatus.SUCCESS], 240,
                  "the sensor's run", d["log"])
    assert len(sensor_runs()) == 1 and first[0].tags["dagster/partition"] == PARTITION
    assert first[0].status == dg.DagsterRunStatus.SUCCESS
    tables = CodeTableStore(d["env"]["SEMID_STORAGE_ROOT"], PARTITION, "random")
    before = tables.read()
    items = pl.read_parquet(Path(d["env"]["SEMID_STORAGE_ROOT"]) / PARTITION / "items.parquet")
    assert before.height == items.height > 0 and before["semantic_id"].n_unique() == before.height

    # one more news item: one more run (and only one), the new version keeps every earlier ID
    with open(folder / "news.tsv", "a") as fh:
        fh.write("N99999\tsports\tsports_nfl\tA title of its own\tAn abstract of its own\thttp://x\t[]\t[]\n")
    _wait(lambda: len(sensor_runs()) == 2 and sensor_runs()[0].status == dg.DagsterRunStatus.SUCCESS, 240,
          "the second sensor run", d["log"])
    time.sleep(3)  # a few more sensor ticks: still two runs
    assert len(sensor_runs()) == 2
    after = tables.read()
    assert after.height == before.height + 1
    assert after.join(before, on="item_id", how="semi").sort("item_id").equals(before.sort("item_id"))
    meta = tables.manifest(tables.latest())["metadata"]
    assert meta["mode"] == "incremental" and meta["churn"]["added"] == 1 and meta["churn"]["moved"] == 0


def test_two_runs_launched_together_take_turns_on_the_gpu_pool(deployment):
    d = deployment
    instance = d["instance"]
    config = {"ops": {"item_embeddings": {"config": {"model": d["model"]}}}}
    runs = _submit(d, "embed_job", 2, config)
    _wait(lambda: _done(instance, runs), 300, "both embedding runs", d["log"])
    first, second = (_gpu_spans(instance, r, "item_embeddings") for r in runs)
    for a0, a1 in first:  # no gpu step of one run while one of the other runs (the two runs may interleave)
        for b0, b1 in second:
            assert a1 <= b0 or b1 <= a0, f"gpu steps overlapped: {a0}-{a1} and {b0}-{b1}"


def test_a_run_worker_killed_with_sigkill_frees_its_gpu_slot(deployment):
    d = deployment
    instance = d["instance"]
    (hold,) = _submit(d, "hold_job", 1)
    pid_file = Path(d["env"]["SEMID_STORAGE_ROOT"]) / "pids" / hold
    _wait(pid_file.is_file, 120, "the gpu_hold step", d["log"])
    (waiting,) = _submit(d, "embed_job", 1, {"ops": {"item_embeddings": {"config": {"model": d["model"]}}}})
    time.sleep(4)
    assert _status(instance, waiting) in (dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING,
                                          dg.DagsterRunStatus.STARTED)
    assert not [e for e in instance.all_logs(waiting) if e.dagster_event
                and e.dagster_event.event_type == dg.DagsterEventType.STEP_START]  # held back by the pool
    worker, step = map(int, pid_file.read_text().split())
    os.kill(worker, signal.SIGKILL)
    killed = time.time()
    _wait(lambda: _status(instance, hold) == dg.DagsterRunStatus.FAILURE, 60, "the killed run marked failed",
          d["log"])

    def gone(pid):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    _wait(lambda: gone(step), 10, "its step process to die with it")  # pipeline.recovery.die_with_run_worker
    _wait(lambda: _done(instance, [waiting]), 180, "the waiting run", d["log"])
    (start, _), *_ = _gpu_spans(instance, waiting, "item_embeddings")
    assert start > killed
    assert hold not in {s.run_id for s in instance.event_log_storage.get_concurrency_info("gpu").claimed_slots}
