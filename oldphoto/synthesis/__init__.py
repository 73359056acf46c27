"""Old-photo synthesis (Wan et al.): turn a clean photo into a synthetic old one plus its defect mask.

    from oldphoto.synthesis import synthesize, SynthesisConfig, STRONG, random_crop
    d = synthesize(clean, seed_or_rng, textures=None, config=SynthesisConfig())
    d.degraded  # H×W×3 float32 in [0, 1]
    d.clean     # H×W×3 float32 in [0, 1] (the input, converted)
    d.mask      # H×W float32 in {0, 1}: 1 where a structured defect (scratch, dust, hole) changed the photo
    d.ops       # the degradations applied, in order (for logs and tests)

Order: global ageing (tone, paper grain) → unstructured degradations (noise, Gaussian blur, JPEG, colour
jitter, box blur; random order, each dropped with probability 0.3) → local defects (scratch textures
blended by addition / lighten-only / screen at random opacity, procedural scratches, dust, feathered
holes revealing paper) → film grain and a random blur. Deterministic for a given seed. Without a
`TextureBank`, procedural papers and scratch stamps are used. `STRONG` is the preset for pseudo-real old
photos (domain R) when no real collection is given.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from oldphoto.data.textures import TextureBank
from oldphoto.synthesis import structured as st
from oldphoto.synthesis.scratches import dust_alpha, scratch_alpha
from oldphoto.synthesis.unstructured import UNSTRUCTURED, apply_unstructured

__all__ = ["Degraded", "SynthesisConfig", "DEFAULT", "STRONG", "synthesize", "random_crop", "to_float"]


# overrides that keep a config's local defects (always drawn) and nothing else: no noise, blur, JPEG, ageing or
# grain, i.e. a clean, well-kept scan with scratches, dust or holes on it
# (`with_overrides(config, **LOCAL_DEFECTS_ONLY)`)
LOCAL_DEFECTS_ONLY = dict(unstructured=False, ageing_prob=0.0, grain_prob=0.0, blur_prob=0.0, defects_prob=1.0)


@dataclass(frozen=True)
class SynthesisConfig:
    # unstructured (paper: each dropped with p = 0.3, random order)
    unstructured: bool = True
    drop_prob: float = 0.3
    unstructured_ops: tuple[str, ...] = tuple(UNSTRUCTURED)
    # global ageing (not in the mask)
    ageing_prob: float = 0.6
    grey_prob: float = 0.25
    sepia_prob: float = 0.3
    paper_prob: float = 0.6
    paper_opacity: tuple[float, float] = (0.05, 0.25)
    # local defects (in the mask)
    defects_prob: float = 0.85
    texture_scratches: tuple[int, int] = (0, 2)
    texture_opacity: tuple[float, float] = (0.5, 1.0)
    procedural_scratches: tuple[int, int] = (0, 6)
    dark_scratch_prob: float = 0.2
    scratch_width: tuple[float, float] = (0.6, 3.5)   # procedural scratch width, px at a 256 px image
    dust_density: tuple[float, float] = (0.0, 2.5)
    hole_prob: float = 0.25
    holes: tuple[int, int] = (1, 3)
    # global style after the defects (not in the mask)
    grain_prob: float = 0.5
    grain_sigma: tuple[float, float] = (0.01, 0.045)
    blur_prob: float = 0.35
    blur_sigma: tuple[float, float] = (0.3, 0.9)

    @classmethod
    def defects_only(cls) -> "SynthesisConfig":
        """Only the local defects, always, a heavy mix: every changed pixel is in the mask (tests)."""
        return cls(**LOCAL_DEFECTS_ONLY, procedural_scratches=(2, 6), texture_scratches=(1, 3), hole_prob=0.5)

    @classmethod
    def unstructured_only(cls) -> "SynthesisConfig":
        return cls(ageing_prob=0.0, defects_prob=0.0, grain_prob=0.0, blur_prob=0.0)


DEFAULT = SynthesisConfig()
STRONG = SynthesisConfig(ageing_prob=1.0, grey_prob=0.6, sepia_prob=0.5, paper_prob=0.9, paper_opacity=(0.1, 0.35),
                         defects_prob=1.0, texture_scratches=(1, 4), procedural_scratches=(3, 10),
                         dust_density=(1.0, 6.0), hole_prob=0.5, grain_prob=1.0, grain_sigma=(0.03, 0.08),
                         blur_prob=0.7, blur_sigma=(0.5, 1.4))


@dataclass
class Degraded:
    degraded: np.ndarray
    clean: np.ndarray
    mask: np.ndarray
    ops: list[str] = field(default_factory=list)


def to_float(img: np.ndarray) -> np.ndarray:
    """uint8 (or float in [0, 1]) H×W×3 → float32 in [0, 1]; grey H×W is expanded to 3 channels."""
    a = np.asarray(img)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise ValueError(f"expected an H×W×3 image, got shape {a.shape}")
    a = a[..., :3]
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    if a.dtype == np.uint16:
        return a.astype(np.float32) / 65535.0
    a = a.astype(np.float32)
    if a.size and (float(a.min()) < -1e-6 or float(a.max()) > 1 + 1e-6):
        raise ValueError("float images must be in [0, 1]")
    return np.clip(a, 0.0, 1.0)


def _rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _irange(rng: np.random.Generator, r: tuple[int, int]) -> int:
    return int(rng.integers(r[0], r[1] + 1))


def synthesize(clean: np.ndarray, rng: np.random.Generator | int | None,
               textures: TextureBank | None = None, config: SynthesisConfig = DEFAULT) -> Degraded:
    """Make a synthetic old photo from `clean` (H×W×3 uint8 or float32 in [0, 1]). See the module doc."""
    cfg = config
    rng = _rng(rng)
    x = to_float(clean)
    h, w = x.shape[:2]
    clean_f = x.copy()
    papers = textures.papers if textures is not None else []
    stamps = [s for s in (textures.scratches if textures is not None else []) if min(s.shape[:2]) >= 16]
    ops: list[str] = []

    x = _age(x, rng, cfg, papers, ops)                                 # 1. global ageing
    if cfg.unstructured:                                                 # 2. unstructured
        x, un_ops = apply_unstructured(x, rng, cfg.drop_prob, cfg.unstructured_ops)
        ops += un_ops
    mask = np.zeros((h, w), bool)                                        # 3. local defects -> mask
    if rng.random() < cfg.defects_prob:
        x = _texture_scratches(x, mask, rng, cfg, stamps, ops)
        x = _procedural_scratches(x, mask, rng, cfg, ops)
        x = _dust(x, mask, rng, cfg, ops)
        x = _holes(x, mask, rng, cfg, papers, ops)
    x = _style(x, rng, cfg, ops)                                         # 4. global style

    return Degraded(np.clip(x, 0, 1).astype(np.float32), clean_f, mask.astype(np.float32), ops)


# The steps of `synthesize`, in its order; each draws from `rng` exactly as the step always did, appends what it
# did to `ops`, and the defect steps mark their pixels in `mask` (in place).
def _age(x: np.ndarray, rng: np.random.Generator, cfg: SynthesisConfig, papers: list[np.ndarray],
         ops: list[str]) -> np.ndarray:
    if rng.random() < cfg.ageing_prob:
        h, w = x.shape[:2]
        x, tone_ops = st.age_tone(x, rng, cfg.grey_prob, cfg.sepia_prob)
        ops += tone_ops
        if rng.random() < cfg.paper_prob:
            tex = papers[int(rng.integers(0, len(papers)))] if papers else st.procedural_paper(rng, 256)
            x = st.paper_overlay(x, st.fit_paper(tex, rng, h, w), rng.uniform(*cfg.paper_opacity))
            ops.append("paper")
    return x


def _texture_scratches(x: np.ndarray, mask: np.ndarray, rng: np.random.Generator, cfg: SynthesisConfig,
                       stamps: list[np.ndarray], ops: list[str]) -> np.ndarray:
    for _ in range(_irange(rng, cfg.texture_scratches)):
        stamp = stamps[int(rng.integers(0, len(stamps)))] if stamps else st.fallback_stamp(rng)
        x, alpha, mode = st.texture_scratch_layer(x, rng, stamp, rng.uniform(*cfg.texture_opacity))
        mask |= alpha > 0
        ops.append(f"scratch_texture:{mode}")
    return x


def _procedural_scratches(x: np.ndarray, mask: np.ndarray, rng: np.random.Generator, cfg: SynthesisConfig,
                          ops: list[str]) -> np.ndarray:
    h, w = mask.shape
    n = _irange(rng, cfg.procedural_scratches)
    if n:
        alpha = scratch_alpha(rng, h, w, n, cfg.scratch_width)
        if rng.random() < cfg.dark_scratch_prob:
            value = np.full((h, w, 3), rng.uniform(0.0, 0.2), np.float32)
            x = st.blend(x, value, alpha, "normal")
        else:
            value = np.full((h, w, 3), rng.uniform(0.85, 1.0), np.float32)
            x = st.blend(x, value, alpha, "lighten" if rng.random() < 0.5 else "screen")
        mask |= alpha > 0
        ops.append(f"scratches:{n}")
    return x


def _dust(x: np.ndarray, mask: np.ndarray, rng: np.random.Generator, cfg: SynthesisConfig,
          ops: list[str]) -> np.ndarray:
    h, w = mask.shape
    density = rng.uniform(*cfg.dust_density)
    if density > 0:
        alpha = dust_alpha(rng, h, w, density)
        if alpha.any():
            bright = rng.random() < 0.7
            value = np.full((h, w, 3), rng.uniform(0.85, 1.0) if bright else rng.uniform(0.0, 0.15), np.float32)
            x = st.blend(x, value, alpha, "normal")
            mask |= alpha > 0
            ops.append("dust")
    return x


def _holes(x: np.ndarray, mask: np.ndarray, rng: np.random.Generator, cfg: SynthesisConfig,
           papers: list[np.ndarray], ops: list[str]) -> np.ndarray:
    h, w = mask.shape
    if rng.random() < cfg.hole_prob:
        alpha = st.hole_alpha(rng, h, w, _irange(rng, cfg.holes))
        if alpha.any():
            x = st.blend(x, st.paper_value(rng, papers, h, w), alpha, "normal")
            mask |= alpha > 0
            ops.append("holes")
    return x


def _style(x: np.ndarray, rng: np.random.Generator, cfg: SynthesisConfig, ops: list[str]) -> np.ndarray:
    if rng.random() < cfg.grain_prob:
        x = st.film_grain(x, rng, rng.uniform(*cfg.grain_sigma))
        ops.append("grain")
    if rng.random() < cfg.blur_prob:
        x = st.random_blur(x, rng, cfg.blur_sigma)
        ops.append("blur")
    return x


def random_crop(img: np.ndarray, size: int, rng: np.random.Generator | int | None,
                *others: np.ndarray) -> np.ndarray | tuple[np.ndarray, ...]:
    """A random size×size crop of `img` (and the same window of each array in `others`).

    An image smaller than `size` is first upscaled (cubic; masks nearest) so its short side is `size`.
    """
    import cv2

    rng = _rng(rng)
    arrays = [img, *others]
    h, w = img.shape[:2]
    if min(h, w) < size:
        f = size / min(h, w)
        nw, nh = max(size, int(round(w * f))), max(size, int(round(h * f)))
        arrays = [cv2.resize(a, (nw, nh), interpolation=cv2.INTER_CUBIC if i == 0 else cv2.INTER_NEAREST)
                  for i, a in enumerate(arrays)]
        h, w = nh, nw
    y = int(rng.integers(0, h - size + 1))
    x = int(rng.integers(0, w - size + 1))
    out = tuple(np.ascontiguousarray(a[y:y + size, x:x + size]) for a in arrays)
    return out[0] if not others else out


def with_overrides(config: SynthesisConfig, **kw) -> SynthesisConfig:
    return replace(config, **kw)
