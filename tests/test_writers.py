"""Writers that are killed or race (issue 31, section 4): concurrent publishers, a SIGKILLed ingest, leftovers."""
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
import pytest

from assets import ingest
from ops.sample import generate
from pipeline.resources import StorageResource
from storage.artifacts import ArtifactStore
from storage.atomic import remove_leftovers, scratch_prefix, temp_name
from storage.parquet import read_table_metadata
from storage.store import INGEST_TABLES, MixedIngestError

ROOT = Path(__file__).resolve().parents[1]
VERSIONS = [f"v{i}" for i in range(6)]


def _publisher(directory: str, seed: int, rounds: int, barrier) -> None:
    import random

    store, rng = ArtifactStore(directory), random.Random(seed)
    for _ in range(rounds):
        barrier.wait()
        store.publish(rng.choice(VERSIONS))
        barrier.wait()  # the parent compares the pointers
        barrier.wait()


def test_concurrent_publishers_leave_both_pointers_on_one_complete_version(tmp_path):
    store = ArtifactStore(tmp_path / "codes")
    for v in VERSIONS:
        store.write(v, lambda d: (d / "codes.parquet").write_bytes(b"x"))
    procs, rounds = 4, 40
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(procs + 1)
    workers = [ctx.Process(target=_publisher, args=(str(store.dir), seed, rounds, barrier)) for seed in range(procs)]
    for w in workers:
        w.start()
    try:
        seen = set()
        for _ in range(rounds):
            barrier.wait()
            barrier.wait()
            link = os.readlink(store.dir / "latest")
            assert link == (store.dir / "LATEST").read_text().strip() == store.latest()
            assert link in store.versions()  # a complete version
            seen.add(link)
            barrier.wait()
        assert len(seen) > 1  # the rounds really moved the pointers
    finally:
        for w in workers:
            w.join(30)
    assert [w.exitcode for w in workers] == [0] * procs
    assert sorted(p.name for p in store.dir.iterdir() if p.name.startswith(".")) == [".publish.lock"]


def test_latest_reads_the_symlink_and_falls_back_to_the_latest_file(tmp_path):
    store = ArtifactStore(tmp_path)
    for v in ("v1", "v2"):
        store.write(v, lambda d: None)
    store.publish("v1")
    (tmp_path / "LATEST").write_text("v2\n")  # a stale file must not win over the pointer of record
    assert store.latest() == "v1"
    (tmp_path / "latest").unlink()  # an object store: no symlinks
    assert store.latest() == "v2"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # reaped: the pid is free
    return proc.pid


def test_remove_leftovers_removes_dead_writers_only(tmp_path):
    dead = _dead_pid()
    mine = tmp_path / temp_name("items.parquet")  # this (live) process's
    mine.write_bytes(b"live")
    theirs = tmp_path / temp_name("items.parquet").replace(f"-{os.getpid()}-", f"-{dead}-")
    theirs.write_bytes(b"dead")
    sink = tmp_path / "sub" / (scratch_prefix().replace(f"-{os.getpid()}-", f"-{dead}-") + "ab12cd_3")
    sink.mkdir(parents=True)
    (sink / "0.parquet").write_bytes(b"x" * 100)
    other_host = tmp_path / f".items.parquet.tmp-00000000-{dead}-0123456789ab"
    other_host.write_bytes(b"?")
    plain = tmp_path / ".keep.tmp-notours"
    plain.write_bytes(b"?")
    assert remove_leftovers(tmp_path) == [theirs]  # not recursive: the sub-directory waits
    assert remove_leftovers(tmp_path, recursive=True) == [sink]
    assert mine.exists() and other_host.exists() and plain.exists() and not theirs.exists() and not sink.exists()


# The child ingests sample_hm for real; os.replace pauses it for good right after interactions.parquet was replaced
# (items, quarantine, shown_not_clicked and the accounting not yet), where the parent SIGKILLs it.
CHILD = textwrap.dedent("""
    import os, sys, time
    import dagster as dg
    from assets import ingest
    from pipeline.resources import StorageResource

    raw_root, store_root, ready = sys.argv[1:4]
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        real_replace(src, dst, *args, **kwargs)
        if str(dst).endswith("interactions.parquet"):
            open(ready, "w").close()
            time.sleep(600)

    os.replace = replace
    dg.materialize(ingest.ASSETS[:1], partition_key="sample_hm",
                   resources={"storage": StorageResource(raw_root=raw_root, storage_root=store_root)})
""")


def test_sigkilled_ingest_is_refused_downstream_and_cleaned_on_the_next_start(tmp_path):
    raw, root = tmp_path / "raw", tmp_path / "store"
    generate("hm", raw / "sample_hm", "tiny", seed=0)
    storage = StorageResource(raw_root=str(raw), storage_root=str(root))
    first = dg.materialize([*ingest.ASSETS, *ingest.CHECKS], partition_key="sample_hm",
                           resources={"storage": storage})
    store = storage.store()
    assert store.check_ingest("sample_hm") == first.run_id

    ready = tmp_path / "ready"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(raw), str(root), str(ready)], cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert child.poll() is None and time.monotonic() < deadline, "the child ingest never got to the pause"
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    ds_dir = root / "sample_hm"
    runs = {t: read_table_metadata(ds_dir / f"{t}.parquet")["run_id"] for t in INGEST_TABLES}
    killed = runs["interactions"]
    assert killed != first.run_id and {runs[t] for t in INGEST_TABLES if t != "interactions"} == {first.run_id}
    leftovers = sorted(p.name for p in ds_dir.iterdir() if f"-{child.pid}-" in p.name)
    assert len(leftovers) == 2 and leftovers[0].startswith(".items.parquet.tmp-") and \
        leftovers[1].startswith(".sink-")  # the new items and the sink's scratch directory

    with pytest.raises(MixedIngestError, match=f"interactions.parquet is from run {killed}.*ingest_accounting"
                                                f".parquet is from run {first.run_id}: an ingest was interrupted"):
        store.scan("sample_hm", "items")
    downstream = dg.materialize([ingest.user_sequences], partition_key="sample_hm",
                                resources={"storage": storage}, raise_on_error=False)
    assert not downstream.success
    failure = next(e for e in downstream.all_events if e.is_step_failure)
    assert "rematerialize ingest_raw" in failure.step_failure_data.error.cause.message

    again = dg.materialize([*ingest.ASSETS, *ingest.CHECKS], partition_key="sample_hm",
                           resources={"storage": storage})
    assert again.success and store.check_ingest("sample_hm") == again.run_id
    assert [p.name for p in ds_dir.iterdir() if p.name.startswith(".")] == []  # the ingest step cleaned them
