"""Unit tests of oldphoto.imageops: io, geometry/tiling, face geometry and blending, review sheet."""
from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageCms, ImageOps
from skimage.transform import SimilarityTransform, warp

from oldphoto.imageops import faces as F
from oldphoto.imageops.geometry import (detector_size, full_size_16, pad_to_multiple, resize, run_tiled,
                                        tile_spans)
from oldphoto.imageops.io import ImageDecodeError, apply_orientation, decode_image, encode_image, to_uint
from oldphoto.imageops.review import review_sheet


# ------------------------------------------------------------------------------------------- io
def _png(arr, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG", **kw)
    return buf.getvalue()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pil_exif_transpose(orientation):
    rng = np.random.default_rng(orientation)
    arr = rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    im.save(buf, "PNG", exif=exif.tobytes())
    dec = decode_image(buf.getvalue())
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(buf.getvalue()))).convert("RGB"))
    assert dec.orientation == orientation
    assert dec.pixels.shape == expected.shape
    np.testing.assert_array_equal(np.rint(dec.pixels * 255).astype(np.uint8), expected)
    # the re-encoded image is upright and says so
    out = encode_image(dec.pixels, "PNG", exif=dec.exif)
    back = Image.open(io.BytesIO(out))
    assert back.getexif().get(0x0112, 1) == 1
    assert back.size == (expected.shape[1], expected.shape[0])


def test_apply_orientation_rotates_jpeg_exif_6():
    arr = np.zeros((30, 50, 3), np.uint8)
    arr[:5, :5] = 255                           # marker in the stored top-left corner
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6                            # stored rotated: viewer turns it 90° clockwise
    buf = io.BytesIO()
    im.save(buf, "JPEG", exif=exif.tobytes(), quality=95)
    dec = decode_image(buf.getvalue())
    assert dec.pixels.shape[:2] == (50, 30)
    assert dec.pixels[:5, -5:].mean() > 0.9     # clockwise: top-left goes to top-right
    assert dec.pixels[-5:, :5].mean() < 0.1


@pytest.mark.parametrize("fmt,channels", [("PNG", 1), ("PNG", 3), ("TIFF", 1), ("TIFF", 3)])
def test_16bit_round_trip(fmt, channels):
    rng = np.random.default_rng(3)
    shape = (21, 33) if channels == 1 else (21, 33, 3)
    arr = rng.integers(0, 65536, shape, dtype=np.uint16)
    if channels == 3:
        import tifffile

        if fmt == "PNG":
            data = cv2.imencode(".png", arr[..., ::-1])[1].tobytes()
        else:
            buf = io.BytesIO()
            tifffile.imwrite(buf, arr, photometric="rgb")
            data = buf.getvalue()
    else:
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, fmt)
        data = buf.getvalue()
    dec = decode_image(data)
    assert dec.bit_depth == 16 and dec.grey == (channels == 1)
    first = dec.pixels[..., 0] if channels == 1 else dec.pixels
    np.testing.assert_array_equal(np.rint(first * 65535).astype(np.uint16), arr)
    out = encode_image(dec.pixels, fmt, grey=dec.grey, bit_depth=16)
    dec2 = decode_image(out)
    assert dec2.bit_depth == 16 and dec2.grey == dec.grey and dec2.format == fmt
    np.testing.assert_array_equal(np.rint(dec2.pixels * 65535), np.rint(dec.pixels * 65535))


def test_icc_and_exif_pass_through_png_and_tiff():
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    arr = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x010F] = "ScanCo"                      # Make
    buf = io.BytesIO()
    im.save(buf, "JPEG", icc_profile=icc, exif=exif.tobytes())
    dec = decode_image(buf.getvalue())
    assert dec.icc_profile == icc
    for depth in (8, 16):
        out = Image.open(io.BytesIO(encode_image(dec.pixels, "PNG", bit_depth=depth, icc_profile=dec.icc_profile,
                                                 exif=dec.exif)))
        assert out.info.get("icc_profile") == icc, depth
        assert out.getexif().get(0x010F) == "ScanCo", depth
    # TIFF: the file's descriptive tags (not its structural IFD) and the profile and resolution go along
    buf = io.BytesIO()
    im.save(buf, "TIFF", icc_profile=icc, tiffinfo={271: "ScanCo", 315: "Studio Mueller"}, dpi=(600, 600))
    dec = decode_image(buf.getvalue())
    assert dec.tiff_tags == {271: "ScanCo", 315: "Studio Mueller"} and dec.exif is None and dec.dpi == (600, 600)
    for depth in (8, 16):
        data = encode_image(dec.pixels, "TIFF", bit_depth=depth, icc_profile=dec.icc_profile,
                            tiff_tags=dec.tiff_tags, dpi=dec.dpi)
        out = Image.open(io.BytesIO(data))
        assert out.info.get("icc_profile") == icc, depth
        assert out.tag_v2.get(271) == "ScanCo", depth
        assert decode_image(data).bit_depth == depth and decode_image(data).dpi == (600, 600)


def test_modes_are_converted_sensibly():
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:4, ..., 3] = 255                       # top half opaque red, bottom transparent
    dec = decode_image(_png(rgba))
    assert not dec.grey and dec.mode == "RGBA"
    np.testing.assert_allclose(dec.pixels[0, 0], [1, 0, 0])
    np.testing.assert_allclose(dec.pixels[-1, 0], [1, 1, 1])   # composited on white
    grey = decode_image(_png(np.full((5, 7), 100, np.uint8)))
    assert grey.grey and grey.pixels.shape == (5, 7, 3) and grey.bit_depth == 8
    pal = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).convert("P")
    buf = io.BytesIO()
    pal.save(buf, "PNG")
    assert decode_image(buf.getvalue()).pixels.shape == (8, 8, 3)
    cmyk = Image.new("CMYK", (6, 4), (0, 255, 255, 0))
    buf = io.BytesIO()
    cmyk.save(buf, "JPEG")
    dec = decode_image(buf.getvalue())
    assert dec.mode == "CMYK" and dec.pixels[..., 0].mean() > 0.8 and dec.pixels[..., 1].mean() < 0.2


def test_decode_errors_are_one_line():
    with pytest.raises(ImageDecodeError, match="empty"):
        decode_image(b"")
    with pytest.raises(ImageDecodeError, match="not a readable image"):
        decode_image(b"hello, this is text\n" * 10)
    good = _png(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(ImageDecodeError, match="too large"):
        decode_image(good, max_pixels=1000)
    with pytest.raises(ImageDecodeError) as e:
        decode_image(good[: len(good) // 2])
    assert "\n" not in str(e.value)


def test_to_uint_rounds_halves_up_like_the_official_save_image():
    # values exactly half-way between two codes: the official output (torchvision save_image) is
    # floor(x*255 + 0.5) in float32, so 0.5, 2.5, ... go up; half-to-even would send 0.5 -> 0, 2.5 -> 2
    x = ((np.arange(256, dtype=np.float32) + 0.5) / np.float32(255)).clip(0, 1)
    x = np.concatenate([x, np.linspace(0, 1, 4097, dtype=np.float32), np.float32([-0.2, 1.3])])
    official = torch.from_numpy(x).mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8).numpy()
    np.testing.assert_array_equal(to_uint(x, 8), official)
    assert to_uint(np.float32([0.5 / 255]), 8)[0] == 1
    assert to_uint(np.float32([0.5 / 65535]), 16)[0] == 1 and to_uint(np.float32([1.0]), 16)[0] == 65535


# ------------------------------------------------------------------------------------------- geometry
def test_official_size_rules_round_half_to_even():
    assert full_size_16(1000, 696) == (992, 704)     # 62.5 -> 62, 43.5 -> 44
    assert detector_size(480, 640) == (256, 336)     # 341.33 -> round(21.33)*16
    assert detector_size(640, 480) == (336, 256)
    assert pad_to_multiple(np.zeros((5, 9, 3)), 4).shape == (8, 12, 3)
    assert pad_to_multiple(np.zeros((2, 2)), 16).shape == (16, 16)


def test_resize_float_keeps_precision_and_dtype():
    a = np.linspace(0, 1, 64 * 48, dtype=np.float32).reshape(48, 64)
    b = resize(np.stack([a, a, a], 2), (24, 32), "bicubic")
    assert b.dtype == np.float32 and b.shape == (24, 32, 3)
    assert np.abs(b[..., 0] - a[::2, ::2]).max() < 0.02


def test_tile_weights_sum_to_one_and_respect_tile_size():
    for n, tile in ((1008, 256), (4000, 512), (160, 128), (64, 64), (6000, 512)):
        spans = tile_spans(n, tile, overlap=32, halo=16, multiple=16)
        total = np.zeros(n)
        for s in spans:
            assert s.stop - s.start <= tile and s.start % 16 == 0 and s.stop % 16 == 0
            total[s.start:s.stop] += s.weights(32)
        np.testing.assert_allclose(total, 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="too small"):
        tile_spans(96, 64, overlap=32, halo=16, multiple=16)


class _ConvNet(torch.nn.Module):
    """Convolutions only (incl. stride-2 down and transposed up): no image-wide statistics."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(8, 8, 4, stride=2, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(),
            torch.nn.ConvTranspose2d(8, 8, 4, stride=2, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(8, 3, 3, padding=1))

    def forward(self, x):
        return self.net(x)


@pytest.mark.slow
def test_tiled_equals_untiled_on_conv_only_net():
    net = _ConvNet().eval()
    img = np.random.default_rng(1).standard_normal((3, 160, 224)).astype(np.float32)
    with torch.inference_mode():
        whole = net(torch.from_numpy(img)[None])[0].numpy()
    tiled = run_tiled(net, img, out_channels=3, tile=96, overlap=16, halo=16, multiple=4)
    assert np.abs(tiled - whole).max() < 1e-5
    # without halo the tile borders show: the comparison above is not vacuous
    seams = run_tiled(net, img, out_channels=3, tile=64, overlap=0, halo=0, multiple=4)
    assert np.abs(seams - whole).max() > 1e-3


# ------------------------------------------------------------------------------------------- faces
def test_template_points_match_official_values():
    np.testing.assert_allclose(F.template_points(256), [[89.0, 108.5], [167.0, 108.5], [128.0, 147.5],
                                                        [104.6, 195.86], [151.4, 195.86]], atol=1e-4)
    np.testing.assert_allclose(F.template_points(512), [[178.0, 217.0], [334.0, 217.0], [256.0, 295.0],
                                                        [209.2, 391.72], [302.8, 391.72]], atol=1e-4)
    assert F.template_points(256).dtype == np.float32
    assert abs(float(F.template_points(256)[3, 0]) - 104.59999847) < 1e-6


def test_five_points_truncate_eye_centres():
    lm = np.zeros((68, 2))
    lm[36], lm[39] = (10, 20), (13, 23)          # mean 11.5, 21.5 -> 11, 21
    lm[42], lm[45] = (30, 20), (35, 21)          # mean 32.5, 20.5 -> 32, 20
    lm[30], lm[48], lm[54] = (22, 30), (15, 40), (29, 41)
    np.testing.assert_array_equal(F.five_points(lm), [[11, 21], [32, 20], [22, 30], [15, 40], [29, 41]])


def test_alignment_maps_landmarks_onto_template():
    size = 256
    truth = SimilarityTransform(scale=0.6, rotation=np.deg2rad(12), translation=(140, 90))
    landmarks = truth(F.template_points(size).astype(np.float64))
    tform = F.alignment_transform(landmarks, size)
    np.testing.assert_allclose(tform.params, truth.params, atol=1e-6)
    img = np.zeros((400, 500, 3), np.uint8)
    for x, y in landmarks:
        cv2.circle(img, (int(round(x)), int(round(y))), 3, (255, 255, 255), -1)
    aligned = F.align_face(img, tform, size)
    assert aligned.shape == (size, size, 3) and aligned.dtype == np.uint8
    for tx, ty in F.template_points(size):
        assert aligned[int(round(ty)), int(round(tx))].min() > 200


def test_histogram_matching_follows_reference_distribution():
    rng = np.random.default_rng(0)
    src = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    ref = rng.integers(100, 140, (64, 64, 3), dtype=np.uint8)
    out = F.match_histograms(src, ref)
    assert out.min() >= 100 and out.max() < 140
    for c in range(3):                            # monotone mapping
        order = np.argsort(src[..., c].ravel(), kind="stable")
        assert np.all(np.diff(out[..., c].ravel()[order].astype(int)) >= 0)
        assert abs(float(out[..., c].mean()) - float(ref[..., c].mean())) < 1.5
    np.testing.assert_array_equal(F.match_histograms(ref, ref), ref)


def _blend_full_frame(blended, source, face, tform, size):
    """§9.4 literally, on the whole frame (the reference for the ROI implementation)."""
    h, w = blended.shape[:2]
    aligned = warp(source, tform, output_shape=(size, size, 3), order=1, preserve_range=True)
    fwd = warp(np.ones_like(source), tform, output_shape=(size, size, 3), order=0, preserve_range=True)
    matched = F.match_histograms(face, aligned.astype(np.uint8))
    warped = warp(matched, tform.inverse, output_shape=(h, w, 3), order=3, preserve_range=True)
    bmask = warp(fwd.astype(np.float64), tform.inverse, output_shape=(h, w, 3), order=0, preserve_range=True)
    m = cv2.erode((bmask * 255).astype(np.float32), np.ones((9, 9), np.uint8), iterations=3)
    mb = cv2.GaussianBlur(m, (25, 25), 0) / 255.0
    return np.clip((warped / 255.0) * mb + blended * (1 - mb), 0, 1)


@pytest.mark.parametrize("translation", [(60, 40), (-20, 150)])   # inside, and hanging off the left edge
def test_blend_face_roi_equals_full_frame(translation):
    rng = np.random.default_rng(2)
    size = 64
    source = rng.integers(0, 256, (220, 260, 3), dtype=np.uint8)
    base = source.astype(np.float32) / 255.0
    face = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    tform = SimilarityTransform(scale=1.5, rotation=0.2, translation=translation)
    ours = F.blend_face(base.copy(), source, face, tform, size)
    ref = _blend_full_frame(base.copy(), source, face, tform, size)
    assert np.abs(ours - ref).max() < 1e-5
    changed = np.abs(ours - base).max(axis=2) > 1e-6
    assert changed.any()
    y0, y1, x0, x1 = F.face_region(tform, size, *base.shape[:2])
    outside = changed.copy()
    outside[y0:y1, x0:x1] = False
    assert not outside.any()


def test_landmarks_model_found_without_pkg_resources():
    import os

    path = F.landmarks_model_path()
    assert os.path.basename(path) == "shape_predictor_68_face_landmarks.dat" and os.path.getsize(path) > 1e6


def test_review_sheet_has_three_panels_with_mask():
    a = np.random.default_rng(0).random((100, 150, 3)).astype(np.float32)
    mask = np.zeros((100, 150), bool)
    mask[40:60] = True
    sheet = review_sheet(a, a, mask, height=100)
    two = review_sheet(a, a, None, height=100)
    assert sheet.dtype == np.uint8 and sheet.shape[0] == two.shape[0]
    assert sheet.shape[1] > two.shape[1] + 140


# ------------------------------------------------------------------------------------------- tone transfer
def _textured_grey(h=64, w=80, seed=0):
    rng = np.random.default_rng(seed)
    g = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 1.5)
    return (g - g.min()) / (g.max() - g.min()) * 0.6 + 0.2


def test_tone_transfer_restores_lost_colour_and_contrast():
    from oldphoto.imageops.tone import guided_tone_transfer

    g = _textured_grey()
    reference = np.stack([0.9 * g + 0.08, 0.8 * g + 0.05, 0.6 * g + 0.02], axis=2)    # sepia-tinted scan
    restored = np.repeat((0.4 * g + 0.45)[..., None], 3, axis=2)                        # colour + contrast lost
    before = reference.copy(), restored.copy()
    out = guided_tone_transfer(restored, reference)
    assert out.shape == reference.shape and out.dtype == np.float32
    err_before = np.abs(restored - reference).mean()
    err_after = np.abs(out - reference).mean()
    assert err_after < 0.03 and err_after < err_before / 4
    # per-channel means follow the reference (the tint is back)
    assert np.allclose(out.mean(axis=(0, 1)), reference.mean(axis=(0, 1)), atol=0.01)
    assert np.array_equal(before[0], reference) and np.array_equal(before[1], restored)    # pure function


def test_tone_transfer_ignores_scratched_pixels():
    from oldphoto.imageops.tone import guided_tone_transfer

    g = _textured_grey(seed=1)
    clean = np.repeat(g[..., None], 3, axis=2)
    scan = clean.copy()
    scratch = np.zeros(g.shape, bool)
    scratch[:, 38:41] = True
    scan[scratch] = 1.0                                        # a white scratch in the scan
    restored = clean * 0.5 + 0.3                               # network: scratch inpainted, tone off
    masked = guided_tone_transfer(restored, scan, valid=~scratch)
    unmasked = guided_tone_transfer(restored, scan)
    err_masked = np.abs(masked[scratch] - clean[scratch]).mean()
    err_unmasked = np.abs(unmasked[scratch] - clean[scratch]).mean()
    assert err_masked < 0.04
    assert err_unmasked > 2 * err_masked                       # without the mask the scratch bleeds back


def test_tone_transfer_wide_holes_use_global_fit_and_edge_cases():
    from oldphoto.imageops.tone import guided_tone_transfer

    g = _textured_grey(seed=2)
    scan = np.repeat((0.5 * g + 0.25)[..., None], 3, axis=2)
    restored = np.repeat(g[..., None], 3, axis=2)
    valid = np.ones(g.shape, bool)
    valid[:, 20:60] = False                                    # 40 px hole, far wider than the Gaussian window
    out = guided_tone_transfer(restored, scan, valid=valid, sigma=2.0)
    assert np.isfinite(out).all()
    # inside the hole the global linear fit (scan = 0.5 g + 0.25) is applied to the guide
    assert np.abs(out[:, 30:50] - scan[:, 30:50]).mean() < 0.02
    # nothing valid: unchanged; grey (2-D) images work; shape mismatch is an error
    assert np.array_equal(guided_tone_transfer(restored, scan, valid=np.zeros(g.shape, bool)), restored)
    grey = guided_tone_transfer(g, 0.5 * g + 0.25)
    assert grey.shape == g.shape and np.abs(grey - (0.5 * g + 0.25)).mean() < 0.02
    with pytest.raises(ValueError):
        guided_tone_transfer(restored, scan[:10])


def test_tone_transfer_reads_the_guide_once_unless_a_window_is_empty():
    """The global fit (a whole extra pass over the guide, which with structure return is costly) is made only
    when some window holds no valid pixel; thin scratches leave none, and the result is the same either way."""
    from oldphoto.imageops.tone import grey, guided_tone_transfer

    g = _textured_grey(seed=3)
    scan = np.repeat((0.5 * g + 0.25)[..., None], 3, axis=2)
    restored = np.repeat(g[..., None], 3, axis=2)
    calls = []

    def guide(y0, y1, x0, x1):
        calls.append((y0, y1, x0, x1))
        return grey(restored[y0:y1, x0:x1])             # the default guide, counted

    thin, wide = np.ones(g.shape, bool), np.ones(g.shape, bool)
    thin[::9, :] = False                                       # one-pixel scratches
    wide[:, 20:60] = False                                     # a hole wider than the window
    for valid, passes in ((thin, 1), (wide, 2)):
        calls.clear()
        out = guided_tone_transfer(restored, scan, valid=valid, sigma=2.0, tile=32, guide=guide)
        tiles = -(-g.shape[0] // 32) * -(-g.shape[1] // 32)
        assert len(calls) == passes * tiles, (len(calls), tiles)
        assert np.array_equal(out, guided_tone_transfer(restored, scan, valid=valid, sigma=2.0, tile=32))


# ------------------------------------------------------------------------------------------- face safety
def test_merge_faces_keeps_scan_faces_that_the_restored_image_lost():
    from oldphoto.imageops.faces import DetectedFace, box_iou, merge_faces

    def face(box):
        return DetectedFace(box=box, landmarks68=np.zeros((68, 2)))

    restored = [face((10, 10, 60, 60))]
    scan = [face((12, 11, 61, 62)), face((100, 100, 150, 150))]
    merged = merge_faces(restored, scan)
    assert [(f.box, where) for f, where in merged] == [((10, 10, 60, 60), "restored"), ((100, 100, 150, 150), "input")]
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0 and box_iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0


def test_face_agreement_tolerates_noise_and_catches_blotches_and_shading():
    from oldphoto.imageops.faces import face_agreement
    from oldphoto.stages.base import FACE_MIN_AGREEMENT_DB

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:128, 0:128]
    face = np.stack([100 + 60 * np.exp(-((yy - 64) ** 2 + (xx - 64) ** 2) / 1500.0)] * 3, -1)
    face[50:56, 40:52] -= 50        # eyes
    face[50:56, 76:88] -= 50
    face = face.clip(0, 255).astype(np.uint8)
    noisy = (face + rng.normal(0, 12, face.shape)).clip(0, 255).astype(np.uint8)      # a grainy scan
    assert face_agreement(face, face) > 60
    assert face_agreement(face, noisy) >= FACE_MIN_AGREEMENT_DB
    blotch = face.copy()
    blotch[30:70, 20:64] = (60, 200, 60)                                                # a green blotch
    assert face_agreement(face, blotch) < FACE_MIN_AGREEMENT_DB
    darker = (face.astype(np.float32) * np.linspace(1.0, 0.6, 128)[None, :, None]).astype(np.uint8)  # changed shading
    assert face_agreement(face, darker) < FACE_MIN_AGREEMENT_DB


def test_blend_strength_scales_the_pasted_face():
    from skimage.transform import SimilarityTransform

    from oldphoto.imageops.faces import blend_face

    base = np.full((200, 200, 3), 0.5, np.float32)
    src = (base * 255).astype(np.uint8)
    white = np.full((64, 64, 3), 255, np.uint8)
    t = SimilarityTransform(scale=1.0, translation=(60, 60))
    full = blend_face(base.copy(), src, white, t, 64, strength=1.0)
    half = blend_face(base.copy(), src, white, t, 64, strength=0.5)
    none = blend_face(base.copy(), src, white, t, 64, strength=0.0)
    assert np.array_equal(none, base)
    # histogram matching maps the white face to the source's grey, so compare through the mask's effect
    assert np.allclose(half - base, 0.5 * (full - base), atol=2e-3)
    with pytest.raises(ValueError):
        blend_face(base.copy(), src, white, t, 64, strength=1.2)


# ------------------------------------------------------------------------------------------- decode policy
def _bomb_png(side: int) -> bytes:
    """A PNG whose header claims side×side grey pixels, with almost no data."""
    import struct
    import zlib

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 1024)) + chunk(b"IEND", b""))


def test_pixel_limit_is_max_pixels_not_pils_default():
    bomb = _bomb_png(10_000)                       # 100 MP: over PIL's default 89.5 MP, under 200 MP
    pil_default = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageDecodeError) as e:     # passes the size check, then fails on the missing data
        decode_image(bomb, max_pixels=200_000_000)
    assert "too large" not in str(e.value) and "truncated or corrupt" in str(e.value)
    with pytest.raises(ImageDecodeError, match="too large.*50,000,000"):
        decode_image(bomb, max_pixels=50_000_000)
    with pytest.raises(ImageDecodeError, match="too large"):
        decode_image(_bomb_png(20_000), max_pixels=200_000_000)     # 400 MP: PIL's error path, same message
    assert Image.MAX_IMAGE_PIXELS == pil_default   # PIL's global limit is left as it was


def _fake_icc(size: int, space: bytes = b"RGB ") -> bytes:
    icc = bytearray(size)
    icc[0:4] = size.to_bytes(4, "big")
    icc[16:20] = space
    icc[36:40] = b"acsp"
    return bytes(icc)


def test_oversized_icc_is_dropped_with_a_warning_and_the_output_reads_back():
    from oldphoto.imageops.io import MAX_ICC_BYTES, check_readable

    arr = np.random.default_rng(0).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    for size, kept in ((3_000_000, False), (400_000, True)):
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "JPEG", icc_profile=_fake_icc(size))
        dec = decode_image(buf.getvalue())
        assert (dec.icc_profile is not None) == kept, size
        assert any("ICC profile of 3,000,000 bytes dropped" in w for w in dec.warnings) == (not kept)
        out = encode_image(dec.pixels, "PNG", icc_profile=dec.icc_profile, exif=dec.exif)
        check_readable(out)
        again = decode_image(out)
        assert (again.icc_profile == dec.icc_profile) and again.width == 24
    # what the limit protects against: PIL cannot read a PNG carrying a larger profile
    big = encode_image(arr / 255.0, "PNG", icc_profile=_fake_icc(MAX_ICC_BYTES + 100_000))
    with pytest.raises(ValueError, match="cannot be read back"):
        check_readable(big)


def test_float_tiffs_become_16_bit_with_a_warning():
    import tifffile

    rng = np.random.default_rng(1)
    rgb = rng.random((12, 10, 3)).astype(np.float32)
    buf = io.BytesIO()
    tifffile.imwrite(buf, rgb, photometric="rgb")
    dec = decode_image(buf.getvalue())                     # PIL cannot open float RGB at all
    assert dec.bit_depth == 16 and not dec.grey and dec.format == "TIFF"
    assert np.abs(dec.pixels - rgb).max() < 1e-6
    assert any("16-bit" in w for w in dec.warnings)
    out = encode_image(dec.pixels, "TIFF", bit_depth=16)
    back = tifffile.imread(io.BytesIO(out))
    assert back.dtype == np.uint16 and back.shape == (12, 10, 3)
    grey = rng.random((9, 7)).astype(np.float32) * 200     # 0..255 scale
    buf = io.BytesIO()
    Image.fromarray(grey).save(buf, "TIFF")
    dec = decode_image(buf.getvalue())
    assert dec.grey and dec.bit_depth == 16 and np.allclose(dec.pixels[..., 0], grey / 255, atol=1e-6)


def test_lzw_tiffs_that_tifffile_leaves_to_imagecodecs_are_decoded():
    """LZW is the usual compression of 16-bit scans, and tifffile decodes it only with the optional imagecodecs
    package (not installed): 16-bit RGB(A) and float LZW TIFFs (written by OpenCV's libtiff) still decode exactly;
    a truncated one is still a clear decode error."""
    import tifffile

    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 65536, (21, 33, 3), dtype=np.uint16)
    lzw = cv2.imencode(".tif", rgb[..., ::-1], [cv2.IMWRITE_TIFF_COMPRESSION, 5])[1].tobytes()
    with tifffile.TiffFile(io.BytesIO(lzw)) as tf:
        assert tf.pages[0].compression == 5
    with pytest.raises(ValueError, match="imagecodecs"):      # what the fallback is for
        tifffile.imread(io.BytesIO(lzw))
    dec = decode_image(lzw)
    assert dec.bit_depth == 16 and not dec.grey and dec.format == "TIFF"
    np.testing.assert_array_equal(np.rint(dec.pixels * 65535).astype(np.uint16), rgb)
    rgba = np.concatenate([rgb, np.full((21, 33, 1), 65535, np.uint16)], axis=2)
    dec = decode_image(cv2.imencode(".tif", rgba[..., [2, 1, 0, 3]], [cv2.IMWRITE_TIFF_COMPRESSION, 5])[1].tobytes())
    np.testing.assert_array_equal(np.rint(dec.pixels * 65535).astype(np.uint16), rgb)   # opaque alpha on white
    f = rng.random((12, 10, 3)).astype(np.float32)
    dec = decode_image(cv2.imencode(".tif", f[..., ::-1], [cv2.IMWRITE_TIFF_COMPRESSION, 5])[1].tobytes())
    assert dec.bit_depth == 16 and np.abs(dec.pixels - f).max() < 1e-6
    with pytest.raises(ImageDecodeError, match="cannot decode TIFF data"):
        decode_image(lzw[: len(lzw) // 2])


def test_tiffs_pil_cannot_open_grey_alpha_16_and_extra_samples():
    """PIL cannot open a 16-bit grey+alpha TIFF nor one with samples beyond alpha: tifffile reads them; alpha is
    composited on white, samples the file does not call alpha are left out with a warning."""
    import tifffile

    rng = np.random.default_rng(7)
    g = rng.integers(0, 65536, (20, 30), dtype=np.uint16)
    a = np.where(np.arange(30) < 15, 65535, 0).astype(np.uint16)[None, :].repeat(20, 0)
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.stack([g, a], axis=2), photometric="minisblack", extrasamples=["unassalpha"])
    dec = decode_image(buf.getvalue())
    assert dec.grey and dec.bit_depth == 16 and dec.warnings == [] and dec.mode == "LA;16"
    np.testing.assert_array_equal(np.rint(dec.pixels[:, :15, 0] * 65535).astype(np.uint16), g[:, :15])
    assert dec.pixels[:, 15:].min() == 1.0                             # transparent: white
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.stack([g, a], axis=2), photometric="miniswhite", extrasamples=["unassalpha"])
    dec = decode_image(buf.getvalue())                                # 0 is white there, alpha as before
    np.testing.assert_array_equal(np.rint(dec.pixels[:, :15, 0] * 65535).astype(np.uint16), 65535 - g[:, :15])
    assert dec.pixels[:, 15:].min() == 1.0
    rgb = rng.integers(0, 65536, (20, 30, 3), dtype=np.uint16)
    five = np.concatenate([rgb, rng.integers(0, 65536, (20, 30, 2), dtype=np.uint16)], axis=2)
    buf = io.BytesIO()
    tifffile.imwrite(buf, five, photometric="rgb", extrasamples=["unspecified", "unspecified"])
    dec = decode_image(buf.getvalue())
    assert not dec.grey and dec.bit_depth == 16 and dec.mode == "RGB;16"
    np.testing.assert_array_equal(np.rint(dec.pixels * 65535).astype(np.uint16), rgb)
    assert dec.warnings == ["TIFF with 2 extra sample(s) per pixel beyond RGB: not restored"]


def test_16bit_rgb_tiff_extra_samples_alpha_only_where_the_file_says_so():
    """PIL opens a 16-bit RGB TIFF with one more sample, and oldphoto read that sample as alpha even where the file
    calls it unspecified (ExtraSamples 0): a zero-filled one made the whole photo white. Now such a sample is left
    out with a warning; associated (premultiplied) alpha and unassociated alpha are both composited on white."""
    import tifffile

    rng = np.random.default_rng(8)
    rgb = rng.random((20, 30, 3))
    a = np.where(np.arange(30) < 15, 1.0, 0.5)[None, :, None].repeat(20, 0)

    def tiff(samples: np.ndarray, extra: str) -> bytes:
        buf = io.BytesIO()
        tifffile.imwrite(buf, np.rint(samples * 65535).astype(np.uint16), photometric="rgb", extrasamples=[extra])
        return buf.getvalue()

    dec = decode_image(tiff(np.concatenate([rgb, np.zeros_like(a)], axis=2), "unspecified"))
    assert dec.bit_depth == 16 and np.abs(dec.pixels - rgb).max() < 1e-4
    assert dec.warnings == ["TIFF with 1 extra sample(s) per pixel beyond RGB: not restored"]
    on_white = rgb * a + (1 - a)
    for extra, stored in (("unassalpha", rgb), ("assocalpha", rgb * a)):
        dec = decode_image(tiff(np.concatenate([stored, a], axis=2), extra))
        assert dec.warnings == [] and np.abs(dec.pixels - on_white).max() < 1e-4, extra


def test_16bit_cmyk_tiff_is_converted_not_read_as_rgba():
    """A 16-bit CMYK TIFF went down the 16-bit RGB(A) path and its black channel was taken for alpha: now PIL
    converts it like an 8-bit one (R = (1 - C)(1 - K) ...)."""
    import tifffile

    rng = np.random.default_rng(6)
    cmyk = rng.integers(0, 65536, (20, 30, 4), dtype=np.uint16)
    buf = io.BytesIO()
    tifffile.imwrite(buf, cmyk, photometric="separated")
    dec = decode_image(buf.getvalue())
    c = cmyk / 65535.0
    assert not dec.grey and np.abs(dec.pixels - (1 - c[..., :3]) * (1 - c[..., 3:])).max() < 3 / 255


def test_multi_frame_files_give_the_first_frame_and_a_warning():
    a = np.zeros((8, 8, 3), np.uint8)
    later = [Image.fromarray(np.full((8, 8, 3), v, np.uint8)) for v in (120, 240)]
    for fmt, kw in (("TIFF", {}), ("GIF", {"duration": 100, "loop": 0})):
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, fmt, save_all=True, append_images=later, **kw)
        dec = decode_image(buf.getvalue())
        assert dec.pixels.max() < 0.05, fmt                  # the first frame
        assert dec.warnings == [f"multi-frame file (3 {'pages' if fmt == 'TIFF' else 'frames'}): "
                                "only the first was restored"], fmt
    assert decode_image(_png(a)).warnings == []


def test_decode_errors_never_quote_the_file():
    secret = b"root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/usr/sbin:/usr/sbin/nologin\n"
    for data in (secret, b"II*\x00" + secret, b"\x89PNG\r\n\x1a\n" + secret, b"GIF89a" + secret):
        with pytest.raises(ImageDecodeError) as e:
            decode_image(data)
        assert "root" not in str(e.value) and "daemon" not in str(e.value), str(e.value)


# ------------------------------------------------------------------------------------------- bounded shapes
def test_detector_size_is_capped_on_each_side():
    from oldphoto.imageops.geometry import DETECTOR_MAX_SIDE

    assert detector_size(16, 20000) == (32, 2048)           # was (256, 320000)
    assert detector_size(20000, 16) == (2048, 32)
    assert detector_size(256, 4096) == (128, 2048)             # 16:1 keeps its aspect ratio
    assert detector_size(1000, 8000) == (256, 2048)            # 8:1 just fits
    assert detector_size(3008, 2000) == detector_size(3008, 2000, max_side=10 ** 9)   # photos: the official size
    for h, w in ((16, 16), (16, 33333), (4000, 6000), (512, 4100), (99999, 48)):
        hn, wn = detector_size(h, w)
        assert 32 <= min(hn, wn) and max(hn, wn) <= DETECTOR_MAX_SIDE and hn % 16 == 0 and wn % 16 == 0



def test_fine_detector_size_is_twice_the_working_size_at_most_the_scan():
    from oldphoto.imageops.geometry import DETECTOR_MAX_SIDE, fine_detector_size

    assert fine_detector_size(256, 256) is None                      # not larger than the working size: one scale
    assert fine_detector_size(16, 20000) is None                     # a strip already at its own short side
    assert fine_detector_size(256, 4096) == (256, 4096)              # worked at 128 x 2048 (capped), so finer
    assert fine_detector_size(512, 512) == (512, 512)
    assert fine_detector_size(608, 512) == (608, 512)
    assert fine_detector_size(304, 448) == (304, 448)                # short side below twice 256: its own size
    assert fine_detector_size(3008, 2000) == (768, 512)
    assert fine_detector_size(1008, 8000) == (512, 4064)             # 8:1 keeps its aspect ratio under the cap
    for h, w in ((320, 320), (4000, 6000), (512, 4096), (1024, 16384)):
        fine, work = fine_detector_size(h, w), detector_size(h, w)
        assert fine is not None and fine[0] % 16 == 0 and fine[1] % 16 == 0
        assert work[0] < fine[0] <= 2 * work[0] and work[1] < fine[1] <= 2 * work[1]
        assert max(fine) <= 2 * DETECTOR_MAX_SIDE

def test_review_sheet_is_capped_on_each_side():
    rng = np.random.default_rng(0)
    for shape in ((10, 20000), (20000, 10), (300, 200)):
        img = rng.random(shape + (3,)).astype(np.float32)
        sheet = review_sheet(img, img, np.zeros(shape, bool), height=100)
        assert sheet.shape[0] == 100 + 18 + 16
        assert sheet.shape[1] <= 3 * 300 + 4 * 8, shape
    strip = rng.random((10, 20000, 3)).astype(np.float32)
    assert review_sheet(strip, strip, None, height=100, max_width=150).shape == (134, 8 + 150 + 8 + 150 + 8, 3)


# ------------------------------------------------------------------------------------------- tone transfer, tiled
def test_tone_transfer_tiles_equal_the_untiled_result():
    from oldphoto.imageops.tone import guided_tone_transfer

    rng = np.random.default_rng(3)
    for h, w in ((150, 230), (7, 300)):
        g = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 1.5)
        scan = np.stack([0.9 * g + 0.05, 0.7 * g + 0.1, 0.5 * g], axis=2).astype(np.float32)
        restored = np.clip(scan * 0.6 + 0.2 + rng.normal(0, 0.02, scan.shape), 0, 1).astype(np.float32)
        valid = np.ones((h, w), bool)
        valid[:, 100:140] = False                       # a hole wider than the window: the global fit is used
        for v in (None, valid):
            whole = guided_tone_transfer(restored, scan, v, tile=max(h, w))
            tiled = guided_tone_transfer(restored, scan, v, tile=32)
            assert np.abs(whole - tiled).max() < 1e-5


TONE_MEMORY_CHILD = r"""
import resource, sys
import numpy as np
from oldphoto.imageops.tone import guided_tone_transfer
h, w = 1500, 3000
restored = np.empty((h, w, 3), np.float32)
restored[:] = np.linspace(0.2, 0.8, w, dtype=np.float32)[None, :, None]
scan = np.empty_like(restored)
np.multiply(restored, 0.9, out=scan)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = guided_tone_transfer(restored, scan, None, tile=int(sys.argv[1]))
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
"""


def test_tone_transfer_working_set_is_bounded():
    import subprocess
    import sys

    extra = int(subprocess.run([sys.executable, "-c", TONE_MEMORY_CHILD, "512"], capture_output=True, text=True,
                               check=True).stdout.split()[-1])
    out_bytes = 1500 * 3000 * 3 * 4                      # 54 MB: the result itself
    assert extra < out_bytes + 60 * 2 ** 20, extra / 2 ** 20   # untiled: about 8× the result


def test_face_guard_keeps_scratches_and_drops_features_inside_faces():
    from oldphoto.imageops.mask import guard_faces

    mask = np.zeros((120, 160), bool)
    mask[40:48, 40:50] = True            # an eye-sized blob inside the face
    mask[60:62, 30:32] = True            # a speck inside the face
    mask[20:100, 70] = True              # a long thin scratch across the face
    mask[10:18, 130:140] = True          # a blob outside the face
    out, removed = guard_faces(mask, [(25, 25, 95, 95)])
    assert removed == 80 + 4
    assert not out[40:48, 40:50].any() and not out[60:62, 30:32].any()
    assert out[20:100, 70].all()                         # the scratch stays, also where it leaves the face
    assert out[10:18, 130:140].all()                     # outside faces nothing changes
    assert mask[40:48, 40:50].all()                      # the input is not modified
    same, none = guard_faces(mask, [])
    assert none == 0 and np.array_equal(same, mask)
    # a scratch the detector marked in two pieces (a 4 px gap), each alone shorter than 0.35 of the face: kept,
    # as one scratch; judged piece by piece (max_gap=0) both would go
    pieces = np.zeros((120, 160), bool)
    pieces[30:50, 60] = True
    pieces[54:74, 61] = True
    kept, lost = guard_faces(pieces, [(25, 25, 95, 95)])
    assert lost == 0 and np.array_equal(kept, pieces)
    assert guard_faces(pieces, [(25, 25, 95, 95)], max_gap=0)[1] == 40
    # two features 4 px apart are grouped and still dropped (thick), and the gap is not added to the mask
    eyes = np.zeros((120, 160), bool)
    eyes[40:48, 40:50] = True
    eyes[40:48, 54:64] = True
    kept, lost = guard_faces(eyes, [(25, 25, 95, 95)])
    assert lost == 160 and not kept.any()


def test_face_guard_keeps_parts_lighter_than_their_ring_given_the_scan(monkeypatch):
    """With the scan's grey level and a contrast, a short white scuff on the face stays masked (a defect on the
    print), a dark eye-sized part of the same shape goes (a feature), and so does a part only slightly lighter or
    one the detector marked with too little confidence; without the grey level (or with no contrast) all go as
    before."""
    import oldphoto.imageops.mask as mask_module
    from oldphoto.imageops.mask import guard_faces, lighter_than_ring

    grey = np.full((120, 160), 0.5, np.float32)
    mask = np.zeros((120, 160), bool)
    mask[40:46, 40:52] = True                            # a white scuff
    grey[40:46, 40:52] = 0.9
    mask[60:66, 40:52] = True                            # a dark eye
    grey[60:66, 40:52] = 0.1
    mask[75:81, 40:52] = True                            # barely lighter than the skin
    grey[75:81, 40:52] = 0.55
    box = [(25, 25, 95, 95)]
    assert lighter_than_ring(mask & (grey > 0.8), grey, mask) == pytest.approx(0.4)
    kept, lost = guard_faces(mask, box, grey=grey, min_contrast=0.1)
    assert kept[40:46, 40:52].all() and not kept[60:66, 40:52].any() and not kept[75:81, 40:52].any()
    assert lost == 2 * 72
    prob = np.where(mask, 0.95, 0.0)
    prob[40:43, 40:52] = 0.3                             # the scuff marked with a mean probability of 0.625
    assert guard_faces(mask, box, grey=grey, min_contrast=0.1, prob=prob, min_prob=0.6)[1] == 2 * 72
    assert guard_faces(mask, box, grey=grey, min_contrast=0.1, prob=prob, min_prob=0.7)[1] == 3 * 72
    off, lost = guard_faces(mask, box, min_contrast=0.1)              # no grey level: judged by shape only
    assert lost == 3 * 72 and not off.any()
    monkeypatch.setattr(mask_module, "FACE_GUARD_MIN_CONTRAST", None)   # no contrast given or by default: off
    assert guard_faces(mask, box, grey=grey)[1] == 3 * 72
    monkeypatch.setattr(mask_module, "FACE_GUARD_MIN_CONTRAST", 0.1)    # the default is read at call time
    assert guard_faces(mask, box, grey=grey)[1] == 2 * 72
    with pytest.raises(ValueError):
        guard_faces(mask, box, grey=grey[:60], min_contrast=0.1)


def test_blob_guard_keeps_scratches_and_dust_and_drops_large_blobs():
    """Anywhere in the image: a large irregular area the detector took for a hole goes, a long thin scratch (also a
    slanted, anti-aliased 3 px one) and dust specks stay."""
    import cv2

    from oldphoto.imageops.mask import BLOB_GUARD_MAX_SPECK, guard_blobs

    mask = np.zeros((200, 300), bool)
    cv2.ellipse(mask.view(np.uint8), (80, 100), (30, 18), 20, 0, 360, 1, -1)   # a light-suit blob: ~1700 px
    mask[5:150, 200:203] = True                                                # a vertical scratch, 3 px wide
    cv2.line(mask.view(np.uint8), (150, 10), (260, 120), 1, 2)                 # and one crossing it: an X
    cv2.line(mask.view(np.uint8), (10, 190), (290, 160), 1, 3)                 # a slanted one
    mask[20:26, 20:26] = True                                                  # dust: 36 px
    blob = np.zeros_like(mask)
    cv2.ellipse(blob.view(np.uint8), (80, 100), (30, 18), 20, 0, 360, 1, -1)
    out, removed = guard_blobs(mask)
    assert removed == blob.sum() > 1500
    assert not out[blob].any()
    assert out[5:150, 200:203].all() and out[20:26, 20:26].all() and out[175, 150] and out[60, 200]
    assert mask[blob].all()                                                    # the input is not modified
    # a square larger than a speck is a blob; one of speck size is dust
    sq = np.zeros((60, 60), bool)
    sq[10:19, 10:19] = True                                                    # 81 px
    kept, removed = guard_blobs(sq)
    assert 81 > BLOB_GUARD_MAX_SPECK and removed == 81 and not kept.any()
    sq[10:19, 10:19], sq[10:18, 10:18] = False, True                           # 64 px
    kept, none = guard_blobs(sq)
    assert none == 0 and np.array_equal(kept, sq)


def test_structure_kept_leaves_out_the_inpainted_defects():
    """A scratch across the face that stage 1 removed is not structure lost once the mask is given; the features
    outside it still count, and a face almost all under the mask cannot be judged (1: nothing put back)."""
    import cv2

    from oldphoto.imageops.faces import structure_kept

    rng = np.random.default_rng(1)
    clean = np.full((120, 120, 3), 0.5, np.float32)
    for y, x in ((45, 45), (45, 75), (80, 60)):
        cv2.circle(clean, (x, y), 6, (0.1, 0.1, 0.1), -1)
    clean += rng.normal(0, 0.02, clean.shape).astype(np.float32)
    scan = clean.copy()
    cv2.line(scan, (10, 20), (110, 100), (1.0, 1.0, 1.0), 3)                  # a bright scratch across the face
    mask = np.zeros(scan.shape[:2], np.uint8)
    cv2.line(mask, (10, 20), (110, 100), 1, 3)
    box = (25, 25, 95, 100)
    without = structure_kept(scan, clean, box)                                   # restored = the clean face
    with_mask = structure_kept(scan, clean, box, mask > 0)
    assert without < 0.75 < 0.95 < with_mask
    smeared = cv2.GaussianBlur(clean, (0, 0), 6)
    assert structure_kept(scan, smeared, box, mask > 0) < 0.8                    # features lost still count
    assert structure_kept(scan, smeared, box, np.ones_like(mask, bool)) == 1.0


def test_structure_kept_and_put_back():
    import cv2

    from oldphoto.imageops.faces import put_back, structure_kept

    rng = np.random.default_rng(0)
    scan = np.full((96, 96, 3), 0.5, np.float32)
    for y, x in ((35, 35), (35, 60), (65, 48)):           # two eyes and a mouth-like dark spot
        cv2.circle(scan, (x, y), 5, (0.1, 0.1, 0.1), -1)
    scan += rng.normal(0, 0.02, scan.shape).astype(np.float32)
    box = (20, 20, 76, 80)
    assert structure_kept(scan, scan.copy(), box) == pytest.approx(1.0)
    smeared = cv2.GaussianBlur(scan, (0, 0), 6)               # features gone
    assert structure_kept(scan, smeared, box) < 0.8
    denoised = cv2.GaussianBlur(scan, (0, 0), 0.7)           # noise gone, features kept
    assert structure_kept(scan, denoised, box) > 0.9
    out = smeared.copy()
    put_back(out, scan, box, denoise=None)
    assert np.allclose(out[48, 48], scan[48, 48])            # the centre is the scan's own face
    assert np.allclose(out[2, 2], smeared[2, 2])             # outside the face window nothing changes
    # by default through the scan's own edge-preserving filter: its grain is not pasted back, its features are
    noisy = scan + rng.normal(0, 0.08, scan.shape).astype(np.float32)
    out = smeared.copy()
    put_back(out, noisy, box)
    flat, raw_flat = out[42:50, 40:56], noisy[42:50, 40:56]        # between the eyes: paper only
    assert flat.std() < 0.5 * raw_flat.std()
    assert out[35, 35].mean() < 0.3 and out[45, 48].mean() > 0.35   # the eyes stay dark, the skin light
    assert structure_kept(scan, out, box) > 0.9
    assert np.allclose(out[2, 2], smeared[2, 2])
