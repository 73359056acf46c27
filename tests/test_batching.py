"""Batching for GPUs (issue 13): the Ray pool actor hands its whole batch to the stage's batch(), and the
global stage runs same-size untiled items in shared forward passes of at most `global_batch` items."""
from __future__ import annotations


import numpy as np
import pytest
import torch

from oldphoto.distributed.config import DistributedConfig, PoolConfig
from oldphoto.distributed.pipeline import PoolActor
from oldphoto.networks.mapping import MappingConfig, MappingNet
from oldphoto.networks.vae import VAE, VAEConfig
from oldphoto.pipeline import ItemState, RestoreOptions
from oldphoto.provenance import StageName
from oldphoto.stages import GlobalRestorationStage
from oldphoto.stages.base import Stage
from stage_helpers import Nets, decoded_state


class RecordingStage(Stage):
    steps = (StageName.GLOBAL_RESTORATION,)

    def __init__(self):
        super().__init__(None, RestoreOptions())
        self.calls: list[list[str]] = []

    def batch(self, states):
        self.calls.append([s.name for s in states])
        for s in states:
            s.restored = np.zeros((1, 1, 3), np.float32)
        return states


def test_pool_actor_hands_the_whole_batch_to_stage_batch():
    actor = object.__new__(PoolActor)           # the actor's __call__ without Ray or model loading
    actor.role, actor.stage = "global", RecordingStage()
    opts = RestoreOptions()
    states = [ItemState.new(f"{n}.png", None, opts) for n in ("a", "b", "c", "d")]
    states[2].fail("load", "broken")
    from ray.data.block import BlockAccessor

    from oldphoto.distributed.rows import batch_states, states_to_table

    def as_ray_hands_it_over(table):
        return BlockAccessor.for_block(table).to_batch_format("numpy")

    batch = as_ray_hands_it_over(states_to_table(states))      # the numpy batch of plain columns Ray gives
    out = batch_states(as_ray_hands_it_over(actor(batch)))    # (items already done are skipped on the driver)
    assert actor.stage.calls == [["a", "b", "d"]]            # one call: failed items pass through
    assert [st.name for st in out] == ["a", "b", "c", "d"]
    done = {st.name: st for st in out}
    assert done["a"].restored is not None and done["c"].restored is None and done["c"].failed


def test_pool_batch_size_and_gpus_are_per_pool_options():
    cfg = DistributedConfig.gpu_cluster(gpus_per_actor=0.5, global_batch=8)
    assert cfg.global_.batch_size == 8 and cfg.global_.num_gpus == 0.5 and cfg.global_.device == "cuda"
    assert cfg.face.batch_size is None and cfg.pool("global") is cfg.global_
    assert DistributedConfig.from_dict(cfg.to_dict()) == cfg
    assert PoolConfig().batch_size is None and PoolConfig().num_gpus == 0


@pytest.mark.slow
def test_global_stage_batches_untiled_same_size_items_in_groups_of_global_batch():
    torch.manual_seed(0)
    vae = VAEConfig.tiny()
    nets = Nets({"vae_a": VAE(vae).eval(), "vae_b_quality": VAE(vae).eval(),
                 "mapping_quality": MappingNet(MappingConfig.tiny()).eval()})
    opts = RestoreOptions(scratch="off", faces=False, tone_match=False, global_batch=2)
    stage = GlobalRestorationStage(nets, opts)
    rng = np.random.default_rng(0)
    pix = [rng.random((48, 64, 3)).astype(np.float32) for _ in range(3)] + [rng.random((40, 64, 3)).astype(np.float32)]
    calls = []
    net = stage._net

    def counting(use_scratch):
        f = net(use_scratch)
        return lambda t: (calls.append(t.shape[0]), f(t))[1]

    stage._net = counting
    out = stage.batch([decoded_state(p, opts, str(i)) for i, p in enumerate(pix)])
    assert sorted(calls) == [1, 1, 2]                          # 2 + 1 of the 48×64 items, the 40×64 alone
    for i, p in enumerate(pix):
        single = GlobalRestorationStage(nets, opts)(decoded_state(p, opts, str(i)))
        assert np.abs(out[i].restored - single.restored).max() < 1e-4
        assert out[i].provenance.parameters["global_tiling"]["mode"] == "untiled"
    assert out[0].provenance.parameters["global_tiling"]["batch"] == 2
