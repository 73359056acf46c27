"""Stage 1: the two VAEs (VAE_A on real + synthetic old photos, VAE_B on clean photos).

Objective per VAE (the paper, Wan et al. 2020): ``KL + alpha * L1(G(z), input) + L_GAN`` (LSGAN, patch discriminator),
alpha = 10, with the reparameterisation trick. The official networks have a deterministic latent (no
log-variance head), so we take the encoder output as the mean mu of a Gaussian with *fixed variance*
sigma^2: ``z = mu + sigma * eps``, ``KL = 0.5 * mean(mu^2)`` (``losses.kl_unit_variance``; with sigma
fixed the other KL terms are constants); at inference the decoder gets mu itself. sigma = 1 (unit
variance) in the official-shape preset, as in the official training code (it decodes ``hiddens + randn``
and penalises the squared latent); the CPU "small" preset uses sigma = 0.1 so that a short run converges.

VAE_A also trains a latent discriminator D_RX between latents of real old photos (domain R) and of
synthetic old photos (domain X) with LSGAN; the encoder is rewarded for fooling it, which aligns Z_R
with Z_X so that a mapping learned on synthetic pairs also applies to real photos.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch

from oldphoto.networks.discriminator import (LatentDiscriminator, LatentDiscriminatorConfig, PatchDiscriminator,
                                             PatchDiscriminatorConfig)
from oldphoto.networks.vae import VAE, VAEConfig

from . import losses as L
from .common import Trainer, TrainSettings, adam, count_parameters, module_device, psnr_signed
from .datasets import BatchSource


@dataclass
class VAEStageConfig:
    vae: VAEConfig = field(default_factory=VAEConfig)
    disc: PatchDiscriminatorConfig = field(default_factory=PatchDiscriminatorConfig)
    latent_disc: LatentDiscriminatorConfig = field(default_factory=LatentDiscriminatorConfig)
    alpha: float = L.VAE_ALPHA        # L1 weight
    kl_weight: float = 1.0
    gan_weight: float = 1.0
    latent_weight: float = 1.0        # VAE_A only: weight of fooling D_RX
    noise_std: float = 1.0            # fixed sigma of the reparameterisation z = mu + sigma * eps (0: off)

    @classmethod
    def preset(cls, name: str) -> "VAEStageConfig":
        if name == "official":
            return cls(VAEConfig.official(), PatchDiscriminatorConfig.official(), LatentDiscriminatorConfig(64, 64, 2))
        if name == "small":
            # sigma 0.1: with the few thousand CPU steps we can afford, unit-variance noise on a latent of
            # rms ~0.7 leaves the decoder unable to learn more than a blur (measured: 12.5 dB after 400 steps)
            # norm "none": instance norm removes every feature map's mean and scale, so an IN autoencoder
            # cannot return the photo's brightness and colour cast; measured on val crops after 400 CPU
            # steps: 21.4 dB reconstruction without it against 13.0 dB with it
            return cls(VAEConfig(channels=32, n_res_enc=2, n_res_dec=2, norm="none"),
                       PatchDiscriminatorConfig(ndf=16, n_layers=3, num_scales=2),
                       LatentDiscriminatorConfig(32, 32, 2), noise_std=0.1,
                       # our domain R is nearly all grey (the 1927 photo + STRONG synthetic); at weight 1
                       # D_RX made the encoder drop colour altogether within 400 steps (measured)
                       latent_weight=0.1)
        if name == "tiny":
            return cls(VAEConfig.tiny(), PatchDiscriminatorConfig.tiny(),
                       LatentDiscriminatorConfig(VAEConfig.tiny().channels, 8, 1))
        raise ValueError(f"unknown config {name!r}: choose tiny, small or official")


SETTINGS = {  # default TrainSettings per preset (CLI flags override)
    "tiny": dict(steps=20, batch_size=2, crop=32),
    "small": dict(steps=1500, batch_size=4, crop=64),
    "official": dict(steps=200_000, batch_size=8, crop=256),
}


def _old_photo_batch(rng: np.random.Generator, *, data: BatchSource, n_real: int, n_synthetic: int,
                     crop: int) -> torch.Tensor:
    """VAE_A's batch: ``n_real`` crops of real old photos, then ``n_synthetic`` synthetic old photos (domains R, X)."""
    return torch.cat([data.real_old(n_real, crop, rng), data.pairs(n_synthetic, crop, rng)["x"]])


class VAETrainer(Trainer):
    """``domain="a"``: VAE_A on real (R) and synthetic (X) old photos, with D_RX.
    ``domain="b"``: VAE_B on clean photos (Y)."""

    def __init__(self, settings: TrainSettings, out_dir: str | Path, cfg: VAEStageConfig, data: BatchSource,
                 domain: str = "a", log=print, data_note: dict | None = None):
        if domain not in ("a", "b"):
            raise ValueError("domain must be 'a' or 'b'")
        self.cfg, self.data, self.domain = cfg, data, domain
        self.stage = f"vae-{domain}"
        self.data_note = data_note or {}
        super().__init__(settings, out_dir, log)

    def build(self) -> None:
        dev = self.device
        self.vae = VAE(self.cfg.vae).to(dev)
        self.disc = PatchDiscriminator(self.cfg.disc).to(dev)
        self.modules.update(vae=self.vae, disc=self.disc)
        self.optimizers.update(G=adam(self.vae.parameters(), self.s), D=adam(self.disc.parameters(), self.s))
        if self.domain == "a":
            ld = dataclasses.replace(self.cfg.latent_disc, in_channels=self.cfg.vae.channels)
            self.latent_disc = LatentDiscriminator(ld).to(dev)
            self.modules["latent_disc"] = self.latent_disc
            self.optimizers["DL"] = adam(self.latent_disc.parameters(), self.s)

    def batch(self) -> tuple[torch.Tensor, int]:
        """Images to reconstruct and, for VAE_A, how many of them (the first n) are real old photos."""
        s = self.s
        if self.domain == "b":
            return self.draw(partial(self.data.clean_crops, s.batch_size, s.crop)).to(self.device), 0
        n_r = max(1, s.batch_size // 2)
        n_x = max(1, s.batch_size - n_r)
        return self.draw(partial(_old_photo_batch, data=self.data, n_real=n_r, n_synthetic=n_x,
                                 crop=s.crop)).to(self.device), n_r

    def train_step(self, step: int) -> dict[str, float]:
        c = self.cfg
        img, n_r = self.batch()
        with self.autocast():
            mu = self.vae.encode(img)
            z = mu + c.noise_std * torch.randn_like(mu) if c.noise_std > 0 else mu
            rec = self.vae.decode(z)
            kl = L.kl_unit_variance(mu.float())
            rec_l1 = L.l1(rec.float(), img)
            g_gan = L.lsgan_g(self.disc(rec))
            loss_g = c.kl_weight * kl + c.alpha * rec_l1 + c.gan_weight * g_gan
            out = {"kl": kl.item(), "l1": rec_l1.item(), "g_gan": g_gan.item()}
            if self.domain == "a":
                for p in self.latent_disc.parameters():
                    p.requires_grad_(False)
                lat = L.latent_g_loss(self.latent_disc(mu[:n_r]), self.latent_disc(mu[n_r:]))
                for p in self.latent_disc.parameters():
                    p.requires_grad_(True)
                loss_g = loss_g + c.latent_weight * lat
                out["g_latent"] = lat.item()
        for p in self.disc.parameters():
            p.requires_grad_(False)
        self.optimise(loss_g, "G")
        for p in self.disc.parameters():
            p.requires_grad_(True)

        with self.autocast():
            d_loss = L.lsgan_d(self.disc(img), self.disc(rec.detach()))
        self.optimise(d_loss, "D")
        out["d"] = d_loss.item()
        if self.domain == "a":
            with self.autocast():
                m = mu.detach()
                dl = L.latent_d_loss(self.latent_disc(m[:n_r]), self.latent_disc(m[n_r:]))
            self.optimise(dl, "DL")
            out["d_latent"] = dl.item()
        out["loss_g"] = loss_g.item()
        return out

    def roles(self) -> list[str]:
        return ["vae_a"] if self.domain == "a" else ["vae_b_quality", "vae_b_scratch"]

    def export(self, weights_dir: str | Path, fp16: bool = True, metrics: dict | None = None) -> list[Path]:
        from oldphoto.weights import save_weights

        paths = []
        for role in self.roles():
            prov = self.provenance(role=role, network_parameters=count_parameters(self.vae), data=self.data_note,
                                   objective="KL(unit variance) + 10*L1 + LSGAN" +
                                   (" + latent LSGAN D_RX" if self.domain == "a" else ""),
                                   metrics=metrics or {})
            p = Path(weights_dir) / f"{role}.safetensors"
            save_weights(p, self.vae.cpu(), "vae", self.cfg.vae, provenance=prov, fp16=fp16)
            self.vae.to(self.device)
            paths.append(p)
        return paths


@torch.no_grad()
def reconstruction_metrics(vae: VAE, images: torch.Tensor) -> dict[str, float]:
    """PSNR (dB) and L1 of deterministic reconstructions (decoder on mu) of images in [-1, 1]."""
    vae.eval()
    images = images.to(module_device(vae))
    rec = vae.decode(vae.encode(images))
    return {"psnr": psnr_signed(rec, images), "l1": L.l1(rec, images).item()}
