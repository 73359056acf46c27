"""Wiring of one training stage end to end (data -> trainer -> loop -> held-out metrics -> export),
shared by ``oldphoto train ...`` and ``oldphoto train all``; plus the model card written from the
exported files' own metadata.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .common import TrainSettings

STAGES = ("scratch", "vae-a", "vae-b", "mapping", "face", "colour", "refiner")
CONFIGS = ("tiny", "small", "official")


@dataclass
class TrainOptions:
    data: Path | None = None            # folder written by `oldphoto data fetch` (None: builtin photos)
    out: Path = Path("runs")            # run folders (checkpoints, history, plots) go to out/<stage>
    weights_dir: Path | None = None     # exported <role>.safetensors (None: out/weights)
    config: str = "small"
    steps: int | None = None
    batch_size: int | None = None
    crop: int | None = None
    seed: int = 0
    device: str = "cpu"
    resume: bool = False
    real: str | None = None             # real old photos (domain R) for VAE_A: folder, file or s3:// prefix
    kind: str = "quality"               # mapping: quality | scratch | hr
    hr: bool = False                    # face: the HR-mode network (role face_512, twice the face size)
    vae_a: Path | None = None           # frozen VAEs for the mapping (default: weights_dir/vae_a... files)
    vae_b: Path | None = None
    vgg: bool = True                    # VGG16 perceptual loss where the stage uses one
    threads: int | None = None
    max_minutes: float | None = None
    fp16: bool = True
    progress: bool = True
    checkpoint_every: int | None = None
    eval_images: int = 12
    init: Path | None = None            # warm start: trained weights to begin from (scratch detector, mappings, faces)
    image_weight: float = 0.0           # mapping, end to end: L1 of the tone-matched output (training/mapping.py)
    raw_weight: float = 0.0             # mapping, end to end: L1 of the decoder output
    ssim_weight: float = 0.0            # mapping, end to end: 1 - SSIM of the tone-matched output
    tune_decoder: bool = False          # mapping, end to end: train the VAE_B decoder too
    gan_weight: float | None = None     # mapping: weight of the generator's LSGAN term (None: the preset's 1)
    lr: float | None = None             # Adam learning rate (None: the paper's 2e-4)
    dark_scratch_prob: float | None = None  # scratch detector: share of scratch sets drawn dark (None: synthesis')
    scratch_width_max: float | None = None  # scratch detector: widest procedural scratch, px at 256 (None: synthesis')
    hole_prob: float | None = None          # scratch detector: share of scratched photos with holes (None: synthesis')
    synth_size: int | None = None           # scratch detector: canvas side the defects are drawn on (None: the crop)
    flat_negative_prob: float = 0.0         # scratch detector: share of negatives that are bright flat areas
    clean_negative_prob: float = 0.0        # scratch detector: share of negatives left undegraded (clean scans)
    clean_positive_prob: float = 0.0        # scratch detector: share of defect crops drawn on the undegraded crop
    distill: float = 0.0                    # scratch detector: pull toward the --init network (needs --init)
    freeze_bn: bool = False                 # scratch detector: BatchNorm keeps its running statistics
    large_scan_prob: float = 0.0            # scratch detector: share of crops degraded as a larger scan, then shrunk
    mask_noise: float = 0.0                 # refiner: share of training windows with a perturbed mask channel
    clean_share: float = 0.0                # refiner: clean (undegraded) samples added, as a share of the samples
    workers: int = 0                        # batches made in this many background processes (not colour, refiner)
    width: int | None = None                # scratch detector: the U-Net's base width (None: the config's)

    @property
    def weights(self) -> Path:
        return Path(self.weights_dir) if self.weights_dir is not None else Path(self.out) / "weights"


@dataclass
class StageResult:
    stage: str
    files: list[Path]
    metrics: dict[str, Any]
    steps: int
    seconds: float
    run_dir: Path
    notes: list[str] = field(default_factory=list)


def settings_for(stage_module: Any, o: TrainOptions, stage_key: str) -> TrainSettings:
    base = dict(stage_module.SETTINGS[o.config])
    if o.steps is not None:
        base["steps"] = o.steps
    if o.batch_size is not None:
        base["batch_size"] = o.batch_size
    if o.crop is not None:
        base["crop"] = o.crop
    if o.lr is not None:
        base["lr"] = o.lr
    s = TrainSettings(**base, seed=o.seed, device=o.device, threads=o.threads, progress=o.progress,
                      workers=o.workers, max_seconds=None if o.max_minutes is None else o.max_minutes * 60)
    s.checkpoint_every = o.checkpoint_every or max(10, min(200, s.steps // 5 or 1))
    s.log_every = max(1, min(10, s.steps // 50 or 1))
    return s


def _data(o: TrainOptions, log: Callable, need_real: bool = False, faces_size: int | None = None,
          max_short: int = 512):
    from . import datasets as D

    split_note = "train split of " + str(o.data) if o.data else "builtin photos (scikit-image/sklearn/matplotlib; smoke runs only)"
    clean = D.clean_photos(o.data, "train", max_short=max_short)
    textures = D.load_textures(o.data, seed=o.seed)
    note: dict[str, Any] = {"clean": split_note, "clean_photos": len(clean),
                            "textures": "fetched textures" if o.data else "procedural textures"}
    real = _real_pool(o, log, note) if need_real else None
    faces = _face_training_pool(o, log, note, faces_size) if faces_size is not None else None
    return D.BatchSource(clean, textures, real=real, faces=faces), note


def _real_pool(o: TrainOptions, log: Callable, note: dict[str, Any]):
    """Domain R for the VAE_A: the photos of --real (never the DATA/real/ review set), else None (strongly
    degraded synthetic photos)."""
    from . import datasets as D

    if not o.real:
        # DATA/real/ (Solvay 1927, gramps) is the review set: never a training pool
        note["real_old_photos"] = "strongly degraded synthetic photos only (no --real given)"
        log("no --real given: domain R = strongly degraded synthetic photos (DATA/real/ is the "
            "review set, never trained on)")
        return None
    review, given = (Path(o.data) / "real").resolve() if o.data else None, Path(o.real).resolve()
    if review is not None and (given.is_relative_to(review) or review.is_relative_to(given)):
        raise ValueError(f"--real {o.real}: DATA/real/ is the real-photo review set, never trained on")
    real = D.PhotoPool.from_uri(o.real)
    note["real_old_photos"] = f"{len(real)} photos from {o.real}"
    log(f"real old photos (domain R): {len(real)} images from {o.real}")
    return real


def _face_training_pool(o: TrainOptions, log: Callable, note: dict[str, Any], faces_size: int):
    """Aligned faces for the face enhancer, cached under OUT/face/ by a hash of the source photos' bytes (another
    set of photos, e.g. after `oldphoto data fetch` added DIR/faces/, gets a new cache instead of a stale one)."""
    from . import datasets as D

    sources = D.face_source_photos(o.data)
    key = D.face_sources_key(sources, faces_size)
    cache = Path(o.out) / "face" / f"aligned_faces_{faces_size}_{key}.npz"
    z = np.load(cache) if cache.is_file() else None
    if z is not None and "key" in z.files and str(z["key"]) == key:
        imgs, n_photos = list(z["faces"]), int(z["n_photos"])
        log(f"aligned faces from cache {cache}")
    else:
        log(f"detecting and aligning faces (dlib) in {len(sources)} photos ...")
        imgs, names = D.face_images(o.data, faces_size, sources=sources)
        n_photos = len(names)
        if imgs:
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(cache, faces=np.stack(imgs), n_photos=n_photos, key=key, photos=np.array(names))
    if not imgs:
        raise RuntimeError("no faces found to train the face enhancer on")
    note["faces"] = f"{len(imgs)} aligned faces (dlib HOG + 68 landmarks) from {n_photos} photos"
    log(f"face training set: {len(imgs)} aligned faces from {n_photos} photos")
    return face_pool(imgs, faces_size)


def face_pool(faces: list[np.ndarray], size: int):
    """Aligned faces as a crop pool with the face trainer's augmentation: each face zoomed by 1.12 and cropped
    at a random window (shift/scale jitter) + h-flip."""
    from PIL import Image

    from . import datasets as D

    big = int(round(size * 1.12))
    zoomed = [np.asarray(Image.fromarray(f).resize((big, big), Image.Resampling.BICUBIC)) for f in faces]
    return D.PhotoPool(zoomed, max_short=big, scale_jitter=(0.92, 1.0))


def held_out_faces(o: TrainOptions, size: int):
    """Faces the face trainer never sees, for its metrics: the dlib faces of the test split's photos (with a
    data folder) as a BatchSource, and a description; (None, reason) when there are none."""
    from oldphoto.data import dataset as odata

    from . import datasets as D

    if o.data is None:
        return None, "no data folder: the builtin photos are the training faces, nothing is held out"
    sources = [(r.path, r.id, "") for r in odata.split_photos(o.data, "test")]
    sources += [(p, p.name, "") for p in odata.held_out_face_photos(o.data)]
    faces, _ = D.face_images(None, size, sources=sources)
    if not faces:
        return None, "no face in the test split nor in the face-test photos"
    pool = face_pool(faces, size)
    return (D.BatchSource(pool, D.load_textures(o.data, seed=o.seed + 1), faces=pool),
            f"{len(faces)} faces of the test split and the face-test photos (never trained on) with fixed "
            "synthetic degradations")


def _val_source(o: TrainOptions):
    """Held-out photos for metrics: the val split when a data folder is given, else the builtin photos."""
    from . import datasets as D

    if o.data is not None:
        pool = D.clean_photos(o.data, "val")
        where = f"val split of {o.data}"
    else:
        pool = D.clean_photos(None)
        where = "builtin photos"
    return D.BatchSource(pool, D.load_textures(o.data, seed=o.seed + 1)), where


def _vgg(o: TrainOptions, layers: tuple[str, ...], log: Callable):
    if not o.vgg or not layers:
        return None
    from .vgg import find_vgg16_onnx, load_vgg16_onnx

    path = find_vgg16_onnx(o.data)
    log(f"VGG16 perceptual loss ({', '.join(layers)}) from {path} (training only, not shipped)")
    return load_vgg16_onnx(path, layers)


def _vae_file(o: TrainOptions, which: str, kind: str) -> Path:
    if which == "a":
        return Path(o.vae_a) if o.vae_a else o.weights / "vae_a.safetensors"
    role = "vae_b_quality" if kind == "quality" else "vae_b_scratch"
    return Path(o.vae_b) if o.vae_b else o.weights / f"{role}.safetensors"


def train_stage(stage: str, o: TrainOptions, log: Callable = print) -> StageResult:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}: choose {', '.join(STAGES)}")
    if o.config not in CONFIGS:
        raise ValueError(f"unknown config {o.config!r}: choose {', '.join(CONFIGS)}")
    if o.threads and o.device == "cpu":
        torch.set_num_threads(o.threads)
    t0 = time.monotonic()
    run_name = {"mapping": f"mapping-{o.kind}", "face": "face-hr" if o.hr else "face"}.get(stage, stage)
    run_dir = Path(o.out) / run_name
    notes: list[str] = []
    trainers = {"scratch": _train_scratch, "vae-a": _train_vae, "vae-b": _train_vae, "mapping": _train_mapping,
                "face": _train_face, "colour": _train_colour, "refiner": _train_refiner}
    tr, metrics = trainers[stage](stage, o, log, run_dir, notes)

    export_kw = {"role": "face_512" if o.hr else "face_256"} if stage == "face" else {}
    files = tr.export(o.weights, fp16=o.fp16, metrics=_round(metrics), **export_kw)
    (run_dir / "metrics.json").write_text(json.dumps(_round(metrics), indent=2))
    log(f"[{run_name}] {tr.step} steps in {tr.elapsed:.0f} s; metrics {json.dumps(_round(metrics))}")
    for f in files:
        log(f"[{run_name}] wrote {f} ({f.stat().st_size / 1e6:.2f} MB)")
    return StageResult(run_name, files, metrics, tr.step, time.monotonic() - t0, run_dir, notes)


def _train_scratch(stage: str, o: TrainOptions, log: Callable, run_dir: Path,
                 notes: list[str]) -> tuple[Any, dict[str, Any]]:
    """The scratch detector. Returns the trainer and its metrics."""
    from . import scratch as M

    cfg = M.ScratchStageConfig.preset(o.config)
    if o.width is not None:
        cfg.net = dataclasses.replace(cfg.net, base_width=o.width)
    cfg.synth_size = o.synth_size
    cfg.flat_negative_prob = o.flat_negative_prob
    cfg.large_scan_prob = o.large_scan_prob
    cfg.clean_negative_prob = o.clean_negative_prob
    cfg.clean_positive_prob = o.clean_positive_prob
    if o.distill > 0 and not o.init:
        raise ValueError("--distill pulls toward the starting network: give it with --init")
    cfg.distill = o.distill
    cfg.freeze_bn = o.freeze_bn
    cfg.defect_mix = {k: v for k, v in (("dark_scratch_prob", o.dark_scratch_prob), ("hole_prob", o.hole_prob))
                      if v is not None}
    if o.scratch_width_max is not None:
        from oldphoto.synthesis import DEFAULT as SYNTH

        cfg.defect_mix["scratch_width"] = (SYNTH.scratch_width[0], o.scratch_width_max)
    # the detector sees photos at a short side of 256 (detector_size): train at about that scale
    data, note = _data(o, log, max_short=M.TRAIN_MAX_SHORT)
    note.update(negative_prob=cfg.negative_prob, texture_candidates=cfg.texture_candidates, synth_size=cfg.synth_size,
                defect_mix=cfg.defect_mix, flat_negative_prob=cfg.flat_negative_prob,
                large_scan_prob=cfg.large_scan_prob, clean_negative_prob=cfg.clean_negative_prob,
                clean_positive_prob=cfg.clean_positive_prob, distill=cfg.distill,
                freeze_bn=cfg.freeze_bn)
    tr = M.ScratchTrainer(settings_for(M, o, stage), run_dir, cfg, data, log=log, data_note=note)
    _warm_start(tr, o, note, log)
    tr.run(resume=o.resume)
    val, where = _val_source(o)
    crop = max(cfg.net.size_multiple, (128 // cfg.net.size_multiple) * cfg.net.size_multiple)
    n_eval = 2 * o.eval_images
    grey, mask = M.eval_set(val, n_eval, crop, negative_prob=0.5, synth_size=cfg.synth_size)  # the default mix
    metrics = {**M.evaluate(tr.net, grey, mask),
               "eval_set": f"{n_eval} synthetic {crop}px crops of {cfg.synth_size or crop}px degraded canvases "
                           f"(half textured crops without local defects), {where}, seed 1234"}
    return tr, metrics


def _train_vae(stage: str, o: TrainOptions, log: Callable, run_dir: Path,
                 notes: list[str]) -> tuple[Any, dict[str, Any]]:
    """VAE_A (old photos) or VAE_B (clean photos). Returns the trainer and its metrics."""
    from . import vae as M

    cfg = M.VAEStageConfig.preset(o.config)
    data, note = _data(o, log, need_real=stage == "vae-a")
    tr = M.VAETrainer(settings_for(M, o, stage), run_dir, cfg, data, domain=stage[-1], log=log, data_note=note)
    tr.run(resume=o.resume)
    val, where = _val_source(o)
    rng = np.random.default_rng(1234)
    imgs = val.pairs(o.eval_images, 64, rng)["x"] if stage == "vae-a" else val.clean_crops(o.eval_images, 64, rng)
    metrics = {**M.reconstruction_metrics(tr.vae, imgs),
               "eval_set": f"{o.eval_images} {'synthetic old' if stage == 'vae-a' else 'clean'} 64px crops, {where}"}
    return tr, metrics


def _train_mapping(stage: str, o: TrainOptions, log: Callable, run_dir: Path,
                 notes: list[str]) -> tuple[Any, dict[str, Any]]:
    """A latent mapping (o.kind) between the trained VAEs. Returns the trainer and its metrics."""
    from oldphoto.weights import load_weights

    from . import mapping as M

    fa, fb = _vae_file(o, "a", o.kind), _vae_file(o, "b", o.kind)
    for f in (fa, fb):
        if not f.is_file():
            raise FileNotFoundError(f"the mapping needs the trained VAEs first: {f} is missing "
                                    "(run `oldphoto train vae-a` and `oldphoto train vae-b`, or pass --vae-a/--vae-b)")
    vae_a, ia = load_weights(fa, expect_network="vae")
    vae_b, ib = load_weights(fb, expect_network="vae")
    cfg = M.MappingStageConfig.preset(o.config, o.kind, latent_channels=vae_a.cfg.channels)
    cfg.image_weight, cfg.raw_weight, cfg.tune_decoder = o.image_weight, o.raw_weight, o.tune_decoder
    cfg.ssim_weight = o.ssim_weight
    if o.gan_weight is not None:
        cfg.gan_weight = o.gan_weight
    data, note = _data(o, log)
    vgg = _vgg(o, cfg.vgg_layers, log)
    if vgg is None and cfg.vgg_layers:
        notes.append("trained without the VGG16 perceptual term (--no-vgg)")
    tr = M.MappingTrainer(settings_for(M, o, stage), run_dir, cfg, data, vae_a, vae_b, vgg=vgg, log=log,
                          data_note=note, vae_files={"vae_a": ia.file_sha256, "vae_b": ib.file_sha256})
    _warm_start(tr, o, note, log)
    tr.run(resume=o.resume)
    val, where = _val_source(o)
    b = val.pairs(o.eval_images, 64, np.random.default_rng(1234), structured=o.kind != "quality")
    if o.kind != "quality":
        from .datasets import fill_holes_white
        b["x"] = fill_holes_white(b["x"], b["mask"])
    metrics = {**M.restoration_metrics(vae_a, tr.net, vae_b, b, o.kind),
               "eval_set": f"{o.eval_images} synthetic 64px pairs, {where}"}
    return tr, metrics


def _train_colour(stage: str, o: TrainOptions, log: Callable, run_dir: Path,
                  notes: list[str]) -> tuple[Any, dict[str, Any]]:
    """The global tone/colour regressor; its strength (operating point) chosen on the val photos."""
    from oldphoto.data import dataset as odata
    from oldphoto.synthesis import synthesize

    from . import colour as M

    cfg = M.ColourStageConfig.preset(o.config)
    data, note = _data(o, log)
    tr = M.ColourTrainer(settings_for(M, o, stage), run_dir, cfg, data, log=log, data_note=note)
    tr.run(resume=o.resume)
    val, where = _val_source(o)
    pairs = []
    for i, img in enumerate(val.clean.images):
        clean = odata.center_crop(odata.resize_short_side(img, 256), 256)
        for k in range(cfg.val_seeds):
            d = synthesize(clean, np.random.default_rng([k, i]), val.textures)
            pairs.append((d.degraded, d.clean))
    strength, table = M.choose_strength(tr.net, pairs)
    tr.operating_point = {"strength": strength, "chosen_on": f"{len(pairs)} degraded 256 px val photos ({where})"}
    metrics = {**table, "strength": strength,
               "eval_set": f"{len(val.clean.images)} photos x {cfg.val_seeds} synthetic degradations, 256 px, {where}"}
    return tr, metrics


def _train_face(stage: str, o: TrainOptions, log: Callable, run_dir: Path,
                 notes: list[str]) -> tuple[Any, dict[str, Any]]:
    """The face enhancer (256, or 512 with o.hr). Returns the trainer and its metrics."""
    from . import face as M

    cfg = M.FaceStageConfig.preset(o.config, hr=o.hr)
    data, note = _data(o, log, faces_size=cfg.net.load_size)
    vgg = _vgg(o, cfg.vgg_layers, log)
    tr = M.FaceTrainer(settings_for(M, o, stage), run_dir, cfg, data, vgg=vgg, log=log, data_note=note)
    _warm_start(tr, o, note, log)
    tr.run(resume=o.resume)
    val, where = held_out_faces(o, cfg.net.load_size)
    if val is None:
        val, where = data, f"training faces with fresh degradations ({where})"
    b = val.face_pairs(min(8, o.eval_images), cfg.net.load_size, np.random.default_rng(1234))
    metrics = {**M.face_metrics(tr.net, b), "eval_set": where}
    return tr, metrics


def _warm_start(tr: Any, o: TrainOptions, note: dict[str, Any], log: Callable) -> None:
    """`--init FILE`: begin from trained weights, unless `--resume` continues a checkpoint of this run."""
    if o.init and not (o.resume and tr.checkpoint_path.is_file()):
        tr.warm_start(o.init)
        note["warm_start"] = str(o.init)
        log(f"[{tr.stage}] warm start from {o.init}")


def _round(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in d.items()}


def _train_refiner(stage: str, o: TrainOptions, log: Callable, run_dir: Path,
                   notes: list[str]) -> tuple[Any, dict[str, Any]]:
    """The detail refiner on the stage-1 output of the weights in --weights-dir; its strength chosen on val
    samples made the same way from the val photos."""
    from . import datasets as D
    from . import refine as M

    cfg = M.RefinerStageConfig.preset(o.config)
    cfg.mask_noise = o.mask_noise
    cfg.clean_share = o.clean_share
    clean = D.clean_photos(o.data, "train", max_short=M.POOL_MAX_SHORT)
    textures = D.load_textures(o.data, seed=o.seed)
    restorer = M.stage1_restorer(o.weights)
    faces = M.train_face_crops(o.data, cfg.size, log) if cfg.face_share > 0 else []
    note: dict[str, Any] = {"clean": "train split of " + str(o.data) if o.data else "builtin photos (smoke runs only)",
                            "clean_photos": len(clean), "face_crops": len(faces), "face_share": cfg.face_share,
                            "mask_noise": cfg.mask_noise, "clean_share": cfg.clean_share,
                            "textures": "fetched textures" if o.data else "procedural textures",
                            "stage1_weights": str(o.weights)}
    crops = M.crop_source(clean, cfg.size, faces, cfg.face_share)
    samples = lambda n, rng, degrade=True: M.make_samples(restorer, crops, n, rng, textures, log, degrade)
    tr = M.RefinerTrainer(settings_for(M, o, stage), run_dir, cfg, samples, log=log, data_note=note)
    _warm_start(tr, o, note, log)
    tr.run(resume=o.resume)
    val_pool = D.clean_photos(o.data, "val", max_short=M.POOL_MAX_SHORT) if o.data else clean
    where = f"val split of {o.data}" if o.data else "builtin photos"
    n_val = M.VAL_SAMPLES if o.config != "tiny" else 2          # random crops of random val photos
    val_crops = M.crop_source(val_pool, cfg.size, [], 0.0)
    val = M.make_samples(restorer, val_crops, n_val, np.random.default_rng([o.seed, 92]),
                         D.load_textures(o.data, seed=o.seed + 1), log)
    strength, table = M.choose_strength(tr.net, val)
    tr.operating_point = {"strength": strength, "chosen_on": f"{n_val} degraded {cfg.size} px crops of the {where}"}
    eval_set = f"{n_val} synthetic degradations, {cfg.size} px, {where}"
    if cfg.clean_share > 0:
        # undegraded crops of the val photos (clean scans): how much the refined stage 1 still costs them
        clean_val = M.make_samples(restorer, val_crops, n_val, np.random.default_rng([o.seed, 92]), None, log,
                                   degrade=False)
        _, clean_table = M.choose_strength(tr.net, clean_val)
        table.update({f"clean_{k}": v for k, v in clean_table.items()})
        eval_set += f"; clean_*: {n_val} undegraded crops of the same photos (target: the scan itself)"
    return tr, {**table, "strength": strength, "eval_set": eval_set}


# ------------------------------------------------------------------------------------------ model card
ROLE_ORDER = ("scratch_unet", "vae_a", "vae_b_quality", "vae_b_scratch", "mapping_quality", "mapping_scratch",
              "mapping_hr", "face_256", "face_512", "colour", "refiner")


BENCH_NAME = "quality_bench.json"   # `oldphoto bench quality` result kept beside the weights it measured


def _fmt(v: Any, digits: int) -> str:
    return f"{v:.{digits}f}" if isinstance(v, (int, float)) and v is not None else "—"


def _detector_lines(det: dict[str, Any]) -> list[str]:
    """The scratch detector's part of the bench section (ROC AUC, false positives, the `auto` decision)."""
    lines: list[str] = []
    if det:
        lines += ["", f"Scratch detector on the same photos: ROC AUC {_fmt(det.get('auc'), 3)}, "
                      f"F1@{det.get('threshold', 0.4)} {_fmt(det.get('f1'), 3)}"
                      + (f"; false-positive pixels on the same photos without structured defects "
                         f"{_fmt(100 * det['fp_rate_no_defects'], 2)} %" if "fp_rate_no_defects" in det else "")
                      + (f"; ROC AUC on the same photos degraded as {det['large_scan_side']}x larger scans (which the "
                         f"pipeline shrinks to its working size) {_fmt(det['auc_large_scans'], 3)}"
                         if "auc_large_scans" in det else "")
                      + (f"; on defects drawn on the undegraded photos (well-kept scans with scratches) ROC AUC "
                         f"{_fmt(det['auc_clean_scans'], 3)}, recall at the threshold "
                         f"{_fmt(100 * det['recall_clean_scans'], 1)} %" if "auc_clean_scans" in det else "")
                      + "."]
        a = det.get("auto_decision")
        if a:
            lines += ["", f"`--scratch auto` decision: {_fmt(100 * a['accuracy'], 1)} % right "
                          f"({a['scratched_to_scratch_path']}/{a['scratched']} scratched photos to the scratch path, "
                          f"{a['clean_to_quality_path']}/{a['clean']} without structured defects to the quality path)."]
    return lines


def bench_section(bench: dict[str, Any]) -> list[str]:
    """The "Measured end-to-end quality" section, rendered from an `oldphoto bench quality` JSON."""
    m = bench.get("methods", {})
    rows = [("degraded input", "degraded"), ("OpenCV NLM + Telea inpaint (classical baseline)", "baseline"),
            ("ours: `Restorer` with these weights (default options)", "ours")]
    lines = ["## Measured end-to-end quality", "",
             f"`oldphoto bench quality --weights <these> --data DATA` (seed {bench.get('seed', '?')}): "
             f"{bench.get('n_photos', '?')} photos ({bench.get('held_out_photos', '?')}), "
             f"{bench.get('working_size', '?')}×{bench.get('working_size', '?')}, one fixed synthetic degradation "
             f"each; baseline inpainting mask: {bench.get('baseline_mask', '?')}.", "",
             "| method | PSNR (dB) | SSIM | face crops PSNR (dB) | face crops SSIM |", "|---|---|---|---|---|"]
    fm = bench.get("faces", {})
    for label, key in rows:
        if key in m:
            f = fm.get(key, {})
            lines.append(f"| {label} | {_fmt(m[key].get('psnr'), 2)} | {_fmt(m[key].get('ssim'), 3)} | "
                         f"{_fmt(f.get('psnr'), 2)} | {_fmt(f.get('ssim'), 3)} |")
        elif key == "ours":
            lines.append(f"| {label} | — ({bench.get('ours_unavailable') or 'not measured'}) | — | — | — |")
    if "faces_worse_than_input" in fm:
        lines += ["", f"Face crops: {fm.get('degraded', {}).get('n', 0)} faces (dlib on the clean test photos and "
                      "face-centred crops of the face-test photos, never trained on); "
                      f"{fm['faces_worse_than_input']} end worse than their degraded input (PSNR or SSIM)."]
    c = bench.get("clean_scans") or {}
    if c:
        lines += ["", f"Do no harm: given each clean photo itself (a scan that needs nothing), ours ends "
                      f"{_fmt(c.get('psnr'), 2)} dB / {_fmt(c.get('ssim'), 3)} against it (detail kept "
                      f"{_fmt(c.get('detail'), 2)}; {c.get('scratch_path', 0)} of {c.get('n', 0)} took the scratch "
                      "path)."]
    lines += _detector_lines(bench.get("scratch_detector") or {})
    nq = bench.get("niqe") or {}
    if nq.get("input") is not None:
        lines += ["", f"NIQE (lower is better) on the real old photo {nq.get('photo', '')}: input "
                      f"{_fmt(nq.get('input'), 2)}, baseline {_fmt(nq.get('baseline'), 2)}, "
                      f"ours {_fmt(nq.get('ours'), 2)}."]
    if bench.get("card_note"):
        lines += ["", str(bench["card_note"]).rstrip()]
    return lines + [""]


def write_model_card(weights_dir: str | Path, path: str | Path | None = None, header: str = "",
                     bench: str | Path | None = None) -> Path:
    """MODEL_CARD.md from the metadata stored inside each ``<role>.safetensors`` (provenance, config,
    metrics), so the card can never disagree with the files; plus the "Measured end-to-end quality" section
    from `bench` (an `oldphoto bench quality` JSON; default ``weights_dir/quality_bench.json`` when present)."""
    from oldphoto.weights import read_info

    wd = Path(weights_dir)
    path = Path(path) if path else wd / "MODEL_CARD.md"
    bench_path = Path(bench) if bench else wd / BENCH_NAME
    if bench is not None and not bench_path.is_file():
        raise FileNotFoundError(f"no bench result at {bench_path}")
    lines = ["# oldphoto shipped weights: model card", ""]
    if header:
        lines += [header.rstrip(), ""]
    if bench_path.is_file():
        lines += bench_section(json.loads(bench_path.read_text()))
    lines += ["| role | network | parameters | steps | wall time | file MB | sha256 (first 16) | held-out metrics |",
              "|---|---|---|---|---|---|---|---|"]
    details = []
    for role in ROLE_ORDER:
        f = wd / f"{role}.safetensors"
        if not f.is_file():
            lines.append(f"| {role} | — not shipped — | | | | | | |")
            continue
        info = read_info(f)
        p = info.provenance
        m = {k: v for k, v in p.get("metrics", {}).items() if k != "eval_set"}
        mtxt = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in m.items())
        lines.append(f"| {role} | {info.network} | {p.get('network_parameters', '?'):,} | {p.get('steps', '?')} | "
                     f"{p.get('wall_seconds', 0) / 60:.1f} min | {f.stat().st_size / 1e6:.2f} | "
                     f"{info.file_sha256[:16]} | {mtxt} |")
        details.append(f"### {role}\n\n- network `{info.network}`, config `{json.dumps(info.config_dict, sort_keys=True)}`"
                       f"\n- objective: {p.get('objective', '?')}"
                       f"\n- data: {json.dumps(p.get('data', {}), sort_keys=True)}"
                       f"\n- optimiser: Adam betas {p.get('adam_betas')}, lr {p.get('lr')} (linear decay to 0 over "
                       f"the second half), batch {p.get('batch_size')}, crop {p.get('crop')} px, seed {p.get('seed')}"
                       f"\n- hardware: {p.get('hardware', '?')} ({p.get('device', '?')}); wall time "
                       f"{p.get('wall_seconds', '?')} s"
                       f"\n- metrics eval set: {p.get('metrics', {}).get('eval_set', '—')}"
                       f"\n- final training losses: {json.dumps(p.get('final_losses', {}), sort_keys=True)}\n")
    lines += ["", "## Per-network details", ""] + details
    path.write_text("\n".join(lines) + "\n")
    return path
