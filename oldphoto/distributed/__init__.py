"""The archive pipeline on a Ray cluster (streaming Ray Data over the stage classes) and its settings."""
from oldphoto.distributed.config import DistributedConfig, PoolConfig
from oldphoto.distributed.pipeline import (ItemResult, StageSource, WorkItem, ensure_ray, iter_pipeline, run_pipeline,
                                           work_items)
from oldphoto.weights_source import WeightsSource

__all__ = ["DistributedConfig", "PoolConfig", "WeightsSource", "ItemResult", "StageSource", "WorkItem", "ensure_ray",
           "iter_pipeline", "run_pipeline", "work_items"]
