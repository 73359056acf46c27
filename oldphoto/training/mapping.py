"""Stage 2: the latent mapping T (quality, scratch = partial nonlocal, hr = patch attention).

Both VAEs are frozen. On synthetic pairs (x, y): ``z_x = E_A(x)``, ``z_y = E_B(y)``,
``restored = G_B(T(z_x))``, ``target = G_B(z_y)`` (the reconstructed clean image), and

    L = lambda1 * L1(T(z_x), z_y) + L_GAN(restored) + lambda2 * (FM_D(restored, target) + VGG(restored, target))

with lambda1 = 60, lambda2 = 10 (the paper, Wan et al. 2020). The patch discriminator sees ``target`` as real, so it
judges the mapping and not the VAE_B's reconstruction quality.

End-to-end fine-tuning (oldphoto's addition, not in the paper; off unless one of its weights is > 0): the pipeline
ships ``tone(G_B(T(E_A(x))), scan)``, the decoder output after the guided tone transfer
(``oldphoto.imageops.tone``), not the decoder output itself. With ``image_weight`` the objective adds
``image_weight * L1(tone(restored, x), y_clean)`` through a differentiable twin of that transfer
(``losses.tone_transfer``) plus ``raw_weight * L1(restored, y_clean)``, so the mapping learns the guide the
transfer needs (``ssim_weight`` adds ``ssim_weight * (1 - SSIM(tone(restored, x), y_clean))``, a structure term
for what smoothing loses); with ``tune_decoder`` the VAE_B decoder is trained too (its encoder stays frozen, so the latent
target is unchanged) and exported beside the mapping. The scratch path's VAE_B is shared with mapping_hr, so
its decoder is only tuned when asked.

Scratch and hr mappings get synthetic photos with structured defects and their masks; the defect pixels
are set to white first, exactly as the official scratch-mode inference does. The quality mapping gets
photos with unstructured degradations only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch

from oldphoto.imageops.tone import DEFAULT_EPS as TONE_EPS
from oldphoto.imageops.tone import DEFAULT_SIGMA as TONE_SIGMA
from oldphoto.networks.discriminator import PatchDiscriminator, PatchDiscriminatorConfig
from oldphoto.networks.mapping import MappingConfig, MappingNet
from oldphoto.networks.mapping_nonlocal import NonLocalMappingConfig, NonLocalMappingNet
from oldphoto.networks.mapping_patch_attention import PatchAttentionMappingConfig, PatchAttentionMappingNet

from . import losses as L
from .common import Trainer, TrainSettings, adam, count_parameters, module_device, psnr_signed, set_requires_grad
from .datasets import BatchSource, fill_holes_white

MAX_REDRAWS = 20  # HR mapping: attempts at a batch whose every crop keeps an intact latent patch

KINDS = {  # mapping kind -> (registry network kind, role, config class, net class)
    "quality": ("mapping", "mapping_quality", MappingConfig, MappingNet),
    "scratch": ("mapping_nonlocal", "mapping_scratch", NonLocalMappingConfig, NonLocalMappingNet),
    "hr": ("mapping_patch_attention", "mapping_hr", PatchAttentionMappingConfig, PatchAttentionMappingNet),
}


@dataclass
class MappingStageConfig:
    kind: str = "quality"
    net: Any = field(default_factory=MappingConfig)
    disc: PatchDiscriminatorConfig = field(default_factory=PatchDiscriminatorConfig)
    lambda1: float = L.MAPPING_LAMBDA1
    lambda2: float = L.MAPPING_LAMBDA2
    gan_weight: float = 1.0
    vgg_layers: tuple[str, ...] = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
    image_weight: float = 0.0          # end-to-end: L1 of the tone-matched output against the clean photo
    raw_weight: float = 0.0            # end-to-end: L1 of the decoder output against the clean photo
    ssim_weight: float = 0.0           # end-to-end: 1 - SSIM of the tone-matched output against the clean photo
    tune_decoder: bool = False         # end-to-end: train the VAE_B decoder too (exported as vae_b_<kind>)
    tone_sigma: float = TONE_SIGMA
    tone_eps: float = TONE_EPS

    @classmethod
    def preset(cls, name: str, kind: str = "quality", latent_channels: int | None = None) -> "MappingStageConfig":
        if kind not in KINDS:
            raise ValueError(f"unknown mapping kind {kind!r}: choose {', '.join(KINDS)}")
        _, _, cfg_cls, _ = KINDS[kind]
        if name == "official":
            net = cfg_cls.official()
            disc = PatchDiscriminatorConfig.official()
            vgg = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
        elif name == "small":
            lc = latent_channels or 32
            # norm "none": the small VAEs keep the photo's tone in their latent (no instance norm), and an
            # instance-normalised mapping would strip it again at its first layer
            if kind == "quality":
                net = MappingConfig(latent_channels=lc, width=128, n_blocks=3, norm="none")
            elif kind == "scratch":
                net = NonLocalMappingConfig(latent_channels=lc, width=128, n_res_nl=2, n_res_after=3, norm="none")
            else:
                net = PatchAttentionMappingConfig(latent_channels=lc, width=128, n_res_before=1, n_res_between=1,
                                                  n_res_after=1, norm="none")
            disc = PatchDiscriminatorConfig(ndf=16, n_layers=3, num_scales=2)
            vgg = ("relu1_2", "relu2_2")
        elif name == "tiny":
            net = cfg_cls.tiny()
            disc = PatchDiscriminatorConfig.tiny()
            vgg = ()
        else:
            raise ValueError(f"unknown config {name!r}: choose tiny, small or official")
        if latent_channels is not None and net.latent_channels != latent_channels:
            net.latent_channels = latent_channels
        return cls(kind=kind, net=net, disc=disc, vgg_layers=vgg)


SETTINGS = {
    "tiny": dict(steps=20, batch_size=2, crop=32),
    "small": dict(steps=1000, batch_size=4, crop=64),
    "official": dict(steps=200_000, batch_size=8, crop=256),
}


class MappingTrainer(Trainer):
    def __init__(self, settings: TrainSettings, out_dir: str | Path, cfg: MappingStageConfig, data: BatchSource,
                 vae_a: torch.nn.Module, vae_b: torch.nn.Module, vgg: torch.nn.Module | None = None, log=print,
                 data_note: dict | None = None, vae_files: dict | None = None):
        self.cfg, self.data = cfg, data
        self.stage = f"mapping-{cfg.kind}"
        self.vae_a, self.vae_b, self.vgg = vae_a, vae_b, vgg
        self.data_note = data_note or {}
        self.vae_files = vae_files or {}
        super().__init__(settings, out_dir, log)

    def build(self) -> None:
        dev = self.device
        for v in (self.vae_a, self.vae_b):
            v.to(dev).eval()
            set_requires_grad(v, False)
        if self.cfg.tune_decoder:
            set_requires_grad(self.vae_b.decoder, True)
        if self.vgg is not None:
            self.vgg.to(dev)
        lat = self.vae_a.cfg.channels
        if self.vae_b.cfg.channels != lat or self.cfg.net.latent_channels != lat:
            raise ValueError(f"latent widths differ: VAE_A {lat}, VAE_B {self.vae_b.cfg.channels}, "
                             f"mapping {self.cfg.net.latent_channels}")
        _, _, _, net_cls = KINDS[self.cfg.kind]
        self.net = net_cls(self.cfg.net).to(dev)
        self.disc = PatchDiscriminator(self.cfg.disc).to(dev)
        self.modules.update(mapping=self.net, disc=self.disc)
        g_params = list(self.net.parameters())
        if self.cfg.tune_decoder:
            self.modules["vae_b"] = self.vae_b
            g_params += list(self.vae_b.decoder.parameters())
        self.optimizers.update(G=adam(g_params, self.s), D=adam(self.disc.parameters(), self.s))

    def batch(self) -> dict[str, torch.Tensor]:
        structured = self.cfg.kind != "quality"
        make = partial(self.data.pairs, self.s.batch_size, self.s.crop, structured=structured)
        for _ in range(MAX_REDRAWS):
            b = self.draw(make)
            if self.cfg.kind != "hr" or all(self._has_intact_patch(m) for m in b["mask"]):
                break
        b = {k: v.to(self.device) for k, v in b.items()}
        if structured:
            b["scan"] = b["x"]
            b["x"] = fill_holes_white(b["x"], b["mask"])
        return b

    def _has_intact_patch(self, mask: torch.Tensor) -> bool:
        """HR mapping: a crop where, at some scale, every latent patch is a hole has nothing to copy from (the
        network refuses it); such crops are drawn again."""
        scale = self.vae_a.cfg.scale
        return self.net.fillable(mask[None], (mask.shape[-2] // scale, mask.shape[-1] // scale))

    def _map(self, z: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if mask is None:
            return self.net(z)
        if self.cfg.kind == "hr":
            # the patch-attention mapping takes its hole patches from the first mask of a batch (official
            # inference); in training every crop has its own mask, so each goes through on its own
            return torch.cat([self.net(z[i:i + 1], mask[i:i + 1]) for i in range(z.shape[0])])
        return self.net(z, mask)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        z = self.vae_a.encode(x)
        return self.net(z, mask) if self.cfg.kind != "quality" else self.net(z)

    def train_step(self, step: int) -> dict[str, float]:
        c = self.cfg
        b = self.batch()
        mask = b["mask"] if c.kind != "quality" else None
        with torch.no_grad(), self.autocast():
            zx = self.vae_a.encode(b["x"])
            zy = self.vae_b.encode(b["y"])
            target = self.vae_b.decode(zy)
        with self.autocast():
            zt = self._map(zx, mask)
            restored = self.vae_b.decode(zt)
            latent = L.l1(zt.float(), zy.float())
            set_requires_grad(self.disc, False)
            fake_feats = self.disc(restored)
            with torch.no_grad():
                real_feats = self.disc(target)
            g_gan = L.lsgan_g(fake_feats)
            fm = L.feature_matching(real_feats, fake_feats)
            vgg = L.perceptual(self.vgg, restored.float(), target.float()) if self.vgg is not None \
                else torch.zeros((), device=self.device)
            loss = c.lambda1 * latent + c.gan_weight * g_gan + c.lambda2 * (fm + vgg)
            extra = self._image_losses(restored.float(), b) if self._end_to_end else {}
            for name, weight in (("image_l1", c.image_weight), ("raw_l1", c.raw_weight),
                                 ("image_dssim", c.ssim_weight)):
                if name in extra:
                    loss = loss + weight * extra[name]
        self.optimise(loss, "G")
        set_requires_grad(self.disc, True)
        with self.autocast():
            d = L.lsgan_d(self.disc(target), self.disc(restored.detach()))
        self.optimise(d, "D")
        return {"latent_l1": latent.item(), "g_gan": g_gan.item(), "fm": fm.item(), "vgg": vgg.item(),
                "d": d.item(), "loss_g": loss.item(), **{k: v.item() for k, v in extra.items()}}

    def _image_losses(self, restored: torch.Tensor, b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """End-to-end terms (module doc): L1 against the clean photo of the tone-matched output and of the raw
        decoder output, images in [0, 1]; the transfer ignores the defect pixels as the pipeline does."""
        c = self.cfg
        y = (b["y"] + 1) / 2
        raw = ((restored + 1) / 2).clamp(0, 1)
        out = {"raw_l1": L.l1(raw, y)}
        if c.image_weight > 0 or c.ssim_weight > 0:
            scan = (b.get("scan", b["x"]) + 1) / 2
            valid = trusted_pixels(b["mask"], self.cfg.kind)
            toned = L.tone_transfer(raw, scan, valid, c.tone_sigma, c.tone_eps)
            out["image_l1"] = L.l1(toned, y)
            if c.ssim_weight > 0:
                out["image_dssim"] = 1 - L.ssim(toned, y)
        return out

    @property
    def _end_to_end(self) -> bool:
        c = self.cfg
        return c.image_weight > 0 or c.raw_weight > 0 or c.ssim_weight > 0

    @property
    def role(self) -> str:
        return KINDS[self.cfg.kind][1]

    def export(self, weights_dir: str | Path, fp16: bool = True, metrics: dict | None = None) -> list[Path]:
        from oldphoto.weights import save_weights

        network = KINDS[self.cfg.kind][0]
        c = self.cfg
        objective = "60*latent L1 + LSGAN + 10*(D feature matching + VGG16)"
        if self._end_to_end:
            objective += (f" + {c.image_weight:g}*L1(tone-matched output, clean; sigma {c.tone_sigma:g}, eps "
                          f"{c.tone_eps:g}) + {c.raw_weight:g}*L1(decoder output, clean)")
            if c.ssim_weight > 0:
                objective += f" + {c.ssim_weight:g}*(1 - SSIM(tone-matched output, clean))"
        prov = self.provenance(role=self.role, network_parameters=count_parameters(self.net), data=self.data_note,
                               frozen_vaes=self.vae_files, vgg_perceptual=self.vgg is not None,
                               objective=objective, decoder_tuned=c.tune_decoder, metrics=metrics or {})
        p = Path(weights_dir) / f"{self.role}.safetensors"
        save_weights(p, self.net.cpu(), network, self.cfg.net, provenance=prov, fp16=fp16)
        self.net.to(self.device)
        paths = [p]
        if self.cfg.tune_decoder:
            role = "vae_b_quality" if self.cfg.kind == "quality" else "vae_b_scratch"
            q = Path(weights_dir) / f"{role}.safetensors"
            save_weights(q, self.vae_b.cpu(), "vae", self.vae_b.cfg, fp16=fp16, provenance=self.provenance(
                role=role, network_parameters=count_parameters(self.vae_b), data=self.data_note,
                decoder_tuned_with=self.role, started_from=self.vae_files.get("vae_b"),
                objective=f"decoder tuned end to end with {self.role}: {objective}", metrics=metrics or {}))
            self.vae_b.to(self.device)
            paths.append(q)
        return paths


def trusted_pixels(mask: torch.Tensor, kind: str) -> torch.Tensor:
    """What the pipeline's tone transfer fits to: every pixel on the quality path, the unscratched ones else."""
    return 1 - mask if kind != "quality" else torch.ones_like(mask)


@torch.no_grad()
def restoration_metrics(vae_a, net, vae_b, batch: dict[str, torch.Tensor], kind: str) -> dict[str, float]:
    """PSNR (dB) of G_B(T(E_A(x))) against the clean y, of it after the pipeline's tone transfer, and of the
    degraded input itself (the baseline)."""
    net.eval()
    batch = {k: v.to(module_device(net)) for k, v in batch.items()}
    x, y = batch["x"], batch["y"]
    z = vae_a.encode(x)
    out = vae_b.decode(net(z, batch["mask"]) if kind != "quality" else net(z))

    toned = L.tone_transfer(((out + 1) / 2).clamp(0, 1), (x + 1) / 2, trusted_pixels(batch["mask"], kind),
                            TONE_SIGMA, TONE_EPS) * 2 - 1
    return {"psnr_restored": psnr_signed(out, y), "psnr_tone_matched": psnr_signed(toned, y),
            "psnr_input": psnr_signed(x, y)}
