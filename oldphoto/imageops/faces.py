"""Face geometry and blending (ARCHITECTURE §9): landmarks → 5 points → similarity alignment to the template,
histogram matching, inverse warp and eroded, Gaussian-feathered blending.

Detection and the 68 landmarks are dlib's (HOG frontal detector + `shape_predictor_68_face_landmarks.dat`
from the `face-recognition-models` package). Everything else follows the official constants:

- 5 points: eye centres = int() of the mean of points 36/39 and 42/45, nose 30, mouth corners 48/54;
- template: (196,226) (316,226) (256,286) (220,360.4) (292,360.4) in a 256 frame, mapped to [-1,1] in float32,
  scaled by 1.3 and brought to the S×S face (S = 256, or 512 with --hr);
- alignment: least-squares similarity (Umeyama) from template to landmarks; aligned = bilinear warp,
  black outside the image;
- blending: restored face histogram-matched to the aligned original, warped back bicubically, mask warped
  with nearest, eroded (9×9, 3 iterations), blurred (Gaussian 25×25, σ 4.1), alpha-blended.

Warp-back and blending are computed on the face's bounding box plus a margin instead of the whole frame: the
result is identical (outside the box the mask is 0) and a 24 MP scan does not need full-frame float copies.

Do no harm (oldphoto's additions, not in the official code):
- `merge_faces`: faces are searched on the stage-1 output and on the scan and the two lists are merged (a face
  restoration has blurred is still found on the scan); detection runs at full size up to `FACE_DETECT_MAX_SIDE`
  (the official code always runs at full size; above the cap a downscaled copy bounds the cost).
- `face_agreement`: the low-frequency PSNR between the scan's own face and the enhanced face as it would be
  pasted (histogram-matched), both area-averaged to `AGREEMENT_SIZE`² over the face's centre. An enhanced face
  replaces the original only when they agree (`stages.base.FACE_MIN_AGREEMENT_DB`): a face network that changes the
  shading, the colour or the identity's coarse shape is caught; one that only adds fine detail passes.
- `blend_face(..., strength)`: the feathered blend mask scaled by a strength in [0, 1].
"""
from __future__ import annotations

import importlib.util
import math
import os
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import cv2
import numpy as np
from skimage.transform import ProjectiveTransform, SimilarityTransform, warp

from oldphoto.imageops.io import LUMA_WEIGHTS, to_grey
from oldphoto.imageops.mask import grow_box

TEMPLATE_BASE = np.array([[196.0, 226.0], [316.0, 226.0], [256.0, 286.0], [220.0, 360.4], [292.0, 360.4]],
                         dtype=np.float32)
TEMPLATE_SCALE = np.float32(1.3)
ERODE_KERNEL = 9
ERODE_ITERATIONS = 3
BLUR_KERNEL = 25
BLEND_MARGIN = BLUR_KERNEL // 2 + 8     # blur radius + bicubic support + slack
FACE_DETECT_MAX_SIDE = 4096             # larger images are detected on a downscaled copy (landmarks at full size)
FACE_UPSAMPLE_MAX_MP = 4.0              # images up to this many megapixels are searched once upsampled ×2 too
FACE_UPSAMPLE2_MAX_MP = 0.25            # ... and up to this many, upsampled twice (×4: small scans, 20 px faces)
FACE_MERGE_IOU = 0.3                    # a scan face overlapping a stage-1 face this much is the same face
AGREEMENT_SIZE = 16                     # low-frequency comparison grid (16×16 over the face's centre)


# ------------------------------------------------------------------------------------------- dlib
def landmarks_model_path() -> str:
    """Path of shape_predictor_68_face_landmarks.dat from the `face-recognition-models` package, found from
    the package folder without importing it (its __init__ imports the deprecated pkg_resources)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the face-recognition-models package is not installed "
                                "(pip install face-recognition-models)")
    for root in spec.submodule_search_locations:
        path = os.path.join(root, "models", "shape_predictor_68_face_landmarks.dat")
        if os.path.isfile(path):
            return path
    raise FileNotFoundError("shape_predictor_68_face_landmarks.dat not found in the face-recognition-models package")


@lru_cache(maxsize=1)
def _dlib_models():
    import dlib

    return dlib.get_frontal_face_detector(), dlib.shape_predictor(landmarks_model_path())


@dataclass
class DetectedFace:
    box: tuple[int, int, int, int]          # left, top, right, bottom in image pixels
    landmarks68: np.ndarray                 # 68×2 float (x, y)
    score: float | None = None
    points5: np.ndarray = field(default_factory=lambda: np.zeros((5, 2)))


def detect_faces(image: np.ndarray, max_side: int = FACE_DETECT_MAX_SIDE,
                 upsample_max_mp: float = FACE_UPSAMPLE_MAX_MP) -> list[DetectedFace]:
    """dlib HOG faces with 68 landmarks on an H×W×3 uint8 RGB image, in detector order.

    Images up to `upsample_max_mp` megapixels are searched upsampled once (dlib's upsample 1: faces down to about
    40 px, as in group photos), up to FACE_UPSAMPLE2_MAX_MP twice (small scans: faces down to about 20 px, at most
    4 MP of search), larger ones at full size (upsample 0, faces from about 80 px), and images larger
    than `max_side` on a downscaled copy: the search never costs more than about 16 megapixels of HOG.
    Landmarks are always found at full size."""
    import dlib

    detector, predictor = _dlib_models()
    img = np.ascontiguousarray(image, dtype=np.uint8)
    h, w = img.shape[:2]
    scale = 1.0
    search = img
    if max(h, w) > max_side:
        scale = max_side / max(h, w)
        search = np.ascontiguousarray(cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))),
                                                 interpolation=cv2.INTER_AREA))
    upsample = 1 if h * w <= upsample_max_mp * 1e6 else 0
    if h * w <= min(upsample_max_mp, FACE_UPSAMPLE2_MAX_MP) * 1e6:
        upsample = 2
    rects, scores, _ = detector.run(search, upsample, 0.0)
    faces = []
    for r, s in zip(rects, scores):
        rect = r if scale == 1.0 else dlib.rectangle(int(r.left() / scale), int(r.top() / scale),
                                                     int(r.right() / scale), int(r.bottom() / scale))
        shape = predictor(img, rect)
        lm = np.array([[shape.part(i).x, shape.part(i).y] for i in range(68)], dtype=np.float64)
        faces.append(DetectedFace(box=(rect.left(), rect.top(), rect.right(), rect.bottom()), landmarks68=lm,
                                  score=float(s), points5=five_points(lm)))
    return faces


def box_iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection over union of two (left, top, right, bottom) boxes."""
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def merge_faces(primary: list[DetectedFace], secondary: list[DetectedFace],
                iou: float = FACE_MERGE_IOU) -> list[tuple[DetectedFace, str]]:
    """Every `primary` face ("restored"), then each `secondary` face ("input") that overlaps none of them by
    `iou` or more: [(face, where it was found)], in that order."""
    out = [(f, "restored") for f in primary]
    for f in secondary:
        if all(box_iou(f.box, p.box) < iou for p in primary):
            out.append((f, "input"))
    return out


# ------------------------------------------------------------------------------------------- geometry
def five_points(lm68: np.ndarray) -> np.ndarray:
    """§9.1: eye centres (int-truncated means of 36/39 and 42/45), nose tip 30, mouth corners 48 and 54."""
    lm = np.asarray(lm68, dtype=np.float64)
    left_eye = [int((lm[36, 0] + lm[39, 0]) / 2), int((lm[36, 1] + lm[39, 1]) / 2)]
    right_eye = [int((lm[42, 0] + lm[45, 0]) / 2), int((lm[42, 1] + lm[45, 1]) / 2)]
    return np.array([left_eye, right_eye, lm[30], lm[48], lm[54]], dtype=np.float64)


def template_points(size: int) -> np.ndarray:
    """§9.2 target points in the S×S aligned face (float32 arithmetic as the official code)."""
    p_std = TEMPLATE_BASE / np.float32(256.0) - np.float32(1.0)
    return ((p_std * TEMPLATE_SCALE + np.float32(1.0)) / np.float32(2.0) * np.float32(size)).astype(np.float32)


def alignment_transform(points5: np.ndarray, size: int) -> SimilarityTransform:
    """Similarity (rotation, uniform scale, translation) mapping aligned-face coordinates to image coordinates."""
    tform = SimilarityTransform.from_estimate(template_points(size).astype(np.float64),
                                              np.asarray(points5, dtype=np.float64))
    if not tform:
        raise ValueError(f"degenerate landmarks: cannot estimate the alignment ({tform})")
    return tform


def _source_crop(image: np.ndarray, tform: SimilarityTransform, size: int):
    """The part of `image` an S×S warp through `tform` samples (plus 2 px), and the transform into it: the same
    warp result as on the whole image, without converting a whole scan to float."""
    h, w = image.shape[:2]
    y0, y1, x0, x1 = face_region(tform, size, h, w, margin=2)
    shift = np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0], [0.0, 0.0, 1.0]])
    return image[y0:y1, x0:x1], ProjectiveTransform(matrix=shift @ tform.params)


def align_face(image: np.ndarray, tform: SimilarityTransform, size: int) -> np.ndarray:
    """§9.3: S×S×3 uint8 aligned face (bilinear, black outside the image, rounded half-to-even)."""
    crop, t = _source_crop(image, tform, size)
    f = warp(crop, t, output_shape=(size, size, 3), order=1, mode="constant", cval=0, clip=True,
             preserve_range=False)
    return np.rint(np.clip(f, 0, 1) * 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------- agreement
def low_frequency(face: np.ndarray, size: int = AGREEMENT_SIZE) -> np.ndarray:
    """The centre of an aligned S×S face (the middle 3/4: eyes, nose, mouth, cheeks; no background corners)
    area-averaged to size×size, float in [0, 1]."""
    s = face.shape[0]
    m = s // 8
    centre = np.asarray(face[m:s - m, m:s - m], dtype=np.float32) / 255.0
    return cv2.resize(centre, (size, size), interpolation=cv2.INTER_AREA)


def face_agreement(original: np.ndarray, candidate: np.ndarray, size: int = AGREEMENT_SIZE,
                   grey: bool = False) -> float:
    """Low-frequency PSNR (dB) between two aligned S×S×3 uint8 faces: how well `candidate` keeps the shading,
    colour and coarse shape of `original` (noise, grain and fine detail average out at this scale). `grey`:
    compare luma only (a grey scan is written grey, so the network's colour never reaches the output)."""
    a, b = low_frequency(original, size), low_frequency(candidate, size)
    if grey:
        a, b = a @ LUMA_WEIGHTS, b @ LUMA_WEIGHTS
    mse = float(np.mean((a - b) ** 2))
    return 99.0 if mse <= 1e-10 else float(10.0 * np.log10(1.0 / mse))


# ------------------------------------------------------------------------------------------- blending
def match_histograms(source: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """§9.4 step 3: per channel, map each source value v to the smallest reference value r with
    ref_cdf[r] ≥ src_cdf[v] (carrying the previous value when there is none). uint8 in, uint8 out."""
    src = np.asarray(source, dtype=np.uint8)
    ref = np.asarray(reference, dtype=np.uint8)
    out = np.empty_like(src)
    for c in range(src.shape[2]):
        src_hist = np.bincount(src[..., c].ravel(), minlength=256).astype(np.float64)
        ref_hist = np.bincount(ref[..., c].ravel(), minlength=256).astype(np.float64)
        src_cdf = np.cumsum(src_hist)
        src_cdf /= src_cdf.max()
        ref_cdf = np.cumsum(ref_hist)
        ref_cdf /= ref_cdf.max()
        lut = np.searchsorted(ref_cdf, src_cdf, side="left")
        prev = 0
        for v in range(256):
            if lut[v] >= 256:
                lut[v] = prev
            prev = lut[v]
        out[..., c] = lut.astype(np.uint8)[src[..., c]]
    return out


def _shifted(tform_matrix: np.ndarray, x0: int, y0: int) -> ProjectiveTransform:
    shift = np.array([[1.0, 0.0, x0], [0.0, 1.0, y0], [0.0, 0.0, 1.0]])
    return ProjectiveTransform(matrix=tform_matrix @ shift)


def face_region(tform: SimilarityTransform, size: int, height: int, width: int,
                margin: int = BLEND_MARGIN) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1): the image box covered by the aligned S×S face, plus `margin`, clipped to the image."""
    corners = tform(np.array([[0, 0], [size, 0], [0, size], [size, size]], dtype=np.float64))
    x0 = max(0, int(np.floor(corners[:, 0].min())) - margin)
    x1 = min(width, int(np.ceil(corners[:, 0].max())) + margin + 1)
    y0 = max(0, int(np.floor(corners[:, 1].min())) - margin)
    y1 = min(height, int(np.ceil(corners[:, 1].max())) + margin + 1)
    return y0, y1, x0, x1


def blend_face(blended: np.ndarray, source_uint8: np.ndarray, restored_face: np.ndarray,
               tform: SimilarityTransform, size: int, strength: float = 1.0) -> np.ndarray:
    """§9.4 for one face, in place on `blended` (H×W×3 float in [0,1], the accumulator) and returned.

    `source_uint8` is the stage-1 image the face was aligned from; `restored_face` the enhanced S×S×3 uint8;
    `strength` in [0, 1] scales the blend mask (1 = the official blend, 0 = the face is left as it was)."""
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"face blend strength must be in [0, 1], not {strength}")
    h, w = blended.shape[:2]
    y0, y1, x0, x1 = face_region(tform, size, h, w)
    if y1 <= y0 or x1 <= x0:
        return blended
    crop, t = _source_crop(source_uint8, tform, size)
    aligned = warp(crop, t, output_shape=(size, size, 3), order=1, preserve_range=True)
    fwd_mask = warp(np.ones(crop.shape[:2] + (3,), np.uint8), t, output_shape=(size, size, 3),
                    order=0, preserve_range=True)
    matched = match_histograms(restored_face, aligned.astype(np.uint8))
    inv = _shifted(np.linalg.inv(tform.params), x0, y0)
    rh, rw = y1 - y0, x1 - x0
    warped = warp(matched, inv, output_shape=(rh, rw, 3), order=3, preserve_range=True, clip=True)
    bmask = warp(fwd_mask.astype(np.float64), inv, output_shape=(rh, rw, 3), order=0, preserve_range=True)
    m = (bmask * 255.0).astype(np.float32)
    m = cv2.erode(m, np.ones((ERODE_KERNEL, ERODE_KERNEL), np.uint8), iterations=ERODE_ITERATIONS)
    mb = cv2.GaussianBlur(m, (BLUR_KERNEL, BLUR_KERNEL), 0) / 255.0 * np.float32(strength)
    roi = blended[y0:y1, x0:x1]
    out = (warped.astype(np.float32) / 255.0) * mb + roi * (1.0 - mb)
    blended[y0:y1, x0:x1] = np.clip(out, 0.0, 1.0)
    return blended


# ---------------------------------------------------------------------- do no harm: stage 1 on faces
STRUCTURE_MARGIN = 0.1      # the face box is grown by this fraction of its size on every side


def face_window(box: tuple[int, int, int, int] | list[int], height: int, width: int,
                margin: float = STRUCTURE_MARGIN) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1): the face box grown by `margin` on every side, clipped to the image (`mask.grow_box`)."""
    l, t, r, b = grow_box(box, margin, height, width)
    return t, b, l, r


def structure_kept(scan: np.ndarray, restored: np.ndarray, box: tuple[int, int, int, int] | list[int],
                   defects: np.ndarray | None = None) -> float:
    """How much of the scan's face structure stage 1 kept: the correlation of the two faces' fine structure, a
    difference-of-Gaussians band (sigma and 2 sigma, sigma = face size / 48, at least 0.8 px: above pixel noise,
    at the scale of eyes, nostrils and mouth corners). 1: the same features in the same places; well below 1:
    restoration smeared them or drew others.

    `defects` (H×W bool, the mask stage 1 inpainted): those pixels, grown by the band's reach (4 sigma), are left
    out, so a scratch across the face that stage 1 rightly removed does not count as structure lost (with them
    in, a detector that finds more of the scratch on a face had the scratched scan's face put back). Where less
    than a quarter of the window is left, the measure cannot judge and returns 1 (nothing is put back)."""
    y0, y1, x0, x1 = face_window(box, scan.shape[0], scan.shape[1])
    if y1 - y0 < 4 or x1 - x0 < 4:
        return 1.0
    sigma = max(0.8, min(y1 - y0, x1 - x0) / 48.0)

    def band(img: np.ndarray) -> np.ndarray:
        crop = img[y0:y1, x0:x1].astype(np.float32)
        g = crop if crop.ndim == 2 else to_grey(crop)
        return cv2.GaussianBlur(g, (0, 0), sigma) - cv2.GaussianBlur(g, (0, 0), 2 * sigma)

    a, b = band(scan), band(restored)
    if defects is not None and np.any(defects[y0:y1, x0:x1]):
        r = int(math.ceil(4 * sigma))
        grown = cv2.dilate(np.ascontiguousarray(defects[y0:y1, x0:x1], np.uint8),
                           cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))) > 0
        keep = ~grown
        if keep.sum() < 0.25 * keep.size:
            return 1.0
        a, b = a[keep], b[keep]
    a, b = a - a.mean(), b - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 1e-12 else 1.0


# the scan's face is put back through the scan's own edge-preserving filter (the guided filter with the scan as its
# guide: imageops.tone), sigma 1 px, eps 0.03: the best self-guided setting on the val photos (scripts/tone_ablation.py,
# 2026-12-02: 19.06 dB against 17.95 for the scan itself), so a noisy scan's grain is not pasted into a denoised photo
PUT_BACK_DENOISE: tuple[float, float] | None = (1.0, 0.03)


def put_back(blended: np.ndarray, scan: np.ndarray, box: tuple[int, int, int, int] | list[int],
             colour: Any = None, denoise: tuple[float, float] | None = PUT_BACK_DENOISE) -> np.ndarray:
    """The scan's own face into `blended` (in place; H×W×3 float [0,1]) over the face window, feathered over
    its outer quarter so no seam shows; `colour` (an imageops.colour.ColourAffine): the global correction the
    rest of the photo had, applied to the scan's face first; `denoise` (sigma, eps): the scan's face smoothed by
    its own guided filter first (None: the raw scan)."""
    h, w = blended.shape[:2]
    y0, y1, x0, x1 = face_window(box, h, w)
    if y1 <= y0 or x1 <= x0:
        return blended
    if denoise is None:
        src = scan[y0:y1, x0:x1].astype(np.float32)
    else:      # filtered with the context its Gaussian passes reach, so the window is what a full-image pass gives
        from oldphoto.imageops.tone import guided_tone_transfer, halo

        sigma, eps = denoise
        r = halo(sigma)
        cy0, cx0 = max(0, y0 - r), max(0, x0 - r)
        crop = np.asarray(scan[cy0:min(h, y1 + r), cx0:min(w, x1 + r)], np.float32)
        src = guided_tone_transfer(crop, crop, None, sigma=sigma, eps=eps)[y0 - cy0:y1 - cy0, x0 - cx0:x1 - cx0]

    def ramp(n: int) -> np.ndarray:
        d = np.minimum(np.arange(n) + 0.5, n - np.arange(n) - 0.5) / max(1.0, n / 4.0)
        return np.clip(d, 0.0, 1.0).astype(np.float32)

    m = np.outer(ramp(y1 - y0), ramp(x1 - x0))[..., None]
    if colour is not None:
        src = colour.apply(src, out=src)
    if src.ndim == 2:
        src = src[..., None]
    blended[y0:y1, x0:x1] = src * m + blended[y0:y1, x0:x1] * (1.0 - m)
    return blended


def face_centred_crops(photo: np.ndarray, size: int, max_faces: int = 4) -> list[np.ndarray]:
    """size×size crops centred on the faces dlib finds in a photo, the face about 40 % of the crop's side."""
    out = []
    h, w = photo.shape[:2]
    for f in detect_faces(photo)[:max_faces]:
        l, t, r, b = f.box
        side = min(int(2.5 * max(r - l, b - t)), h, w)       # a square window, shifted to fit the photo
        cx, cy = (l + r) // 2, (t + b) // 2
        x0 = min(max(0, cx - side // 2), w - side)
        y0 = min(max(0, cy - side // 2), h - side)
        crop = photo[y0:y0 + side, x0:x0 + side]
        if min(crop.shape[:2]) < 64:
            continue
        out.append(cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA if crop.shape[0] > size
                              else cv2.INTER_CUBIC))
    return out
