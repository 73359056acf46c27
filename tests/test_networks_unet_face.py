"""Scratch-detection U-Net, SPADE face generator and spectral norm: official layout, goldens, behaviour.

The official-size face generators (92 M parameters) are built and seeded once per module.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from oldphoto.networks.spade_face import SPADE, SPADEFaceConfig, SPADEFaceGenerator, SPADEResnetBlock
from oldphoto.networks.spectral_norm import SNConv2d
from oldphoto.networks.unet import BlurDownsample, ScratchUNet, ScratchUNetConfig
from oldphoto.testing.seeded import load_manifest, seeded_state_dict

GOLDEN_TOL = 1e-4


@pytest.fixture
def one_thread():
    """Tiny networks run much faster (and steadier on busy cores) on one intra-op thread."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _manifest(official_dir, name):
    return load_manifest(official_dir / "manifests" / f"{name}.json")


def _layout(module):
    return [[k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in module.state_dict().items()]


def _manifest_of(module):
    """A manifest (same format as the official ones) describing ``module``'s own state dict."""
    return {"state_dict": _layout(module)}


def _seeded(module, seed):
    module.load_state_dict(seeded_state_dict(_manifest_of(module), seed), strict=True)
    return module.eval()


def _golden(official_dir, name):
    with np.load(official_dir / "golden" / f"{name}.npz") as z:
        return {k: torch.from_numpy(z[k]) for k in z.files}


def _assert_layout_matches(module, manifest):
    assert _layout(module) == [list(e) for e in manifest["state_dict"]]
    assert sum(p.numel() for p in module.parameters()) == manifest["num_parameters"]
    assert len(module.state_dict()) == manifest["num_state_dict_tensors"]
    assert sum(v.numel() for v in module.state_dict().values()) == manifest["state_dict_numel"]


# --------------------------------------------------------------------------------------------------
# Spectral norm
# --------------------------------------------------------------------------------------------------


def test_snconv_key_order_and_shapes():
    conv = SNConv2d(4, 6, kernel_size=3, padding=1)
    assert [(k, tuple(v.shape)) for k, v in conv.state_dict().items()] == [
        ("bias", (6,)),
        ("weight_orig", (6, 4, 3, 3)),
        ("weight_u", (6,)),
        ("weight_v", (36,)),
    ]
    no_bias = SNConv2d(4, 6, kernel_size=1, bias=False)
    assert list(no_bias.state_dict()) == ["weight_orig", "weight_u", "weight_v"]
    assert [n for n, _ in conv.named_parameters()] == ["bias", "weight_orig"]  # u, v are buffers


def test_snconv_eval_uses_stored_u_v_without_iteration(one_thread):
    torch.manual_seed(0)
    conv = SNConv2d(3, 5, kernel_size=3, padding=1).eval()
    x = torch.randn(2, 3, 7, 7)
    # Arbitrary (non-converged, even negative-sigma) u, v: the formula must use them as stored.
    u, v = torch.randn(5), torch.randn(27)
    conv.weight_u.copy_(u)
    conv.weight_v.copy_(v)
    w = conv.weight_orig.detach()
    sigma = torch.dot(u, w.reshape(5, -1) @ v)
    expected = F.conv2d(x, w / sigma, conv.bias.detach(), padding=1)
    with torch.no_grad():
        out = conv(x)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(conv.weight_u, u) and torch.equal(conv.weight_v, v)  # untouched in eval
    # Doubling u doubles sigma, halving the conv part of the output.
    conv.weight_u.mul_(2)
    with torch.no_grad():
        out2 = conv(x)
    b = conv.bias.detach()[None, :, None, None]
    torch.testing.assert_close(out2 - b, (out - b) / 2, rtol=1e-5, atol=1e-6)


def test_snconv_training_step_matches_torch_reference(one_thread):
    """Train mode = one power-iteration step, then W / (u.Wv); torch's own spectral_norm as the reference."""
    torch.manual_seed(1)
    ref = torch.nn.utils.spectral_norm(torch.nn.Conv2d(4, 3, 3, padding=1))
    ours = SNConv2d(4, 3, kernel_size=3, padding=1)
    with torch.no_grad():
        ours.bias.copy_(ref.bias)
        ours.weight_orig.copy_(ref.weight_orig)
        ours.weight_u.copy_(ref.weight_u)
        ours.weight_v.copy_(ref.weight_v)
    u0 = ours.weight_u.clone()
    x = torch.randn(2, 4, 6, 6)
    ref.train()
    ours.train()
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-6)
    assert not torch.equal(ours.weight_u, u0)
    torch.testing.assert_close(ours.weight_u, ref.weight_u)
    torch.testing.assert_close(ours.weight_v, ref.weight_v)
    ref.eval()
    ours.eval()
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-6)


def test_snconv_training_converges_to_spectral_norm_and_is_differentiable(one_thread):
    torch.manual_seed(2)
    conv = SNConv2d(6, 4, kernel_size=3, padding=1, init_power_iterations=0).train()
    x = torch.randn(1, 6, 5, 5)
    for _ in range(200):
        out = conv(x)
    true_sigma = torch.linalg.matrix_norm(conv.weight_orig.detach().reshape(4, -1), ord=2)
    torch.testing.assert_close(conv.sigma().detach(), true_sigma, rtol=1e-4, atol=1e-6)
    out.square().mean().backward()
    assert conv.weight_orig.grad is not None and torch.isfinite(conv.weight_orig.grad).all()
    assert conv.weight_orig.grad.abs().sum() > 0
    assert not conv.weight_u.requires_grad and not conv.weight_v.requires_grad


def test_snconv_fresh_module_is_normalised():
    torch.manual_seed(3)
    conv = SNConv2d(8, 8, kernel_size=3, padding=1)
    true_sigma = torch.linalg.matrix_norm(conv.weight_orig.detach().reshape(8, -1), ord=2)
    assert abs(conv.sigma().item() - true_sigma.item()) / true_sigma.item() < 0.05


# --------------------------------------------------------------------------------------------------
# Scratch U-Net
# --------------------------------------------------------------------------------------------------


def _ref_unet(sd, x, depth):
    """Functional U-Net written from ARCHITECTURE §6 (F.* only), used as an independent reference."""

    def conv(p, x, pad):
        return F.conv2d(F.pad(x, (pad,) * 4, mode="reflect"), sd[p + ".weight"], sd[p + ".bias"])

    def bn(p, x):
        return F.batch_norm(x, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"], sd[p + ".bias"],
                            False, 0.0, 1e-5)

    def block(p, x):
        x = F.leaky_relu(bn(p + ".2", conv(p + ".1", x, 1)), 0.2)
        return F.leaky_relu(bn(p + ".6", conv(p + ".5", x, 1)), 0.2)

    x = F.leaky_relu(conv("first.1", x, 3), 0.2)
    skips = []
    for i in range(depth):
        skips.append(x)
        x = F.leaky_relu(bn(f"down_sample.{i}.2", conv(f"down_sample.{i}.1", x, 1)), 0.2)
        k = torch.tensor([1.0, 2.0, 1.0])
        filt = (torch.outer(k, k) / 16).expand(x.shape[1], 1, 3, 3)
        x = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), filt, stride=2, groups=x.shape[1])
        x = block(f"down_path.{i}.block", x)
    for j in range(depth):
        u = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        u = conv(f"up_path.{j}.up.2", u, 1)
        x = block(f"up_path.{j}.conv_block.block", torch.cat([u, skips[depth - 1 - j]], 1))
    return conv("last.1", x, 1)


@pytest.fixture(scope="module")
def official_unet(official_dir):
    net = ScratchUNet(ScratchUNetConfig.official())
    net.load_state_dict(seeded_state_dict(_manifest(official_dir, "scratch_unet"), 14), strict=True)
    return net.eval()


def test_unet_official_layout(official_dir):
    net = ScratchUNet(ScratchUNetConfig.official())
    _assert_layout_matches(net, _manifest(official_dir, "scratch_unet"))
    k = torch.tensor([1.0, 2.0, 1.0])
    for i, c in enumerate([64, 128, 256, 512]):
        torch.testing.assert_close(net.down_sample[i][4].filt, (torch.outer(k, k) / 16).expand(c, 1, 3, 3))


@pytest.mark.slow
def test_unet_golden(official_dir, official_unet):
    g = _golden(official_dir, "scratch_unet")
    with torch.no_grad():
        logits = official_unet(g["image"])
    assert logits.shape == g["logits"].shape
    assert (logits - g["logits"]).abs().max().item() <= GOLDEN_TOL


@pytest.mark.slow
def test_unet_other_seed_and_size_matches_functional_reference(official_dir):
    net = ScratchUNet(ScratchUNetConfig.official())
    sd = seeded_state_dict(_manifest(official_dir, "scratch_unet"), 77)
    net.load_state_dict(sd, strict=True)
    net.eval()
    x = torch.rand(2, 1, 48, 80, generator=torch.Generator().manual_seed(5)) * 2 - 1
    with torch.no_grad():
        out = net(x)
        ref = _ref_unet(sd, x, 4)
    assert out.shape == (2, 1, 48, 80)
    assert (out - ref).abs().max().item() <= GOLDEN_TOL
    # Eval mode: each sample independent of the batch (running statistics).
    with torch.no_grad():
        torch.testing.assert_close(net(x[1:]), out[1:], rtol=1e-4, atol=1e-4)


def test_unet_tiny_config_shapes_and_size_checks(one_thread):
    cfg = ScratchUNetConfig(depth=3, base_width=8)
    net = _seeded(ScratchUNet(cfg), 3)
    assert cfg.widths == [8, 16, 32, 64] and cfg.size_multiple == 8
    assert len(net.down_path) == len(net.down_sample) == len(net.up_path) == 3
    with torch.no_grad():
        assert net(torch.zeros(1, 1, 16, 24)).shape == (1, 1, 16, 24)
    with pytest.raises(ValueError, match="multiples of 8"):
        net(torch.zeros(1, 1, 20, 24))
    with pytest.raises(ValueError, match="N x 1 x H x W"):
        net(torch.zeros(1, 3, 16, 16))


def test_blur_downsample_size_and_filter(one_thread):
    down = BlurDownsample(2)
    x = torch.arange(2 * 5 * 7, dtype=torch.float32).reshape(1, 2, 5, 7)
    y = down(x)
    assert y.shape == (1, 2, 3, 4)  # ceil(n / 2)
    # Interior pixel: binomial-weighted mean of the 3x3 neighbourhood centred at (2, 2).
    k = torch.outer(torch.tensor([1.0, 2.0, 1.0]), torch.tensor([1.0, 2.0, 1.0])) / 16
    assert torch.isclose(y[0, 1, 1, 1], (x[0, 1, 1:4, 1:4] * k).sum())
    # A constant image stays constant (filter sums to one, reflect padding).
    torch.testing.assert_close(down(torch.full((1, 2, 6, 6), 0.3)), torch.full((1, 2, 3, 3), 0.3))


def test_unet_tiny_trains(one_thread):
    torch.manual_seed(0)
    net = ScratchUNet(ScratchUNetConfig.tiny()).train()
    x = torch.rand(4, 1, 32, 32) * 2 - 1
    target = (x > 0.5).float()  # learnable: bright pixels are "scratches"
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(net(x), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]
    assert net.down_path[0].block[2].num_batches_tracked.item() == 8


# --------------------------------------------------------------------------------------------------
# SPADE face generator
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def face_256(official_dir):
    net = SPADEFaceGenerator(SPADEFaceConfig.official(256))
    net.load_state_dict(seeded_state_dict(_manifest(official_dir, "face_spade_256"), 15), strict=True)
    return net.eval()


@pytest.mark.slow
def test_face_official_layout(official_dir, face_256):
    assert face_256.cfg.start_size == 8
    # Same architecture at 512; only the start size differs.
    assert SPADEFaceConfig.official(512).start_size == 16
    _assert_layout_matches(face_256, _manifest(official_dir, "face_spade_256"))
    assert _manifest(official_dir, "face_spade_512")["state_dict"] == _manifest(official_dir, "face_spade_256")[
        "state_dict"
    ]
    with pytest.raises(ValueError):
        SPADEFaceConfig.official(384)


@pytest.mark.slow
def test_face_256_golden(official_dir, face_256):
    g = _golden(official_dir, "face_spade_256")
    with torch.no_grad():
        out = face_256(g["face"])
    assert out.shape == g["output"].shape == (1, 3, 256, 256)
    assert (out - g["output"]).abs().max().item() <= GOLDEN_TOL


def _ref_face(sd, face, cfg):
    """Functional SPADE generator written from ARCHITECTURE §7 (F.* only), used as an independent reference."""

    def rs(t, size):
        return F.interpolate(t, size=size, mode="bilinear", align_corners=False)

    def sn_conv(p, x, pad):
        w = sd[p + ".weight_orig"]
        sigma = torch.dot(sd[p + ".weight_u"], w.reshape(w.shape[0], -1) @ sd[p + ".weight_v"])
        return F.conv2d(x, w / sigma, sd.get(p + ".bias"), padding=pad)

    def spade(p, x):
        n = F.batch_norm(x, sd[p + ".param_free_norm.running_mean"], sd[p + ".param_free_norm.running_var"],
                         None, None, False, 0.0, 1e-5)
        a = F.relu(F.conv2d(rs(face, x.shape[-2:]), sd[p + ".mlp_shared.0.weight"], sd[p + ".mlp_shared.0.bias"],
                            padding=1))
        gamma = F.conv2d(a, sd[p + ".mlp_gamma.weight"], sd[p + ".mlp_gamma.bias"], padding=1)
        beta = F.conv2d(a, sd[p + ".mlp_beta.weight"], sd[p + ".mlp_beta.bias"], padding=1)
        return n * (1 + gamma) + beta

    def block(p, x):
        xs = sn_conv(p + ".conv_s", spade(p + ".norm_s", x), 0) if p + ".conv_s.weight_orig" in sd else x
        dx = sn_conv(p + ".conv_0", F.leaky_relu(spade(p + ".norm_0", x), 0.2), 1)
        dx = sn_conv(p + ".conv_1", F.leaky_relu(spade(p + ".norm_1", dx), 0.2), 1)
        return xs + dx

    s = cfg.load_size // 32
    x = F.conv2d(rs(face, (s, s)), sd["fc.weight"], sd["fc.bias"], padding=1)
    x = block("head_0", x)
    x = F.interpolate(x, scale_factor=2, mode="nearest")
    x = block("G_middle_1", block("G_middle_0", x))
    for name in ("up_0", "up_1", "up_2", "up_3"):
        x = block(name, F.interpolate(x, scale_factor=2, mode="nearest"))
    return torch.tanh(F.conv2d(F.leaky_relu(x, 0.2), sd["conv_img.weight"], sd["conv_img.bias"], padding=1))


@pytest.mark.parametrize("seed,in_size", [(21, 64), (22, 80)])
def test_face_tiny_matches_functional_reference(seed, in_size, one_thread):
    cfg = SPADEFaceConfig(load_size=64, ngf=8, spade_hidden=16)
    net = _seeded(SPADEFaceGenerator(cfg), seed)
    face = torch.rand(2, 3, in_size, in_size, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    with torch.no_grad():
        out = net(face)
        ref = _ref_face(net.state_dict(), face, cfg)
        single = net(face[:1])
    assert out.shape == (2, 3, 64, 64)
    assert (out - ref).abs().max().item() <= GOLDEN_TOL
    assert out.abs().max() < 1
    torch.testing.assert_close(single, out[:1], rtol=1e-4, atol=1e-5)  # eval: samples independent


def test_face_spectral_norm_uses_stored_u(one_thread):
    net = _seeded(SPADEFaceGenerator(SPADEFaceConfig.tiny(load_size=32)), 4)
    face = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(4)) * 2 - 1
    conv = net.up_3.conv_1
    with torch.no_grad():
        before = net(face)
        again = net(face)
        conv.weight_u.mul_(-1.5)  # sigma scales by -1.5: a different effective weight
        after = net(face)
    assert torch.equal(before, again)  # eval: deterministic, u and v not iterated
    assert (after - before).abs().max().item() > 1e-3


def test_face_blocks_structure(one_thread):
    cfg = SPADEFaceConfig.tiny()
    net = SPADEFaceGenerator(cfg)
    for name in ("head_0", "G_middle_0", "G_middle_1"):
        assert not getattr(net, name).learned_shortcut and not hasattr(getattr(net, name), "conv_s")
    for name in ("up_0", "up_1", "up_2", "up_3"):
        assert getattr(net, name).learned_shortcut and getattr(net, name).conv_s.bias is None
    spade = SPADE(5, 3, 7)
    assert not spade.param_free_norm.affine and spade.param_free_norm.track_running_stats
    blk = SPADEResnetBlock(6, 4, 3, 7)
    assert blk.conv_0.out_channels == 4 and blk.norm_1.mlp_gamma.out_channels == 4
    with pytest.raises(ValueError):
        net(torch.zeros(1, 1, 64, 64))
    with pytest.raises(ValueError):
        SPADEFaceConfig(load_size=100)


def test_face_tiny_trains_and_updates_spectral_vectors(one_thread):
    torch.manual_seed(0)
    net = SPADEFaceGenerator(SPADEFaceConfig.tiny(load_size=32)).train()
    face = torch.rand(2, 3, 32, 32) * 2 - 1
    target = face.flip(-1) * 0.5
    u0 = net.up_1.conv_0.weight_u.clone()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    losses = []
    for _ in range(6):
        opt.zero_grad()
        loss = F.l1_loss(net(face), target)
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert not torch.equal(net.up_1.conv_0.weight_u, u0)  # power iteration ran in training mode
    assert net.up_1.norm_0.param_free_norm.num_batches_tracked.item() == 6
    # Back in eval mode u, v stay fixed.
    net.eval()
    u1 = net.up_1.conv_0.weight_u.clone()
    with torch.no_grad():
        net(face)
    assert torch.equal(net.up_1.conv_0.weight_u, u1)
