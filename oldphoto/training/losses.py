"""Training losses of the method (Wan et al.), as small pure functions on tensors.

Every function returns a scalar tensor (mean reduction) so the trainers can weight and sum them.
Conventions: images in [-1, 1]; discriminator outputs are raw scores (LSGAN has no sigmoid);
masks are 1 = defect (scratch), 0 = clean.

- VAE:      ``kl_unit_variance(mu)`` + ``alpha * l1(recon, input)`` + LSGAN (``lsgan_d`` / ``lsgan_g``)
- Mapping:  ``lambda1 * l1(T(z_x), z_y)`` + LSGAN + ``lambda2 * (feature_matching(...) + perceptual)``
- Scratch:  ``scratch_loss(logits, mask)`` = class-balanced CE + ``beta * focal`` (gamma 0.2, beta 10)
- Face:     LSGAN + feature matching + perceptual
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

# Loss weights from the paper (Wan et al. 2020).
VAE_ALPHA = 10.0          # L1 reconstruction weight in the VAE objective
MAPPING_LAMBDA1 = 60.0    # latent L1 weight in the mapping objective
MAPPING_LAMBDA2 = 10.0    # feature-matching (discriminator + VGG) weight
FOCAL_GAMMA = 0.2
FOCAL_BETA = 10.0


def kl_unit_variance(mu: torch.Tensor) -> torch.Tensor:
    """KL( N(mu, I) || N(0, I) ) per latent element, averaged: ``0.5 * mean(mu**2)``.

    Our VAE latent is the encoder output taken as the *mean* of a Gaussian with fixed unit variance
    (the official networks have a deterministic latent, no log-variance head). For unit variance the
    closed-form KL per element is ``0.5 * mu**2`` (the ``sigma**2 - 1 - log sigma**2`` terms vanish).
    The reparameterisation is then ``z = mu + eps``, eps ~ N(0, I) (see ``reparameterise``).
    """
    return 0.5 * mu.pow(2).mean()


def kl_gaussian(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL( N(mu, exp(logvar)) || N(0, I) ) per element, averaged (for networks with a log-variance head)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).mean()


def reparameterise(mu: torch.Tensor, generator: torch.Generator | None = None,
                   logvar: torch.Tensor | None = None) -> torch.Tensor:
    """``z = mu + sigma * eps``; sigma = 1 unless ``logvar`` is given."""
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    if logvar is None:
        return mu + eps
    return mu + torch.exp(0.5 * logvar) * eps


def l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).abs().mean()


def _as_list(pred) -> list[torch.Tensor]:
    """Discriminator outputs may be one tensor, a list of scores, or a list (per scale) of feature lists
    whose last entry is the score. Returns the list of score tensors."""
    if isinstance(pred, torch.Tensor):
        return [pred]
    out = []
    for p in pred:
        out.append(p[-1] if isinstance(p, (list, tuple)) else p)
    return out


def lsgan_d(real_pred, fake_pred) -> torch.Tensor:
    """LSGAN discriminator loss: ``0.5 * (E[(D(real) - 1)^2] + E[D(fake)^2])``, averaged over scales."""
    reals, fakes = _as_list(real_pred), _as_list(fake_pred)
    total = sum(0.5 * ((r - 1.0).pow(2).mean() + f.pow(2).mean()) for r, f in zip(reals, fakes))
    return total / len(reals)


def lsgan_g(fake_pred) -> torch.Tensor:
    """LSGAN generator loss: ``E[(D(fake) - 1)^2]``, averaged over scales."""
    fakes = _as_list(fake_pred)
    return sum((f - 1.0).pow(2).mean() for f in fakes) / len(fakes)


def latent_d_loss(d_real_photo: torch.Tensor, d_synthetic: torch.Tensor) -> torch.Tensor:
    """Latent discriminator D_RX (the paper): ``E_x[D(E(x))^2] + E_r[(1 - D(E(r)))^2]``.

    Real old photos (domain R) are labelled 1, synthetic old photos (domain X) 0.
    """
    return d_synthetic.pow(2).mean() + (1.0 - d_real_photo).pow(2).mean()


def latent_g_loss(d_real_photo: torch.Tensor, d_synthetic: torch.Tensor) -> torch.Tensor:
    """The encoder fools D_RX by swapping the labels (it wants R and X latents indistinguishable)."""
    return (1.0 - d_synthetic).pow(2).mean() + d_real_photo.pow(2).mean()


def feature_matching(real_feats, fake_feats) -> torch.Tensor:
    """pix2pixHD feature matching: mean over scales and layers of ``L1(feat_fake, feat_real.detach())``.

    ``real_feats`` / ``fake_feats`` are lists (per scale) of lists (per layer) of tensors; the final
    score of each scale is excluded. A flat list of tensors is treated as one scale that has no score.
    """
    if real_feats and isinstance(real_feats[0], torch.Tensor):
        real_feats, fake_feats = [list(real_feats) + [None]], [list(fake_feats) + [None]]
    terms = []
    for rs, fs in zip(real_feats, fake_feats):
        for r, f in zip(rs[:-1], fs[:-1]):
            terms.append(l1(f, r.detach()))
    if not terms:
        raise ValueError("feature_matching needs at least one intermediate feature per scale")
    return sum(terms) / len(terms)


def perceptual(vgg: torch.nn.Module, fake: torch.Tensor, real: torch.Tensor,
               weights: Sequence[float] | None = None) -> torch.Tensor:
    """VGG feature matching: weighted mean of L1 between VGG16 features of ``fake`` and ``real``.

    ``vgg(x)`` returns a list of feature maps (``oldphoto.training.vgg.VGG16Features``). The default
    layer weights are the pix2pixHD ones (1/32, 1/16, 1/8, 1/4, 1) truncated to the layers used.
    """
    with torch.no_grad():
        real_f = vgg(real)
    fake_f = vgg(fake)
    if weights is None:
        default = [1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0]
        weights = default[: len(fake_f)]
    return sum(w * l1(f, r) for w, f, r in zip(weights, fake_f, real_f))


def class_balanced_bce(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Class-balanced binary cross-entropy with the weights computed on the fly from each mask.

    For sample i with positive (defect) fraction p_i, defect pixels get weight ``1 - p_i`` and clean
    pixels weight ``p_i``, so both classes contribute equally however thin the scratches are. A sample
    with no defect (or only defects) falls back to weight 1 for its pixels, otherwise it would not
    contribute at all. Mean over all pixels.
    """
    mask = mask.to(logits.dtype)
    n = mask.shape[0]
    p = mask.reshape(n, -1).mean(dim=1).view(n, *([1] * (mask.dim() - 1)))
    degenerate = (p <= 0) | (p >= 1)
    w_pos = torch.where(degenerate, torch.ones_like(p), 1.0 - p)
    w_neg = torch.where(degenerate, torch.ones_like(p), p)
    weight = mask * w_pos + (1.0 - mask) * w_neg
    return F.binary_cross_entropy_with_logits(logits, mask, weight=weight, reduction="mean")


FOCAL_MIN_MISS = 1e-12


def focal(logits: torch.Tensor, mask: torch.Tensor, gamma: float = FOCAL_GAMMA) -> torch.Tensor:
    """Binary focal loss ``-(1 - p_t)^gamma * log(p_t)``, mean over pixels."""
    mask = mask.to(logits.dtype)
    log_p = F.logsigmoid(logits)
    log_1mp = F.logsigmoid(-logits)
    log_pt = mask * log_p + (1.0 - mask) * log_1mp
    pt = log_pt.exp()
    # (1 - pt)^gamma has an infinite slope at pt = 1 (gamma < 1): a pixel predicted with certainty (pt exactly 1 in
    # float) would make the gradient 0 * inf = NaN; below FOCAL_MIN_MISS the term is held constant instead
    return (-(1.0 - pt).clamp_min(FOCAL_MIN_MISS).pow(gamma) * log_pt).mean()


def scratch_loss(logits: torch.Tensor, mask: torch.Tensor, beta: float = FOCAL_BETA,
                 gamma: float = FOCAL_GAMMA) -> torch.Tensor:
    """Scratch-detector objective: ``L_CE (class-balanced) + beta * L_focal`` (beta 10, gamma 0.2)."""
    return class_balanced_bce(logits, mask) + beta * focal(logits, mask, gamma)


# ------------------------------------------------------------------ end-to-end fine-tuning (not in the paper)
def _gaussian_kernel(sigma: float, device, dtype) -> torch.Tensor:
    """The 1-D kernel cv2.GaussianBlur uses for ``sigma`` (size 2*ceil(3*sigma)+1), normalised."""
    r = int(torch.ceil(torch.tensor(3.0 * sigma)).item())
    x = torch.arange(-r, r + 1, device=device, dtype=dtype)
    k = torch.exp(-(x * x) / (2 * sigma * sigma))
    return k / k.sum()


def _pad_symmetric(t: torch.Tensor, r: int) -> torch.Tensor:
    """Pad the last two dims by ``r`` mirroring *with* the edge pixel (cv2.BORDER_REFLECT: ``cba|abc``)."""
    t = torch.cat([t[..., :r, :].flip(-2), t, t[..., -r:, :].flip(-2)], dim=-2)
    return torch.cat([t[..., :r].flip(-1), t, t[..., -r:].flip(-1)], dim=-1)


def gaussian_blur(t: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of N×C×H×W with cv2's kernel and border (the torch twin of tone.gaussian_mean)."""
    k = _gaussian_kernel(sigma, t.device, t.dtype)
    r = (k.numel() - 1) // 2
    n, c, h, w = t.shape
    x = _pad_symmetric(t, r).reshape(n * c, 1, h + 2 * r, w + 2 * r)
    x = F.conv2d(x, k.view(1, 1, 1, -1))
    x = F.conv2d(x, k.view(1, 1, -1, 1))
    return x.reshape(n, c, h, w)


def tone_transfer(restored: torch.Tensor, reference: torch.Tensor, valid: torch.Tensor, sigma: float,
                  eps: float, min_weight: float = 1e-3) -> torch.Tensor:
    """Differentiable twin of ``oldphoto.imageops.tone.guided_tone_transfer`` (same formula, same kernel and
    borders; tested equal) on N×3×H×W images in [0, 1] with ``valid`` N×1×H×W (1 = trusted scan pixel): the
    restored image's grey level as the guide, each channel of the reference fitted to it in Gaussian windows
    over the valid pixels; windows without valid weight take the crop's single global fit. Used to train the
    networks on what the pipeline ships (the tone-matched output), not on the raw decoder output."""
    g = restored.mean(dim=1, keepdim=True)
    wt = valid.to(restored.dtype)

    def wmean(t):
        den = gaussian_blur(wt, sigma)
        num = gaussian_blur(t * wt, sigma)
        return num / den.clamp_min(1e-8), den

    mg, den = wmean(g)
    mgg, _ = wmean(g * g)
    mp, _ = wmean(reference)
    mgp, _ = wmean(reference * g)
    var = (mgg - mg * mg).clamp_min(0.0)
    a = (mgp - mg * mp) / (var + eps)
    b = mp - a * mg
    empty = den < min_weight
    if bool(empty.any()):
        n = wt.sum(dim=(2, 3), keepdim=True).clamp_min(1.0)
        gm = (g * wt).sum(dim=(2, 3), keepdim=True) / n
        rm = (reference * wt).sum(dim=(2, 3), keepdim=True) / n
        gv = ((g * g * wt).sum(dim=(2, 3), keepdim=True) / n - gm * gm).clamp_min(0.0)
        ga = ((reference * g * wt).sum(dim=(2, 3), keepdim=True) / n - gm * rm) / (gv + eps)
        gb = rm - ga * gm
        a = torch.where(empty, ga.expand_as(a), a)
        b = torch.where(empty, gb.expand_as(b), b)
    return (gaussian_blur(a, sigma) * g + gaussian_blur(b, sigma)).clamp(0.0, 1.0)


SSIM_SIGMA = 1.5          # the Gaussian window of SSIM (Wang et al. 2004; skimage's gaussian_weights=True)
SSIM_C1, SSIM_C2 = 0.01 ** 2, 0.03 ** 2


def ssim(a: torch.Tensor, b: torch.Tensor, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """Mean SSIM of two N×C×H×W images in [0, 1] (Gaussian window of std ``sigma``, reflected borders, per channel;
    constants for a data range of 1). Differentiable: ``1 - ssim`` is the end-to-end structure term."""
    mu_a, mu_b = gaussian_blur(a, sigma), gaussian_blur(b, sigma)
    va = gaussian_blur(a * a, sigma) - mu_a * mu_a
    vb = gaussian_blur(b * b, sigma) - mu_b * mu_b
    cov = gaussian_blur(a * b, sigma) - mu_a * mu_b
    num = (2 * mu_a * mu_b + SSIM_C1) * (2 * cov + SSIM_C2)
    den = (mu_a * mu_a + mu_b * mu_b + SSIM_C1) * (va + vb + SSIM_C2)
    return (num / den).mean()
