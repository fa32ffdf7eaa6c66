"""A killed run frees its pool slot on the next start; a fresh instance initialised once takes concurrent runs."""
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage

from pipeline.recovery import PID_TAG, SlotSafeInstance, init_instance, recover_dead_runs

ROOT = Path(__file__).resolve().parents[1]
# One pool="gpu" asset that sleeps SLEEP seconds, executed in process like pipeline.demo does, with its tags.
CHILD = textwrap.dedent("""
    import os, time
    import dagster as dg
    from pipeline.recovery import process_tags

    @dg.asset(pool="gpu")
    def gpu_work():
        time.sleep(float(os.environ["SLEEP"]))

    job = dg.Definitions(assets=[gpu_work], jobs=[dg.define_asset_job("gpu_job")]).resolve_job_def("gpu_job")
    result = job.execute_in_process(instance=dg.DagsterInstance.get(), tags=process_tags())
    raise SystemExit(0 if result.success else 1)
""")


def _home(tmp_path: Path) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "pipeline" / "dagster.yaml", home / "dagster.yaml")  # the gpu pool at one slot
    init_instance(home)
    return home


def _child(home: Path, sleep: float) -> subprocess.Popen:
    env = {**os.environ, "DAGSTER_HOME": str(home), "SLEEP": str(sleep), "PYTHONPATH": str(ROOT),
           "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", CHILD], cwd=ROOT, env=env)


def test_a_killed_run_that_holds_the_gpu_slot_is_failed_and_freed(tmp_path):
    home = _home(tmp_path)
    child = _child(home, sleep=600)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        events = instance.event_log_storage
        try:
            deadline = time.monotonic() + 120
            while not events.get_concurrency_info("gpu").claimed_slots:
                assert child.poll() is None and time.monotonic() < deadline, "the child never claimed the slot"
                time.sleep(0.1)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        (run,) = instance.get_runs()
        assert run.tags[PID_TAG] == str(child.pid) and run.status == dg.DagsterRunStatus.STARTED
        # without recovery the slot stays claimed by the dead run: a next gpu step would wait for ever
        assert [s.run_id for s in events.get_concurrency_info("gpu").claimed_slots] == [run.run_id]

        lines = recover_dead_runs(instance)
        assert lines == [f"recovered run {run.run_id} (gpu_job, STARTED, pid {child.pid} gone): marked failed, "
                         "freed its slot(s) in pool gpu"]
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
        assert events.get_concurrency_info("gpu").claimed_slots == []
        assert recover_dead_runs(instance) == []  # nothing left to do

        started = time.monotonic()
        second = _child(home, sleep=0)
        assert second.wait(timeout=90) == 0 and time.monotonic() - started < 60
        statuses = sorted(r.status.value for r in instance.get_runs())
        assert statuses == ["FAILURE", "SUCCESS"]


def test_a_live_run_and_an_untagged_holder_are_left_alone(tmp_path):
    home = _home(tmp_path)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        events = instance.event_log_storage
        events.set_concurrency_slots("gpu", 1)
        live = instance.create_run_for_job(dg.GraphDefinition("g").to_job(), tags={
            PID_TAG: str(os.getpid()), "semid/host": os.uname().nodename}, status=dg.DagsterRunStatus.STARTED)
        assert events.claim_concurrency_slot("gpu", live.run_id, "step").is_claimed
        untagged = instance.create_run_for_job(dg.GraphDefinition("h").to_job(), status=dg.DagsterRunStatus.STARTED)
        events.claim_concurrency_slot("gpu", untagged.run_id, "step")  # waits: pending
        lines = recover_dead_runs(instance)
        assert lines == [f"run {untagged.run_id} (h, STARTED) holds a slot in pool gpu and records no process; "
                         f"if it is dead: python -m pipeline.recovery --run {untagged.run_id}"]
        assert instance.get_run_by_id(live.run_id).status == dg.DagsterRunStatus.STARTED
        assert [s.run_id for s in events.get_concurrency_info("gpu").claimed_slots] == [live.run_id]


def test_two_first_runs_on_a_freshly_initialised_home_both_succeed(tmp_path):
    home = _home(tmp_path)
    children = [_child(home, sleep=0) for _ in range(2)]
    assert [c.wait(timeout=120) for c in children] == [0, 0]  # 1 in ~10 hung for ever before SlotSafeInstance
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert [r.status for r in instance.get_runs()] == [dg.DagsterRunStatus.SUCCESS] * 2


def test_a_slot_freed_while_a_step_registers_goes_to_that_step_on_its_next_ask(tmp_path):
    """The interleaving that hung the second of two runs, played step by step on the instance's storage."""
    with dg.DagsterInstance.from_config(str(_home(tmp_path))) as instance:
        assert isinstance(instance, SlotSafeInstance)
        storage = instance.event_log_storage
        assert isinstance(storage, SqlEventLogStorage)
        storage.set_concurrency_slots("gpu", 1)
        assert storage.claim_concurrency_slot("gpu", "run-a", "step").is_claimed
        # run B's claim reads that no slot is free; run A then frees its slot, with no step registered to take it;
        # then B registers its step, unassigned
        assert not storage.has_unassigned_slots("gpu")
        storage.free_concurrency_slot_for_step("run-a", "step")
        storage.add_pending_step("gpu", "run-b", "step", should_assign=False)
        # Dagster's own claim leaves B waiting on a free slot (if this starts failing, Dagster fixed the race and
        # SlotSafeInstance can go)
        assert not SqlEventLogStorage.claim_concurrency_slot(storage, "gpu", "run-b", "step").is_assigned
        # the instance's storage gives B the free slot on its next ask
        assert storage.claim_concurrency_slot("gpu", "run-b", "step").is_claimed
        info = storage.get_concurrency_info("gpu")
        assert [(s.run_id, s.step_key) for s in info.claimed_slots] == [("run-b", "step")]
        # and a pool whose one slot is held assigns no second step
        storage.add_pending_step("gpu", "run-c", "step", should_assign=False)
        assert not storage.claim_concurrency_slot("gpu", "run-c", "step").is_assigned
