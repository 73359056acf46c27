"""Quality figures against known cases, NIQE mechanics, the classical baseline, and `oldphoto bench quality`."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from oldphoto.quality import NIQEParams, _block_features, f1, imresize_half, niqe, psnr, roc_auc, ssim
from oldphoto.quality_bench import classical_restore


def test_psnr_ssim_known_cases():
    rng = np.random.default_rng(0)
    a = rng.random((32, 32, 3)).astype(np.float32)
    assert psnr(a, a) == math.inf
    assert ssim(a, a) == pytest.approx(1.0)
    zeros = np.zeros((16, 16, 3))
    assert psnr(zeros, zeros + 0.1) == pytest.approx(20.0, abs=1e-9)  # MSE 0.01 -> 20 dB
    noisy = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1)
    noisier = np.clip(a + rng.normal(0, 0.3, a.shape), 0, 1)
    assert psnr(a, noisy) > psnr(a, noisier)
    assert 0 < ssim(a, noisier) < ssim(a, noisy) < 1
    with pytest.raises(ValueError):
        psnr(a, a[:8])


def test_roc_auc_and_f1_known_cases():
    y = np.array([0, 0, 1, 1, 0, 1])
    assert roc_auc(y * 0.9 + 0.05, y) == 1.0
    assert roc_auc(1 - y, y) == 0.0
    assert roc_auc(np.full(6, 0.3), y) == 0.5  # all tied
    # hand-computed: positives {0.8, 0.4}, negatives {0.5, 0.1}: pairs won 3 of 4
    assert roc_auc([0.8, 0.4, 0.5, 0.1], [1, 1, 0, 0]) == pytest.approx(0.75)
    rng = np.random.default_rng(1)
    labels = rng.random(20000) < 0.3
    assert abs(roc_auc(rng.random(20000), labels) - 0.5) < 0.02
    with pytest.raises(ValueError):
        roc_auc([0.1, 0.2], [1, 1])
    assert f1([1, 1, 0, 0], [1, 0, 1, 0]) == pytest.approx(0.5)
    assert f1([1, 0, 1], [1, 0, 1]) == 1.0
    assert f1([0, 0], [0, 0]) == 1.0 and f1([0, 0], [1, 0]) == 0.0


def test_matlab_half_resize_properties():
    const = np.full((20, 30), 0.37)
    np.testing.assert_allclose(imresize_half(const), 0.37, atol=1e-12)
    ramp = np.tile(np.arange(40, dtype=np.float64), (8, 1))
    out = imresize_half(ramp)
    assert out.shape == (4, 20)
    # an interior output sample sits between input samples 2k and 2k+1
    np.testing.assert_allclose(out[:, 5:15], np.tile(np.arange(5, 15) * 2 + 0.5, (4, 1)), atol=1e-9)


def _params_fitted_to(img: np.ndarray) -> NIQEParams:
    """A 'pristine model' made from a 96×96 image's own block features (so its NIQE is 0)."""
    from scipy.ndimage import convolve

    g = np.exp(-0.5 * (np.arange(7) - 3) ** 2 / (7 / 6) ** 2)
    win = np.outer(g, g) / np.outer(g, g).sum()
    y = np.round(16 + 65.481 * img[..., 0] + 128.553 * img[..., 1] + 24.966 * img[..., 2])
    feats = []
    for scale in (1, 2):
        mu = convolve(y, win, mode="nearest")
        sd = np.sqrt(np.abs(convolve(y * y, win, mode="nearest") - mu * mu))
        feats += _block_features(((y - mu) / (sd + 1))[:96 // scale, :96 // scale])
        y = imresize_half(y / 255.0) * 255.0
    return NIQEParams(np.array(feats), np.eye(36), win)


def test_niqe_zero_for_its_own_model_and_grows_with_noise():
    from oldphoto.data.dataset import builtin_photos, center_crop, load_rgb

    rec = next(r for r in builtin_photos() if r.id == "builtin/chelsea")
    img = center_crop(load_rgb(rec.path), 96).astype(np.float64) / 255.0
    params = _params_fitted_to(img)
    assert niqe(img, params) == pytest.approx(0.0, abs=1e-6)
    noisy = np.clip(img + np.random.default_rng(0).normal(0, 0.15, img.shape), 0, 1)
    assert niqe(noisy, params) > 0.5
    with pytest.raises(ValueError, match="at least"):
        niqe(img[:50, :50], params)


def test_classical_baseline_inpaints_a_scratch():
    x = np.linspace(0.2, 0.8, 64, dtype=np.float32)
    clean = np.repeat(np.tile(x, (64, 1))[..., None], 3, axis=2)
    dirty = clean.copy()
    mask = np.zeros((64, 64), bool)
    mask[:, 30:32] = True
    dirty[mask] = 1.0
    fixed = classical_restore(dirty, mask)
    assert psnr(clean, fixed) > psnr(clean, dirty) + 10
    assert fixed.dtype == np.float32 and fixed.shape == clean.shape


def test_detail_ratio_sees_smoothing():
    import cv2

    from oldphoto.quality import detail_ratio

    rng = np.random.default_rng(0)
    texture = rng.random((64, 64, 3)).astype(np.float32)
    assert detail_ratio(texture, texture) == pytest.approx(1.0)
    assert detail_ratio(texture, cv2.GaussianBlur(texture, (0, 0), 2.0)) < 0.5


def test_grid_artefact_sees_stripes_every_two_or_four_pixels():
    from skimage import data

    from oldphoto.quality import grid_artefact

    photo = data.astronaut()[:301, :451].astype(np.float32) / 255        # odd sides on purpose
    assert grid_artefact(photo) < 1.5
    rows = np.array([0.03, 0.0, -0.03, 0.0], np.float32)[np.arange(photo.shape[0]) % 4]
    assert grid_artefact(np.clip(photo + rows[:, None, None], 0, 1)) > 4          # stripes every 4 rows
    cols = np.array([0.02, -0.02], np.float32)[np.arange(photo.shape[1]) % 2]
    assert grid_artefact(np.clip(photo + cols[None, :, None], 0, 1)) > 4          # every other column
    assert math.isnan(grid_artefact(photo[:8, :8]))


def test_shipped_quality_path_adds_no_grid_artefacts():
    """Regression: an end-to-end fine-tune of the quality decoder (session 7) striped its output every 4 rows on
    noisy scans (ratio 3-7 on val, about 1 for the clean photos); the shipped quality path must not."""
    from skimage import data

    from oldphoto.models import ModelSet
    from oldphoto.pipeline import Restorer, RestoreOptions
    from oldphoto.quality import grid_artefact
    from oldphoto.quality_bench import _png_bytes

    clean = data.astronaut()[96:352, 96:352].astype(np.float32) / 255
    noisy = np.clip(clean + np.random.default_rng(0).normal(0, 0.08, clean.shape), 0, 1).astype(np.float32)
    restorer = Restorer(ModelSet.default(), RestoreOptions(scratch="off", faces=False, tone_match=False, review=False))
    st = restorer.run("noisy.png", _png_bytes(noisy), name="noisy")
    assert not st.failed and st.provenance.parameters["global_path"] == "quality"
    assert grid_artefact(st.restored) < 1.6       # 1.05 shipped; 2.34 with the striped decoder


def test_baseline_finds_its_own_mask_with_a_top_hat():
    from oldphoto.quality_bench import tophat_mask

    x = np.linspace(0.35, 0.7, 96, dtype=np.float32)
    clean = np.repeat(np.tile(x, (96, 1))[..., None], 3, axis=2)
    dirty = clean.copy()
    dirty[:, 40:42] = 1.0          # a thin white scratch
    dirty[60:61, :] = 0.02         # a thin dark crack
    m = tophat_mask(dirty)
    assert m[:, 40:42].mean() > 0.9 and m[60, :].mean() > 0.9
    assert not tophat_mask(clean).any()          # a smooth gradient has no defect
    fixed = classical_restore(dirty)             # no mask given: its own
    assert psnr(clean, fixed) > psnr(clean, dirty) + 10


def test_bench_quality_on_tiny_inputs_without_weights(tmp_path):
    from oldphoto.cli import app

    res = CliRunner().invoke(app, ["bench", "quality", "--out", str(tmp_path), "--size", "96", "--max-photos", "2"])
    assert res.exit_code == 0, res.output
    assert "OpenCV NLM" in res.output and "NIQE: unavailable" in res.output
    fig = json.loads((tmp_path / "quality.json").read_text())
    assert fig["n_photos"] == 2 and fig["working_size"] == 96
    assert "builtin" in fig["held_out_photos"]
    assert set(fig["methods"]) == {"degraded", "baseline"}
    assert "top-hat" in fig["baseline_mask"]      # the baseline finds its own mask, never the truth or ours
    assert fig["methods"]["degraded"]["psnr"] < 60
    assert (tmp_path / "quality_grid.png").stat().st_size > 1000
    # fixed seed -> identical figures on a second run
    res2 = CliRunner().invoke(app, ["bench", "quality", "--out", str(tmp_path / "b"), "--size", "96",
                                    "--max-photos", "2"])
    fig2 = json.loads((tmp_path / "b" / "quality.json").read_text())
    assert fig2["methods"] == fig["methods"], res2.output


def test_bench_quality_with_random_tiny_weights(tmp_path):
    from oldphoto.testing.random_weights import make_random_weights
    from oldphoto.quality_bench import run_quality_bench

    make_random_weights(tmp_path / "w", seed=0, tiny=True)
    res = run_quality_bench(tmp_path / "w", None, seed=0, size=96, max_photos=1)
    f = res.figures
    assert "ours" in f["methods"] and f["ours_unavailable"] is None
    assert "top-hat" in f["baseline_mask"]
    det = f["scratch_detector"]
    assert ("auc" in det and 0.0 <= det["auc"] <= 1.0) or "unavailable" in det
    assert 0.0 <= det["fp_rate_no_defects"] <= 1.0
    if "auc_large_scans" in det:
        assert 0.0 <= det["auc_large_scans"] <= 1.0 and det["large_scan_side"] == 2
    # the auto decision is measured on the scratched photo and on its twin without structured defects
    assert det["auto_decision"]["n"] == 2 and {d["defects"] for d in f["auto_decisions"]} == {True, False}
    assert set(f["per_photo"][0]["image"]) == {"degraded", "baseline", "ours"}
    assert res.grid.ndim == 3 and res.grid.dtype == np.uint8
    # do no harm: ours on the clean photo itself, scored against it (random weights cannot copy it)
    c, row = f["clean_scans"], f["per_photo"][0]["clean_scan"]
    assert c["n"] == 1 and c["psnr"] == row["psnr"] and 0 < row["psnr"] < 40 and 0 < row["ssim"] < 1
    assert c["scratch_path"] == int(row["scratch_path"])
    from oldphoto.training.runner import bench_section

    assert any(line.startswith("Do no harm: given each clean photo") for line in bench_section(f))


def test_bench_scores_the_detector_on_larger_scans_at_their_size(tmp_path):
    """The large-scan figure: the same photo degraded at 2x the side (its own defects and mask), the detector run
    through the pipeline's shrink, the probabilities scored at the scan's size against that mask."""
    from oldphoto.data import dataset as odata
    from oldphoto.quality_bench import LARGE_SCAN_FACTOR, _detect_large_scan, _Ours, _Tally
    from oldphoto.testing.random_weights import make_random_weights

    make_random_weights(tmp_path / "w", seed=0, tiny=True)
    ours = _Ours.make(tmp_path / "w", None)
    rec = odata.held_out_photos(None)[0][0]
    tally = _Tally()
    for i in range(4):
        _detect_large_scan(ours, rec, i, 0, 64, None, tally)
    assert tally.large_scores and len(tally.large_scores) == len(tally.large_labels)
    side = LARGE_SCAN_FACTOR * 64
    assert all(sc.shape == lab.shape == (side * side,) for sc, lab in zip(tally.large_scores, tally.large_labels))
    assert all(lab.any() and not lab.all() for lab in tally.large_labels)
    tally.scores, tally.labels = tally.large_scores[:1], tally.large_labels[:1]   # reported beside the main AUC
    det = tally.detector(ours)
    assert 0.0 <= det["auc_large_scans"] <= 1.0 and det["large_scan_side"] == LARGE_SCAN_FACTOR


def test_bench_scores_the_detector_on_defects_over_undegraded_photos(tmp_path):
    """The clean-scan detector figure: the synthesis' local defects alone on the undegraded photo, scored against
    their mask and reported beside the main AUC in the model card's bench section."""
    from oldphoto.data import dataset as odata
    from oldphoto.quality_bench import _detect_on_clean_scan, _Ours, _Tally
    from oldphoto.testing.random_weights import make_random_weights
    from oldphoto.training.runner import bench_section

    make_random_weights(tmp_path / "w", seed=0, tiny=True)
    ours = _Ours.make(tmp_path / "w", None)
    clean = odata.square_crop(odata.held_out_photos(None)[0][0].path, 64)
    tally = _Tally()
    for i in range(3):
        _detect_on_clean_scan(ours, clean, i, 0, None, tally)
    assert tally.clean_scores and all(sc.shape == lab.shape == (64 * 64,)
                                      for sc, lab in zip(tally.clean_scores, tally.clean_labels))
    assert all(lab.any() and not lab.all() for lab in tally.clean_labels)
    tally.scores, tally.labels = tally.clean_scores[:1], tally.clean_labels[:1]
    det = tally.detector(ours)
    assert 0.0 <= det["auc_clean_scans"] <= 1.0 and 0.0 <= det["recall_clean_scans"] <= 1.0
    line = "\n".join(bench_section({"scratch_detector": det, "methods": {}}))
    assert "undegraded photos" in line


def test_compare_real_photos_puts_weight_sets_side_by_side(tmp_path):
    from oldphoto.quality_bench import compare_real_photos
    from oldphoto.testing.random_weights import make_random_weights

    make_random_weights(tmp_path / "w", seed=0, tiny=True)
    real = tmp_path / "data" / "real"
    real.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, (h, w) in {"a.png": (40, 56), "b.jpg": (48, 32)}.items():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(real / name)
    sets = [("one", tmp_path / "w", {"scratch": "off"}), ("two", tmp_path / "w", {"scratch": "off"}),
            ("three", tmp_path / "w", {"scratch": "off", "tone_match": "false"})]
    said: list[str] = []
    sheet = compare_real_photos(sets, tmp_path / "data", say=said.append)
    # what every set decided on every photo is told (and written into the row labels)
    assert sorted(said) == sorted(f"{label}: {name}: quality path, mask 0.00%, faces 0 (0 enhanced)"
                                  for label, _w, _o in sets for name in ("a.png", "b.jpg"))
    cell, gap, header, sub = 320, 4, 16, 12
    assert sheet.shape == (header + 2 * (cell + gap + sub) + gap, 4 * (cell + gap) + gap, 3)
    col = [sheet[header + gap + sub:header + gap + sub + cell, gap + j * (cell + gap):gap + j * (cell + gap) + cell]
           for j in range(4)]
    assert np.array_equal(col[1], col[2])                    # the same set twice: the same picture
    assert not np.array_equal(col[0], col[1]) and not np.array_equal(col[1], col[3])   # scan; other options
    only_b = compare_real_photos(sets[:1], tmp_path / "data", names=["b.jpg"])
    assert only_b.shape[0] == header + (cell + gap + sub) + gap
    with pytest.raises(ValueError, match="nope"):
        compare_real_photos([("nope", tmp_path / "empty", None)], tmp_path / "data")
    with pytest.raises(ValueError, match="no real old photos"):
        compare_real_photos(sets[:1], tmp_path / "data", names=["missing.png"])
