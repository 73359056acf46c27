"""Exact tiling of instance-normalised networks (issue 13): tiles that normalise with the statistics of the
whole image give the untiled (official) result; the stage picks untiled or tiled by its memory budget and
records how it ran."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from oldphoto.imageops.geometry import probe_network, run_tiled, tile_spans
from oldphoto.networks.blocks import instance_norms
from oldphoto.networks.mapping import MappingConfig, MappingNet
from oldphoto.networks.mapping_nonlocal import NonLocalMappingConfig, NonLocalMappingNet
from oldphoto.networks.vae import VAE, VAEConfig
from oldphoto.pipeline import RestoreOptions
from oldphoto.stages import GlobalRestorationStage
from oldphoto.testing import seeded as seeded_weights
from stage_helpers import Nets, decoded_state

TOL = 1e-3


def _official(official_dir, cls, cfg, manifest, seed):
    with torch.device("meta"):
        net = cls(cfg)
    sd = seeded_weights.seeded_state_dict(seeded_weights.load_manifest(str(official_dir / "manifests" / f"{manifest}.json")), seed)
    net.load_state_dict(sd, strict=True, assign=True)
    return net.eval()


def _tiny_nets(seed=0):
    torch.manual_seed(seed)
    vae = VAEConfig.tiny()                      # instance norm, as the official networks
    return {
        "vae_a": VAE(vae).eval(), "vae_b_quality": VAE(vae).eval(), "vae_b_scratch": VAE(vae).eval(),
        "mapping_quality": MappingNet(MappingConfig.tiny()).eval(),
        "mapping_scratch": NonLocalMappingNet(NonLocalMappingConfig.tiny()).eval(),
    }


def _photo(h, w, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 0.5 + 0.3 * np.sin(xx / 37.0)[..., None] * np.cos(yy / 53.0)[..., None] * np.float32([1.0, 0.8, 0.6])
    base[: h // 3] *= 0.6                                   # a dark band: image-wide statistics differ per tile
    return np.clip(base + rng.normal(0, 0.05, (h, w, 3)), 0, 1).astype(np.float32)


def _restore(nets, pixels, mask=None, **opts):
    o = RestoreOptions(tone_match=False, faces=False, **opts)
    st = GlobalRestorationStage(Nets(nets), o)(decoded_state(pixels, o, mask=mask))
    assert not st.failed, st.error
    return st


# ------------------------------------------------------------------------------------------- run_tiled(norms=...)
@pytest.mark.slow
def test_tiled_vae_with_image_wide_statistics_equals_untiled(official_dir):
    """Official-shape VAE_A encoder on a 192×160 image in 160 px tiles: per-tile statistics are far off,
    image-wide ones give the untiled latent."""
    vae = _official(official_dir, VAE, VAEConfig.official(), "vae_a", 11)
    x = torch.from_numpy(_photo(160, 192)[:, ::-1].transpose(1, 0, 2).transpose(2, 0, 1)[None] * 2 - 1)
    with torch.inference_mode():
        whole = vae.encode(x)[0].numpy()
    packed = torch.nn.functional.pixel_unshuffle(x, 4)[0].numpy()
    fn = lambda t: vae.encode(torch.nn.functional.pixel_shuffle(t, 4))  # noqa: E731
    radius = probe_network(fn, torch.zeros(1, 48, 16, 16), [vae]).radius
    kw = dict(out_channels=64, tile=40, overlap=0, halo=radius + 1, multiple=1)
    exact = run_tiled(fn, packed, norms=instance_norms(vae.encoder), **kw)
    per_tile = run_tiled(fn, packed, **kw)
    assert np.abs(exact - whole).max() <= TOL
    assert np.abs(per_tile - whole).max() > 100 * TOL


@pytest.mark.slow
def test_norm_statistics_need_one_pass_per_norm_and_restore_the_modules():
    vae = VAE(VAEConfig.tiny()).eval()
    norms = instance_norms(vae)
    calls = []
    fn = lambda t: (calls.append(1), vae(t))[1]  # noqa: E731
    img = np.random.default_rng(0).random((3, 96, 64)).astype(np.float32)
    run_tiled(fn, img, out_channels=3, tile=48, overlap=0, halo=16, multiple=4, norms=norms)
    n_tiles = len(tile_spans(96, 48, 0, 16, 4)) * len(tile_spans(64, 48, 0, 16, 4))
    assert n_tiles > 1
    assert len(calls) == n_tiles * (len(norms) + 1)
    assert all("forward" not in m.__dict__ for m in norms)   # the image-wide forward is gone afterwards


# ------------------------------------------------------------------------------------------- the stage
@pytest.mark.slow
def test_quality_path_exact_tiles_equal_untiled_at_1200px():
    nets = _tiny_nets()
    pixels = _photo(1200, 344)
    untiled = _restore(nets, pixels, untiled_max_mb=1 << 20)
    assert untiled.provenance.parameters["global_tiling"]["mode"] == "untiled"
    tiled = _restore(nets, pixels, untiled_max_mb=64)
    plan = tiled.provenance.parameters["global_tiling"]
    assert plan["mode"] == "tiled" and plan["statistics"] == "image-wide" and plan["tile"] < 1200
    assert plan["passes"]["mapping_quality"] == len(instance_norms(nets["mapping_quality"])) + 1
    assert np.abs(tiled.restored - untiled.restored).max() <= TOL


@pytest.mark.slow
def test_quality_path_official_shapes_exact_tiles(official_dir):
    """Seeded official-layout VAE_A, mapping_quality and VAE_B on an image larger than the tiles."""
    nets = {"vae_a": _official(official_dir, VAE, VAEConfig.official(), "vae_a", 11),
            "vae_b_quality": _official(official_dir, VAE, VAEConfig.official(), "vae_b", 12),
            "mapping_quality": _official(official_dir, MappingNet, MappingConfig.official(), "mapping_quality", 13)}
    pixels = _photo(264, 32, seed=2)
    untiled = _restore(nets, pixels, untiled_max_mb=1 << 20)
    tiled = _restore(nets, pixels, untiled_max_mb=1)
    plan = tiled.provenance.parameters["global_tiling"]
    assert plan["mode"] == "tiled" and plan["tile"] < 264, plan
    assert np.abs(tiled.restored - untiled.restored).max() <= TOL


@pytest.mark.slow
def test_scratch_path_attention_spans_the_image_up_to_tile_squared_then_tiles():
    nets = _tiny_nets()
    pixels = _photo(256, 192, seed=1)
    mask = np.zeros(pixels.shape[:2], bool)
    mask[:, 100:103] = True
    whole = _restore(nets, pixels, mask, tile=256)
    assert whole.provenance.parameters["global_tiling"]["mode"] == "untiled"
    tiled = _restore(nets, pixels, mask, tile=160)
    plan = tiled.provenance.parameters["global_tiling"]
    assert plan["mode"] == "tiled" and plan["attention"] == "per tile" and plan["tile"] == 160
    # the untiled scratch path is the official composition on the whole (hole-filled) image
    stage = GlobalRestorationStage(Nets(nets), RestoreOptions(tone_match=False, tile=256))
    _, _, chw = stage._prepare(whole)
    with torch.inference_mode():
        y = stage._net(True)(torch.from_numpy(chw)[None])[0].numpy()
    lo, hi = y.min(), y.max()
    ref = ((y - lo) / max(hi - lo, 1e-5))[:, :256, :192].transpose(1, 2, 0)
    assert np.abs(whole.restored - ref).max() <= 1e-5


@pytest.mark.slow
def test_bf16_precision_is_recorded_and_stays_close_to_fp32():
    nets = _tiny_nets()
    pixels = _photo(96, 128, seed=3)
    fp32 = _restore(nets, pixels)
    bf16 = _restore(nets, pixels, precision="bf16")
    assert fp32.provenance.parameters["global_tiling"]["precision"] == "fp32"
    assert bf16.provenance.parameters["global_tiling"]["precision"] == "bf16"
    diff = np.abs(bf16.restored - fp32.restored)
    assert 0 < diff.max() < 0.1 and diff.mean() < 0.01
    with pytest.raises(ValueError, match="precision"):
        RestoreOptions(precision="fp16")
