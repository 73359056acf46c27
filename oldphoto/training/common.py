"""What every trainer shares: settings, Adam(0.5, 0.999) with linear lr decay, AMP on CUDA,
resumable checkpoints (modules, optimisers, step, elapsed time, every RNG state), a progress bar,
a loss history (JSON lines) and loss-curve plots, and export to our safetensors format.

A stage trainer subclasses ``Trainer`` and implements ``build()`` (networks, optimisers, data) and
``train_step(step) -> dict[str, float]``; ``export(weights_dir)`` writes the shipped files.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn as nn

CHECKPOINT_NAME = "checkpoint.pt"
HISTORY_NAME = "history.jsonl"
PLOT_NAME = "loss_curves.png"


@dataclass
class TrainSettings:
    """Optimisation settings shared by all stages (the paper: Adam 0.5/0.999, lr 2e-4, then linear decay)."""

    steps: int = 1000
    batch_size: int = 4
    crop: int = 128
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    decay_from: float = 0.5         # fraction of steps at constant lr; then linear decay to 0 at the end
    seed: int = 0
    device: str = "cpu"
    amp: bool = True                # mixed precision; only ever used on CUDA
    checkpoint_every: int = 200
    log_every: int = 10
    threads: int | None = None      # torch.set_num_threads on CPU (None: leave as is)
    progress: bool = True
    max_seconds: float | None = None  # stop early (checkpoint + export) after this much wall time
    workers: int = 0                # batches made in this many background processes (0: in the training process)


def lr_multiplier(progress: float, decay_from: float) -> float:
    """1 until ``decay_from`` of the run, then linear to 0 at the end (progress in [0, 1])."""
    if progress <= decay_from:
        return 1.0
    return max(0.0, 1.0 - (progress - decay_from) / max(1e-9, 1.0 - decay_from))


def rng_state(data_rng: np.random.Generator | None) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if data_rng is not None:
        state["data"] = data_rng.bit_generator.state
    return state


def set_rng_state(state: dict[str, Any], data_rng: np.random.Generator | None) -> None:
    torch.set_rng_state(state["torch"].cpu())   # a checkpoint loaded onto a GPU has its tensors there
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([t.cpu() for t in state["cuda"]])
    if data_rng is not None and "data" in state:
        data_rng.bit_generator.state = state["data"]


def seed_everything(seed: int) -> np.random.Generator:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    return np.random.default_rng(seed)


def psnr_signed(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR (dB) between two image tensors in [-1, 1] (data range 2, the mean squared error over every element);
    capped at 120 dB where `quality.psnr` of identical images gives inf."""
    mse = float(((a.detach().double() - b.detach().double()) / 2).pow(2).mean())
    return 10.0 * math.log10(1.0 / max(mse, 1e-12))


def module_device(module: nn.Module) -> torch.device:
    """Where a module's parameters are: an evaluation after training on a GPU must put its inputs there."""
    return next(module.parameters()).device


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def adam(params, s: TrainSettings, lr: float | None = None) -> torch.optim.Adam:
    return torch.optim.Adam([p for p in params if p.requires_grad], lr=lr or s.lr, betas=(s.beta1, s.beta2))


class Trainer:
    """Base class: holds modules/optimisers by name, runs the loop, checkpoints and resumes.

    Subclasses set ``stage`` and implement ``build`` and ``train_step``; they register what must be
    checkpointed with ``self.modules[name] = module`` and ``self.optimizers[name] = optimiser``.
    """

    stage = "base"

    def __init__(self, settings: TrainSettings, out_dir: str | Path, log=print):
        self.s = settings
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.log = log
        self.device = torch.device(settings.device)
        if settings.threads and self.device.type == "cpu":
            torch.set_num_threads(settings.threads)
        self.use_amp = bool(settings.amp and self.device.type == "cuda")
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.data_rng = seed_everything(settings.seed)
        self._stream: Iterator[Any] | None = None    # batches from worker processes (`draw`)
        self.modules: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.elapsed = 0.0            # wall seconds of training, summed over resumed sessions
        self.build()
        self.base_lr = {name: [g["lr"] for g in opt.param_groups] for name, opt in self.optimizers.items()}

    # -- to implement -------------------------------------------------------------------------
    def build(self) -> None:
        raise NotImplementedError

    def train_step(self, step: int) -> dict[str, float]:
        raise NotImplementedError

    def export(self, weights_dir: str | Path, fp16: bool = True) -> list[Path]:
        """Write the shipped ``<role>.safetensors`` file(s); returns their paths."""
        raise NotImplementedError

    def warm_start(self, path: str | Path) -> None:
        """Start the trained network (``self.net``) from weights in our format (e.g. the shipped file) instead of
        a random initialisation; the file must hold the same network with the same config."""
        from oldphoto.weights import load_weights

        net, info = load_weights(path)
        if type(net) is not type(self.net) or info.config != self.net.cfg:
            raise ValueError(f"{path} holds a {info.network} with config {info.config}, not this run's network")
        self.net.load_state_dict(net.state_dict())

    def cached_dataset(self, name: str, what: str, make) -> dict[str, np.ndarray]:
        """A dataset made once per run by `make()` (a dict of arrays) and kept in the run folder as `name` (npz),
        so `--resume` reuses it instead of making it again."""
        path = self.out / name
        if path.is_file():
            return dict(np.load(path))
        self.log(f"[{self.stage}] making {what}")
        ds = make()
        np.savez(path, **ds)
        return ds

    # -- helpers for train_step ---------------------------------------------------------------
    def draw(self, make: Callable[[np.random.Generator], Any]) -> Any:
        """The next training batch from ``make(rng)``, a picklable callable (a module-level function or a bound
        method of the batch source, with ``functools.partial``): in this process from ``data_rng`` (reproducible
        batch for batch), or with ``settings.workers`` from that many background processes (``batch_stream``,
        started on the first call with the first ``make`` and seeded by the step, so a resumed run does not replay
        its batches)."""
        if not self.s.workers:
            return make(self.data_rng)
        if self._stream is None:
            self._stream = batch_stream(make, self.s.workers, [self.s.seed, self.step])
        return next(self._stream)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.float16, enabled=self.use_amp)

    def optimise(self, loss: torch.Tensor, name: str) -> None:
        """zero_grad, backward (scaled under AMP) and step the optimiser ``name``."""
        opt = self.optimizers[name]
        opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(opt)

    def progress(self) -> float:
        """Fraction of the run done: by steps, or by wall time when a time budget is set and binds first
        (the learning rate then still decays to 0 by the end of the budget, however busy the machine)."""
        p = self.step / max(1, self.s.steps)
        if self.s.max_seconds:
            p = max(p, self.elapsed / self.s.max_seconds)
        return min(1.0, p)

    def set_lr(self) -> float:
        mult = lr_multiplier(self.progress(), self.s.decay_from)
        for name, opt in self.optimizers.items():
            for g, base in zip(opt.param_groups, self.base_lr[name]):
                g["lr"] = base * mult
        return mult

    def end_step(self) -> None:
        self.scaler.update()

    # -- checkpointing ------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.out / CHECKPOINT_NAME

    def state_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "step": self.step,
            "elapsed": self.elapsed,
            "settings": dataclasses.asdict(self.s),
            "modules": {k: m.state_dict() for k, m in self.modules.items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(self.data_rng),
            "history": self.history,
        }

    def save_checkpoint(self, path: str | Path | None = None) -> Path:
        path = Path(path or self.checkpoint_path)
        tmp = path.with_suffix(".tmp")
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, path)          # atomic: an interrupted save never corrupts the last checkpoint
        return path

    def load_checkpoint(self, path: str | Path | None = None) -> int:
        path = Path(path or self.checkpoint_path)
        if not path.is_file():
            raise FileNotFoundError(f"no checkpoint to resume from at {path}")
        state = torch.load(path, map_location=self.device, weights_only=False)
        if state.get("stage") != self.stage:
            raise ValueError(f"{path} is a {state.get('stage')!r} checkpoint, not {self.stage!r}")
        for k, m in self.modules.items():
            m.load_state_dict(state["modules"][k])
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"], self.data_rng)
        self.step = int(state["step"])
        self.elapsed = float(state.get("elapsed", 0.0))
        self.history = list(state.get("history", []))
        return self.step

    # -- the loop -----------------------------------------------------------------------------
    def run(self, resume: bool = False, steps: int | None = None) -> dict[str, float]:
        """Train until ``settings.steps`` (or ``steps`` more steps); returns the last logged losses."""
        if resume and self.checkpoint_path.is_file():
            self.load_checkpoint()
            self.log(f"[{self.stage}] resumed from {self.checkpoint_path} at step {self.step}")
        target = self.s.steps if steps is None else min(self.s.steps, self.step + steps)
        for m in self.modules.values():
            m.train()
        bar = None
        if self.s.progress:
            from tqdm import tqdm
            bar = tqdm(total=target, initial=self.step, desc=f"train {self.stage}", unit="step",
                       dynamic_ncols=True, mininterval=2.0)
        last: dict[str, float] = {}
        t_start = time.monotonic()
        base_elapsed = self.elapsed
        try:
            while self.step < target:
                last = self._one_step(target, bar, base_elapsed, t_start)
                if self.s.max_seconds and self.elapsed >= self.s.max_seconds:
                    self.log(f"[{self.stage}] time budget of {self.s.max_seconds:.0f} s reached at step {self.step}")
                    break
        finally:
            if bar is not None:
                bar.close()
        self.save_checkpoint()
        self.write_history()
        return last

    def _one_step(self, target: int, bar: Any, base_elapsed: float, t_start: float) -> dict[str, float]:
        """One optimisation step with its bookkeeping (history, progress bar, periodic checkpoint); returns
        its losses, refusing a non-finite one."""
        lr_mult = self.set_lr()
        losses = self.train_step(self.step)
        self.end_step()
        self.step += 1
        self.elapsed = base_elapsed + time.monotonic() - t_start
        for k, v in losses.items():
            if not np.isfinite(v):
                raise FloatingPointError(f"[{self.stage}] loss {k} is {v} at step {self.step}")
        if self.step % self.s.log_every == 0 or self.step == target:
            self.history.append({"step": self.step, "seconds": round(self.elapsed, 2),
                                 "lr": self.s.lr * lr_mult, **losses})
            if bar is not None:
                bar.set_postfix({k: f"{v:.3g}" for k, v in list(losses.items())[:4]})
        if bar is not None:
            bar.update(1)
        if self.step % self.s.checkpoint_every == 0:
            self.save_checkpoint()
        return losses

    def write_history(self) -> None:
        with open(self.out / HISTORY_NAME, "w") as f:
            for row in self.history:
                f.write(json.dumps(row) + "\n")
        try:
            plot_history(self.history, self.out / PLOT_NAME, title=f"oldphoto train {self.stage}")
        except Exception as exc:  # a plot must never lose a training run
            self.log(f"[{self.stage}] could not plot loss curves: {exc}")

    def provenance(self, **extra: Any) -> dict[str, Any]:
        """Training facts stored in each exported file's metadata."""
        s = self.s
        return {
            "trained_by": "oldphoto train " + self.stage,
            "steps": self.step,
            "batch_size": s.batch_size,
            "crop": s.crop,
            "lr": s.lr,
            "adam_betas": [s.beta1, s.beta2],
            "seed": s.seed,
            "device": str(self.device),
            "hardware": f"{platform.machine()} {platform.processor() or ''} torch threads {torch.get_num_threads()}".strip(),
            "wall_seconds": round(self.elapsed, 1),
            "final_losses": self.history[-1] if self.history else {},
            **extra,
        }


def plot_history(history: list[dict[str, float]], path: str | Path, title: str = "") -> Path | None:
    """One panel per loss term, step on x (log-scaled y where all values are positive)."""
    if not history:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in history[0] if k not in ("step", "seconds")]
    n = len(keys)
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows), squeeze=False)
    steps = [h["step"] for h in history]
    for ax, k in zip(axes.flat, keys):
        vals = [h.get(k, float("nan")) for h in history]
        ax.plot(steps, vals, lw=1)
        if all(v > 0 for v in vals if v == v):
            ax.set_yscale("log")
        ax.set_title(k, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return Path(path)


class _Batches(torch.utils.data.IterableDataset):
    """Endless batches from ``make(rng)``, each worker process with its own generator (``seed`` and its id)."""

    def __init__(self, make: Callable[[np.random.Generator], Any], seed: list[int]):
        self.make, self.seed = make, seed

    def __iter__(self):
        import cv2

        cv2.setNumThreads(1)    # one core per worker (the loader already gives torch one thread in each)
        info = torch.utils.data.get_worker_info()
        rng = np.random.default_rng([*self.seed, info.id if info is not None else 0])
        while True:
            yield self.make(rng)


def batch_stream(make: Callable[[np.random.Generator], Any], workers: int, seed: list[int]) -> Iterator[Any]:
    """Batches made by ``make(rng)`` (a picklable callable) in ``workers`` background processes, a few ahead of
    the training step (the synthesis is CPU work: on a GPU the training process alone could not keep the device
    busy). The batches are random but not the in-process stream's: a run with workers is reproducible only in
    distribution."""
    # spawned, not forked: a child forked from a process that has used OpenCV's or torch's thread pools can hang
    # on their locks (seen in the tests); ``make`` and what it holds are pickled to each worker once
    loader = torch.utils.data.DataLoader(_Batches(make, seed), batch_size=None, num_workers=workers,
                                         prefetch_factor=4, persistent_workers=True, multiprocessing_context="spawn")
    return iter(loader)


def set_requires_grad(module: nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)
