"""The face enhancer: SPADE generator on aligned faces, GAN + feature matching + perceptual losses.

``L_G = L_GAN(G(x)) + lambda_fm * FM_D(G(x), y) + lambda_vgg * VGG16(G(x), y)`` (pix2pixHD/SPADE
weights lambda_fm = lambda_vgg = 10), LSGAN patch discriminator, where y is an aligned face and x a
degraded copy (down/up-scaled and run through the old-photo synthesis without scratches).

No face data set is obtainable here: the faces come from the few portraits and group photos
in the fetched packages, aligned with the pipeline's own alignment (``oldphoto.imageops.faces``). The
shipped face network is therefore small and weakly trained; the model card says so.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch

from oldphoto.networks.discriminator import PatchDiscriminator, PatchDiscriminatorConfig
from oldphoto.networks.spade_face import SPADEFaceConfig, SPADEFaceGenerator

from . import losses as L
from .common import Trainer, TrainSettings, adam, count_parameters, module_device, psnr_signed, set_requires_grad
from .datasets import BatchSource


@dataclass
class FaceStageConfig:
    net: SPADEFaceConfig = field(default_factory=SPADEFaceConfig)
    disc: PatchDiscriminatorConfig = field(default_factory=PatchDiscriminatorConfig)
    lambda_fm: float = 10.0
    lambda_vgg: float = 10.0
    l1_weight: float = 0.0            # optional pixel L1 (helps tiny CPU runs converge); 0 = paper losses only
    vgg_layers: tuple[str, ...] = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")

    @classmethod
    def preset(cls, name: str, load_size: int | None = None, hr: bool = False) -> "FaceStageConfig":
        """``hr``: the HR-mode face network (role ``face_512``), at twice the preset's face size (official
        512, small 256, tiny 128) unless ``load_size`` is given."""
        cfg = cls._preset(name, load_size)
        if hr and load_size is None:
            cfg = cls._preset(name, 2 * cfg.net.load_size)
        return cfg

    @classmethod
    def _preset(cls, name: str, load_size: int | None) -> "FaceStageConfig":
        if name == "official":
            return cls(SPADEFaceConfig.official(load_size or 256), PatchDiscriminatorConfig.official(),
                       vgg_layers=("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3"))
        if name == "small":
            return cls(SPADEFaceConfig(load_size=load_size or 128, ngf=8, spade_hidden=16),
                       PatchDiscriminatorConfig(ndf=16, n_layers=3, num_scales=2),
                       l1_weight=10.0, vgg_layers=("relu1_2", "relu2_2"))
        if name == "tiny":
            return cls(SPADEFaceConfig.tiny(load_size or 64), PatchDiscriminatorConfig.tiny(), vgg_layers=())
        raise ValueError(f"unknown config {name!r}: choose tiny, small or official")


SETTINGS = {
    "tiny": dict(steps=20, batch_size=2, crop=64),
    "small": dict(steps=600, batch_size=2, crop=128),
    "official": dict(steps=200_000, batch_size=8, crop=256),
}


class FaceTrainer(Trainer):
    stage = "face"

    def __init__(self, settings: TrainSettings, out_dir: str | Path, cfg: FaceStageConfig, data: BatchSource,
                 vgg: torch.nn.Module | None = None, log=print, data_note: dict | None = None):
        self.cfg, self.data, self.vgg = cfg, data, vgg
        self.data_note = data_note or {}
        super().__init__(settings, out_dir, log)

    def build(self) -> None:
        dev = self.device
        self.net = SPADEFaceGenerator(self.cfg.net).to(dev)
        self.disc = PatchDiscriminator(self.cfg.disc).to(dev)
        if self.vgg is not None:
            self.vgg.to(dev)
        self.modules.update(generator=self.net, disc=self.disc)
        self.optimizers.update(G=adam(self.net.parameters(), self.s), D=adam(self.disc.parameters(), self.s))

    def batch(self) -> dict[str, torch.Tensor]:
        size = self.cfg.net.load_size
        b = self.draw(partial(self.data.face_pairs, self.s.batch_size, size))
        return {k: v.to(self.device) for k, v in b.items()}

    def train_step(self, step: int) -> dict[str, float]:
        c = self.cfg
        b = self.batch()
        x, y = b["x"], b["y"]
        with self.autocast():
            out = self.net(x)
            set_requires_grad(self.disc, False)
            fake = self.disc(out)
            with torch.no_grad():
                real = self.disc(y)
            g_gan = L.lsgan_g(fake)
            fm = L.feature_matching(real, fake)
            vgg = L.perceptual(self.vgg, out.float(), y) if self.vgg is not None else torch.zeros((), device=self.device)
            pix = L.l1(out.float(), y)
            loss = g_gan + c.lambda_fm * fm + c.lambda_vgg * vgg + c.l1_weight * pix
        self.optimise(loss, "G")
        set_requires_grad(self.disc, True)
        with self.autocast():
            d = L.lsgan_d(self.disc(y), self.disc(out.detach()))
        self.optimise(d, "D")
        return {"g_gan": g_gan.item(), "fm": fm.item(), "vgg": vgg.item(), "l1": pix.item(), "d": d.item(),
                "loss_g": loss.item()}

    def export(self, weights_dir: str | Path, fp16: bool = True, metrics: dict | None = None,
               role: str = "face_256") -> list[Path]:
        from oldphoto.weights import save_weights

        prov = self.provenance(role=role, network_parameters=count_parameters(self.net), data=self.data_note,
                               vgg_perceptual=self.vgg is not None, load_size=self.cfg.net.load_size,
                               objective="LSGAN + 10*D feature matching + 10*VGG16" +
                               (f" + {self.cfg.l1_weight:g}*L1" if self.cfg.l1_weight else ""),
                               metrics=metrics or {})
        p = Path(weights_dir) / f"{role}.safetensors"
        save_weights(p, self.net.cpu(), "spade_face", self.cfg.net, provenance=prov, fp16=fp16)
        self.net.to(self.device)
        return [p]


@torch.no_grad()
def face_metrics(net: SPADEFaceGenerator, batch: dict[str, torch.Tensor]) -> dict[str, float]:
    """PSNR (dB) of the enhanced faces and of the degraded inputs against the clean aligned faces."""
    net.eval()
    batch = {k: batch[k].to(module_device(net)) for k in ("x", "y")}
    out = net(batch["x"])

    return {"psnr_enhanced": psnr_signed(out, batch["y"]), "psnr_input": psnr_signed(batch["x"], batch["y"])}
