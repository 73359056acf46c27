"""Global-restoration networks: official layouts, golden outputs, attention semantics, tiny configs."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from oldphoto.networks.blocks import ResnetBlock, mask_hit, mask_keep
from oldphoto.networks.mapping import MappingConfig, MappingNet
from oldphoto.networks.mapping_nonlocal import (
    NonLocalMappingConfig,
    NonLocalMappingNet,
    masked_attention,
    masked_attention_direct,
)
from oldphoto.networks.mapping_patch_attention import (
    AllPatchesMaskedError,
    PatchAttention,
    PatchAttentionMappingConfig,
    PatchAttentionMappingNet,
)
from oldphoto.networks.vae import VAE, VAEConfig
from oldphoto.testing import seeded as seeded_weights


NETS = {
    "vae_a": (VAE, VAEConfig),
    "vae_b": (VAE, VAEConfig),
    "mapping_quality": (MappingNet, MappingConfig),
    "mapping_scratch": (NonLocalMappingNet, NonLocalMappingConfig),
    "mapping_Patch_Attention": (PatchAttentionMappingNet, PatchAttentionMappingConfig),
}


def _manifest(official_dir, name):
    return seeded_weights.load_manifest(str(official_dir / "manifests" / f"{name}.json"))


def _seeded(official_dir, name, seed):
    net_cls, cfg_cls = NETS[name]
    with torch.device("meta"):  # skip the random init of ~75 M parameters; strict load assigns real tensors
        net = net_cls(cfg_cls.official())
    net.load_state_dict(seeded_weights.seeded_state_dict(_manifest(official_dir, name), seed), strict=True, assign=True)
    assert not any(p.is_meta for p in net.parameters())
    return net.eval()


@pytest.fixture(scope="module")
def nets(official_dir):
    """Official-size networks with the goldens' seeded weights, built once per module."""
    cache: dict = {}

    def get(name, seed):
        key = (name, seed)
        if key not in cache:
            cache[key] = _seeded(official_dir, name, seed)
        return cache[key]

    return get


def _maxdiff(a, b):
    return float((torch.as_tensor(a) - torch.as_tensor(b)).abs().max())


# ------------------------------------------------------------------------------------------
# official layout


@pytest.mark.parametrize("name", list(NETS))
def test_official_keys_shapes_and_parameter_counts(official_dir, name):
    man = _manifest(official_dir, name)
    net_cls, cfg_cls = NETS[name]
    with torch.device("meta"):
        net = net_cls(cfg_cls.official())
    sd = net.state_dict()
    assert [(k, list(v.shape), str(v.dtype).replace("torch.", "")) for k, v in sd.items()] == [
        (k, list(s), d) for k, s, d in man["state_dict"]
    ]
    assert sum(p.numel() for p in net.parameters()) == man["num_parameters"]
    assert sum(v.numel() for v in sd.values()) == man["state_dict_numel"]


def test_resnet_block_is_residual_without_final_activation():
    torch.manual_seed(0)
    blk = ResnetBlock(4)
    x = torch.randn(1, 4, 6, 7)
    assert [k for k in blk.state_dict()] == [
        "conv_block.1.weight",
        "conv_block.1.bias",
        "conv_block.5.weight",
        "conv_block.5.bias",
    ]
    with torch.no_grad():
        out = blk(x)
        # the inner branch ends with IN: zero mean per channel, so out - x has zero spatial mean
        assert _maxdiff((out - x).mean(dim=(2, 3)), torch.zeros(1, 4)) < 1e-5
        assert (out < 0).any()  # no ReLU after the sum


# ------------------------------------------------------------------------------------------
# goldens

GOLDENS = [
    ("quality", "mapping_quality"),
    ("scratch", "mapping_scratch"),
    ("hr", "mapping_Patch_Attention"),
]


@pytest.mark.parametrize("golden,mapping", GOLDENS)
@pytest.mark.slow
def test_stage1_goldens(official_dir, nets, golden, mapping):
    d = np.load(official_dir / "golden" / f"stage1_{golden}.npz")
    image, mask = torch.from_numpy(d["image"]), torch.from_numpy(d["mask"])
    with torch.no_grad():
        latent_a = nets("vae_a", 11).encode(image)
        assert _maxdiff(latent_a, d["latent_a"]) <= 1e-4
        # each stage from the golden's own input, so errors cannot hide behind each other
        mapped = nets(mapping, 13)(torch.from_numpy(d["latent_a"]), mask)
        assert _maxdiff(mapped, d["latent_mapped"]) <= 1e-4
        out = nets("vae_b", 12).decode(torch.from_numpy(d["latent_mapped"]))
        assert _maxdiff(out, d["output"]) <= 1e-4


def test_scratch_golden_direct_path_too(official_dir, nets):
    d = np.load(official_dir / "golden" / "stage1_scratch.npz")
    net = nets("mapping_scratch", 13)
    net.attention = "direct"
    try:
        with torch.no_grad():
            mapped = net(torch.from_numpy(d["latent_a"]), torch.from_numpy(d["mask"]))
    finally:
        net.attention = "chunked"
    assert _maxdiff(mapped, d["latent_mapped"]) <= 1e-4


def test_vae_sizes_not_multiple_of_four(nets):
    vae = nets("vae_a", 11)
    with torch.no_grad():
        z = vae.encode(torch.rand(1, 3, 50, 70) * 2 - 1)
        assert z.shape == (1, 64, 12, 17)
        y = vae.decode(z)
    assert y.shape == (1, 3, 48, 68)
    assert y.abs().max() < 1


# ------------------------------------------------------------------------------------------
# mask resizing (independent numpy reimplementation of torch's resize conventions)


def _np_bilinear(m: np.ndarray, h: int, w: int) -> np.ndarray:
    """torch's bilinear (align_corners False, no antialias), in float32 arithmetic as torch does it.

    Source coordinate (dst + 0.5) * in/out - 0.5, clamped at 0; with float32 the tiny weights at
    non-integer scales round the same way as torch's, so the "> 0" hit test agrees exactly.
    """
    f32 = np.float32
    m = m.astype(f32)
    H, W = m.shape

    def axis(n_out, n_in):
        src = np.maximum((np.arange(n_out, dtype=f32) + f32(0.5)) * (f32(n_in) / f32(n_out)) - f32(0.5), f32(0))
        i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, (src - i0).astype(f32)

    r0, r1, fr = axis(h, H)
    c0, c1, fc = axis(w, W)
    top = m[r0][:, c0] * (1 - fc) + m[r0][:, c1] * fc
    bot = m[r1][:, c0] * (1 - fc) + m[r1][:, c1] * fc
    return top * (1 - fr[:, None]) + bot * fr[:, None]


def _np_nearest(m: np.ndarray, h: int, w: int) -> np.ndarray:
    H, W = m.shape
    r = np.minimum(np.floor(np.arange(h) * (H / h)).astype(int), H - 1)
    c = np.minimum(np.floor(np.arange(w) * (W / w)).astype(int), W - 1)
    return m[r][:, c]


def _random_mask(rng, H, W, frac=0.15, n_rect=3):
    m = (rng.random((H, W)) < frac).astype(np.float32)
    for _ in range(n_rect):
        r, c = rng.integers(0, H), rng.integers(0, W)
        m[r : r + rng.integers(1, H // 2 + 2), c : c + rng.integers(1, 4)] = 1  # scratch-like strokes
    return m


def test_keep_mask_factor_four_pixel_rule():
    rng = np.random.default_rng(1)
    m = _random_mask(rng, 40, 52)
    keep = mask_keep(torch.from_numpy(m)[None, None], (10, 13))[0, 0].numpy()
    for i in range(10):
        for j in range(13):
            valid = m[4 * i + 1 : 4 * i + 3, 4 * j + 1 : 4 * j + 3].sum() == 0 and m[4 * i, 4 * j] == 0
            assert keep[i, j] == float(valid)


@pytest.mark.parametrize("H,W,h,w", [(53, 77, 13, 19), (64, 96, 16, 24), (30, 31, 11, 7)])
def test_keep_and_hit_masks_any_size_and_fractional(H, W, h, w):
    rng = np.random.default_rng(H * W)
    m = _random_mask(rng, H, W)
    m[rng.random((H, W)) < 0.05] = 0.5  # fractional values are allowed
    t = torch.from_numpy(m)[None, None]
    hit = (_np_bilinear(m, h, w) > 0).astype(np.float64)
    near = _np_nearest(1.0 - m.astype(np.float64), h, w)
    np.testing.assert_allclose(mask_hit(t, (h, w))[0, 0].numpy(), hit)
    np.testing.assert_allclose(mask_keep(t, (h, w))[0, 0].numpy(), (1 - hit) * near, atol=1e-7)


# ------------------------------------------------------------------------------------------
# partial nonlocal attention: chunked == direct


def _attn_inputs(seed, b, n, c, keep_kind):
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(b, n, c, generator=g)
    phi = torch.randn(b, c, n, generator=g)
    val = torch.randn(b, n, c, generator=g)
    if keep_kind == "all_valid":
        keep = torch.ones(b, 1, n)
    elif keep_kind == "mostly_defect":
        keep = (torch.rand(b, 1, n, generator=g) < 0.05).float()
    elif keep_kind == "none_valid":
        keep = torch.zeros(b, 1, n)
    else:  # random binary with some fractional weights
        keep = (torch.rand(b, 1, n, generator=g) < 0.6).float()
        keep[torch.rand(b, 1, n, generator=g) < 0.1] = 0.5
    return theta, phi, val, keep


@pytest.mark.parametrize("keep_kind", ["random", "all_valid", "mostly_defect", "none_valid"])
@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_chunked_attention_equals_direct(keep_kind, chunk):
    theta, phi, val, keep = _attn_inputs(chunk, 2, 61, 8, keep_kind)
    direct = masked_attention_direct(theta, phi, val, keep)
    chunked = masked_attention(theta, phi, val, keep, chunk=chunk)
    assert _maxdiff(chunked, direct) < 1e-5
    # the direct path itself against a float64 evaluation of the formula written out
    a = torch.softmax(theta.double() @ phi.double(), dim=-1) * keep.double()
    a = a / a.abs().sum(-1, keepdim=True).clamp_min(1e-12)
    assert _maxdiff(direct.double(), a @ val.double()) < 1e-5
    if keep_kind == "none_valid":
        assert float(chunked.abs().max()) == 0.0  # no valid key: the row becomes all zeros
    if keep_kind == "mostly_defect":
        # every output row is a convex combination of valid value rows only
        for bi in range(2):
            valid = keep[bi, 0] > 0
            if valid.any():
                lo = val[bi][valid].min(0).values - 1e-5
                hi = val[bi][valid].max(0).values + 1e-5
                assert bool(((chunked[bi] >= lo) & (chunked[bi] <= hi)).all())


@pytest.mark.parametrize("keep_kind", ["random", "mostly_defect", "none_valid"])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_chunked_attention_gradients_match_direct(keep_kind, temperature):
    theta, phi, val, keep = (t.double() for t in _attn_inputs(3, 2, 37, 6, keep_kind))
    weights = torch.randn(2, 37, 6, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    grads = []
    for fn in (masked_attention_direct, lambda *a: masked_attention(*a, chunk=5)):
        ts = [t.clone().requires_grad_(True) for t in (theta, phi, val)]
        (fn(*ts, keep, temperature) * weights).sum().backward()
        grads.append([t.grad for t in ts])
    for gd, gc in zip(*grads):
        assert _maxdiff(gd, gc) < 1e-10


@pytest.fixture(scope="module")
def scratch_net(nets):
    net = nets("mapping_scratch", 13)
    yield net
    net.attention, net.NL.query_chunk = "chunked", None


def test_scratch_mapping_odd_size_chunked_equals_direct(scratch_net):
    net = scratch_net
    rng = np.random.default_rng(7)
    z = torch.from_numpy(rng.standard_normal((1, 64, 13, 19)).astype(np.float32))
    mask = torch.from_numpy(_random_mask(rng, 53, 77))[None, None]  # not a multiple of 4
    with torch.no_grad():
        net.NL.query_chunk = 17  # 247 positions -> 15 chunks, the last one partial
        net.attention = "chunked"
        chunked = net(z, mask)
        net.attention = "direct"
        direct = net(z, mask)
        net.attention, net.NL.query_chunk = "chunked", None
    assert _maxdiff(chunked, direct) <= 1e-4
    # fusion: valid latent positions keep the before_NL feature exactly, scratched ones change
    with torch.no_grad():
        x = net.before_NL(z)
        nl = net.NL(x, mask)
    keep = mask_keep(mask, (13, 19))
    assert 0 < float(keep.sum()) < keep.numel()
    assert _maxdiff(nl * keep, x * keep) == 0.0
    assert _maxdiff(nl * (1 - keep), x * (1 - keep)) > 1e-3


@pytest.mark.slow
def test_scratch_mapping_clean_mask_is_plain_mapping(scratch_net):
    net = scratch_net
    z = torch.randn(1, 64, 9, 11, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        plain = net.after_NL(net.before_NL(z))
        net.attention = "direct"  # computes the attention and multiplies it by (1 - keep) = 0
        direct = net(z, torch.zeros(1, 1, 36, 44))
        net.attention = "chunked"  # skips the attention when nothing is masked
        chunked = net(z, torch.zeros(1, 1, 36, 44))
        no_mask = net(z, None)
    assert _maxdiff(direct, plain) == 0.0
    assert _maxdiff(chunked, plain) == 0.0
    assert _maxdiff(no_mask, plain) == 0.0


def test_scratch_mapping_batch_uses_own_masks():
    torch.manual_seed(0)
    net = NonLocalMappingNet(NonLocalMappingConfig.tiny()).eval()
    z = torch.randn(2, 16, 8, 10)
    rng = np.random.default_rng(3)
    masks = torch.from_numpy(np.stack([_random_mask(rng, 32, 40) for _ in range(2)]))[:, None]
    with torch.no_grad():
        both = net(z, masks)
        for i in range(2):
            # float32 batched vs single matmuls differ by ~1e-5 depending on the kernel chosen; a mixed-up mask
            # would change the output by O(1)
            assert _maxdiff(both[i : i + 1], net(z[i : i + 1], masks[i : i + 1])) < 1e-4


# ------------------------------------------------------------------------------------------
# HR patch attention against a loop-by-loop reference of the official inference_forward


def _ref_compose(x: torch.Tensor, m0: torch.Tensor, ps: int) -> torch.Tensor:
    b, c, h, w = x.shape
    nh, nw = h // ps, w // ps
    cells = [(r, q) for r in range(nh) for q in range(nw)]
    sel = [float(m0[r * ps : (r + 1) * ps, q * ps : (q + 1) * ps].mean()) > 0.6 for r, q in cells]
    if not any(sel):
        return x
    if all(sel):
        raise AssertionError("reference: all selected")
    comp = torch.zeros_like(x)
    for bi in range(b):
        vecs = [x[bi, :, r * ps : (r + 1) * ps, q * ps : (q + 1) * ps].double() for r, q in cells]
        for li, (r, q) in enumerate(cells):
            src = vecs[li]
            if sel[li]:
                best, best_sim = None, -math.inf
                for lk in range(len(cells)):
                    if sel[lk]:
                        continue
                    s = float((vecs[li] * vecs[lk]).sum() / (vecs[li].norm() * vecs[lk].norm()))
                    if s > best_sim:  # strict: first index wins ties
                        best, best_sim = lk, s
                src = vecs[best]
            comp[bi, :, r * ps : (r + 1) * ps, q * ps : (q + 1) * ps] = src.float()
    return comp


def _ref_patch_mapping(net: PatchAttentionMappingNet, z, mask):
    x = net.before_NL(z)
    scales = net.scales()
    for i, pa in enumerate(scales, start=1):
        xr = pa.res_block(x)
        h, w = xr.shape[-2:]
        m = torch.from_numpy((_np_bilinear(mask[0, 0].numpy(), h, w) > 0).astype(np.float32))
        m = m[None, None].expand(x.shape[0], 1, h, w)  # (tests use one mask for the batch)
        comp = _ref_compose(xr, m[0, 0], pa.patch_size)
        x = pa.F_Combine(torch.cat([x, comp, m], dim=1))
        if i < len(scales):
            x = getattr(net, f"res_block_{i}")(x)
    return net.after_NL(x)


def _hr_mask(H, W):
    m = np.zeros((H, W), np.float32)
    m[: H // 2, : W // 3] = 1  # a big hole: selected at every patch size
    m[:, W // 2 : W // 2 + 3] = 1  # a thin scratch: selected only at small patch sizes
    m[H - 5 :, :] = 1  # bottom rows: fall in the patch-8 remainder for latent side 22
    return m


@pytest.mark.slow
def test_patch_attention_tiny_matches_reference_odd_sizes():
    torch.manual_seed(4)
    net = PatchAttentionMappingNet(PatchAttentionMappingConfig.tiny()).eval()
    for (H, W), (h, w) in [((88, 120), (22, 30)), ((87, 101), (21, 25))]:
        z = torch.randn(2, 16, h, w)
        mask = torch.from_numpy(_hr_mask(H, W))[None, None]
        with torch.no_grad():
            x = net.before_NL(z)
            m = mask_hit(mask, (h, w))
            assert bool(net.NL_scale_1.hole_patches(m).any())  # the coarse scale really selects
            out = net(z, mask)
            ref = _ref_patch_mapping(net, z, mask)
        assert _maxdiff(out, ref) < 1e-4, (H, W)
        # remainder rows/cols of the composed map are zero when patches are selected
        with torch.no_grad():
            xr = net.NL_scale_1.res_block(x)
            comp = net.NL_scale_1.compose(xr, net.NL_scale_1.hole_patches(m))
            assert (h % 8, w % 8) != (0, 0)
        assert float(comp[:, :, (h // 8) * 8 :, :].abs().sum()) == 0.0
        assert float(comp[:, :, :, (w // 8) * 8 :].abs().sum()) == 0.0
        assert float(comp[:, :, : (h // 8) * 8, : (w // 8) * 8].abs().min()) > 0


def test_patch_attention_only_first_batch_mask_selects():
    torch.manual_seed(5)
    pa = PatchAttention(8, 2).eval()
    x = torch.randn(2, 8, 8, 8)
    m = torch.zeros(2, 1, 8, 8)
    m[0, :, :4, :4] = 1
    sel = pa.hole_patches(m)
    assert int(sel.sum()) == 4
    comp = pa.compose(x, sel)
    # batch element 1 has an empty mask yet its patches are replaced too (official behaviour)
    assert _maxdiff(comp[1, :, :4, :4], x[1, :, :4, :4]) > 0
    assert _maxdiff(comp[:, :, 4:, :], x[:, :, 4:, :]) == 0.0


def test_patch_attention_all_selected_raises():
    torch.manual_seed(6)
    net = PatchAttentionMappingNet(PatchAttentionMappingConfig.tiny()).eval()
    with torch.no_grad(), pytest.raises(ValueError, match="every 8x8 latent patch is masked"):
        net(torch.randn(1, 16, 16, 16), torch.ones(1, 1, 64, 64))
    assert issubclass(AllPatchesMaskedError, ValueError)


def test_patch_attention_no_selection_keeps_remainder():
    torch.manual_seed(7)
    pa = PatchAttention(8, 8).eval()
    zin = torch.randn(1, 8, 12, 12)
    with torch.no_grad():
        out = pa(zin, torch.zeros(1, 1, 48, 48))
        x = pa.res_block(zin)
        ref = pa.F_Combine(torch.cat([zin, x, torch.zeros(1, 1, 12, 12)], 1))
    assert _maxdiff(out, ref) == 0.0


@pytest.mark.slow
def test_hr_mapping_official_other_size(nets):
    net = nets("mapping_Patch_Attention", 13)
    z = torch.randn(1, 64, 22, 30, generator=torch.Generator().manual_seed(8))
    mask = torch.from_numpy(_hr_mask(88, 120))[None, None]
    with torch.no_grad():
        out = net(z, mask)
        ref = _ref_patch_mapping(net, z, mask)
    assert out.shape == z.shape
    assert _maxdiff(out, ref) < 1e-4


# ------------------------------------------------------------------------------------------
# tiny configs train


@pytest.mark.parametrize(
    "net,inputs",
    [
        (lambda: VAE(VAEConfig.tiny()), lambda: (torch.rand(2, 3, 36, 44) * 2 - 1,)),
        (lambda: MappingNet(MappingConfig.tiny()), lambda: (torch.randn(2, 16, 9, 11), None)),
        (
            lambda: NonLocalMappingNet(NonLocalMappingConfig(latent_channels=16, width=32, query_chunk=13)),
            lambda: (torch.randn(2, 16, 9, 11), (torch.rand(2, 1, 36, 44) > 0.7).float()),
        ),
        (
            lambda: PatchAttentionMappingNet(PatchAttentionMappingConfig.tiny()),
            lambda: (torch.randn(2, 16, 18, 18), torch.from_numpy(_hr_mask(72, 72))[None, None]),
        ),
    ],
    ids=["vae", "mapping", "nonlocal", "patch_attention"],
)
@pytest.mark.slow
def test_tiny_configs_forward_backward(net, inputs):
    torch.manual_seed(0)
    model = net().train()
    args = inputs()
    out = model(*args)
    assert out.shape[1] == args[0].shape[1]
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    assert sum(p.numel() for p in model.parameters()) < 500_000


@pytest.mark.slow
def test_tiny_nonlocal_training_gradients_chunked_equal_direct():
    torch.manual_seed(1)
    cfg = NonLocalMappingConfig(latent_channels=16, width=32, n_res_nl=1, n_res_after=1, query_chunk=10)
    net = NonLocalMappingNet(cfg).train()
    z = torch.randn(1, 16, 8, 9)
    mask = (torch.rand(1, 1, 32, 36) > 0.8).float()
    grads = {}
    for mode in ("chunked", "direct"):
        net.zero_grad()
        net.attention = mode
        net(z, mask).square().sum().backward()
        grads[mode] = [p.grad.clone() for p in net.parameters()]
    for a, b in zip(grads["chunked"], grads["direct"]):
        assert _maxdiff(a, b) < 1e-4 * max(1.0, float(b.abs().max()))


def test_config_validation():
    with pytest.raises(ValueError):
        NonLocalMappingConfig(attention="fast")
    with pytest.raises(ValueError):
        PatchAttentionMappingConfig(patch_sizes=())
    with pytest.raises(ValueError, match="mask must have shape"):
        NonLocalMappingNet(NonLocalMappingConfig.tiny())(torch.randn(1, 16, 4, 4), torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError):
        VAE(VAEConfig.tiny()).encode(torch.zeros(1, 1, 32, 32))
    vae = VAE(VAEConfig.tiny())
    assert vae.encode(torch.zeros(1, 3, 8, 9)).shape == (1, 16, 2, 2)
    with pytest.raises(ValueError, match="image too small"):
        vae.encode(torch.zeros(1, 3, 7, 40))
    with pytest.raises(ValueError, match=r"mask values must lie in \[0, 1\]"):
        PatchAttentionMappingNet(PatchAttentionMappingConfig.tiny())(
            torch.randn(1, 16, 8, 8), torch.full((1, 1, 32, 32), 255.0)
        )


# --------------------------------------------------------------------------------------------
# norm option: "instance" (official) vs "none" (oldphoto's small presets)


@pytest.mark.parametrize("make", [
    lambda norm: VAE(VAEConfig(channels=8, n_res_enc=1, n_res_dec=1, norm=norm)),
    lambda norm: MappingNet(MappingConfig(latent_channels=8, width=16, n_blocks=1, norm=norm)),
    lambda norm: NonLocalMappingNet(NonLocalMappingConfig(latent_channels=8, width=16, n_res_nl=1, n_res_after=1,
                                                          norm=norm)),
    lambda norm: PatchAttentionMappingNet(PatchAttentionMappingConfig(latent_channels=8, width=16, n_res_before=1,
                                                                      n_res_between=1, n_res_after=1, norm=norm)),
])
def test_norm_choice_keeps_the_state_dict_layout(make):
    a, b = make("instance"), make("none")
    assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}
    b.load_state_dict(a.state_dict(), strict=True)
    assert not any(isinstance(m, torch.nn.InstanceNorm2d) for m in b.modules())
    assert sum(isinstance(m, torch.nn.InstanceNorm2d) for m in a.modules()) > 0


@pytest.mark.slow
def test_instance_norm_vae_cannot_see_a_global_brightness_shift_but_norm_none_can():
    """Why the small presets use norm "none": an instance-normalised VAE maps x and x + c to the same output
    (reflection padding, so no border cue), whatever its weights; without the norm the shift reaches the output."""
    torch.manual_seed(0)
    x = torch.rand(1, 3, 32, 32) * 1.2 - 0.8
    for norm, same in (("instance", True), ("none", False)):
        torch.manual_seed(1)
        vae = VAE(VAEConfig(channels=8, n_res_enc=1, n_res_dec=1, norm=norm)).eval()
        with torch.no_grad():
            y0, y1 = vae(x), vae(x + 0.3)
        assert torch.allclose(y0, y1, atol=1e-4) is same, norm


def test_unknown_norm_is_refused():
    for cfg in (lambda: VAEConfig(norm="batch"), lambda: MappingConfig(norm="layer"),
                lambda: NonLocalMappingConfig(norm=""), lambda: PatchAttentionMappingConfig(norm="group")):
        with pytest.raises(ValueError, match="norm must be one of"):
            cfg()


@pytest.mark.parametrize("fractional", [False, True])
def test_attention_keeps_the_official_eps_where_valid_keys_hold_almost_nothing(fractional):
    """Similarities of ~100 (512-channel features): some rows give their valid keys < 1e-12 of the softmax;
    the official renormalisation divides by max(mass, 1e-12), so those rows come out scaled down."""
    theta, phi, val, keep = _attn_inputs(11, 2, 70, 8, "random")
    if not fractional:
        keep = (keep > 0.7).float()
    theta, phi = theta * 6.0, phi * 6.0
    a = torch.softmax(theta.double() @ phi.double(), dim=-1)
    mass = (a * keep.double()).sum(-1)
    assert bool((mass < 1e-12).any()) and bool((mass > 1e-6).any())
    direct = masked_attention_direct(theta, phi, val, keep)
    fused = masked_attention(theta, phi, val, keep, chunk=16)
    assert _maxdiff(fused, direct) < 1e-5
    small = mass < 1e-18                                   # these rows are scaled down, not renormalised
    assert float(fused[small].abs().max()) < 1e-6 < float(fused[~small].abs().max())
