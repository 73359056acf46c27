"""Global tone and colour correction (oldphoto's addition, **not in the official method**).

Old photographs fade, yellow and take colour casts over the whole print. Stage 1 with tone matching keeps the
scan's *local* tone (oldphoto.imageops.tone), so such global changes stay in the output. Here a small learned
regressor (oldphoto.networks.colour) looks at global statistics of the scan (`colour_features`) and predicts, per
channel, a gain and an offset that bring it closer to the photo before it aged; `ColourAffine.apply` applies them
to the restored image. Trained on synthetic old photos (oldphoto.training.colour), its strength chosen on val.

A grey scan stays grey (the three channels get the same gain and offset), and the correction is only ever global
and affine per channel, so it can neither invent nor move content; provenance records the six numbers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

FEATURE_SIDE = 256                     # features are computed on the scan resized to this short side
PERCENTILES = (1, 5, 25, 50, 75, 95, 99)
GREY_PERCENTILES = (1, 5, 50, 95, 99)
N_FEATURES = 3 * (len(PERCENTILES) + 2) + 6 + len(GREY_PERCENTILES) + 1
GREY_CHROMA = 1.5 / 255                # mean |R-G| + |B-G| below this: a grey scan


def feature_image(img: np.ndarray) -> np.ndarray:
    """H×W×3 float [0, 1] → the image the features are computed on: short side ≤ FEATURE_SIDE (area resize)."""
    img = np.asarray(img, np.float32)
    h, w = img.shape[:2]
    s = FEATURE_SIDE / min(h, w)
    if s < 1.0:
        img = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return img


def colour_features(img: np.ndarray) -> np.ndarray:
    """Global statistics of an H×W×3 float [0, 1] image (N_FEATURES float32): per channel the percentiles, mean and
    std; the two chroma differences' means, stds and mean magnitudes; the grey level's percentiles and std."""
    x = feature_image(img)
    if x.ndim == 2:
        x = np.repeat(x[..., None], 3, axis=2)
    f: list[float] = []
    for c in range(3):
        v = x[..., c]
        f += list(np.percentile(v, PERCENTILES)) + [float(v.mean()), float(v.std())]
    rg, bg = x[..., 0] - x[..., 1], x[..., 2] - x[..., 1]
    f += [rg.mean(), bg.mean(), rg.std(), bg.std(), np.abs(rg).mean(), np.abs(bg).mean()]
    g = x.mean(axis=2)
    f += list(np.percentile(g, GREY_PERCENTILES)) + [float(g.std())]
    return np.asarray(f, np.float32)


def is_grey_features(features: np.ndarray) -> bool:
    """The features say the scan is grey (no chroma)."""
    return float(features[3 * (len(PERCENTILES) + 2) + 4] + features[3 * (len(PERCENTILES) + 2) + 5]) < GREY_CHROMA


def mean_colour(features: np.ndarray) -> np.ndarray:
    """The scan's mean colour (3,) from its features."""
    n = len(PERCENTILES) + 2
    return np.array([features[c * n + len(PERCENTILES)] for c in range(3)], np.float64)


@dataclass(frozen=True)
class ColourAffine:
    """out_c = gain_c · in_c + offset_c per channel, clipped to [0, 1]."""

    gain: tuple[float, float, float] = (1.0, 1.0, 1.0)
    offset: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @classmethod
    def from_prediction(cls, pred: np.ndarray, strength: float, features: np.ndarray | None = None) -> "ColourAffine":
        """The regressor's six outputs (gain − 1, offset per channel, interleaved) scaled by `strength` in [0, 1],
        made safe with the scan's `features`:

        - a grey scan gets one gain and offset (the channel means) for all three channels: it stays grey;
        - the photo's mean colour may move towards neutral grey but never past it nor further from it: its
          chroma (mean colour minus its grey level) after the correction is λ times the scan's, λ in [0, 1]
          (the offsets are shifted by the difference, which keeps the mean grey level), so a warm sepia
          print may be neutralised but never turned blue, and no cast is added to a neutral photo."""
        p = np.asarray(pred, np.float64).reshape(3, 2) * float(strength)
        gain, offset = 1.0 + p[:, 0], p[:, 1]
        if features is not None and is_grey_features(features):
            gain, offset = np.full(3, gain.mean()), np.full(3, offset.mean())
        elif features is not None:
            m = mean_colour(features)
            c = m - m.mean()
            after = gain * m + offset
            c_after = after - after.mean()
            norm = float(c @ c)
            lam = 0.0 if norm < 1e-12 else float(np.clip((c_after @ c) / norm, 0.0, 1.0))
            offset = offset + (lam * c - c_after)
        return cls(tuple(round(float(v), 6) for v in gain), tuple(round(float(v), 6) for v in offset))

    @property
    def identity(self) -> bool:
        return self.gain == (1.0, 1.0, 1.0) and self.offset == (0.0, 0.0, 0.0)

    def apply(self, img: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The corrected H×W×3 (or H×W: the mean gain/offset) float32 image; `out` may be `img` (in place)."""
        img = np.asarray(img, np.float32)
        if img.ndim == 2:
            g, o = np.float32(np.mean(self.gain)), np.float32(np.mean(self.offset))
        else:
            g, o = np.asarray(self.gain, np.float32), np.asarray(self.offset, np.float32)
        res = np.multiply(img, g, out=out)
        res += o
        return np.clip(res, 0.0, 1.0, out=res)

    def to_dict(self) -> dict[str, list[float]]:
        return {"gain": list(self.gain), "offset": list(self.offset)}

    @classmethod
    def from_dict(cls, d: dict) -> "ColourAffine":
        return cls(tuple(float(v) for v in d["gain"]), tuple(float(v) for v in d["offset"]))


def corrected_rgb(img: np.ndarray, record: dict[str, Any] | None) -> np.ndarray:
    """`img` (H×W or H×W×3 float) as a new H×W×3 float32 image with the global correction `record` (a
    ColourAffine's `to_dict()`, as provenance records it; None: unchanged)."""
    img = np.asarray(img, np.float32)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return ColourAffine.from_dict(record).apply(img) if record else img.copy()
