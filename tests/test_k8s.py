"""The Kubernetes deployment without a cluster (pipeline/k8s.py): the Job that dagster-k8s builds for every step of
the code location, GPU requests and the GPU image exactly on the model-bound assets, the environment each pod needs,
the executor config accepted by dagster-k8s' own schema, and the code location switched to it by SEMID_EXECUTOR."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml

pytest.importorskip("dagster_k8s", reason="dagster-k8s is installed with .[dev] (pyproject.toml)")

from pipeline.k8s import DEFAULT_WORKERS, GPU_RESOURCE, Workers, asset_steps, executor, step_job  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# model-bound assets: what must get a GPU (embeddings, the palette, VQ tokenizers, recommenders that train)
GPU_PREFIXES = ("item_embeddings", "palette_model", "palette_embeddings", "code_table/moc", "code_table/rqvae",
                "recommender/generative", "recommender/sasrec", "recommender/ctr")


@pytest.fixture(scope="module")
def steps():
    from pipeline.definitions import defs

    assets = [a for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition)]
    # (asset, op) -> (op, tags): a graph-backed asset has several ops (plan, parts, gather)
    return {(k.to_user_string(), step[0]): step for a in assets for step in asset_steps([a]) for k in a.keys}


def _container(job):
    (container,) = job.spec.template.spec.containers
    return container


def test_every_step_gets_the_pod_its_kind_needs(steps):
    workers = Workers.load()
    assert len(steps) > 40
    gpu_steps = set()
    for (asset, _), (op, tags) in steps.items():
        job = step_job(workers, op, tags)
        pod, container = job.spec.template.spec, _container(job)
        env = {e.name: e.value for e in container.env if e.value is not None}
        limits, requests = container.resources.limits, container.resources.requests
        assert env["SEMID_STORAGE_ROOT"] == "/data/store" and env["SEMID_RAW_ROOT"] == "/data/raw"
        assert [m.mount_path for m in container.volume_mounts] == ["/data"]
        assert pod.volumes[0].persistent_volume_claim.claim_name == "semid-store"
        assert env["DAGSTER_HOME"] and any(e.name == "DAGSTER_PG_PASSWORD" for e in container.env)
        assert container.args == ["dagster", "api", "execute_step"] and pod.restart_policy == "Never"
        if GPU_RESOURCE in limits:
            gpu_steps.add(asset)
            # a graph's fan-out and the recommenders' gathering of rows wait on no model
            assert not op.endswith(("__workers", "__gather")), op
            assert limits[GPU_RESOURCE] == requests[GPU_RESOURCE] == "1"
            assert container.image.endswith(":gpu") and env["SEMID_DEVICE"] == "cuda"
            assert pod.node_selector == {"nvidia.com/gpu.present": "true"}
            assert pod.tolerations[0].key == GPU_RESOURCE
            assert env["SEMID_TORCH_THREADS"] == env["OMP_NUM_THREADS"] == "8"
            assert job.spec.template.metadata.labels["semid/pod-class"] == "gpu"
        else:
            assert GPU_RESOURCE not in requests and container.image.endswith(":cpu")
            assert env["SEMID_DEVICE"] == "cpu" and not pod.node_selector and not pod.tolerations
            assert env["SEMID_TORCH_THREADS"] == "2"
    assets = {asset for asset, _ in steps}
    assert gpu_steps == {k for k in assets if k.startswith(GPU_PREFIXES) and k != "recommender/popularity"}
    for cpu in ("items", "quarantine", "code_table/pca_kmeans", "serving_index/lamia", "id_quality/rqvae",
                "evaluation", "recommender/popularity"):
        assert cpu in assets and cpu not in gpu_steps, cpu
    # a recommender's seeds are steps of their own (each its own pod), its data prepared once before them
    assert {op for asset, op in steps if asset == "recommender/sasrec"} == {
        f"recommender__sasrec__{role}" for role in ("prepare", "seed", "gather")}


def test_the_executor_config_passes_dagster_k8s_schema(steps):
    from dagster._config import process_config
    from dagster_k8s import k8s_job_executor

    workers = Workers.load()
    config = workers.executor_config(steps.values())
    result = process_config(k8s_job_executor.config_schema.config_type, config)
    assert result.success, result.errors
    assert set(config["per_step_k8s_config"]) == {op for op, _ in steps.values()}
    assert executor([], workers).name == "semid_k8s"


def test_the_workers_file_is_checked(tmp_path):
    doc = yaml.safe_load(DEFAULT_WORKERS.read_text())

    def load(change):
        bad = json.loads(json.dumps(doc))
        change(bad)
        path = tmp_path / "workers.yaml"
        path.write_text(yaml.safe_dump(bad))
        return Workers.load(path)

    with pytest.raises(ValueError, match="pods.gpu must set nvidia.com/gpu"):
        load(lambda d: d["pods"]["gpu"]["limits"].pop(GPU_RESOURCE))
    with pytest.raises(ValueError, match="pods.cpu must not ask"):
        load(lambda d: d["pods"]["cpu"]["requests"].update({GPU_RESOURCE: "1"}))
    with pytest.raises(ValueError, match="not under the shared mount /data"):
        load(lambda d: d["storage"].update(storage_root="/elsewhere/store"))
    with pytest.raises(ValueError, match="missing key 'claim'"):
        load(lambda d: d["storage"].pop("claim"))
    assert load(lambda d: d["pods"]["cpu"]["requests"].update(cpu="500m")).cpu.threads() == 1


def _location(executor_env: str) -> subprocess.CompletedProcess:
    code = ("import warnings; warnings.simplefilter('ignore')\n"
            "from pipeline.definitions import defs\n"
            "print(defs.resources['io_manager'].base_dir if 'io_manager' in (defs.resources or {}) else None)\n"
            "print(sorted({defs.resolve_job_def(j.name).executor_def.name for j in defs.jobs}))")
    env = {**os.environ, "SEMID_EXECUTOR": executor_env}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


def test_semid_executor_k8s_gives_every_job_the_k8s_executor():
    done = _location("k8s")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-2:] == ["/data/store/_dagster_io", "['semid_k8s']"]
    done = _location("slurm")
    assert done.returncode != 0 and "SEMID_EXECUTOR='slurm'" in done.stderr


def test_the_manifests_command_prints_the_jobs():
    done = subprocess.run([sys.executable, "-m", "pipeline.k8s", "--asset", "palette_model"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (job,) = list(yaml.safe_load_all(done.stdout))
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert job["kind"] == "Job" and container["resources"]["limits"][GPU_RESOURCE] == "1"
