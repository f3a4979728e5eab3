"""The world model's flow-matching training step, independent of how it is distributed (pure PyTorch).

One step: normalise the latents; draw tau (bimodal logit-normal), the task (scratch / context /
inpainting), camera dropout and conditioning dropout; build x_tau with the clean latents kept; predict
the velocity; masked L2 against v = x - eps. All randomness comes from one CPU generator that is part of
the state, so a resumed run continues bit for bit. The Ray Train job and the plain-PyTorch benchmark
both drive this class.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterable

import torch
from torch import Tensor, nn

from gaia2.flow import TaskSampler, TauSampler, build_inputs, flow_loss, grouped_sums, normalize, tau_buckets
from gaia2.flow.tasks import TASK_NAMES
from gaia2.optim import EMA
from gaia2.world_model.model import WorldModel
from gaia2.world_model.train_config import WorldModelTrainConfig

Parallelize = Callable[[nn.Module], nn.Module]
TAU_EDGES = (0.0, 0.25, 0.5, 0.75, 1.0)
COND_KEYS = ("action", "agents", "agents_valid", "metadata", "clip", "scenario", "scenario_valid")
CAMERA_KEYS = ("intrinsics", "extrinsics", "distortion")


def present_relative(timestamps: Tensor, context_len: Tensor) -> Tensor:
    """Timestamps (B, T) or per camera (B, T, N) in seconds -> relative to the present: the last context
    step (step 0 when a sample has no context), its time averaged over the cameras, so that the cameras'
    offsets from one another are kept."""
    idx = (context_len - 1).clamp(min=0).to(timestamps.device)
    present = timestamps[torch.arange(len(idx), device=timestamps.device), idx]       # (B,) or (B, N)
    if present.ndim == 2:
        present = present.mean(dim=1)
    return timestamps - present.reshape(-1, *([1] * (timestamps.ndim - 1)))


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class WorldModelTrainer:
    """``train_step(batch)`` with a batch of tensors as ``gaia2.world_model.sample`` produces (plus a batch axis)."""

    def __init__(self, cfg: WorldModelTrainConfig, device: torch.device | str = "cpu", rank: int = 0,
                 parallelize: Parallelize = lambda m: m) -> None:
        """``parallelize``: how the job distributes a module (the identity on one device). It is applied to the
        trained model (its result is what the forward pass calls) and to the EMA copy (a frozen module that
        a sharding strategy shards alike, so the EMA update stays local)."""
        self.cfg, self.device = cfg, torch.device(device)
        torch.manual_seed(cfg.seed)   # the same initial weights on every rank
        self.model = WorldModel(cfg.model).to(self.device)
        self.ema = EMA(self.model, cfg.optim.ema_decay)
        self.wrapped = parallelize(self.model)
        parallelize(self.ema.model)
        o = cfg.optim
        self.optimizer = torch.optim.AdamW(_param_groups(self.model, o.weight_decay), lr=o.lr, betas=o.betas)
        f = cfg.flow
        self.tau_sampler = TauSampler(f.tau_weights, f.tau_means, f.tau_stds)
        self.task_sampler = TaskSampler(f.p_scratch, f.p_context, f.p_inpaint, f.moving_inpaint)
        if f.measured:
            raise ValueError("flow.latent_mean / flow.latent_std: not set; the training job takes them from the "
                             "latent shards' latent_stats.json (give them explicitly to train without the job)")
        self.rng = torch.Generator().manual_seed(cfg.seed * 7919 + rank)
        self.step = 0

    @property
    def stage(self) -> str:
        return "flow"

    def lr(self, step: int | None = None) -> float:
        return self.cfg.optim.lr_at(self.step if step is None else step, self.cfg.total_steps)

    def _autocast(self):
        if self.cfg.precision == "bf16" and self.device.type == "cuda":
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _objective(self, model: nn.Module, batch: dict[str, Tensor], rng: torch.Generator,
                   dropout: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """-> (loss, per-sample loss (B,), tau (B,), task (B,), velocity target, loss mask)."""
        f = self.cfg.flow
        x = normalize(batch["latents"].float(), f.latent_mean, f.latent_std)   # (B, T, N, L, H, W), CPU
        b, t, n, _, h, w = x.shape
        eps = torch.randn(x.shape, generator=rng)
        tau = self.tau_sampler.sample(b, rng)
        tasks = self.task_sampler.sample(b, t, n, h, w, rng)
        core = self.model.conditioning
        camera_keep = core.sample_camera_keep(b, n, generator=rng) if dropout else None
        keep = core.sample_keep(b, generator=rng) if dropout else None
        inputs = build_inputs(x, eps, tau, tasks.clean_mask, camera_keep)
        dev = self.device
        cond = {k: batch[k].to(dev, non_blocking=True) for k in COND_KEYS if k in batch}
        camera = {k: batch[k].to(dev, non_blocking=True) for k in CAMERA_KEYS}
        seconds = present_relative(batch["timestamps"].float(), tasks.context_len).to(dev)
        with self._autocast():
            v = model(inputs.x_in.to(dev), inputs.tau.to(dev), cond, seconds, camera,
                      keep={k: m.to(dev) for k, m in keep.items()} if keep is not None else None,
                      camera_mask=camera_keep.to(dev) if camera_keep is not None else None, generator=rng)
        target = (x - eps).to(dev)
        mask = inputs.loss_mask.to(dev)
        loss, per_sample = flow_loss(v.float(), target, mask)
        return loss, per_sample, tau, tasks.task, target, mask

    def train_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor | float]:
        """One optimiser step -> metrics: ``loss``, ``lr``, ``grad_norm``, and per tau bucket / task the sums
        and counts of per-sample losses (``tau_sum``, ``tau_count`` (4,), ``task_sum``, ``task_count`` (3,))."""
        self.model.train()
        lr = self.lr()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss, per_sample, tau, task, _, _ = self._objective(self.wrapped, batch, self.rng, dropout=True)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
        self.optimizer.step()
        self.ema.update(self.model)
        self.step += 1
        per_sample = per_sample.detach().cpu()
        tau_sum, tau_count = grouped_sums(per_sample, tau_buckets(tau, TAU_EDGES), len(TAU_EDGES) - 1)
        task_sum, task_count = grouped_sums(per_sample, task, len(TASK_NAMES))
        return {"loss": loss.detach(), "lr": lr, "grad_norm": grad_norm.detach(), "tau_sum": tau_sum,
                "tau_count": tau_count, "task_sum": task_sum, "task_count": task_count}

    @torch.no_grad()
    def evaluate(self, batches: Iterable[dict[str, Tensor]], max_samples: int | None = None,
                 seed: int = 0) -> dict[str, float]:
        """Validation flow loss of the EMA model (no conditioning or camera dropout; tau and tasks from the
        training distributions with a fixed seed, so every evaluation sees the same draws), and the loss of
        the best constant-velocity predictor on the same elements: per latent channel the mean target, whose
        squared error is the per-channel variance of the target (one pass, from sums of v and v^2)."""
        model = self.ema.model.eval()
        rng = torch.Generator().manual_seed(seed)
        sq_err = count = 0.0
        s1 = s2 = n_ch = None
        seen = 0
        for batch in batches:
            if max_samples is not None:
                batch = {k: v[:max_samples - seen] for k, v in batch.items()}
            b = len(batch["latents"])
            if b == 0:
                break
            loss, per_sample, _, _, target, mask = self._objective(model, batch, rng, dropout=False)
            m = mask.expand_as(target).double()
            elems = m.sum()
            sq_err += float(loss.double() * elems)
            count += float(elems)
            tv = target.double() * m
            dims = (0, 1, 2, 4, 5)   # all but the channel axis L
            s1 = tv.sum(dims) if s1 is None else s1 + tv.sum(dims)
            s2 = (tv * target.double()).sum(dims) if s2 is None else s2 + (tv * target.double()).sum(dims)
            n_ch = m.sum(dims) if n_ch is None else n_ch + m.sum(dims)
            seen += b
            if max_samples is not None and seen >= max_samples:
                break
        if count == 0:
            raise ValueError("evaluate: no validation samples")
        baseline = float((s2 - s1 ** 2 / n_ch.clamp(min=1)).sum() / n_ch.sum())
        val = sq_err / count
        return {"loss": val, "baseline_loss": baseline, "improvement": 1.0 - val / baseline, "samples": float(seen)}

    # ----------------------------------------------------------------- state (see jobs/checkpoint.py)
    def stateful(self) -> dict:
        """The parts a checkpoint holds: modules, and (module, optimizer) pairs."""
        return {"model": self.model, "ema": self.ema.model, "optimizer": (self.model, self.optimizer)}

    def rng_state(self) -> dict[str, Tensor]:
        return {"flow": self.rng.get_state()}

    def restore(self, step: int, rng: dict[str, Tensor]) -> None:
        """Resume at ``step`` with these generator states (before the parts' tensors are loaded)."""
        self.step = step
        self.rng.set_state(rng["flow"])
