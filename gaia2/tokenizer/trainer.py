"""The tokenizer's training step, independent of how it is distributed (pure PyTorch).

Two stages (paper section 4): ``main`` trains encoder and decoder on all losses; ``gan`` then
fine-tunes the decoder alone (encoder frozen, latents sampled without gradients) on the pixel losses
plus ``gan.weight`` x the adversarial loss of a 3D discriminator trained beside it. The Ray Train job
and the plain-PyTorch benchmark both drive this class, so they run exactly the same step.

Everything a resumed run needs to continue bit-for-bit is in ``state_dict()``: weights, EMA,
optimisers, step and both random generators (temporal crops, latent noise).
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterable

import torch
from torch import Tensor, nn

from gaia2.optim import EMA
from gaia2.tokenizer.clips import to_model_input
from gaia2.tokenizer.discriminator import Discriminator3D, discriminator_loss, generator_adversarial_loss
from gaia2.tokenizer.losses import TokenizerLoss
from gaia2.tokenizer.metrics import ReconstructionMetrics
from gaia2.tokenizer.model import Tokenizer
from gaia2.tokenizer.train_config import TokenizerTrainConfig

Parallelize = Callable[[nn.Module], nn.Module]


def _identity(module: nn.Module) -> nn.Module:
    return module


class AutoencoderObjective(nn.Module):
    """Main stage: video -> encode -> sample -> decode -> weighted loss. One module, so that a DDP wrapper
    sees every trainable parameter (tokenizer and the DINO projection) in one forward."""

    def __init__(self, model: Tokenizer, loss: TokenizerLoss) -> None:
        super().__init__()
        self.model, self.loss = model, loss

    def forward(self, video: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        mean, log_std = self.model.encode(video)
        latents = self.model.sample_latents(mean, log_std, generator)
        recon = self.model.decode(latents)
        return self.loss(video, recon, mean, log_std, latents)


class DecoderObjective(nn.Module):
    """GAN stage, generator side: frozen encoder, trainable decoder; pixel losses + weight x adversarial."""

    def __init__(self, model: Tokenizer, loss: TokenizerLoss, disc: Discriminator3D, weight: float) -> None:
        super().__init__()
        self.model, self.loss, self.weight = model, loss, weight
        self.disc = [disc]   # a list, so the discriminator is not a submodule (its DDP wrapper is separate)

    def forward(self, video: Tensor, generator: torch.Generator | None = None
                ) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        with torch.no_grad():
            latents = self.model.sample_latents(*self.model.encode(video), generator)
        recon = self.model.decode(latents)
        total, parts = self.loss.reconstruction(video, recon)
        adversarial = generator_adversarial_loss(self.disc[0](recon))
        parts["gan_g"] = adversarial.detach()
        return total + self.weight * adversarial, parts, recon


def _param_groups(params: Iterable[tuple[str, nn.Parameter]], weight_decay: float) -> list[dict]:
    """Weight decay on matrices and kernels only; biases, norm scales and other vectors are not decayed."""
    decay, no_decay = [], []
    for _, p in params:
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class TokenizerTrainer:
    """Holds model, losses, optimisers, EMA and RNG; ``train_step`` consumes one batch of uint8 clips.

    ``parallelize`` turns a module into its distributed form (data-parallel on several workers, the
    identity otherwise); it is applied to each stage's objective, to the discriminator and to the EMA copy.
    """

    def __init__(self, cfg: TokenizerTrainConfig, device: torch.device | str = "cpu", rank: int = 0,
                 parallelize: Parallelize = _identity) -> None:
        self.cfg, self.device, self.wrap = cfg, torch.device(device), parallelize
        torch.manual_seed(cfg.seed)   # the same initial weights on every rank
        self.model = Tokenizer(cfg.model).to(self.device)
        self.loss = TokenizerLoss(cfg.loss, cfg.model.latent_dim).to(self.device)
        self.ema = EMA(self.model, cfg.optim.ema_decay)
        parallelize(self.ema.model)
        # What the main stage trains: the tokenizer and the DINO projection of the distillation loss (the
        # frozen LPIPS / DINOv2 networks stay out of the optimiser and the checkpoints).
        self.trainable = nn.ModuleDict({"model": self.model})
        if self.loss.dino is not None:
            self.trainable["dino_proj"] = self.loss.dino.proj
        o = cfg.optim
        self.optimizer = torch.optim.AdamW(_param_groups(self.trainable.named_parameters(), o.weight_decay),
                                           lr=o.lr, betas=o.betas)
        self.step = 0
        # Crops are drawn on the CPU (data lives there); latent noise on the model's device.
        self.crop_rng = torch.Generator().manual_seed(cfg.seed * 7919 + rank)
        self.noise_rng = torch.Generator(self.device).manual_seed(cfg.seed * 104729 + rank)
        self.disc: Discriminator3D | None = None
        self.gan_optimizer: torch.optim.Optimizer | None = None
        self.disc_optimizer: torch.optim.Optimizer | None = None
        self._objective: nn.Module | None = None
        self._objective_stage: str | None = None
        self._disc_wrapped: nn.Module | None = None

    # ----------------------------------------------------------------- stages
    @property
    def stage(self) -> str:
        return "main" if self.step < self.cfg.schedule.steps else "gan"

    def lr(self, step: int | None = None) -> float:
        step = self.step if step is None else step
        if step < self.cfg.schedule.steps:
            return self.cfg.optim.lr_at(step, self.cfg.schedule.steps)
        return self.cfg.gan.lr

    def _enter_gan_stage(self) -> None:
        """Freeze the encoder; build the discriminator and the decoder / discriminator optimisers (once)."""
        if self.disc is not None:
            return
        g = self.cfg.gan
        self.model.encoder.requires_grad_(False)
        for p in self.loss.trainable_parameters():   # the DINO projection only sees encoder latents
            p.requires_grad_(False)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.cfg.seed + 1)
            self.disc = Discriminator3D(g.discriminator).to(self.device)
        betas, wd = self.cfg.optim.betas, self.cfg.optim.weight_decay
        self.gan_optimizer = torch.optim.AdamW(_param_groups(self.model.decoder.named_parameters(), wd),
                                               lr=g.lr, betas=betas)
        self.disc_optimizer = torch.optim.AdamW(_param_groups(self.disc.named_parameters(), wd),
                                                lr=g.disc_lr, betas=betas)

    def _stage_objective(self) -> nn.Module:
        stage = self.stage
        if self._objective_stage != stage:
            if stage == "main":
                self._objective = self.wrap(AutoencoderObjective(self.model, self.loss))
            else:
                self._enter_gan_stage()
                self._disc_wrapped = self.wrap(self.disc)
                self._objective = self.wrap(DecoderObjective(self.model, self.loss, self.disc, self.cfg.gan.weight))
            self._objective_stage = stage
        return self._objective

    def _autocast(self):
        if self.cfg.precision == "bf16" and self.device.type == "cuda":
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # ----------------------------------------------------------------- steps
    def crop(self, clips: Tensor) -> Tensor:
        """uint8 clips (B, T_w, H, W, 3) -> a random ``model.frames``-frame crop of each (B, frames, H, W, 3)."""
        frames = self.cfg.model.frames
        if clips.ndim != 5 or clips.shape[1] < frames:
            raise ValueError(f"train batch: expected clips (B, T >= {frames}, H, W, 3), got {tuple(clips.shape)}")
        starts = torch.randint(0, clips.shape[1] - frames + 1, (clips.shape[0],), generator=self.crop_rng)
        return torch.stack([clips[i, s:s + frames] for i, s in enumerate(starts.tolist())])

    def train_step(self, clips: Tensor) -> dict[str, Tensor | float]:
        """One optimiser step on uint8 clips (B, T_w, H, W, 3) -> metrics (detached tensors and floats):
        ``loss`` (weighted total), each unweighted term, ``lr``, ``grad_norm`` (before clipping) and, in
        the GAN stage, ``gan_g`` / ``gan_d`` (generator / discriminator adversarial losses)."""
        video = to_model_input(self.crop(clips)).to(self.device, non_blocking=True)
        lr = self.lr()
        objective = self._stage_objective()
        clip = self.cfg.optim.grad_clip
        if self.stage == "main":
            optimizer = self.optimizer
            with self._autocast():
                total, parts = objective(video, self.noise_rng)
            params = [p for group in optimizer.param_groups for p in group["params"]]
        else:
            optimizer = self.gan_optimizer
            self.disc.requires_grad_(False)   # the generator pass must not touch the discriminator's grads
            with self._autocast():
                total, parts, recon = objective(video, self.noise_rng)
            self.disc.requires_grad_(True)
            params = list(self.model.decoder.parameters())
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()
        if self.stage == "gan":
            # Real and fake in one forward: one DDP pass, and instance norm keeps samples independent.
            with self._autocast():
                logits = self._disc_wrapped(torch.cat([video, recon.detach()]))
                d_loss = discriminator_loss(*logits.chunk(2))
            self.disc_optimizer.zero_grad(set_to_none=True)
            d_loss.backward()
            torch.nn.utils.clip_grad_norm_(self.disc.parameters(), clip)
            self.disc_optimizer.step()
            parts["gan_d"] = d_loss.detach()
        self.ema.update(self.model)
        self.step += 1
        return {"loss": total.detach(), **parts, "lr": lr, "grad_norm": grad_norm.detach()}

    # ----------------------------------------------------------------- evaluation
    @torch.no_grad()
    def reconstruct(self, clips: Tensor, seed: int = 0) -> tuple[Tensor, Tensor]:
        """EMA model: uint8 clips (B, T, H, W, 3) -> (video, reconstruction), each (B, 3, T', H, W) in [-1, 1].

        T' is T rounded down to a multiple of the temporal factor; longer videos are decoded with the
        rolling window. Latents are sampled (as in inference) with a generator seeded by ``seed``.
        """
        f = self.cfg.model.temporal_factor
        t = clips.shape[1] // f * f
        if t == 0:
            raise ValueError(f"reconstruct: clips of {clips.shape[1]} frames are shorter than the temporal factor {f}")
        video = to_model_input(clips[:, :t]).to(self.device)
        model = self.ema.model
        generator = torch.Generator(self.device).manual_seed(seed)
        with self._autocast():
            recon = model.decode_video(model.sample_latents(*model.encode(video), generator))
        return video, recon.float().clamp(-1, 1)

    @torch.no_grad()
    def evaluate(self, batches: Iterable[Tensor], max_clips: int | None = None) -> ReconstructionMetrics:
        """PSNR / SSIM (and LPIPS when that loss is on) of the EMA model over uint8 clip batches, plus the
        mean-colour baseline; merge the result over workers with ``ReconstructionMetrics.merge``."""
        metrics = ReconstructionMetrics()
        lpips = self.loss.lpips

        def per_clip_lpips(v: Tensor, r: Tensor) -> Tensor:
            return torch.stack([lpips(v[j:j + 1], r[j:j + 1]) for j in range(len(v))])

        seen = 0
        for i, clips in enumerate(batches):
            if max_clips is not None:
                clips = clips[:max_clips - seen]
            if len(clips) == 0:
                break
            video, recon = self.reconstruct(clips, seed=i)
            metrics.update(video, recon, lpips=per_clip_lpips if lpips is not None else None)
            seen += len(clips)
            if max_clips is not None and seen >= max_clips:
                break
        return metrics

    # ----------------------------------------------------------------- state
    def stateful(self) -> dict:
        """The parts a checkpoint holds (see jobs/checkpoint.py): modules, and (module, optimizer) pairs;
        the discriminator and the GAN-stage optimisers once that stage has begun."""
        parts = {"model": self.trainable, "ema": self.ema.model, "optimizer": (self.trainable, self.optimizer)}
        if self.disc is not None:
            parts.update({"disc": self.disc, "gan_optimizer": (self.model.decoder, self.gan_optimizer),
                          "disc_optimizer": (self.disc, self.disc_optimizer)})
        return parts

    def rng_state(self) -> dict[str, Tensor]:
        return {"crop": self.crop_rng.get_state(), "noise": self.noise_rng.get_state()}

    def restore(self, step: int, rng: dict[str, Tensor]) -> None:
        """Resume at ``step`` with these generator states; builds the GAN stage's parts when ``step`` is in
        it, so that their tensors can then be loaded."""
        self.step = step
        self.crop_rng.set_state(rng["crop"])
        self.noise_rng.set_state(rng["noise"])
        if self.stage == "gan":
            self._enter_gan_stage()
        self._objective_stage = None   # rebuild (and re-wrap) the objective for the restored stage


def eta_seconds(done: int, total: int, steps_per_s: float) -> float:
    return math.inf if steps_per_s <= 0 else max(total - done, 0) / steps_per_s
