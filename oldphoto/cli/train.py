"""`oldphoto train` commands: train each network of the method (CPU-sized presets or the official shapes).

    oldphoto train scratch  --data DATA --config small --out runs --weights-dir oldphoto/weights
    oldphoto train vae-a    --data DATA [--real DIR_OR_S3_PREFIX]
    oldphoto train vae-b    --data DATA
    oldphoto train mapping  --data DATA --kind quality|scratch|hr
    oldphoto train face     --data DATA [--hr]
    oldphoto train colour   --data DATA          (ours: global tone/colour regressor)
    oldphoto train refiner  --data DATA          (ours: detail refiner, on the stage-1 weights in --weights-dir)
    oldphoto train all      --data DATA          (every stage in order, then MODEL_CARD.md)
    oldphoto train card     --weights-dir DIR    (rewrite MODEL_CARD.md from the files' metadata)
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

train_app = typer.Typer(no_args_is_help=True, add_completion=False,
                        help="Train the networks (scratch detector, VAEs, mappings, face enhancer).")

DataOpt = typer.Option(None, "--data", help="Folder written by `oldphoto data fetch` (default: builtin photos, "
                                            "smoke runs only).")
OutOpt = typer.Option(Path("runs"), "--out", help="Run folders (checkpoints, loss history, loss-curve plots).")
WeightsOpt = typer.Option(None, "--weights-dir", help="Where to write <role>.safetensors (default: OUT/weights).")
ConfigOpt = typer.Option("small", "--config", help="tiny | small (CPU-trainable) | official (paper shapes; GPU).")
StepsOpt = typer.Option(None, "--steps", help="Training steps (default: the config's).")
BatchOpt = typer.Option(None, "--batch-size")
CropOpt = typer.Option(None, "--crop", help="Random crop size in pixels.")
SeedOpt = typer.Option(0, "--seed")
DeviceOpt = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1 ... (mixed precision on CUDA).")
ResumeOpt = typer.Option(False, "--resume", help="Continue from OUT/<stage>/checkpoint.pt.")
ThreadsOpt = typer.Option(None, "--threads", help="torch CPU threads.")
MinutesOpt = typer.Option(None, "--max-minutes", help="Stop (checkpoint + export) after this much training time.")
VggOpt = typer.Option(True, "--vgg/--no-vgg", help="Use the VGG16 perceptual loss (needs the fetched ONNX).")
Fp16Opt = typer.Option(True, "--fp16/--fp32", help="Storage precision of the exported weights.")
WorkersOpt = typer.Option(0, "--workers", min=0,
                          help="Make the training batches in this many background processes (on a GPU the "
                               "synthesis is the bottleneck; default 0: in the training process, reproducible "
                               "batch for batch).")
InitOpt = typer.Option(None, "--init", help="Start from these trained weights (e.g. the shipped "
                       "oldphoto/weights/<role>.safetensors) instead of random; ignored when --resume finds a checkpoint.")


def _options(**kw):
    from oldphoto.training.runner import TrainOptions

    return TrainOptions(**{k: v for k, v in kw.items() if v is not None})


def _run(stage: str, **kw) -> None:
    from oldphoto.training.runner import train_stage

    o = _options(**kw)
    try:
        res = train_stage(stage, o, log=typer.echo)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    typer.echo(f"loss curves: {res.run_dir / 'loss_curves.png'}")


@train_app.command("scratch")
def scratch(data: Optional[Path] = DataOpt, out: Path = OutOpt, weights_dir: Optional[Path] = WeightsOpt,
            config: str = ConfigOpt, steps: Optional[int] = StepsOpt, batch_size: Optional[int] = BatchOpt,
            crop: Optional[int] = CropOpt, seed: int = SeedOpt, device: str = DeviceOpt, resume: bool = ResumeOpt,
            threads: Optional[int] = ThreadsOpt, max_minutes: Optional[float] = MinutesOpt,
            fp16: bool = Fp16Opt, init: Optional[Path] = InitOpt,
            dark_scratch_prob: Optional[float] = typer.Option(None, "--dark-scratch-prob", min=0.0, max=1.0,
                                                             help="Share of scratch sets drawn dark (default 0.2, "
                                                                  "the synthesis' own)."),
            scratch_width_max: Optional[float] = typer.Option(None, "--scratch-width-max", min=1.0,
                                                              help="Widest procedural scratch, px at a 256 px "
                                                                   "image (default 3.5, the synthesis' own)."),
            hole_prob: Optional[float] = typer.Option(None, "--hole-prob", min=0.0, max=1.0,
                                                      help="Share of scratched photos with holes (default 0.25, "
                                                           "the synthesis' own)."),
            synth_size: Optional[int] = typer.Option(None, "--synth-size", min=16,
                                                     help="Synthesise the defects on a canvas of this side and cut "
                                                          "the crop from it (256: the detector's working size; "
                                                          "default: on the crop itself)."),
            flat_negative_prob: float = typer.Option(0.0, "--flat-negative-prob", min=0.0, max=1.0,
                                                     help="Share of the negatives (crops without defects) cut from "
                                                          "the flattest of the candidate windows and brightened: "
                                                          "sky, light clothes, margins (default 0)."),
            large_scan_prob: float = typer.Option(0.0, "--large-scan-prob", min=0.0, max=1.0,
                                                  help="Share of the crops degraded as a scan 1.5-3x larger and "
                                                       "shrunk to the crop as the pipeline shrinks scans to its "
                                                       "working size (default 0)."),
            clean_negative_prob: float = typer.Option(0.0, "--clean-negative-prob", min=0.0, max=1.0,
                                                      help="Share of the negatives left undegraded: sharp, clean "
                                                           "scans (default 0)."),
            clean_positive_prob: float = typer.Option(0.0, "--clean-positive-prob", min=0.0, max=1.0,
                                                      help="Share of the crops with defects whose defects are drawn "
                                                           "on the undegraded crop: a well-kept scan with a "
                                                           "scratch (default 0)."),
            distill: float = typer.Option(0.0, "--distill", min=0.0,
                                          help="Weight of a pull toward the --init network's probabilities on all "
                                               "crops but those with defects on an undegraded crop, so a "
                                               "fine-tune keeps what the starting detector does well (default 0)."),
            freeze_bn: bool = typer.Option(False, "--freeze-bn",
                                           help="BatchNorm normalises with its running statistics and keeps them "
                                                "(for fine-tuning from --init with small batches)."),
            lr: Optional[float] = typer.Option(None, "--lr", help="Adam learning rate (default 2e-4; lower for "
                                               "fine-tuning from --init)."),
            workers: int = WorkersOpt,
            width: Optional[int] = typer.Option(None, "--width", min=4,
                                                help="The U-Net's base width (default: the config's, 12 for "
                                                     "small).")) -> None:
    """Scratch-detection U-Net (class-balanced CE + 10 x focal) on synthetic scratches and hard negatives."""
    _run("scratch", data=data, out=out, weights_dir=weights_dir, config=config, steps=steps, batch_size=batch_size,
         crop=crop, seed=seed, device=device, resume=resume, threads=threads, max_minutes=max_minutes, fp16=fp16,
         init=init, dark_scratch_prob=dark_scratch_prob, hole_prob=hole_prob,
         scratch_width_max=scratch_width_max, synth_size=synth_size, lr=lr,
         flat_negative_prob=flat_negative_prob, large_scan_prob=large_scan_prob,
         clean_negative_prob=clean_negative_prob, clean_positive_prob=clean_positive_prob, workers=workers,
         width=width, distill=distill, freeze_bn=freeze_bn)


@train_app.command("vae-a")
def vae_a(data: Optional[Path] = DataOpt, out: Path = OutOpt, weights_dir: Optional[Path] = WeightsOpt,
          config: str = ConfigOpt, steps: Optional[int] = StepsOpt, batch_size: Optional[int] = BatchOpt,
          crop: Optional[int] = CropOpt, seed: int = SeedOpt, device: str = DeviceOpt, resume: bool = ResumeOpt,
          threads: Optional[int] = ThreadsOpt, max_minutes: Optional[float] = MinutesOpt, fp16: bool = Fp16Opt,
          real: Optional[str] = typer.Option(None, "--real", help="Real old photos (domain R): folder, file or "
                                             "s3:// prefix. Default: the real 1927 photo in --data plus "
                                             "strongly degraded synthetic photos."),
          workers: int = WorkersOpt) -> None:
    """VAE_A on real + synthetic old photos (KL + 10 x L1 + LSGAN, latent discriminator R vs X)."""
    _run("vae-a", data=data, out=out, weights_dir=weights_dir, config=config, steps=steps, batch_size=batch_size,
         crop=crop, seed=seed, device=device, resume=resume, threads=threads, max_minutes=max_minutes, fp16=fp16,
         real=real, workers=workers)


@train_app.command("vae-b")
def vae_b(data: Optional[Path] = DataOpt, out: Path = OutOpt, weights_dir: Optional[Path] = WeightsOpt,
          config: str = ConfigOpt, steps: Optional[int] = StepsOpt, batch_size: Optional[int] = BatchOpt,
          crop: Optional[int] = CropOpt, seed: int = SeedOpt, device: str = DeviceOpt, resume: bool = ResumeOpt,
          threads: Optional[int] = ThreadsOpt, max_minutes: Optional[float] = MinutesOpt,
          fp16: bool = Fp16Opt, workers: int = WorkersOpt) -> None:
    """VAE_B on clean photos (written as both vae_b_quality and vae_b_scratch)."""
    _run("vae-b", data=data, out=out, weights_dir=weights_dir, config=config, steps=steps, batch_size=batch_size,
         crop=crop, seed=seed, device=device, resume=resume, threads=threads, max_minutes=max_minutes, fp16=fp16,
         workers=workers)


@train_app.command("mapping")
def mapping(data: Optional[Path] = DataOpt, out: Path = OutOpt, weights_dir: Optional[Path] = WeightsOpt,
            config: str = ConfigOpt, steps: Optional[int] = StepsOpt, batch_size: Optional[int] = BatchOpt,
            crop: Optional[int] = CropOpt, seed: int = SeedOpt, device: str = DeviceOpt, resume: bool = ResumeOpt,
            threads: Optional[int] = ThreadsOpt, max_minutes: Optional[float] = MinutesOpt, fp16: bool = Fp16Opt,
            kind: str = typer.Option("quality", "--kind", help="quality | scratch (partial nonlocal) | hr (patch attention)"),
            vae_a: Optional[Path] = typer.Option(None, "--vae-a", help="Frozen VAE_A (default WEIGHTS/vae_a.safetensors)."),
            vae_b: Optional[Path] = typer.Option(None, "--vae-b", help="Frozen VAE_B (default WEIGHTS/vae_b_<kind>.safetensors)."),
            vgg: bool = VggOpt, init: Optional[Path] = InitOpt,
            image_weight: float = typer.Option(0.0, "--image-weight", help="End to end (not in the paper): add "
                                               "this x L1 of the tone-matched output against the clean photo."),
            raw_weight: float = typer.Option(0.0, "--raw-weight", help="End to end: add this x L1 of the decoder "
                                             "output against the clean photo."),
            ssim_weight: float = typer.Option(0.0, "--ssim-weight", help="End to end: add this x (1 - SSIM) of "
                                              "the tone-matched output against the clean photo."),
            tune_decoder: bool = typer.Option(False, "--tune-decoder", help="End to end: train the VAE_B decoder "
                                              "too and export it as vae_b_<kind> beside the mapping."),
            gan_weight: Optional[float] = typer.Option(None, "--gan-weight", help="Weight of the generator's "
                                                       "LSGAN term (default 1, the paper)."),
            lr: Optional[float] = typer.Option(None, "--lr", help="Adam learning rate (default 2e-4, the paper; "
                                               "lower for fine-tuning from --init)."),
            workers: int = WorkersOpt) -> None:
    """Latent mapping with frozen VAEs (60 x latent L1 + LSGAN + 10 x (D features + VGG16 features))."""
    _run("mapping", data=data, out=out, weights_dir=weights_dir, config=config, steps=steps, batch_size=batch_size,
         crop=crop, seed=seed, device=device, resume=resume, threads=threads, max_minutes=max_minutes, fp16=fp16,
         kind=kind, vae_a=vae_a, vae_b=vae_b, vgg=vgg, init=init, image_weight=image_weight, raw_weight=raw_weight,
         ssim_weight=ssim_weight, tune_decoder=tune_decoder, gan_weight=gan_weight, lr=lr, workers=workers)


@train_app.command("face")
def face(data: Optional[Path] = DataOpt, out: Path = OutOpt, weights_dir: Optional[Path] = WeightsOpt,
         config: str = ConfigOpt, steps: Optional[int] = StepsOpt, batch_size: Optional[int] = BatchOpt,
         seed: int = SeedOpt, device: str = DeviceOpt, resume: bool = ResumeOpt,
         threads: Optional[int] = ThreadsOpt, max_minutes: Optional[float] = MinutesOpt, fp16: bool = Fp16Opt,
         vgg: bool = VggOpt,
         hr: bool = typer.Option(False, "--hr", help="Train the HR-mode face network (role face_512, used by "
                                 "`restore --hr`) at twice the face size (official 512, small 256)."),
         init: Optional[Path] = InitOpt, workers: int = WorkersOpt) -> None:
    """SPADE face enhancer on aligned faces (LSGAN + feature matching + VGG16 perceptual)."""
    _run("face", data=data, out=out, weights_dir=weights_dir, config=config, steps=steps, batch_size=batch_size,
         seed=seed, device=device, resume=resume, threads=threads, max_minutes=max_minutes, fp16=fp16, vgg=vgg,
         hr=hr, init=init, workers=workers)


@train_app.command("colour")
def colour(data: Optional[Path] = DataOpt, out: Path = OutOpt, weights_dir: Optional[Path] = WeightsOpt,
           config: str = ConfigOpt, steps: Optional[int] = StepsOpt, seed: int = SeedOpt, device: str = DeviceOpt,
           resume: bool = ResumeOpt, threads: Optional[int] = ThreadsOpt,
           max_minutes: Optional[float] = MinutesOpt) -> None:
    """Global tone/colour regressor (not in the paper): per-channel gain and offset from the scan's statistics,
    strength chosen on val."""
    _run("colour", data=data, out=out, weights_dir=weights_dir, config=config, steps=steps, seed=seed,
         device=device, resume=resume, threads=threads, max_minutes=max_minutes, fp16=False)


@train_app.command("refiner")
def refiner(data: Optional[Path] = DataOpt, out: Path = OutOpt, weights_dir: Optional[Path] = WeightsOpt,
            config: str = ConfigOpt, steps: Optional[int] = StepsOpt, batch_size: Optional[int] = BatchOpt,
            crop: Optional[int] = CropOpt, seed: int = SeedOpt, device: str = DeviceOpt, resume: bool = ResumeOpt,
            threads: Optional[int] = ThreadsOpt, max_minutes: Optional[float] = MinutesOpt,
            mask_noise: float = typer.Option(0.0, "--mask-noise", min=0.0, max=1.0,
                                             help="Share of training windows whose mask channel is made wrong "
                                                  "(false fragments, dropped masks), so the refiner cannot trust "
                                                  "the detector blindly (default 0, the shipped refiner's)."),
            clean_share: float = typer.Option(0.0, "--clean-share", min=0.0, max=1.0,
                                              help="Clean (undegraded) photos added to the training samples, as a "
                                                   "share of them: the refiner learns to give back what stage 1 "
                                                   "took from a scan that needed nothing (default 0)."),
            init: Optional[Path] = InitOpt,
            lr: Optional[float] = typer.Option(None, "--lr", help="Adam learning rate (default 1e-3).")) -> None:
    """Detail refiner (not in the paper): corrects the stage-1 output of the weights in --weights-dir where it
    lost what the scan still had; strength chosen on val."""
    _run("refiner", data=data, out=out, weights_dir=weights_dir, config=config, steps=steps, batch_size=batch_size,
         crop=crop, seed=seed, device=device, resume=resume, threads=threads, max_minutes=max_minutes, fp16=False,
         lr=lr, mask_noise=mask_noise, clean_share=clean_share, init=init)


@train_app.command("all")
def all_stages(data: Optional[Path] = DataOpt, out: Path = OutOpt, weights_dir: Optional[Path] = WeightsOpt,
               config: str = ConfigOpt, seed: int = SeedOpt, device: str = DeviceOpt, resume: bool = ResumeOpt,
               threads: Optional[int] = ThreadsOpt, fp16: bool = Fp16Opt, vgg: bool = VggOpt,
               real: Optional[str] = typer.Option(None, "--real")) -> None:
    """Every stage in order (scratch, VAE_A, VAE_B, the three mappings, both face networks, then our own colour
    regressor and detail refiner, which learn from the stage-1 networks before them) at the config's steps, then
    MODEL_CARD.md."""
    from oldphoto.training.runner import train_stage, write_model_card

    o = _options(data=data, out=out, weights_dir=weights_dir, config=config, seed=seed, device=device,
                 resume=resume, threads=threads, fp16=fp16, vgg=vgg, real=real)
    plan = [("scratch", None), ("vae-a", None), ("vae-b", None), ("mapping", "quality"), ("mapping", "scratch"),
            ("mapping", "hr"), ("face", None), ("face", "hr"), ("colour", None), ("refiner", None)]
    for stage, kind in plan:
        if stage == "mapping":
            o.kind = kind
        o.hr = stage == "face" and kind == "hr"
        typer.echo(f"== {stage}{' ' + kind if kind else ''} ==")
        train_stage(stage, o, log=typer.echo)
    typer.echo(f"model card: {write_model_card(o.weights)}")


@train_app.command("card")
def card(weights_dir: Path = typer.Option(..., "--weights-dir"),
         header: Optional[Path] = typer.Option(None, "--header", help="Markdown file put at the top."),
         bench: Optional[Path] = typer.Option(None, "--bench", help="`oldphoto bench quality` JSON for the "
                                              "'Measured end-to-end quality' section (default: "
                                              "WEIGHTS_DIR/quality_bench.json when present).")) -> None:
    """Rewrite MODEL_CARD.md from the metadata stored in the weights files (and the bench result beside them)."""
    from oldphoto.training.runner import write_model_card

    try:
        typer.echo(write_model_card(weights_dir, header=header.read_text() if header else "", bench=bench))
    except FileNotFoundError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2)


def register(app: typer.Typer) -> None:
    """Add `oldphoto train ...`."""
    app.add_typer(train_app, name="train")
