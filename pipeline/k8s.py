"""GPU workers on Kubernetes through Dagster's own engine (dagster-k8s): every step of a run is a Kubernetes Job
(`k8s_job_executor`), runs are launched as pods by the `K8sRunLauncher` (pipeline/deploy/k8s/values.yaml), and each
step's pod is sized by the kind of asset it materializes:

- model-bound assets (`assets.common.GPU_ASSET`: the op tag `semid/resource: gpu`, pool `gpu`) get the `gpu` pod
  class: the GPU image, `nvidia.com/gpu` in requests and limits, the GPU nodes' selector and tolerations, and
  SEMID_DEVICE=cuda (a pod without a GPU fails at its first step instead of training on CPU);
- every other step (ingest, training-free code tables, quality, serving index, evaluation) gets the `cpu` class.

The classes, images, storage claim and namespace come from a workers file (SEMID_K8S_WORKERS, default
pipeline/deploy/k8s/workers.yaml); nothing about Kubernetes is in assets/ or ops/. `SEMID_EXECUTOR=k8s` makes
this executor the code location's default (pipeline/definitions.py).

The storage root is a POSIX directory shared by every pod (a ReadWriteMany PersistentVolumeClaim: NFS, EFS,
Filestore, CephFS): versions are published by rename and symlink under an flock (storage/artifacts.py), which object
stores do not offer.

`python -m pipeline.k8s [--asset KEY]` prints the Job manifests dagster-k8s would create for each step, as YAML.
"""
from __future__ import annotations

import argparse
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import yaml

GPU_TAG, GPU_VALUE = "semid/resource", "gpu"  # assets.common.GPU_ASSET's op tag
GPU_RESOURCE = "nvidia.com/gpu"
DEFAULT_WORKERS = Path(__file__).parent / "deploy" / "k8s" / "workers.yaml"
DAGSTER_HOME = "/opt/dagster/dagster_home"  # the Dagster chart's (the instance ConfigMap is mounted there)


@dataclass(frozen=True)
class PodClass:
    """What the step pods of one kind ask for."""

    name: str
    image: str
    requests: Mapping[str, str]
    limits: Mapping[str, str]
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def gpus(self) -> int:
        return int(self.limits.get(GPU_RESOURCE, 0))

    def threads(self) -> int:
        """Torch threads: the CPUs the pod is guaranteed (its request), at least 1."""
        cpu = str(self.requests.get("cpu", "1"))
        return max(1, int(float(cpu[:-1]) / 1000) if cpu.endswith("m") else int(float(cpu)))


@dataclass(frozen=True)
class Workers:
    namespace: str
    cpu: PodClass
    gpu: PodClass
    claim: str  # the shared store's PersistentVolumeClaim
    mount: str
    raw_root: str
    storage_root: str
    image_pull_policy: str = "IfNotPresent"
    service_account: str | None = None
    env_secrets: tuple[str, ...] = ()
    max_concurrent: int | None = None
    source: str = ""

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> Workers:
        """The workers file (default $SEMID_K8S_WORKERS, else the bundled example), checked."""
        path = Path(path or os.environ.get("SEMID_K8S_WORKERS") or DEFAULT_WORKERS)
        doc = yaml.safe_load(path.read_text()) or {}
        where = str(path)
        try:
            pods = doc["pods"]
            classes = {name: PodClass(name, str(p["image"]), {k: str(v) for k, v in p["requests"].items()},
                                      {k: str(v) for k, v in p["limits"].items()},
                                      dict(p.get("node_selector") or {}), tuple(p.get("tolerations") or ()),
                                      {k: str(v) for k, v in (p.get("env") or {}).items()})
                       for name, p in pods.items()}
            store = doc["storage"]
            workers = cls(str(doc["namespace"]), classes["cpu"], classes["gpu"], str(store["claim"]),
                          str(store["mount"]), str(store["raw_root"]), str(store["storage_root"]),
                          str(doc.get("image_pull_policy", "IfNotPresent")), doc.get("service_account"),
                          tuple(doc.get("env_secrets") or ()), doc.get("max_concurrent"), where)
        except KeyError as e:
            raise ValueError(f"{where}: missing key {e.args[0]!r} (see {DEFAULT_WORKERS} for every key)") from None
        workers.check()
        return workers

    def check(self) -> None:
        where = self.source or "workers"
        if self.gpu.gpus < 1 or self.gpu.requests.get(GPU_RESOURCE) not in (None, self.gpu.limits[GPU_RESOURCE]):
            raise ValueError(f"{where}: pods.gpu must set {GPU_RESOURCE} in limits (>= 1), and requests equal to it "
                             "if there at all (Kubernetes schedules GPUs by their limit)")
        if GPU_RESOURCE in self.cpu.limits or GPU_RESOURCE in self.cpu.requests:
            raise ValueError(f"{where}: pods.cpu must not ask for {GPU_RESOURCE}")
        for root in (self.raw_root, self.storage_root):
            if not (root == self.mount or root.startswith(self.mount.rstrip("/") + "/")):
                raise ValueError(f"{where}: {root} is not under the shared mount {self.mount}: pods would not "
                                 "see each other's files")

    @property
    def io_root(self) -> str:
        """Where steps leave what the next step reads (Dagster's IO manager): on the shared store."""
        return f"{self.storage_root.rstrip('/')}/_dagster_io"

    def pod_class(self, op_tags: Mapping[str, Any]) -> PodClass:
        return self.gpu if op_tags.get(GPU_TAG) == GPU_VALUE else self.cpu

    def step_config(self, pod: PodClass) -> dict[str, Any]:
        """The step's user-defined k8s config (dagster-k8s' `per_step_k8s_config` entry): its image, resources,
        device / dtype / thread environment, node selector and tolerations."""
        env = {"SEMID_TORCH_THREADS": str(pod.threads()), "OMP_NUM_THREADS": str(pod.threads()), **pod.env}
        return {
            "container_config": {
                "image": pod.image,
                "resources": {"requests": dict(pod.requests), "limits": dict(pod.limits)},
                "env": [{"name": k, "value": v} for k, v in sorted(env.items())],
            },
            "pod_spec_config": {
                **({"node_selector": dict(pod.node_selector)} if pod.node_selector else {}),
                **({"tolerations": [dict(t) for t in pod.tolerations]} if pod.tolerations else {}),
            },
            "pod_template_spec_metadata": {"labels": {"semid/pod-class": pod.name}},
        }

    def executor_config(self, steps: Iterable[tuple[str, Mapping[str, Any]]]) -> dict[str, Any]:
        """dagster-k8s executor config: what every step pod shares (namespace, the shared store mounted, its
        roots in the environment), and per step (op name) its pod class's config."""
        return {
            "job_namespace": self.namespace,
            "job_image": self.cpu.image,
            "image_pull_policy": self.image_pull_policy,
            **({"service_account_name": self.service_account} if self.service_account else {}),
            **({"env_secrets": list(self.env_secrets)} if self.env_secrets else {}),
            "env_vars": [f"SEMID_RAW_ROOT={self.raw_root}", f"SEMID_STORAGE_ROOT={self.storage_root}"],
            "volumes": [{"name": "semid-store", "persistent_volume_claim": {"claim_name": self.claim}}],
            "volume_mounts": [{"name": "semid-store", "mount_path": self.mount}],
            **({"max_concurrent": int(self.max_concurrent)} if self.max_concurrent else {}),
            "per_step_k8s_config": {op: self.step_config(self.pod_class(tags)) for op, tags in steps},
        }


def asset_steps(assets: Iterable[Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """(op name, op tags) of every op computing an asset (each op of a graph-backed one: the sharded
    embeddings' fan-out, shard and merge steps)."""
    return [(op.name, op.tags) for a in assets if isinstance(a, dg.AssetsDefinition) and a.is_executable
            for op in a.node_def.iterate_op_defs()]


def executor(assets: Iterable[Any], workers: Workers | None = None) -> dg.ExecutorDefinition:
    """dagster-k8s' `k8s_job_executor`, configured for these assets' steps."""
    from dagster_k8s import k8s_job_executor

    workers = workers or Workers.load()
    return k8s_job_executor.configured(workers.executor_config(asset_steps(assets)), name="semid_k8s")


def step_job(workers: Workers, op_name: str, op_tags: Mapping[str, Any], run_id: str = "0" * 36,
             step_key: str | None = None) -> Any:
    """The V1Job the k8s executor creates for one step, built by dagster-k8s' own functions from the same
    executor config and in the same order of merges as its step handler (executor config, then the op's
    `dagster-k8s/config` tags, then `per_step_k8s_config`); the Helm chart's instance settings for the rest."""
    from types import SimpleNamespace

    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import (
        UserDefinedDagsterK8sConfig,
        construct_dagster_k8s_job,
        get_k8s_job_name,
        get_user_defined_k8s_config,
    )

    cfg = workers.executor_config([(op_name, op_tags)])
    context = K8sContainerContext(
        image_pull_policy=cfg.get("image_pull_policy"), service_account_name=cfg.get("service_account_name"),
        env_secrets=cfg.get("env_secrets"), env_vars=cfg.get("env_vars"), volume_mounts=cfg.get("volume_mounts"),
        volumes=cfg.get("volumes"), namespace=cfg.get("job_namespace"))
    context = context.merge(K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(
        {k: str(v) for k, v in op_tags.items()}))).merge(K8sContainerContext(
            run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(cfg["per_step_k8s_config"][op_name])))
    launcher = SimpleNamespace(job_image=None, dagster_home=DAGSTER_HOME, instance_config_map="dagster-instance",
                               postgres_password_secret="dagster-postgresql-secret")  # the chart's K8sRunLauncher
    job_config = context.get_k8s_job_config(cfg["job_image"], launcher)
    name = f"dagster-step-{get_k8s_job_name(run_id, step_key or op_name)}"
    return construct_dagster_k8s_job(job_config, args=["dagster", "api", "execute_step"], job_name=name,
                                     pod_name=name, component="step_worker",
                                     user_defined_k8s_config=context.run_k8s_config,
                                     labels={"dagster/op": step_key or op_name})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.k8s", description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", help=f"workers file (default $SEMID_K8S_WORKERS, else {DEFAULT_WORKERS})")
    ap.add_argument("--asset", action="append", help="only this asset key (e.g. item_embeddings); repeatable")
    args = ap.parse_args(argv)
    import warnings

    from kubernetes.client import ApiClient

    warnings.simplefilter("ignore")  # the definitions' preview warnings would bury the manifests

    from pipeline.definitions import defs

    workers = Workers.load(args.workers)
    assets = [a for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition)]
    wanted = set(args.asset or [])
    documents = []
    for a in assets:
        if wanted and not {k.to_user_string() for k in a.keys} & wanted:
            continue
        for op, tags in asset_steps([a]):
            documents.append(ApiClient().sanitize_for_serialization(step_job(workers, op, tags)))
    print(yaml.safe_dump_all(documents, sort_keys=False), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
