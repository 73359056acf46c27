"""Training code: one real step of every trainer on tiny configs, exact resume, export through the
weights format, the CLI, and the data plumbing (builtin photos + procedural textures, no fetch needed)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from oldphoto.training import datasets as D
from oldphoto.training.common import TrainSettings, lr_multiplier


@pytest.fixture(scope="module")
def source() -> D.BatchSource:
    clean = D.clean_photos(None, max_short=160)           # builtin photos, small for speed
    return D.BatchSource(clean, D.load_textures(None, seed=0), real=D.PhotoPool([clean.images[0]]),
                         faces=D.PhotoPool(clean.images[:3], max_short=64))


def settings(**kw) -> TrainSettings:
    base = dict(steps=3, batch_size=2, crop=32, progress=False, checkpoint_every=1000, log_every=1, threads=1)
    base.update(kw)
    return TrainSettings(**base)


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> float:
    """Fraction of floating-point parameters tensors that changed."""
    after = module.state_dict()
    keys = [k for k, v in before.items() if v.is_floating_point() and "running" not in k and "weight_u" not in k
            and "weight_v" not in k]
    return sum(not torch.equal(before[k], after[k]) for k in keys) / len(keys)


def tiny_vgg() -> torch.nn.Module:
    from oldphoto.training.vgg import VGG16Features

    torch.manual_seed(0)
    return VGG16Features(("relu1_2",))


# ------------------------------------------------------------------------------------------- data
def test_synthetic_pairs_are_well_formed(source):
    b = source.pairs(3, 32, np.random.default_rng(0))
    assert b["x"].shape == b["y"].shape == (3, 3, 32, 32) and b["mask"].shape == (3, 1, 32, 32)
    for k in ("x", "y"):
        assert b[k].min() >= -1 and b[k].max() <= 1
    assert set(torch.unique(b["mask"]).tolist()) <= {0.0, 1.0}
    assert not torch.equal(b["x"], b["y"])                          # degraded differs from clean
    again = source.pairs(3, 32, np.random.default_rng(0))
    assert all(torch.equal(b[k], again[k]) for k in b)             # deterministic for a seed
    q = source.pairs(4, 32, np.random.default_rng(1), structured=False)
    assert q["mask"].sum() == 0                                     # no local defects for the quality mapping


def test_fill_holes_white_and_grey():
    x = torch.full((1, 3, 2, 2), -0.5)
    m = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    out = D.fill_holes_white(x, m)
    assert out[0, :, 0, 0].tolist() == [1.0, 1.0, 1.0] and out[0, :, 1, 1].tolist() == [-0.5] * 3
    rgb = torch.tensor([1.0, -1.0, 0.0]).view(1, 3, 1, 1)
    assert D.to_grey(rgb).item() == pytest.approx(0.299 - 0.587)


def test_real_domain_mixes_real_and_strong_synthetic(source):
    r = source.real_old(4, 32, np.random.default_rng(0))
    assert r.shape == (4, 3, 32, 32)
    assert r.min() >= -1 and r.max() <= 1


def test_lr_multiplier_linear_decay():
    assert lr_multiplier(0.0, 0.5) == 1.0 and lr_multiplier(0.5, 0.5) == 1.0
    assert lr_multiplier(0.75, 0.5) == pytest.approx(0.5) and lr_multiplier(1.0, 0.5) == 0.0


# ------------------------------------------------------------------------------------------- one step each
def test_scratch_step(tmp_path, source):
    from oldphoto.training.scratch import ScratchStageConfig, ScratchTrainer

    tr = ScratchTrainer(settings(steps=1), tmp_path, ScratchStageConfig.preset("tiny"), source)
    before = snapshot(tr.net)
    losses = tr.run()
    assert all(np.isfinite(v) for v in losses.values()) and losses["loss"] > 0
    assert changed(before, tr.net) > 0.9
    assert (tmp_path / "checkpoint.pt").is_file() and (tmp_path / "history.jsonl").is_file()
    assert (tmp_path / "loss_curves.png").stat().st_size > 1000


def _three_uniforms(rng: np.random.Generator) -> np.ndarray:
    return rng.random(3)


def test_scratch_batches_from_worker_processes(tmp_path, source):
    """--workers: the batches are made in background processes (each its own generator), shaped as in-process ones,
    and the training steps on them; a resumed run's stream is seeded by the step, so it does not replay."""
    from oldphoto.training.common import batch_stream
    from oldphoto.training.scratch import ScratchStageConfig, ScratchTrainer

    cfg = ScratchStageConfig.preset("tiny")
    inproc = ScratchTrainer(settings(steps=1), tmp_path / "a", cfg, source)
    b0 = inproc.batch()
    x0, m0 = b0["x"], b0["mask"]
    tr = ScratchTrainer(settings(steps=2, workers=2), tmp_path / "b", cfg, source)
    before = snapshot(tr.net)
    losses = tr.run()
    assert np.isfinite(losses["loss"]) and changed(before, tr.net) > 0.9
    b1 = tr.batch()
    x1, m1 = b1["x"], b1["mask"]
    assert b1.keys() == b0.keys() and x1.shape == x0.shape and m1.shape == m0.shape
    assert set(m1.unique().tolist()) <= {0.0, 1.0}
    a, b, c = (next(batch_stream(_three_uniforms, 1, seed)) for seed in ([0, 0], [0, 0], [0, 200]))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_synthesising_stages_draw_their_batches_from_worker_processes(tmp_path, source):
    """--workers for the VAEs, the mapping and the face network (the stages whose batches are synthesised, as the
    detector's): with workers the batches come from background processes, shaped as the in-process ones (the
    mapping's scratch batches with the holes filled white and the scan kept), and the first draw starts the
    stream, which the later draws reuse."""
    from oldphoto.networks.vae import VAE, VAEConfig
    from oldphoto.training.face import FaceStageConfig, FaceTrainer
    from oldphoto.training.mapping import MappingStageConfig, MappingTrainer
    from oldphoto.training.vae import VAEStageConfig, VAETrainer

    def trainers(workers):
        s = settings(steps=1, workers=workers)
        cfg = MappingStageConfig.preset("tiny", "scratch", latent_channels=VAEConfig.tiny().channels)
        return [VAETrainer(s, tmp_path / f"va{workers}", VAEStageConfig.preset("tiny"), source, domain="a"),
                VAETrainer(s, tmp_path / f"vb{workers}", VAEStageConfig.preset("tiny"), source, domain="b"),
                MappingTrainer(s, tmp_path / f"m{workers}", cfg, source, VAE(VAEConfig.tiny()), VAE(VAEConfig.tiny()),
                               vgg=None),
                FaceTrainer(settings(steps=1, batch_size=2, workers=workers), tmp_path / f"f{workers}",
                            FaceStageConfig.preset("tiny", load_size=64), source, vgg=None)]

    def shapes(b):
        if isinstance(b, tuple):
            return (tuple(b[0].shape), b[1])
        return {k: tuple(v.shape) for k, v in b.items()}

    for inproc, background in zip(trainers(0), trainers(1)):
        b0, b1 = inproc.batch(), background.batch()
        assert inproc._stream is None and background._stream is not None
        stream = background._stream
        assert shapes(b0) == shapes(b1) and shapes(background.batch()) == shapes(b1)
        assert background._stream is stream
        if isinstance(b1, dict) and "scan" in b1:
            assert torch.equal(b1["x"][b1["mask"].expand_as(b1["x"]) > 0.5].unique(), torch.ones(1))


def test_rng_state_restores_from_a_checkpoint_loaded_elsewhere(tmp_path):
    """A checkpoint loaded with map_location onto a GPU has its RNG states there; restoring must still work (it
    broke the first GPU resume). Simulated with tensors that are not plain CPU ByteTensors of the state."""
    from oldphoto.training.common import rng_state, set_rng_state

    state = rng_state(None)
    expected = torch.rand(3)
    torch.set_rng_state(state["torch"])

    class Elsewhere(torch.Tensor):   # stands for a tensor on another device: .cpu() gives the plain state back
        def cpu(self, *a, **k):
            return torch.Tensor(self.data.clone())

    moved = dict(state, torch=state["torch"].as_subclass(Elsewhere))
    torch.rand(5)
    set_rng_state(moved, None)
    assert torch.equal(torch.rand(3), expected)


def test_scratch_width_option_builds_a_wider_detector(tmp_path):
    from oldphoto.training.runner import TrainOptions, train_stage

    r = train_stage("scratch", TrainOptions(out=tmp_path, steps=1, batch_size=1, crop=32, config="tiny", width=6,
                                            progress=False, threads=1, eval_images=1), log=lambda *_: None)
    from oldphoto.weights import load_weights

    net, info = load_weights(r.files[0])
    assert info.config.base_width == 6 and info.config.depth == 3


def test_detector_batches_hold_hard_negatives(source):
    from oldphoto.quality import gradient_energy
    from oldphoto.training.scratch import detector_batch

    rng = np.random.default_rng(0)
    neg = detector_batch(source, 6, 32, rng, negative_prob=1.0, texture_candidates=3)
    assert neg["negative"].all() and neg["mask"].sum() == 0 and neg["x"].shape == (6, 1, 32, 32)
    pos = detector_batch(source, 6, 32, np.random.default_rng(1), negative_prob=0.0)
    assert not pos["negative"].any() and pos["mask"].sum() > 0
    flat = np.full((32, 32, 3), 128, np.uint8)
    stripes = flat.copy()
    stripes[:, ::2] = 30
    assert gradient_energy(stripes) > gradient_energy(flat) == 0.0


@pytest.fixture
def canvases(monkeypatch) -> list:
    """The degraded canvases the detector's batches are cut or shrunk from, in order (a spy on synthesize_pair)."""
    from oldphoto.training import datasets

    made: list = []
    real = datasets.synthesize_pair

    def spy(clean, *a, **k):
        made.append(real(clean, *a, **k))
        return made[-1]

    monkeypatch.setattr(datasets, "synthesize_pair", spy)
    return made


def test_detector_defects_are_synthesised_at_the_working_scale(source, canvases):
    """Holes and scratch stamps scale with their canvas, so the detector's training defects are synthesised on a
    canvas of the working size and the training crop is a window of that degraded canvas (image and mask)."""
    from oldphoto.training import datasets
    from oldphoto.training.scratch import detector_batch

    b = detector_batch(source, 3, 32, np.random.default_rng(3), negative_prob=0.0, synth_size=64)
    assert b["x"].shape == b["mask"].shape == (3, 1, 32, 32)
    for x, m, p in zip(b["x"][:, 0].numpy(), b["mask"][:, 0].numpy(), canvases):
        assert p.degraded.shape[:2] == (64, 64)
        grey = datasets.to_grey(datasets.to_tensor(p.degraded)[None])[0, 0].numpy()
        err = [(np.abs(grey[y:y + 32, x0:x0 + 32] - x).max(), y, x0) for y in range(33) for x0 in range(33)]
        e, y, x0 = min(err)
        assert e < 1e-6 and np.array_equal(p.mask[y:y + 32, x0:x0 + 32], m)


def test_detector_large_scan_crops_are_shrunk_like_the_pipeline(source, canvases):
    """--large-scan-prob: such crops are degraded on a canvas 1.5-3x the crop's side and shrunk to it exactly as
    the detection stage shrinks a scan (its own function, which `scratch_probability` uses); the label is the
    shrunk mask's area coverage >= LARGE_SCAN_LABEL, so a 2 px scratch on a 3x canvas stays labelled."""
    import cv2

    from oldphoto.stages import scratch as scratch_stage
    from oldphoto.training import datasets
    from oldphoto.training.scratch import LARGE_SCAN_LABEL, detector_batch, shrink_like_pipeline

    b = detector_batch(source, 4, 32, np.random.default_rng(5), negative_prob=0.0, large_scan_prob=1.0)
    assert b["x"].shape == b["mask"].shape == (4, 1, 32, 32)
    for x, m, p in zip(b["x"][:, 0], b["mask"][:, 0].numpy(), canvases):
        side = p.degraded.shape[0]
        assert 48 <= side <= 96 and p.degraded.shape[:2] == (side, side)
        # the grey canvas shrunk by the detection stage's own function (not antialiased: that differs by ~0.05)
        grey = datasets.to_grey(datasets.to_tensor(p.degraded)[None])
        ref = scratch_stage.shrink_to_working_size(grey, (32, 32))
        assert float((x - ref[0, 0]).abs().max()) < 1e-5
        cover = cv2.resize(p.mask.astype(np.float32), (32, 32), interpolation=cv2.INTER_AREA)
        np.testing.assert_array_equal(m, (cover >= LARGE_SCAN_LABEL).astype(np.float32))
    line = np.zeros((96, 96), bool)
    line[:, 40:42] = True
    img = torch.zeros(3, 96, 96)
    img[:, :, 40:42] = 1.0
    small, label = shrink_like_pipeline(img, line, 32)
    assert label[0].sum(axis=0).nonzero()[0].tolist() == [13] and float(small.amax()) > 0.3


def test_detector_defect_mix_changes_the_structured_samples_only(source):
    """--hole-prob / --dark-scratch-prob reach the synthesis of the scratched samples, not the hard negatives."""
    from oldphoto.training.scratch import detector_batch

    def coverage(mix, negative_prob=0.0):
        b = detector_batch(source, 8, 32, np.random.default_rng(4), negative_prob=negative_prob, synth_size=64,
                           defect_mix=mix)
        return float(b["mask"].mean())

    assert coverage({"hole_prob": 1.0}) > coverage({"hole_prob": 0.0}) + 0.01
    assert coverage({"hole_prob": 1.0}, negative_prob=1.0) == 0.0


def test_flat_negatives_are_bright_flat_windows_without_defects(source):
    """--flat-negative-prob: those negatives are cut from the least textured candidate and brightened (mask empty,
    brighter and flatter than the textured negatives); with the option at 0 the batches are the earlier ones, draw
    for draw."""
    from oldphoto.quality import gradient_energy
    from oldphoto.training import scratch
    from oldphoto.training.scratch import brighten, detector_batch

    ramp = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert np.array_equal(brighten(ramp, 1.0), ramp) and (brighten(ramp, 0.5) >= ramp).all()
    assert brighten(ramp, 0.5)[8, 0] > ramp[8, 0] + 40 and brighten(ramp, 0.5)[-1, -1] == 255

    def batch(flat, seed=7, n=8):
        return detector_batch(source, n, 32, np.random.default_rng(seed), negative_prob=1.0, texture_candidates=4,
                              synth_size=64, flat_negative_prob=flat)

    textured, flat = batch(0.0), batch(1.0)
    assert flat["mask"].sum() == 0 and flat["negative"].all()
    assert flat["x"].mean() > textured["x"].mean() + 0.1
    energy = [np.mean([gradient_energy(x[0].numpy()) for x in b["x"]]) for b in (textured, flat)]
    assert energy[1] < energy[0]
    assert all(float(x.std()) > 0 for x in flat["x"])
    a, b = (detector_batch(source, 4, 32, np.random.default_rng(9), 0.5, 4, 64, None, 0.0) for _ in range(2))
    c = detector_batch(source, 4, 32, np.random.default_rng(9), 0.5, 4, 64)
    assert torch.equal(a["x"], b["x"]) and torch.equal(a["x"], c["x"])


def recording(source, crops: list):
    """A batch source that draws its crops from ``source`` and appends each to ``crops``."""

    class Recording:
        textures = source.textures

        class clean:
            @staticmethod
            def crop(size, rng):
                crops.append(source.clean.crop(size, rng))
                return crops[-1]

    return Recording


def test_clean_negatives_are_the_undegraded_crops(source):
    """--clean-negative-prob: those negatives are the clean crop itself (no noise, blur or ageing: a sharp,
    well-kept scan) with an empty mask; the degraded negatives differ from their clean crop."""
    from oldphoto.training.datasets import to_tensor
    from oldphoto.training.scratch import detector_batch, to_grey

    def batch(p):
        return detector_batch(source, 6, 32, np.random.default_rng(11), negative_prob=1.0, texture_candidates=1,
                              clean_negative_prob=p)

    clean, degraded = batch(1.0), batch(0.0)
    assert clean["mask"].sum() == 0 and clean["negative"].all()
    # the crops the batch drew, recorded: the clean batch is those crops unchanged, the other one degrades them
    crops: list[np.ndarray] = []
    Recording = recording(source, crops)

    for p, b in ((1.0, clean), (0.0, degraded)):
        crops.clear()
        again = detector_batch(Recording, 6, 32, np.random.default_rng(11), negative_prob=1.0, texture_candidates=1,
                               clean_negative_prob=p)
        assert torch.equal(again["x"], b["x"])
        expected = to_grey(torch.stack([to_tensor(c) for c in crops]))
        if p:
            assert torch.allclose(b["x"], expected, atol=1e-6)
        else:
            assert (b["x"] - expected).abs().mean() > 0.01


def test_clean_positives_draw_defects_on_the_undegraded_crop(source):
    """--clean-positive-prob: those crops carry local defects (a non-empty mask) and, outside the defects, are the
    clean crop itself (no noise, blur or ageing); without it the same crops are degraded everywhere."""
    from oldphoto.training.datasets import to_tensor
    from oldphoto.training.scratch import detector_batch, to_grey

    crops: list[np.ndarray] = []
    Recording = recording(source, crops)

    for p in (1.0, 0.0):
        crops.clear()
        b = detector_batch(Recording, 6, 48, np.random.default_rng(5), negative_prob=0.0, texture_candidates=1,
                           clean_positive_prob=p)
        expected = to_grey(torch.stack([to_tensor(c) for c in crops]))
        outside = b["mask"] < 0.5
        diff = (b["x"] - expected).abs()
        assert not b["negative"].any()
        assert b["local_only"].tolist() == [bool(p)] * 6     # the flag by which --distill leaves those crops out
        if p:
            assert sum(float(m.sum()) > 0 for m in b["mask"]) >= 4    # defects drawn (a draw of none is possible)
            assert float(diff[outside].max()) < 1e-5                 # untouched elsewhere
        else:
            assert float(diff[outside].mean()) > 0.01


def test_warm_start_begins_from_the_given_weights(tmp_path, source):
    from oldphoto.training.scratch import ScratchStageConfig, ScratchTrainer

    a = ScratchTrainer(settings(steps=1), tmp_path / "a", ScratchStageConfig.preset("tiny"), source)
    a.run()
    files = a.export(tmp_path / "w", fp16=False)
    b = ScratchTrainer(settings(steps=1, seed=5), tmp_path / "b", ScratchStageConfig.preset("tiny"), source)
    assert any(not torch.equal(v, b.net.state_dict()[k]) for k, v in a.net.state_dict().items())
    b.warm_start(files[0])
    assert all(torch.equal(v, b.net.state_dict()[k]) for k, v in a.net.state_dict().items())
    small = ScratchTrainer(settings(steps=1), tmp_path / "c", ScratchStageConfig.preset("small"), source)
    with pytest.raises(ValueError, match="not this run's network"):
        small.warm_start(files[0])


def test_distill_pulls_toward_the_starting_detector_and_survives_resume(tmp_path, source):
    """--distill: a frozen copy of the --init network; the KL from its probabilities is 0 at the start, grows as the
    network moves, leaves out the crops with defects on an undegraded crop, and is checkpointed with the run."""
    from oldphoto.training.scratch import ScratchStageConfig, ScratchTrainer

    start = ScratchTrainer(settings(steps=1), tmp_path / "a", ScratchStageConfig.preset("tiny"), source)
    start.run()
    init = start.export(tmp_path / "w", fp16=False)[0]
    cfg = ScratchStageConfig.preset("tiny")
    cfg.distill = 10.0
    cfg.clean_positive_prob = 0.5
    tr = ScratchTrainer(settings(steps=4, seed=3), tmp_path / "b", cfg, source)
    tr.warm_start(init)
    b = tr.batch()
    everyone = torch.ones(len(b["x"]), dtype=torch.bool)
    with torch.no_grad():
        assert float(tr.distillation(b["x"], tr.net.eval()(b["x"]), everyone)) < 1e-6
        assert float(tr.distillation(b["x"], tr.net(b["x"]), ~everyone)) == 0.0
        for p in tr.net.parameters():
            p.add_(0.3 * torch.randn_like(p))
        assert float(tr.distillation(b["x"], tr.net(b["x"]), everyone)) > 1e-4
    tr.run()
    assert "distill" in tr.history[-1]
    teacher = {k: v.clone() for k, v in tr.teacher.state_dict().items()}
    assert all(torch.equal(v, start.net.state_dict()[k]) for k, v in teacher.items())   # frozen: never trained
    again = ScratchTrainer(settings(steps=6, seed=3), tmp_path / "b", cfg, source)
    again.run(resume=True)
    assert again.step == 6
    assert all(torch.equal(v, again.teacher.state_dict()[k]) for k, v in teacher.items())


def test_freeze_bn_keeps_the_running_statistics_while_the_weights_train(tmp_path, source):
    """--freeze-bn: BatchNorm normalises with the starting network's running statistics and keeps them (a small-batch
    CPU fine-tune re-estimated them and lowered the detector's probabilities everywhere); everything else trains.
    Without it the same run moves the statistics."""
    from oldphoto.training.scratch import ScratchStageConfig, ScratchTrainer

    start = ScratchTrainer(settings(steps=2), tmp_path / "a", ScratchStageConfig.preset("tiny"), source)
    start.run()
    init = start.export(tmp_path / "w", fp16=False)[0]

    def stats(net):
        return {k: v.clone() for k, v in net.state_dict().items() if "running_" in k}

    for freeze in (True, False):
        cfg = ScratchStageConfig.preset("tiny")
        cfg.freeze_bn = freeze
        tr = ScratchTrainer(settings(steps=3, seed=4), tmp_path / f"b{freeze}", cfg, source)
        tr.warm_start(init)
        before, weights = stats(tr.net), snapshot(tr.net)
        tr.run()
        moved = [not torch.equal(v, tr.net.state_dict()[k]) for k, v in before.items()]
        assert before and (not any(moved) if freeze else all(moved))
        assert changed(weights, tr.net) > 0.5


def test_distill_needs_a_starting_network(tmp_path):
    from oldphoto.training.runner import TrainOptions, train_stage

    with pytest.raises(ValueError, match="--init"):
        train_stage("scratch", TrainOptions(config="tiny", out=tmp_path, distill=1.0, steps=1))


@pytest.mark.parametrize("domain", ["a", "b"])
def test_vae_step(tmp_path, source, domain):
    from oldphoto.training.vae import VAEStageConfig, VAETrainer

    tr = VAETrainer(settings(steps=1), tmp_path, VAEStageConfig.preset("tiny"), source, domain=domain)
    nets = [tr.vae, tr.disc] + ([tr.latent_disc] if domain == "a" else [])
    before = [snapshot(n) for n in nets]
    losses = tr.run()
    assert all(np.isfinite(v) for v in losses.values())
    assert {"kl", "l1", "g_gan", "d"} <= set(losses) and (("g_latent" in losses) == (domain == "a"))
    for b, n in zip(before, nets):
        assert changed(b, n) > 0.9


@pytest.mark.parametrize("kind", ["quality", "scratch", "hr"])
def test_mapping_step_keeps_vaes_frozen(tmp_path, source, kind):
    from oldphoto.networks.vae import VAE, VAEConfig
    from oldphoto.training.mapping import MappingStageConfig, MappingTrainer

    torch.manual_seed(0)
    va, vb = VAE(VAEConfig.tiny()), VAE(VAEConfig.tiny())
    frozen = [snapshot(va), snapshot(vb)]
    cfg = MappingStageConfig.preset("tiny", kind, latent_channels=VAEConfig.tiny().channels)
    crop = 64 if kind == "hr" else 32
    tr = MappingTrainer(settings(steps=1, crop=crop), tmp_path, cfg, source, va, vb, vgg=tiny_vgg())
    before = snapshot(tr.net)
    losses = tr.run()
    assert all(np.isfinite(v) for v in losses.values()) and losses["vgg"] > 0 and losses["fm"] > 0
    assert changed(before, tr.net) > 0.9
    for snap, v in zip(frozen, (va, vb)):
        assert changed(snap, v) == 0.0


@pytest.mark.parametrize("kind", ["quality", "scratch"])
def test_end_to_end_mapping_step_tunes_only_what_it_says(tmp_path, source, kind):
    """End-to-end fine-tuning: the image terms are in the losses, the VAE_B decoder changes only with
    tune_decoder (its encoder and VAE_A never), and the tuned decoder is exported beside the mapping."""
    from oldphoto.networks.vae import VAE, VAEConfig
    from oldphoto.training.mapping import MappingStageConfig, MappingTrainer
    from oldphoto.weights import load_weights

    torch.manual_seed(0)
    va, vb = VAE(VAEConfig.tiny()), VAE(VAEConfig.tiny())
    tune = kind == "quality"
    cfg = MappingStageConfig.preset("tiny", kind, latent_channels=VAEConfig.tiny().channels)
    cfg.image_weight, cfg.raw_weight, cfg.tune_decoder = 50.0, 10.0, tune
    cfg.ssim_weight = 20.0 if kind == "scratch" else 0.0
    snaps = [snapshot(va), snapshot(vb.encoder), snapshot(vb.decoder)]
    tr = MappingTrainer(settings(steps=2), tmp_path, cfg, source, va, vb, vgg=None)
    losses = tr.run()
    assert losses["image_l1"] > 0 and losses["raw_l1"] > 0
    assert ("image_dssim" in losses) == (kind == "scratch") and losses.get("image_dssim", 1.0) > 0
    assert changed(snaps[0], va) == 0.0 and changed(snaps[1], vb.encoder) == 0.0
    assert (changed(snaps[2], vb.decoder) > 0.9) == tune
    files = tr.export(tmp_path / "w")
    assert [f.name for f in files] == [f"mapping_{kind}.safetensors"] + (["vae_b_quality.safetensors"] if tune else [])
    if tune:
        net, info = load_weights(files[1], expect_network="vae")
        assert info.provenance["decoder_tuned_with"] == "mapping_quality"
        x = torch.rand(1, 3, 32, 32) * 2 - 1
        with torch.no_grad():
            assert torch.allclose(net.decode(vb.encode(x)), vb.decode(vb.encode(x)), atol=2e-2)  # fp16 file


def test_hr_mapping_training_redraws_crops_without_an_intact_patch(tmp_path, source):
    from oldphoto.networks.vae import VAE, VAEConfig
    from oldphoto.training.mapping import MappingStageConfig, MappingTrainer

    cfg = MappingStageConfig.preset("tiny", "hr", latent_channels=VAEConfig.tiny().channels)
    tr = MappingTrainer(settings(steps=1, crop=64), tmp_path, cfg, source, VAE(VAEConfig.tiny()),
                        VAE(VAEConfig.tiny()), vgg=None)
    full, clean = torch.ones(1, 64, 64), torch.zeros(1, 64, 64)
    corner = clean.clone()
    corner[:, 32:, 32:] = 1.0     # one quarter scratched: intact patches remain at every scale
    assert not tr._has_intact_patch(full)
    from oldphoto.networks.mapping_patch_attention import AllPatchesMaskedError
    with pytest.raises(AllPatchesMaskedError):     # what the check spares the training loop
        tr.net(torch.randn(1, VAEConfig.tiny().channels, 16, 16), full[None])
    assert tr._has_intact_patch(clean) and tr._has_intact_patch(corner)
    b = tr.batch()
    assert all(tr._has_intact_patch(m) for m in b["mask"])
    # each crop goes through the patch attention with its own mask: the same as one at a time
    z = torch.randn(2, VAEConfig.tiny().channels, 16, 16)
    masks = torch.stack([corner, torch.flip(corner, dims=[1, 2])])
    tr.net.eval()
    with torch.no_grad():
        both = tr._map(z, masks)
        one = torch.cat([tr.net(z[i:i + 1], masks[i:i + 1]) for i in range(2)])
        first_mask_only = tr.net(z, masks)
    assert torch.allclose(both, one) and not torch.allclose(both, first_mask_only)


def test_face_step(tmp_path, source):
    from oldphoto.training.face import FaceStageConfig, FaceTrainer

    cfg = FaceStageConfig.preset("tiny", load_size=64)
    tr = FaceTrainer(settings(steps=1, batch_size=2), tmp_path, cfg, source, vgg=tiny_vgg())
    before, before_d = snapshot(tr.net), snapshot(tr.disc)
    losses = tr.run()
    assert all(np.isfinite(v) for v in losses.values()) and losses["vgg"] > 0
    assert changed(before, tr.net) > 0.9 and changed(before_d, tr.disc) > 0.9


# ------------------------------------------------------------------------------------------- resume
@pytest.mark.parametrize("stage", ["scratch", "vae-a"])
@pytest.mark.slow
def test_resume_gives_the_same_next_step(tmp_path, source, stage):
    from oldphoto.training.scratch import ScratchStageConfig, ScratchTrainer
    from oldphoto.training.vae import VAEStageConfig, VAETrainer

    def make(out):
        if stage == "scratch":
            return ScratchTrainer(settings(steps=3), out, ScratchStageConfig.preset("tiny"), source)
        return VAETrainer(settings(steps=3), out, VAEStageConfig.preset("tiny"), source, domain="a")

    straight = make(tmp_path / "a")
    straight.run()                                   # 3 steps uninterrupted

    first = make(tmp_path / "b")
    first.run(steps=2)                               # 2 steps, checkpoint, "crash"
    del first
    resumed = make(tmp_path / "b")                   # a fresh process would start here
    assert resumed.step == 0
    resumed.run(resume=True)                         # loads step 2, does step 3
    assert resumed.step == 3
    for name in straight.modules:
        a, b = straight.modules[name].state_dict(), resumed.modules[name].state_dict()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}.{k} differs after resume"
    assert [h["loss_g" if stage != "scratch" else "loss"] for h in straight.history] == \
        [h["loss_g" if stage != "scratch" else "loss"] for h in resumed.history]


def test_resume_refuses_other_stage(tmp_path, source):
    from oldphoto.training.scratch import ScratchStageConfig, ScratchTrainer
    from oldphoto.training.vae import VAEStageConfig, VAETrainer

    ScratchTrainer(settings(steps=1), tmp_path, ScratchStageConfig.preset("tiny"), source).run()
    tr = VAETrainer(settings(steps=1), tmp_path, VAEStageConfig.preset("tiny"), source, domain="b")
    with pytest.raises(ValueError, match="scratch"):
        tr.load_checkpoint()


# ------------------------------------------------------------------------------------------- export
@pytest.mark.slow
def test_exports_load_through_weights_format(tmp_path, source):
    from oldphoto.networks.vae import VAE, VAEConfig
    from oldphoto.training.face import FaceStageConfig, FaceTrainer
    from oldphoto.training.mapping import MappingStageConfig, MappingTrainer
    from oldphoto.training.scratch import ScratchStageConfig, ScratchTrainer
    from oldphoto.training.vae import VAEStageConfig, VAETrainer
    from oldphoto.weights import load_weights, read_info

    wd = tmp_path / "weights"
    s = settings(steps=1)
    sc = ScratchTrainer(s, tmp_path / "s", ScratchStageConfig.preset("tiny"), source)
    sc.run()
    va = VAETrainer(s, tmp_path / "va", VAEStageConfig.preset("tiny"), source, domain="a")
    va.run()
    vb = VAETrainer(s, tmp_path / "vb", VAEStageConfig.preset("tiny"), source, domain="b")
    vb.run()
    mp = MappingTrainer(s, tmp_path / "m", MappingStageConfig.preset("tiny", "scratch", 16), source,
                        VAE(VAEConfig.tiny()), VAE(VAEConfig.tiny()))
    mp.run()
    fc = FaceTrainer(s, tmp_path / "f", FaceStageConfig.preset("tiny", 64), source)
    fc.run()
    files = {}
    for tr, kw in ((sc, {}), (va, {}), (vb, {}), (mp, {}), (fc, {})):
        for p in tr.export(wd, fp16=True, metrics={"example": 1.0}, **kw):
            files[p.stem] = (p, tr)
    assert set(files) == {"scratch_unet", "vae_a", "vae_b_quality", "vae_b_scratch", "mapping_scratch", "face_256"}
    nets = {"scratch_unet": "net", "vae_a": "vae", "vae_b_quality": "vae", "vae_b_scratch": "vae",
            "mapping_scratch": "net", "face_256": "net"}
    kinds = {"scratch_unet": "scratch_unet", "vae_a": "vae", "vae_b_quality": "vae", "vae_b_scratch": "vae",
             "mapping_scratch": "mapping_nonlocal", "face_256": "spade_face"}
    for role, (p, tr) in files.items():
        module, info = load_weights(p, expect_network=kinds[role])
        assert info.dtype == "float16" and info.provenance["role"] == role
        assert info.provenance["steps"] == 1 and info.provenance["metrics"] == {"example": 1.0}
        ours = getattr(tr, nets[role]).eval().state_dict()
        for k, v in module.state_dict().items():
            if v.is_floating_point():
                torch.testing.assert_close(v, ours[k].float().half().float(), atol=0, rtol=0)
        assert read_info(p).network == kinds[role]


# ------------------------------------------------------------------------------------------- CLI
@pytest.mark.slow
def test_cli_trains_exports_and_writes_card(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from oldphoto.cli import app

    monkeypatch.setenv("COLUMNS", "200")
    out, wd = tmp_path / "runs", tmp_path / "w"
    r = CliRunner().invoke(app, ["train", "scratch", "--config", "tiny", "--steps", "2", "--crop", "32",
                                 "--out", str(out), "--weights-dir", str(wd), "--threads", "1"])
    assert r.exit_code == 0, r.output
    assert (wd / "scratch_unet.safetensors").is_file()
    metrics = json.loads((out / "scratch" / "metrics.json").read_text())
    assert 0.0 <= metrics["roc_auc"] <= 1.0
    # resume continues from the checkpoint up to the new step count
    r = CliRunner().invoke(app, ["train", "scratch", "--config", "tiny", "--steps", "3", "--crop", "32", "--resume",
                                 "--out", str(out), "--weights-dir", str(wd), "--threads", "1"])
    assert r.exit_code == 0, r.output
    assert "resumed" in r.output and "at step 2" in r.output
    r = CliRunner().invoke(app, ["train", "card", "--weights-dir", str(wd)])
    assert r.exit_code == 0, r.output
    card = (wd / "MODEL_CARD.md").read_text()
    assert "scratch_unet" in card and "roc_auc" in card and "not shipped" in card   # the others are missing
    # the mapping refuses clearly when the VAEs it needs are missing
    r = CliRunner().invoke(app, ["train", "mapping", "--config", "tiny", "--steps", "1", "--out", str(out),
                                 "--weights-dir", str(wd)])
    assert r.exit_code == 1 and "vae_a.safetensors" in r.output


def test_model_card_includes_the_measured_bench_section(tmp_path):
    from typer.testing import CliRunner

    from oldphoto.cli import app
    from oldphoto.training.runner import BENCH_NAME, write_model_card

    wd = tmp_path / "w"
    wd.mkdir()
    card = write_model_card(wd).read_text()
    assert "Measured end-to-end quality" not in card                 # no bench result: no section
    bench = {"seed": 0, "n_photos": 3, "working_size": 64, "held_out_photos": "builtin",
             "baseline_mask": "the synthetic mask",
             "methods": {"degraded": {"psnr": 17.2154, "ssim": 0.4758}, "baseline": {"psnr": 17.8260, "ssim": 0.5624},
                         "ours": {"psnr": 18.3471, "ssim": 0.5771}},
             "scratch_detector": {"auc": 0.92083, "f1": 0.5611, "threshold": 0.4},
             "niqe": {"photo": "solvay_1927.png", "input": 2.776, "baseline": 5.014, "ours": 8.646},
             "card_note": "Tone matching is on."}
    (wd / BENCH_NAME).write_text(json.dumps(bench))
    card = write_model_card(wd).read_text()
    assert "## Measured end-to-end quality" in card
    assert "| 17.22 | 0.476 |" in card and "| 17.83 | 0.562 |" in card and "| 18.35 | 0.577 |" in card
    assert "ROC AUC 0.921" in card and "ours 8.65" in card and "Tone matching is on." in card
    r = CliRunner().invoke(app, ["train", "card", "--weights-dir", str(wd), "--bench", str(tmp_path / "none.json")])
    assert r.exit_code == 2 and "no bench result" in r.output


@pytest.mark.slow
def test_face_hr_trains_the_face_512_role_at_twice_the_size(tmp_path):
    from oldphoto.training.face import FaceStageConfig
    from oldphoto.training.runner import TrainOptions, train_stage
    from oldphoto.weights import load_weights, read_info

    assert FaceStageConfig.preset("small", hr=True).net.load_size == 2 * FaceStageConfig.preset("small").net.load_size
    assert FaceStageConfig.preset("official", hr=True).net.load_size == 512
    o = TrainOptions(out=tmp_path / "runs", weights_dir=tmp_path / "w", config="tiny", steps=1, hr=True,
                     threads=1, progress=False)
    # pre-seed the aligned-face cache the trainer keys on its source photos (dlib on every builtin photo
    # takes minutes on a busy 2-core machine; detection itself is tested in test_imageops)
    from oldphoto.data.dataset import builtin_photos, load_rgb

    size = FaceStageConfig.preset("tiny", hr=True).net.load_size
    key = D.face_sources_key(D.face_source_photos(None), size)
    faces = np.stack([np.ascontiguousarray(load_rgb(r.path, 256)[:size, :size]) for r in builtin_photos()[:2]])
    (o.out / "face").mkdir(parents=True)
    np.savez_compressed(o.out / "face" / f"aligned_faces_{size}_{key}.npz", faces=faces, n_photos=2, key=key)
    logs: list[str] = []
    res = train_stage("face", o, log=logs.append)
    assert any("aligned faces from cache" in m for m in logs)
    assert [f.name for f in res.files] == ["face_512.safetensors"] and res.run_dir.name == "face-hr"
    info = read_info(res.files[0])
    assert info.provenance["role"] == "face_512" and info.provenance["load_size"] == 128
    net, _ = load_weights(res.files[0], expect_network="spade_face")
    assert net.cfg.load_size == 128


def test_gpu_data_copy_loads_as_a_data_folder(tmp_path):
    """scripts/gpu_data.py: the train and val photos shrunk to the detector's training size, the textures, a manifest
    and splits that the training's loaders read like a fetched folder (the test split left out)."""
    import subprocess
    import sys
    from pathlib import Path

    from PIL import Image

    src = tmp_path / "data"
    (src / "photos" / "x").mkdir(parents=True)
    (src / "textures" / "scratch").mkdir(parents=True)
    (src / "textures" / "paper").mkdir(parents=True)
    rng = np.random.default_rng(0)
    photos = []
    for i, split in enumerate(("train", "train", "val", "test")):
        Image.fromarray(rng.integers(0, 255, (500, 800, 3), dtype=np.uint8)).save(src / f"photos/x/p{i}.png")
        photos.append({"id": f"x/p{i}", "path": f"photos/x/p{i}.png", "height": 500, "width": 800, "split": split})
    stamp = np.zeros((40, 40), np.uint8)
    stamp[18:22] = 255
    Image.fromarray(stamp).save(src / "textures/scratch/s.png")
    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(src / "textures/paper/p.png")
    (src / "manifest.json").write_text(json.dumps({"format": 1, "photos": photos, "files": {}}))
    (src / "splits.json").write_text(json.dumps({s: [p["id"] for p in photos if p["split"] == s]
                                                 for s in ("train", "val", "test")}))
    out = tmp_path / "copy"
    script = Path(__file__).resolve().parents[1] / "scripts" / "gpu_data.py"
    subprocess.run([sys.executable, str(script), str(src), str(out)], check=True, capture_output=True)
    train = D.clean_photos(out, "train", max_short=384)
    assert len(train.images) == 2 and all(min(im.shape[:2]) == 384 for im in train.images)
    assert len(D.clean_photos(out, "val").images) == 1 and not (out / "photos/x/p3.jpg").exists()
    assert len(D.load_textures(out).scratches) == 1
