"""Runs whose process is gone, and a local instance set up once.

A run executed in process (`pipeline.demo`, `dagster asset materialize`) that is killed never records its end: it
stays STARTED and keeps the concurrency slots its steps claimed, so with the `gpu` pool at one slot
(pipeline/dagster.yaml) every later run waits on "Step still blocked by limit for pool gpu" for ever. No Dagster
daemon watches such runs, so the demo does it before its own: runs it tagged with their host and pid whose process
is no longer alive are marked failed and their slots freed; slots of finished runs are freed too (what the daemon's
`free_slots_after_run_end_seconds` does); a run that holds a slot and was not tagged is left alone, with a hint.

    python -m pipeline.recovery              recover as above, one line per run
    python -m pipeline.recovery --run ID     mark that run failed and free its slots (you know its process is gone)
    python -m pipeline.recovery --init       create the instance's SQLite schemas once (make does, before any run)

Both instance files (pipeline/dagster.yaml, pipeline/deploy/dagster.yaml) name `SlotSafeInstance` as their instance
class: it closes a race in Dagster's pool-slot claim that can leave a waiting step waiting for ever.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import dagster as dg
from dagster._core.instance.ref import InstanceRef
from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage

from storage.atomic import pid_alive, remove_leftovers

PID_TAG, HOST_TAG = "semid/pid", "semid/host"
UNFINISHED = [dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING,
              dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]


def die_with_run_worker() -> bool:
    """In a step process that the multiprocess executor started, ask the kernel to kill this process when its
    parent (the run worker) dies: a run worker killed with SIGKILL (the OOM killer) would otherwise leave its steps
    running, still using the GPU, while run monitoring frees their pool slots for the next run. Linux only; the run
    worker itself is left alone (its parent is a code server, whose restart must not kill runs)."""
    import ctypes
    import multiprocessing
    import signal

    parent = multiprocessing.parent_process()
    if parent is None or not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    PR_SET_PDEATHSIG = 1
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return False
    if os.getppid() != parent.pid:  # the parent died before the request took
        os.kill(os.getpid(), signal.SIGKILL)
    return True


def process_tags() -> dict[str, str]:
    """Tags that say which process executes a run in process, so that a later start can tell it died."""
    return {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}


class _AssignsFreedSlots(SqlEventLogStorage):
    """Dagster (1.13) registers a step that asks for a pool slot as `assigned = has_unassigned_slots()` in two
    statements, and freeing a slot assigns it only to a step already registered. A slot freed by another run between
    the two is handed to no one: the step stays unassigned, and no later free comes to assign it, so it waits for
    ever (seen as a hung second run on a one-slot pool). A waiting step asks again every few seconds (15 at most);
    on each ask, a pool with a slot that no registered step holds assigns it to its longest-waiting step first."""

    def claim_concurrency_slot(self, concurrency_key: str, run_id: str, step_key: str,
                               priority: int | None = None) -> Any:
        status = super().claim_concurrency_slot(concurrency_key, run_id, step_key, priority)
        if status.assigned_timestamp is None and self.has_unassigned_slots(concurrency_key):
            self.assign_pending_steps([concurrency_key])  # by priority, then time of the ask: maybe not this step
            status = super().claim_concurrency_slot(concurrency_key, run_id, step_key, priority)
        return status


@functools.cache
def _slot_safe(cls: type) -> type:
    return type(f"SlotSafe{cls.__name__}", (_AssignsFreedSlots, cls), {"__module__": __name__})


class SlotSafeInstance(dg.DagsterInstance):
    """The instance class of both instance files: its SQL event-log storage (SQLite here, PostgreSQL deployed) gets
    the claim of `_AssignsFreedSlots`. The storage is built by Dagster from the instance's own settings, so its class
    is swapped for a subclass rather than configured: a storage class in dagster.yaml would need the home's absolute
    path written into the file."""

    @classmethod
    def config_schema(cls) -> dict[str, Any]:
        return {}  # no settings of its own (Dagster asks every instance class)

    @staticmethod
    def config_defaults(base_dir: str) -> Any:
        return InstanceRef.config_defaults(base_dir)  # Dagster's own (asked of every instance class too)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        storage = self.event_log_storage
        if isinstance(storage, SqlEventLogStorage) and not isinstance(storage, _AssignsFreedSlots):
            storage.__class__ = _slot_safe(type(storage))


def _slot_holders(instance: dg.DagsterInstance) -> dict[str, set[str]]:
    """run id -> pools in which it holds or waits for a slot."""
    storage = instance.event_log_storage
    holders: dict[str, set[str]] = {}
    if not storage.supports_global_concurrency_limits:
        return holders
    for key, info in storage.get_concurrency_infos(sorted(storage.get_concurrency_keys())).items():
        for claim in [*info.claimed_slots, *info.pending_steps]:
            holders.setdefault(cast(Any, claim).run_id, set()).add(key)  # claimed and pending: both carry run_id
    return holders


def _process_gone(run: dg.DagsterRun) -> bool:
    pid = run.tags.get(PID_TAG)
    return run.tags.get(HOST_TAG) == socket.gethostname() and pid is not None and not pid_alive(int(pid))


def fail_run(instance: dg.DagsterInstance, run: dg.DagsterRun, reason: str) -> None:
    """Mark a run whose process is gone failed and free its concurrency slots (pending claims included)."""
    if run.status in UNFINISHED:
        instance.report_run_failed(run, message=reason)
    instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)


def recover_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Fail the unfinished runs whose process is gone, free the slots no live run holds; one line per run."""
    holders = _slot_holders(instance)
    lines = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=UNFINISHED)):
        pools_held = ", ".join(sorted(holders.pop(run.run_id, ())))
        held = f", freed its slot(s) in pool {pools_held}" if pools_held else ""
        if _process_gone(run):
            fail_run(instance, run, f"its process (pid {run.tags[PID_TAG]} on {run.tags[HOST_TAG]}) is gone: "
                                    "killed; marked failed by pipeline.recovery")
            lines.append(f"recovered run {run.run_id} ({run.job_name}, {run.status.value}, pid "
                         f"{run.tags[PID_TAG]} gone): marked failed{held}")
        elif pools_held and PID_TAG not in run.tags:
            lines.append(f"run {run.run_id} ({run.job_name}, {run.status.value}) holds a slot in pool {pools_held} and "
                         "records no process; if it is dead: python -m pipeline.recovery --run " + run.run_id)
    for run_id, pools in holders.items():  # finished (or deleted) runs that still hold slots
        record = instance.get_run_by_id(run_id)
        if record is None or record.status not in UNFINISHED:
            instance.event_log_storage.free_concurrency_slots_for_run(run_id)
            lines.append(f"freed the slot(s) in pool {', '.join(sorted(pools))} of "
                         f"{'finished' if record else 'deleted'} run {run_id}")
    return lines


def recover(instance: dg.DagsterInstance, storage_root: str | os.PathLike[str]) -> list[str]:
    """What a start does before its runs: recover dead runs, remove what killed writers left in the store."""
    lines = recover_dead_runs(instance)
    lines += [f"removed {p}, left by a killed writer" for p in remove_leftovers(storage_root, recursive=True)]
    return lines


@contextlib.contextmanager
def _home_lock(home: Path) -> Iterator[None]:
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".init.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # released by the kernel if we die
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def init_instance(home: str | os.PathLike[str]) -> None:
    """Create the SQLite run, event-log and schedule storages of the instance at `home` once, under a
    file lock: two first runs on a fresh home would otherwise race on the schema set-up (SQLite UNIQUE errors)."""
    home = Path(home)
    with _home_lock(home), dg.DagsterInstance.from_config(str(home)) as instance:
        # the SQLite storages create their files, tables and schema stamps when first built (a no-op after)
        for storage in (instance.run_storage, instance.event_log_storage, instance.schedule_storage):
            assert storage is not None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--init", action="store_true", help="create the instance's storages (before any run)")
    ap.add_argument("--run", action="append", default=[], help="a run whose process you know is gone")
    args = ap.parse_args(argv)
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        print("DAGSTER_HOME is not set: nothing to recover (make sets it to .dagster_home)", file=sys.stderr)
        return 2
    if args.init:
        init_instance(home)
        return 0
    with dg.DagsterInstance.get() as instance:
        for run_id in args.run:
            run = instance.get_run_by_id(run_id)
            if run is None:
                print(f"no run {run_id} in {home}", file=sys.stderr)
                return 1
            fail_run(instance, run, "marked failed by hand (python -m pipeline.recovery --run)")
            print(f"run {run_id}: marked failed, slots freed")
        for line in [] if args.run else recover_dead_runs(instance):
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
