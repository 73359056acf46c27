"""Global tone/colour correction (oldphoto.imageops.colour, networks.colour, training.colour) and its place in
the pipeline: an affine per channel, a grey scan kept grey, recorded in provenance, off with --no-tone-match."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from oldphoto.imageops.colour import (N_FEATURES, ColourAffine, colour_features, feature_image,
                                      is_grey_features)


def photo(seed: int = 0, h: int = 300, w: int = 420) -> np.ndarray:
    import skimage.data

    from oldphoto.data.dataset import resize_short_side

    img = resize_short_side(skimage.data.astronaut(), min(h, w))[:h, :w]
    return img.astype(np.float32) / 255


def test_features_and_affine():
    img = photo()
    f = colour_features(img)
    assert f.shape == (N_FEATURES,) and np.isfinite(f).all() and not is_grey_features(f)
    assert min(feature_image(np.zeros((1000, 3000, 3), np.float32)).shape[:2]) == 256
    grey = np.repeat(img.mean(axis=2, keepdims=True), 3, axis=2)
    assert is_grey_features(colour_features(grey))
    pred = np.array([0.2, -0.05, -0.1, 0.02, 0.0, 0.1])        # gain-1, offset per channel
    a = ColourAffine.from_prediction(pred, 1.0)
    out = a.apply(img)
    for c in range(3):       # per channel: gain * x + offset, clipped
        np.testing.assert_allclose(out[..., c], np.clip(img[..., c] * (1 + pred[2 * c]) + pred[2 * c + 1], 0, 1),
                                   atol=1e-6)
    assert ColourAffine.from_prediction(pred, 0.0).identity
    half = ColourAffine.from_prediction(pred, 0.5)
    assert half.gain[0] == pytest.approx(1.1) and half.offset[2] == pytest.approx(0.05)
    g = ColourAffine.from_prediction(pred, 1.0, colour_features(grey))      # a grey scan stays grey
    assert len(set(g.gain)) == 1 and len(set(g.offset)) == 1
    g_out = g.apply(grey)
    assert np.abs(g_out[..., 0] - g_out[..., 2]).max() < 1e-6
    assert ColourAffine.from_dict(a.to_dict()) == a
    buf = img.copy()
    assert a.apply(buf, out=buf) is buf and np.array_equal(buf, out)


def test_correction_never_pushes_the_colour_past_neutral():
    """Do no harm: a warm (sepia) scan may be neutralised but never turned blue, and a neutral-on-average photo
    gets no cast; the grey level of the mean colour is kept."""
    from oldphoto.imageops.colour import mean_colour

    img = photo()
    sepia = np.clip(img.mean(axis=2, keepdims=True) * np.array([1.0, 0.85, 0.6], np.float32) + 0.05, 0, 1)
    f = colour_features(sepia)
    m = mean_colour(f)
    overshoot = np.array([0.0, 0.0, 0.0, 0.05, 0.0, 0.35])       # would make it blue
    a = ColourAffine.from_prediction(overshoot, 1.0, f)
    after = np.asarray(a.gain) * m + np.asarray(a.offset)
    c, c_after = m - m.mean(), after - after.mean()
    assert after.mean() == pytest.approx((m + overshoot[1::2]).mean(), abs=1e-6)   # grey level as predicted
    assert np.allclose(c_after, 0.0, atol=1e-6)                                   # at most neutral, not blue
    partial = ColourAffine.from_prediction(overshoot * 0.2, 1.0, f)                # part of the way: kept
    after = np.asarray(partial.gain) * m + np.asarray(partial.offset)
    lam = (after - after.mean()) @ c / (c @ c)
    assert 0.0 < lam < 1.0 and np.allclose(after - after.mean(), lam * c, atol=1e-6)
    away = ColourAffine.from_prediction(-overshoot, 1.0, f)                        # more sepia: refused
    after = np.asarray(away.gain) * m + np.asarray(away.offset)
    assert np.allclose(after - after.mean(), c, atol=1e-6)


def test_colour_training_learns_to_undo_a_fade(tmp_path):
    """A short real run on the builtin photos: the exported regressor undoes a global fade of a held-out photo
    better than leaving it, its strength (operating point) is stored, and the ModelSet serves it as role colour."""
    from oldphoto.models import ModelSet
    from oldphoto.quality import psnr
    from oldphoto.training.runner import TrainOptions, train_stage

    res = train_stage("colour", TrainOptions(out=tmp_path, weights_dir=tmp_path / "w", config="tiny", steps=400,
                                             progress=False), log=lambda *a: None)
    assert [f.name for f in res.files] == ["colour.safetensors"]
    assert 0.0 <= res.metrics["strength"] <= 1.0 and res.metrics["psnr@0"] < max(
        v for k, v in res.metrics.items() if k.startswith("psnr@"))
    ms = ModelSet.from_weights_dir(tmp_path / "w")
    net = ms.get("colour")
    assert ms.operating_point("colour")["strength"] == res.metrics["strength"]
    clean = photo(1)
    faded = 0.6 * clean + 0.35                       # washed out towards white
    with torch.no_grad():
        pred = net(torch.from_numpy(colour_features(faded))[None])[0].numpy()
    fixed = ColourAffine.from_prediction(pred, 1.0, colour_features(faded)).apply(faded)
    assert psnr(clean, fixed) > psnr(clean, faded) + 1.0


def test_pipeline_applies_and_records_the_correction(tmp_path):
    """With a `colour` regressor in the weights the restored image is corrected after the tone transfer and
    provenance records the six numbers and the checkpoint; --no-tone-match (the official stage-1 output) and
    --no-colour-correct leave it out; a scan's face put back gets the same correction."""
    from oldphoto.imageops.faces import put_back
    from oldphoto.models import ModelSet
    from oldphoto.networks.colour import ColourNet, ColourNetConfig
    from oldphoto.pipeline import Restorer, RestoreOptions
    from oldphoto.testing.random_weights import make_random_weights
    from oldphoto.weights import save_weights

    w = tmp_path / "w"
    make_random_weights(w, seed=3, roles=["vae_a", "vae_b_quality", "mapping_quality"])
    net = ColourNet(ColourNetConfig.tiny())
    with torch.no_grad():
        net.head.bias.copy_(torch.tensor([0.0, 0.08, 0.0, 0.08, 0.0, 0.08]))   # a lift only: easy to check
    save_weights(w / "colour.safetensors", net, "colour_mlp", net.cfg, provenance={"operating_point": {"strength": 0.5}})
    from PIL import Image
    import io as _io
    buf = _io.BytesIO()
    Image.fromarray((photo() * 255).astype(np.uint8)).save(buf, "PNG")
    data = buf.getvalue()

    def run(**kw):
        st = Restorer(ModelSet.from_weights_dir(w), RestoreOptions(scratch="off", faces=False, review=False, **kw)) \
            .run("a.png", data)
        assert not st.failed, st.error
        return st

    on, off, raw = run(), run(colour_correct=False), run(tone_match=False)
    rec = on.provenance.parameters["colour_correction"]
    assert rec["strength"] == 0.5 and rec["offset"] == pytest.approx([0.04, 0.04, 0.04])
    assert rec["gain"] == [1.0, 1.0, 1.0]
    expected = np.clip(off.restored + np.float32(0.04), 0, 1)
    np.testing.assert_allclose(on.restored, expected, atol=1e-6)
    assert "colour_correction" not in off.provenance.parameters
    assert "colour_correction" not in raw.provenance.parameters
    g = [r for r in on.provenance.stages if r.name == "global_restoration"][0]
    assert "colour" in [c.name for c in g.checkpoints]
    # the put-back of a scan's face carries the same correction
    scan = on.decoded.pixels
    blended = on.restored.copy()
    put_back(blended, scan, [100, 100, 180, 180], colour=ColourAffine.from_dict(rec), denoise=None)
    centre = blended[140, 140]
    np.testing.assert_allclose(centre, np.clip(scan[140, 140] + 0.04, 0, 1), atol=1e-5)
