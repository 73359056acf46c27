"""The detail refiner (oldphoto.networks.refiner, training.refine) and its place in the pipeline: the identity
until trained, the same result tiled as untiled, recorded in provenance with its checkpoint, off with --no-refine,
and a short real training run that makes stage-1 output closer to the clean photo."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from oldphoto.networks.refiner import Refiner, RefinerConfig


def _scan_png(h: int = 200, w: int = 260) -> bytes:
    import skimage.data
    from PIL import Image

    img = skimage.data.astronaut()[:h, :w]
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    return buf.getvalue()


def _random_refiner(seed: int = 0, cfg: RefinerConfig | None = None) -> Refiner:
    torch.manual_seed(seed)
    net = Refiner(cfg or RefinerConfig.tiny())
    torch.nn.init.normal_(net.last.weight, std=0.05)        # not the identity any more
    return net.eval()


def test_untrained_refiner_is_the_identity_and_its_receptive_radius_is_a_bound():
    net = Refiner(RefinerConfig.tiny()).eval()
    x, s = torch.rand(1, 3, 37, 45), torch.rand(1, 3, 37, 45)
    with torch.no_grad():
        assert torch.equal(net(x, s, torch.zeros(1, 1, 37, 45)), x)           # odd sizes too
    for cfg in (RefinerConfig.tiny(), RefinerConfig()):
        net = _random_refiner(1, cfg)
        x, s, m = torch.rand(1, 3, 160, 160) * 0.5 + 0.25, torch.rand(1, 3, 160, 160), torch.zeros(1, 1, 160, 160)
        x2 = x.clone()
        x2[..., 80, 80] += 0.3
        with torch.no_grad():
            d = (net(x, s, m) - net(x2, s, m)).abs().sum(1)[0]
        ys, xs = torch.nonzero(d > 0, as_tuple=True)
        reach = int(max((ys - 80).abs().max(), (xs - 80).abs().max()))
        assert 0 < reach <= cfg.receptive_radius


def _weights(tmp_path, refiner: Refiner | None, strength: float = 1.0):
    from oldphoto.testing.random_weights import make_random_weights
    from oldphoto.weights import save_weights

    w = tmp_path / "w"
    make_random_weights(w, seed=3, roles=["vae_a", "vae_b_quality", "mapping_quality", "colour"])
    if refiner is not None:
        save_weights(w / "refiner.safetensors", refiner, "refiner", refiner.cfg,
                     provenance={"operating_point": {"strength": strength}})
    return w


def _run(w, **kw):
    from oldphoto.models import ModelSet
    from oldphoto.pipeline import Restorer, RestoreOptions

    st = Restorer(ModelSet.from_weights_dir(w), RestoreOptions(scratch="off", faces=False, review=False, **kw)) \
        .run("a.png", _scan_png())
    assert not st.failed, st.error
    return st


def test_pipeline_applies_records_and_tiles_the_refiner(tmp_path, monkeypatch):
    """With a `refiner` in the weights the global restoration ends with it: provenance records its strength and
    checkpoint; --no-refine and --no-tone-match leave it out; strength s moves the output s of the way; tiles
    (with a halo of its receptive radius) give the untiled result."""
    import oldphoto.stages.restore_global as G

    w = _weights(tmp_path, _random_refiner(2), strength=0.5)
    on, off, raw = _run(w), _run(w, refine=False), _run(w, tone_match=False)
    assert on.provenance.parameters["refiner"]["strength"] == 0.5
    assert "refiner" not in off.provenance.parameters and "refiner" not in raw.provenance.parameters
    g = [r for r in on.provenance.stages if r.name == "global_restoration"][0]
    assert "refiner" in [c.name for c in g.checkpoints]
    g_off = [r for r in off.provenance.stages if r.name == "global_restoration"][0]
    assert "refiner" not in [c.name for c in g_off.checkpoints]
    assert on.restored.shape == off.restored.shape and on.restored.dtype == np.float32
    diff = np.abs(on.restored - off.restored)
    assert diff.max() > 1e-3                                     # it did something
    # strength 0.5: half of the full refiner's change
    full = _run(_weights(tmp_path / "full", _random_refiner(2), strength=1.0))
    np.testing.assert_allclose(on.restored, np.clip(off.restored + 0.5 * (full.restored - off.restored), 0, 1),
                               atol=2e-5)
    zero = _run(w, refine_strength=0.0)                          # the option overrides the file's strength
    np.testing.assert_array_equal(zero.restored, off.restored)
    assert zero.provenance.parameters["refiner"]["strength"] == 0.0
    monkeypatch.setattr(G, "REFINER_TILE", 64)                   # 200×260: several tiles
    tiled = _run(w)
    np.testing.assert_allclose(tiled.restored, on.restored, atol=1e-5)


def test_refiner_training_learns_to_give_back_detail(tmp_path):
    """A short real run (tiny config, builtin photos, random stage-1 weights whose output is a poor copy of the
    scan): the refiner learns to bring the output closer to the clean photo; exported with its operating point
    (strength chosen on held-out samples), served by the ModelSet as role `refiner`."""
    from oldphoto.models import ModelSet
    from oldphoto.testing.random_weights import make_random_weights
    from oldphoto.training.runner import TrainOptions, train_stage

    w = tmp_path / "w"
    make_random_weights(w, seed=3, roles=["vae_a", "vae_b_quality", "mapping_quality"])
    res = train_stage("refiner", TrainOptions(out=tmp_path, weights_dir=w, config="tiny", steps=150, progress=False),
                      log=lambda *a: None)
    assert [f.name for f in res.files] == ["refiner.safetensors"]
    assert res.metrics["psnr@1"] > res.metrics["psnr@0"] + 0.5          # better than stage 1 alone
    assert res.metrics["strength"] > 0
    ms = ModelSet.from_weights_dir(w)
    assert isinstance(ms.get("refiner"), Refiner)
    assert ms.operating_point("refiner")["strength"] == res.metrics["strength"]


def test_perturbed_mask_adds_false_fragments_and_sometimes_drops_the_true_mask():
    from oldphoto.training.refine import perturb_mask

    rng = np.random.default_rng(0)
    true = np.zeros((96, 128), np.uint8)
    true[40:43, 10:110] = 1                                   # one scratch
    dropped = kept = 0
    for _ in range(200):
        m = perturb_mask(true, rng)
        assert m.shape == true.shape and m.dtype == np.uint8 and set(np.unique(m)) <= {0, 1}
        assert m[true == 0].sum() > 0                            # false fragments where there is no scratch
        if m[true == 1].all():
            kept += 1
        elif m[true == 1].mean() < 0.5:
            dropped += 1
    assert 30 <= dropped <= 90 and kept + dropped >= 190     # drop_prob 0.3 of 200: about 60
    assert true.sum() == 300                                  # the input is not modified


def test_refiner_training_perturbs_only_the_mask_channel_when_asked(tmp_path):
    from oldphoto.training.common import TrainSettings
    from oldphoto.training.refine import RefinerStageConfig, RefinerTrainer

    rng = np.random.default_rng(1)
    n, size = 3, 32
    ds = {"clean": rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8),
          "restored": rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8),
          "scan_cc": rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8),
          "mask": np.zeros((n, size, size), np.uint8)}

    def batch(noise: float, out: str):
        cfg = RefinerStageConfig.preset("tiny")
        cfg.mask_noise = noise
        tr = RefinerTrainer(TrainSettings(steps=1, batch_size=8, crop=32, progress=False), tmp_path / out, cfg,
                            lambda k, r: {k_: v[:k] for k_, v in ds.items()}, log=lambda *a: None)
        tr.build()
        return tr.batch()

    clean, noisy = batch(0.0, "a"), batch(1.0, "b")
    assert clean["mask"].sum() == 0 and noisy["mask"].sum() > 0      # every window's mask made wrong at 1.0
    for k in ("clean", "restored", "scan_cc"):                        # same windows, images untouched
        assert torch.equal(clean[k], noisy[k])


def test_clean_samples_are_undegraded_scans_added_to_the_training_set(tmp_path):
    """--clean-share: the extra samples are the crop as it is (the scan and the target are the clean crop), restored
    by stage 1 like the others, made into their own file and added to the degraded ones; stage 1 that cannot run
    is an error, not an endless loop."""
    from oldphoto.testing.random_weights import make_random_weights
    from oldphoto.training.common import TrainSettings
    from oldphoto.training.refine import (CLEAN_DATASET_NAME, RefinerStageConfig, RefinerTrainer, make_samples,
                                          restore_sample, stage1_restorer)

    w = tmp_path / "w"
    make_random_weights(w, seed=3, roles=["vae_a", "vae_b_quality", "mapping_quality"])
    restorer = stage1_restorer(w)
    crop = np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    s = restore_sample(restorer, crop, np.random.default_rng(1), None, degrade=False)
    assert np.array_equal(s["clean"], crop) and np.array_equal(s["scan_cc"], crop)   # no colour weights: cc = scan
    assert not np.array_equal(s["restored"], crop) and s["mask"].sum() == 0
    d = restore_sample(restorer, crop, np.random.default_rng(1), None)
    assert np.array_equal(d["clean"], crop) and not np.array_equal(d["scan_cc"], crop)

    asked = []

    def samples(n, rng, degrade=True):
        asked.append((n, degrade))
        return make_samples(restorer, lambda r: crop, n, rng, None, log=lambda *a: None, degrade=degrade)

    cfg = RefinerStageConfig.preset("tiny")
    cfg.clean_share = 0.5
    tr = RefinerTrainer(TrainSettings(steps=1, batch_size=2, crop=32, progress=False), tmp_path / "run", cfg,
                        samples, log=lambda *a: None)
    tr.build()
    assert asked == [(4, True), (2, False)] and len(tr.ds["clean"]) == 6
    assert (tmp_path / "run" / CLEAN_DATASET_NAME).is_file()
    assert all(np.array_equal(tr.ds["scan_cc"][i], crop) for i in (4, 5))
    with pytest.raises(RuntimeError, match="stage 1 failed"):
        make_samples(stage1_restorer(tmp_path / "none"), lambda r: crop, 2, np.random.default_rng(0), None,
                     log=lambda *a: None)
