"""Our figures against the libraries' (scikit-image, scikit-learn) and against the formulas written out.

Every metric the project reports is checked here on random and real photographs (scikit-image's bundled
pictures): PSNR and SSIM (`oldphoto.quality`), the training loops' PSNR on [-1, 1] tensors
(`training.common.psnr_signed`), the face put-back's low-frequency PSNR (`imageops.faces.face_agreement`),
the scratch detector's ROC AUC and precision / recall / F1 / IoU (`quality.roc_auc`, `quality.detection_scores`).
The tolerances are far below any difference a wrong formula, window, data range or tie rule would make.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.ndimage import uniform_filter
from skimage import data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from oldphoto.quality import detection_scores, f1, psnr, roc_auc, ssim

PHOTOS = ("astronaut", "chelsea", "coffee")


def _photo(name: str, size: int = 128) -> np.ndarray:
    img = getattr(data, name)()
    h, w = img.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return img[top:top + size, left:left + size].astype(np.float64) / 255.0


def _pairs():
    """(clean, distorted) pairs: real photos with noise, blur-like shift and a tone change; random images."""
    rng = np.random.default_rng(7)
    out = []
    for name in PHOTOS:
        a = _photo(name)
        out.append((a, np.clip(a + rng.normal(0, 0.05, a.shape), 0, 1)))
        out.append((a, np.clip(0.8 * np.roll(a, 1, axis=1) + 0.1, 0, 1)))
    r = rng.random((64, 48, 3))
    out.append((r, np.clip(r + rng.normal(0, 0.2, r.shape), 0, 1)))
    return out


# ------------------------------------------------------------------------------------------------ PSNR
def test_psnr_is_scikit_image_and_the_formula():
    for a, b in _pairs():
        mse = float(np.mean((a - b) ** 2))
        assert psnr(a, b) == pytest.approx(10 * math.log10(1 / mse), abs=1e-9)
        assert psnr(a, b) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=1.0), abs=1e-9)
        # on the 0-255 scale (basicsr's calculate_psnr) the figure is the same
        assert psnr(a * 255, b * 255, data_range=255) == pytest.approx(psnr(a, b), abs=1e-9)


def test_training_psnr_on_signed_tensors_is_scikit_image():
    torch = pytest.importorskip("torch")
    from oldphoto.training.common import psnr_signed

    for a, b in _pairs():
        ta = torch.from_numpy(a).permute(2, 0, 1)[None].float() * 2 - 1     # N×C×H×W in [-1, 1]
        tb = torch.from_numpy(b).permute(2, 0, 1)[None].float() * 2 - 1
        ref = peak_signal_noise_ratio(ta.double().numpy(), tb.double().numpy(), data_range=2.0)
        assert psnr_signed(ta, tb) == pytest.approx(ref, abs=1e-9)
        assert psnr_signed(ta, tb) == pytest.approx(psnr(a, b), abs=1e-4)       # float32 inputs
    same = torch.zeros(1, 3, 8, 8)
    assert psnr_signed(same, same) == pytest.approx(120.0)                      # the cap


def test_face_agreement_is_the_psnr_of_the_low_frequency_faces():
    from oldphoto.imageops.faces import face_agreement, low_frequency

    rng = np.random.default_rng(3)
    face = (_photo("astronaut", 256)[:, :, :] * 255).astype(np.uint8)
    other = np.clip(face.astype(np.int16) + rng.integers(-40, 40, face.shape), 0, 255).astype(np.uint8)
    a, b = low_frequency(face), low_frequency(other)
    ref = peak_signal_noise_ratio(a.astype(np.float64), b.astype(np.float64), data_range=1.0)
    assert face_agreement(face, other) == pytest.approx(ref, abs=1e-4)
    assert face_agreement(face, face) == 99.0                                  # its cap for identical faces


# ------------------------------------------------------------------------------------------------ SSIM
def _ssim_uniform_by_hand(a: np.ndarray, b: np.ndarray, win: int = 7) -> float:
    """Wang et al.'s SSIM with a win×win uniform window and sample (N-1) covariances, per channel, the mean
    over the pixels at least win//2 from the border, then over the channels (scikit-image's default)."""
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    n = win * win
    vals = []
    for ch in range(a.shape[2]):
        x, y = a[..., ch], b[..., ch]
        mx, my = uniform_filter(x, win), uniform_filter(y, win)
        vx = (uniform_filter(x * x, win) - mx * mx) * n / (n - 1)
        vy = (uniform_filter(y * y, win) - my * my) * n / (n - 1)
        cxy = (uniform_filter(x * y, win) - mx * my) * n / (n - 1)
        s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
        p = win // 2
        vals.append(s[p:-p, p:-p].mean())
    return float(np.mean(vals))


def _ssim_gaussian_basicsr(a: np.ndarray, b: np.ndarray) -> float:
    """basicsr's calculate_ssim (Wang et al.'s reference): 11×11 Gaussian σ 1.5, population covariances, the
    'valid' part of the filtered maps, per channel on 0-255, the mean over the channels."""
    import cv2

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    k = cv2.getGaussianKernel(11, 1.5)
    w = np.outer(k, k.transpose())
    vals = []
    for ch in range(a.shape[2]):
        x, y = a[..., ch] * 255.0, b[..., ch] * 255.0

        def f(t):
            return cv2.filter2D(t, -1, w)[5:-5, 5:-5]
        mx, my = f(x), f(y)
        vx, vy, cxy = f(x * x) - mx ** 2, f(y * y) - my ** 2, f(x * y) - mx * my
        vals.append((((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))).mean())
    return float(np.mean(vals))


def test_ssim_is_scikit_images_default_ssim():
    for a, b in _pairs():
        ref = structural_similarity(a, b, data_range=1.0, channel_axis=-1)
        assert ssim(a, b) == pytest.approx(ref, abs=1e-12)
        assert ssim(a, b) == pytest.approx(_ssim_uniform_by_hand(a, b), abs=1e-9)
    grey = _photo("chelsea")[..., 0]
    noisy = np.clip(grey + np.random.default_rng(0).normal(0, 0.05, grey.shape), 0, 1)
    assert ssim(grey, noisy) == pytest.approx(structural_similarity(grey, noisy, data_range=1.0), abs=1e-12)


def test_ssim_differs_from_the_gaussian_ssim_of_papers_as_documented():
    """The intended difference (quality.py's docstring): the published Gaussian SSIM is scikit-image with
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False, and reads a little lower than ours."""
    for a, b in _pairs()[:6]:                                      # the real photos
        gauss = structural_similarity(a, b, data_range=1.0, channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                      use_sample_covariance=False)
        assert gauss == pytest.approx(_ssim_gaussian_basicsr(a, b), abs=1e-6)
        assert 0.0 < ssim(a, b) - gauss < 0.05


# ------------------------------------------------------------------------------------- detection figures
def _score_cases():
    rng = np.random.default_rng(2)
    y = rng.random(500) < 0.2
    yield np.round(rng.random(500) + y * 0.3, 2), y                             # with ties
    yield rng.integers(0, 5, 300).astype(float), rng.random(300) < 0.3        # many ties
    mask = np.zeros((64, 64), bool)
    mask[:, 30:33] = True
    mask[40:42, :] = True                                                       # a scratch-like mask
    prob = np.clip(0.25 + 0.5 * mask + rng.normal(0, 0.2, mask.shape), 0, 1).astype(np.float32)
    yield prob, mask


def test_roc_auc_is_sklearns_and_the_pair_count():
    metrics = pytest.importorskip("sklearn.metrics")
    for s, y in _score_cases():
        assert roc_auc(s, y) == pytest.approx(metrics.roc_auc_score(y.ravel(), s.ravel()), abs=1e-12)
    s, y = next(iter(_score_cases()))
    pos, neg = s[y], s[~y]
    pairs = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert roc_auc(s, y) == pytest.approx(pairs / (len(pos) * len(neg)), abs=1e-12)


def test_detection_scores_are_sklearns():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(5)
    cases = [(s >= 0.5, y) for s, y in _score_cases()]
    cases += [(rng.random(200) < 0.1, rng.random(200) < 0.4),
              (np.zeros(50, bool), rng.random(50) < 0.3),                     # nothing predicted
              (rng.random(50) < 0.3, np.zeros(50, bool))]                      # nothing to find
    for pred, y in cases:
        p, t = pred.ravel(), y.ravel()
        got = detection_scores(pred, y)
        assert got["precision"] == pytest.approx(metrics.precision_score(t, p, zero_division=0), abs=1e-12)
        assert got["recall"] == pytest.approx(metrics.recall_score(t, p, zero_division=0), abs=1e-12)
        assert got["f1"] == pytest.approx(metrics.f1_score(t, p, zero_division=0), abs=1e-12)
        assert got["iou"] == pytest.approx(metrics.jaccard_score(t, p, zero_division=0), abs=1e-12)
        assert f1(pred, y) == got["f1"]
    # the one intended difference: nothing to find and nothing found scores 1 (scikit-learn's zero_division=1)
    empty = np.zeros(10, bool)
    assert detection_scores(empty, empty) == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "iou": 1.0}
    assert metrics.f1_score(empty, empty, zero_division=1.0) == 1.0
    with pytest.raises(ValueError):
        detection_scores(empty, empty[:5])
