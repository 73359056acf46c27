"""Settings of the distributed (Ray) pipeline: pool sizes, GPUs per actor, backpressure.

Plain dataclasses, so they travel as Prefect parameters (`to_dict`/`from_dict`) and to Ray actors (pickle).
The defaults fit an embedded 2-CPU local Ray session; `DistributedConfig.gpu_cluster()` is the shape for a
cluster with GPU workers (one GPU shared by the three model pools).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

# pool name -> DistributedConfig attribute
POOL_ATTRS = {"scratch": "scratch", "global": "global_", "face": "face"}

# What the deployment (infra/, prefect.yaml) must agree on with the code (checked by tests/test_infra.py).
IMAGE_REPOSITORY = "ghcr.io/museum-oldphoto/oldphoto"
IMAGE_VARIANTS = ("cpu", "cuda")
WORK_POOL = "oldphoto-process"
FLOW_ENTRYPOINTS = {
    "restore-archive": "oldphoto.flows.restore_archive.restore_archive",
    "reprocess-failed": "oldphoto.flows.restore_archive.reprocess_failed",
    "reprocess-reviewed": "oldphoto.flows.reprocess_reviewed.reprocess_reviewed",
}
# Environment the flows read on a worker (besides the standard AWS credential variables)
WORKER_ENV = {
    "PREFECT_API_URL": "the Prefect server's API",
    "OLDPHOTO_CATALOG": "catalog database URL (oldphoto.catalog.default_url)",
    "OLDPHOTO_WEIGHTS": "weights: 'default', a weights folder or 'official:/path' (oldphoto.weights_source)",
    "RAY_ADDRESS": "the Ray cluster (unset: an embedded local Ray session)",
}
OPTIONAL_ENV = {"AWS_ENDPOINT_URL": "an S3-compatible endpoint (MinIO, moto); unset for AWS S3"}
# A distributed run's restore options carry no device: each Ray pool chooses its own.
DEVICE_PER_POOL = ("device is chosen per Ray pool (a pool given GPUs runs on cuda; the flows' ray_config sets "
                   "num_gpus per pool), not per run")


def check_no_device(options: dict[str, Any]) -> None:
    """ValueError (DEVICE_PER_POOL) when a distributed run's restore `options` name a device, which the Ray pools
    would override: refused with the reason rather than dropped without a word."""
    if "device" in options:
        raise ValueError(f"restore option device={options['device']!r} refused: {DEVICE_PER_POOL}")


def image(variant: str = "cpu") -> str:
    from oldphoto import __version__

    if variant not in IMAGE_VARIANTS:
        raise ValueError(f"image variant is one of {IMAGE_VARIANTS}")
    return f"{IMAGE_REPOSITORY}:{__version__}-{variant}"


@dataclass
class PoolConfig:
    """One actor pool running one model stage."""

    min_size: int = 1
    max_size: int = 1
    num_gpus: float = 0.0           # per actor; fractions share a GPU (0 on CPU-only machines)
    num_cpus: float = 0.5           # per actor (Ray scheduling resource)
    max_tasks_in_flight: int = 2    # batches queued per actor (backpressure)
    torch_threads: int = 1          # intra-op threads per actor on CPU
    batch_size: int | None = None   # items per actor call (None: DistributedConfig.batch_size); the stage's
                                    # batch() runs same-size items in one forward pass (global: RestoreOptions.global_batch)

    @property
    def device(self) -> str:
        return "cuda" if self.num_gpus > 0 else "cpu"


@dataclass
class DistributedConfig:
    """Everything the Ray pipeline needs besides the items, the destination and the restore options."""

    ray_address: str | None = None          # None: an embedded local session; "auto" / "ray://..." / "host:port"
    local_num_cpus: int = 2                  # for the embedded session
    batch_size: int = 1                      # items per actor call (images differ in size: 1 is right on CPU)
    io_num_cpus: float = 0.25                # per decode / encode-and-write task
    object_store_memory: int = 256 * 2**20   # Ray Data's object-store budget for this pipeline (bytes)
    max_item_retries: int = 2                # re-runs of an item's stage after its actor died; then it fails
    scratch: PoolConfig = field(default_factory=PoolConfig)
    global_: PoolConfig = field(default_factory=PoolConfig)
    face: PoolConfig = field(default_factory=PoolConfig)
    # Tests only: rules that make the actors of `fault_pool` die on chosen items (oldphoto.distributed.faults:
    # "exit-once:<substring>:<marker file>", "exit-always:<substring>", separated by ";"). None in production:
    # the production actor has no such hook.
    fault_injection: str | None = None
    fault_pool: str = "global"
    # GPUs for the model pools: "auto" gives every pool left at num_gpus=0 an equal share of one GPU when the
    # cluster has GPUs (none otherwise); "off" keeps the pools on CPU whatever the cluster has
    gpus: str = "auto"

    def fitted(self, cluster_resources: dict[str, float]) -> "DistributedConfig":
        """This config for a cluster with these resources (`ray.cluster_resources()`): with gpus="auto" and
        GPUs in the cluster, the pools without GPUs get one each (a third of a GPU each when the cluster has a
        single GPU), so the model stages run on the GPU workers."""
        n_gpu = float(cluster_resources.get("GPU", 0) or 0)
        if self.gpus != "auto" or n_gpu <= 0:
            return self
        share = min(1.0, int(n_gpu / len(POOL_ATTRS) * 100) / 100) or 0.01
        pools = {attr: dataclasses.replace(self.pool(name), num_gpus=share)
                 for name, attr in POOL_ATTRS.items() if self.pool(name).num_gpus == 0}
        return dataclasses.replace(self, **pools)

    def pool(self, name: str) -> PoolConfig:
        return getattr(self, POOL_ATTRS[name])

    @classmethod
    def gpu_cluster(cls, ray_address: str = "auto", actors_per_pool: int = 1, gpus_per_actor: float = 0.3,
                    object_store_memory: int = 4 * 2**30, global_batch: int = 4) -> "DistributedConfig":
        pool = dict(min_size=1, max_size=actors_per_pool, num_gpus=gpus_per_actor, num_cpus=1.0,
                    max_tasks_in_flight=4, torch_threads=2)
        return cls(ray_address=ray_address, batch_size=1, io_num_cpus=1.0,
                   object_store_memory=object_store_memory,
                   scratch=PoolConfig(**pool), global_=PoolConfig(**pool, batch_size=global_batch),
                   face=PoolConfig(**pool))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "DistributedConfig":
        d = dict(d or {})
        for name in ("scratch", "global_", "face"):
            if isinstance(d.get(name), dict):
                d[name] = PoolConfig(**d[name])
        return cls(**d)
