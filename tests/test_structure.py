"""Structure return (oldphoto.imageops.structure): the noise floor, the weights, the returned guide, the stage."""
import io

import cv2
import numpy as np
import pytest

from oldphoto.imageops.structure import (DEFAULT_STRUCTURE_RETURN, ReturnedGuide, grey, noise_floor,
                                         photo_strength, return_weight)
from oldphoto.imageops.tone import guided_tone_transfer


def textured(seed: int = 0, h: int = 160, w: int = 200) -> np.ndarray:
    """A smooth photo with a gravel-like texture (blurred random dots, amplitude ~0.1) in its lower half and flat,
    smooth tone in its upper half: H×W×3 float32 in [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 0.35 + 0.3 * xx / w + 0.1 * yy / h
    tex = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), 1.0)
    tex *= 0.1 / tex.std()
    g = base + np.where(yy > h / 2, tex, 0.0)
    return np.clip(np.repeat(g[..., None], 3, axis=2) * np.array([1.0, 0.95, 0.85], np.float32), 0, 1)


def smoothed(img: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    """What a denoiser does to fine texture: takes it away."""
    return cv2.GaussianBlur(img, (0, 0), sigma)


def with_noise(img: np.ndarray, sigma: float, seed: int = 1) -> np.ndarray:
    """Grey noise of `sigma` grey levels (of 255) on every channel alike."""
    n = np.random.default_rng(seed).normal(0, sigma / 255, img.shape[:2] + (1,))
    return np.clip(img + n, 0, 1).astype(np.float32)


def test_noise_floor_measures_noise_not_texture_and_ignores_clipped_pixels():
    clean = textured()
    floors = [noise_floor(with_noise(clean, sigma)) * 255 for sigma in (0, 4, 8, 12)]
    assert floors[0] <= 1.0                                    # a noise-free scan: its texture's faintest parts
    assert floors[0] < floors[1] < floors[2] < floors[3]       # rises with the noise (about 0.28 x its sigma)
    assert floors[3] == pytest.approx(0.28 * 12, rel=0.15)
    assert photo_strength(floors[0] / 255) == 1.0 and 0.0 < photo_strength(floors[3] / 255) < 0.5
    assert photo_strength(noise_floor(with_noise(clean, 16))) == 0.0          # a noisy scan: none
    # a blown-out sky (clipped to the scan's white, 16 % of the photo) holds no noise: it does not pull a noisy
    # scan's floor down (taken over all pixels, the 10th percentile would be the clipped sky's 0)
    noisy = with_noise(clean, 8)
    blown = noisy.copy()
    blown[:25] = blown.max()
    assert noise_floor(blown) * 255 == pytest.approx(floors[2], rel=0.1)
    # nor does a digitally uniform frame around it (a padded scan): without the rule its floor was the minimum
    framed = np.full((noisy.shape[0] + 60, noisy.shape[1] + 60, 3), 0.5, np.float32)
    framed[30:-30, 30:-30] = noisy
    assert noise_floor(framed) * 255 == pytest.approx(floors[2], rel=0.1)
    # a blank, digitally uniform image says nothing of any noise: nothing is given back
    assert photo_strength(noise_floor(np.full((64, 64, 3), 0.4, np.float32))) == 0.0
    # tiles do not change it (the histogram is filled tile by tile, each with its halo)
    assert noise_floor(noisy, tile=48) == noise_floor(noisy, tile=4096)


def test_weights_return_removed_texture_on_a_clean_scan_only():
    scan = textured()
    restored = smoothed(scan)
    floor = noise_floor(scan)
    w = return_weight(grey(scan), grey(restored), floor, photo_strength(floor))
    assert w[100:150, 20:180].mean() > 0.9        # the texture stage 1 took away: given back
    assert w[10:60, 20:180].max() < 0.05           # flat tone: nothing to give back
    # where the restoration kept the texture there is nothing to return
    assert return_weight(grey(scan), grey(scan), floor, 1.0).max() == 0.0
    # a noisy scan of the same photo: its strength is 0, whatever was smoothed
    assert photo_strength(noise_floor(with_noise(scan, 16, seed=2))) == 0.0


def test_returned_guide_brings_the_texture_back_through_the_tone_transfer_and_tiles_exactly():
    scan = textured()
    restored = smoothed(scan)
    floor = noise_floor(scan)
    guide = ReturnedGuide(restored, scan, None, floor, photo_strength(floor))
    plain = guided_tone_transfer(restored, scan)
    back = guided_tone_transfer(restored, scan, guide=guide)
    err = lambda a: float(np.abs(a[90:150] - scan[90:150]).mean())   # noqa: E731
    assert err(back) < 0.35 * err(plain)            # the texture is back in the output
    np.testing.assert_allclose(back[:60], plain[:60], atol=2e-3)     # flat tone: unchanged
    tiled = guided_tone_transfer(restored, scan, guide=guide, tile=40)
    np.testing.assert_allclose(tiled, back, atol=1e-5)
    # scratched pixels never take the scan's structure back
    valid = np.ones(scan.shape[:2], bool)
    valid[100:150, 50:90] = False
    g = ReturnedGuide(restored, scan, valid, floor, 1.0)(0, scan.shape[0], 0, scan.shape[1])
    np.testing.assert_allclose(g[100:150, 50:90], grey(restored)[100:150, 50:90], atol=1e-6)
    assert DEFAULT_STRUCTURE_RETURN.halo >= 20


def test_stage_records_structure_return_and_the_option_turns_it_off(tmp_path):
    from PIL import Image

    from oldphoto.models import ModelSet
    from oldphoto.pipeline import Restorer, RestoreOptions
    from oldphoto.testing.random_weights import make_random_weights

    w = tmp_path / "w"
    make_random_weights(w, seed=3, roles=["vae_a", "vae_b_quality", "mapping_quality"])
    buf = io.BytesIO()
    Image.fromarray((textured(h=128, w=128) * 255 + 0.5).astype(np.uint8)).save(buf, "PNG")

    def run(**kw):
        st = Restorer(ModelSet.from_weights_dir(w), RestoreOptions(scratch="off", faces=False, review=False, **kw)) \
            .run("a.png", buf.getvalue())
        assert not st.failed, st.error
        return st

    on, off = run(), run(structure_return=False)
    rec = on.provenance.parameters["returned_structure"]
    assert rec["strength"] == 1.0 and rec["noise_floor_levels"] == pytest.approx(0.5, abs=0.3)
    assert rec["ratio_log10"] == list(DEFAULT_STRUCTURE_RETURN.ratio_log10)
    assert "returned_structure" not in off.provenance.parameters
    tex = (slice(70, 120), slice(10, 118))
    scan = on.decoded.pixels
    assert np.abs(on.restored[tex] - scan[tex]).mean() < np.abs(off.restored[tex] - scan[tex]).mean()


def test_suspected_defects_grow_by_one_pixel_and_take_no_structure_back(tmp_path):
    from PIL import Image

    from oldphoto.models import ModelSet
    from oldphoto.pipeline import RestoreOptions, build_stages
    from oldphoto.stages.base import ItemState, run_stage
    from oldphoto.stages.scratch import SUSPECT_THRESHOLD, suspected
    from oldphoto.testing.random_weights import make_random_weights

    prob = np.zeros((9, 9))
    prob[4, 4] = SUSPECT_THRESHOLD
    prob[0, 8] = SUSPECT_THRESHOLD - 1e-3
    s = suspected(prob)
    assert s.sum() == 9 and s[3:6, 3:6].all() and not s[0, 8]

    w = tmp_path / "w"
    make_random_weights(w, seed=3, tiny=True)
    buf = io.BytesIO()
    Image.fromarray((textured(h=128, w=128) * 255 + 0.5).astype(np.uint8)).save(buf, "PNG")

    def restored(suspect: bool | None, **kw) -> ItemState:
        """The item restored; `suspect`: the detector's suspect map replaced by all True / all False."""
        opts = RestoreOptions(scratch="auto", faces=False, review=False, **kw)
        st = ItemState.new("a.png", buf.getvalue(), opts, name="a")
        for stage in build_stages(ModelSet.from_weights_dir(w), opts):
            if stage.name == "global_restoration" and suspect is not None:
                st.suspect = np.full(st.decoded.pixels.shape[:2], suspect)
            st = run_stage(stage, st)
            assert not st.failed, st.error
        return st

    st = restored(None)
    assert st.suspect is not None and st.suspect.shape == st.decoded.pixels.shape[:2] and st.suspect.dtype == bool
    assert st.provenance.parameters["returned_structure"]["strength"] == 1.0
    plain = restored(None, structure_return=False)
    assert plain.suspect is None and restored(None, tone_match=False).suspect is None   # nothing would read it
    off = plain.restored
    assert np.abs(restored(False).restored - off).max() > 0.01   # where nothing is suspected, structure comes back
    # a photo the detector suspects all over takes no structure back: the plain tone transfer's output
    np.testing.assert_array_equal(restored(True).restored, off)
