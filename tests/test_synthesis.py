"""Old-photo synthesis: determinism, defect-mask correctness, dropping statistics, ranges, crops, contact sheet."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from oldphoto.data.dataset import builtin_photos, center_crop, load_rgb
from oldphoto.data.textures import TextureBank
from oldphoto.synthesis import DEFAULT, STRONG, SynthesisConfig, random_crop, synthesize
from oldphoto.synthesis.structured import BLEND_MODES, blend
from oldphoto.synthesis.unstructured import UNSTRUCTURED, apply_unstructured


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    rec = next(r for r in builtin_photos() if r.id == "builtin/astronaut")
    return center_crop(load_rgb(rec.path, max_short_side=128), 96)


@pytest.fixture(scope="module")
def bank() -> TextureBank:
    return TextureBank.procedural(seed=3, size=64)


@pytest.mark.parametrize("use_bank", [False, True])
def test_same_seed_same_bytes_different_seed_differs(photo, bank, use_bank):
    tex = bank if use_bank else None
    a = synthesize(photo, 7, tex)
    b = synthesize(photo, np.random.default_rng(7), tex)
    assert a.degraded.tobytes() == b.degraded.tobytes()
    assert a.mask.tobytes() == b.mask.tobytes() and a.ops == b.ops
    c = synthesize(photo, 8, tex)
    assert c.degraded.tobytes() != a.degraded.tobytes()


def test_types_ranges_and_uint8_float_equivalence(photo):
    for seed in range(6):
        for cfg in (DEFAULT, STRONG):
            d = synthesize(photo, seed, None, cfg)
            assert d.degraded.dtype == np.float32 and d.clean.dtype == np.float32 and d.mask.dtype == np.float32
            assert d.degraded.shape == photo.shape and d.mask.shape == photo.shape[:2]
            assert 0.0 <= d.degraded.min() and d.degraded.max() <= 1.0
            assert set(np.unique(d.mask)) <= {0.0, 1.0}
    as_float = synthesize(photo.astype(np.float32) / 255.0, 3)
    as_u8 = synthesize(photo, 3)
    np.testing.assert_allclose(as_float.degraded, as_u8.degraded, atol=1e-6)
    np.testing.assert_array_equal(as_u8.clean, photo.astype(np.float32) / 255.0)
    grey = synthesize(photo[..., 0], 3)
    assert grey.degraded.shape == photo.shape
    with pytest.raises(ValueError):
        synthesize(photo.astype(np.float32), 0)  # floats must be in [0, 1]


@pytest.mark.parametrize("use_bank", [False, True])
def test_mask_marks_exactly_the_changed_pixels(photo, bank, use_bank):
    # mid-tone image so bright scratches change every pixel they cover (lighten/screen/add)
    clean = (0.15 + 0.5 * photo.astype(np.float32) / 255.0).astype(np.float32)
    cfg = SynthesisConfig.defects_only()
    covered = 0
    for seed in range(8):
        d = synthesize(clean, seed, bank if use_bank else None, cfg)
        changed = np.abs(d.degraded - d.clean).max(axis=2) > 1e-6
        mask = d.mask > 0.5
        assert not (changed & ~mask).any(), f"seed {seed}: pixels changed outside the mask"
        if mask.any():
            covered += 1
            assert changed[mask].mean() > 0.6, f"seed {seed}: most masked pixels should change"
    assert covered == 8


def test_no_mask_from_unstructured_degradations(photo):
    cfg = SynthesisConfig.unstructured_only()
    changed_any = 0
    for seed in range(10):
        d = synthesize(photo, seed, None, cfg)
        assert not d.mask.any()
        assert all(op in UNSTRUCTURED for op in d.ops)
        changed_any += int(np.abs(d.degraded - d.clean).max() > 0)
    assert changed_any >= 8


def test_each_unstructured_degradation_dropped_with_p_0_3_in_random_order():
    img = np.full((8, 8, 3), 0.5, np.float32)
    counts = {k: 0 for k in UNSTRUCTURED}
    orders = set()
    n = 600
    rng = np.random.default_rng(123)
    for _ in range(n):
        _, applied = apply_unstructured(img, rng, drop_prob=0.3)
        for k in applied:
            counts[k] += 1
        if len(applied) == len(UNSTRUCTURED):
            orders.add(tuple(applied))
    for k, c in counts.items():
        # binomial(600, 0.7): sd ≈ 11 → 0.7 ± 0.06 is more than 3 sd
        assert abs(c / n - 0.7) < 0.06, (k, c / n)
    assert len(orders) > 5
    _, none = apply_unstructured(img, rng, drop_prob=1.0)
    assert none == []


def test_strong_preset_degrades_more(photo):
    def mean_abs(cfg):
        return np.mean([np.abs(synthesize(photo, s, None, cfg).degraded - photo / 255.0).mean() for s in range(6)])

    def coverage(cfg):
        return np.mean([synthesize(photo, s, None, cfg).mask.mean() for s in range(6)])

    assert mean_abs(STRONG) > mean_abs(DEFAULT)
    assert coverage(STRONG) > coverage(DEFAULT)


def test_blend_modes_leave_zero_alpha_untouched():
    rng = np.random.default_rng(0)
    img = rng.random((10, 10, 3)).astype(np.float32)
    val = rng.random((10, 10, 3)).astype(np.float32)
    alpha = np.zeros((10, 10), np.float32)
    alpha[3:6, 2:8] = 0.7
    for mode in BLEND_MODES + ("normal",):
        out = blend(img, val, alpha, mode)
        np.testing.assert_array_equal(out[alpha == 0], img[alpha == 0])
    out = blend(img, np.ones_like(img), alpha, "lighten")
    assert (out[alpha > 0] >= img[alpha > 0]).all()
    with pytest.raises(ValueError):
        blend(img, val, alpha, "multiply-ish")


def test_random_crop_same_window_and_upscale():
    img = np.arange(40 * 60 * 3, dtype=np.float32).reshape(40, 60, 3)
    mask = img[..., 0].copy()
    a, m = random_crop(img, 32, 5, mask)
    assert a.shape == (32, 32, 3) and m.shape == (32, 32)
    np.testing.assert_array_equal(a[..., 0], m)
    assert random_crop(img, 32, 5)[0, 0, 0] == a[0, 0, 0]  # deterministic under a seed
    small = np.zeros((20, 30, 3), np.uint8)
    assert random_crop(small, 32, 0).shape == (32, 32, 3)


def test_texture_bank_from_dir(tmp_path):
    (tmp_path / "textures" / "paper").mkdir(parents=True)
    (tmp_path / "textures" / "scratch").mkdir(parents=True)
    Image.fromarray(np.full((20, 30, 3), 200, np.uint8)).save(tmp_path / "textures/paper/p.png")
    stamp = np.zeros((40, 40), np.uint8)
    stamp[18:22, :] = 255
    Image.fromarray(stamp).save(tmp_path / "textures/scratch/s.png")
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(tmp_path / "textures/scratch/empty.png")
    bank = TextureBank.from_dir(tmp_path)
    assert len(bank.papers) == 1 and len(bank.scratches) == 1  # the empty stamp is skipped
    assert bank.papers[0].shape == (20, 30, 3) and bank.scratches[0].max() == 1.0
    with pytest.raises(FileNotFoundError):
        TextureBank.from_dir(tmp_path / "none")


def test_contact_sheet_command(tmp_path):
    from oldphoto.cli import app

    out = tmp_path / "sheet.png"
    res = CliRunner().invoke(app, ["data", "contact-sheet", str(out), "--n", "2", "--seed", "1", "--cell", "64"])
    assert res.exit_code == 0, res.output
    img = np.asarray(Image.open(out))
    assert img.shape[1] == 3 * 64 + 4 * 4 and img.shape[0] > 2 * 64
    # the mask column is binary black/white
    mask_cells = img[22:22 + 64, 4 + 2 * 68:4 + 2 * 68 + 64]
    assert set(np.unique(mask_cells)) <= {0, 255}
