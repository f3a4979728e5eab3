"""The world model's flow-matching training step, independent of how it is distributed (pure PyTorch).

One step: normalise the latents; draw tau (bimodal logit-normal), the task (scratch / context /
inpainting), camera dropout and conditioning dropout; build x_tau with the clean latents kept; predict
the velocity; masked L2 against v = x - eps (``gaia2.world_model.objective``, shared with validation). All
randomness comes from one CPU generator that is part of the state, so a resumed run continues bit for bit. The
Ray Train job and the plain-PyTorch benchmark both drive this class.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import Tensor, nn

from gaia2.flow import grouped_sums, tau_buckets
from gaia2.flow.tasks import TASK_NAMES
from gaia2.optim import EMA
from gaia2.world_model.model import WorldModel
from gaia2.world_model.objective import (CAMERA_KEYS, COND_KEYS, Objective, flow_objective, flow_samplers,
                                         present_relative)
from gaia2.world_model.train_config import WorldModelTrainConfig

__all__ = ["CAMERA_KEYS", "COND_KEYS", "Parallelize", "TAU_EDGES", "WorldModelTrainer", "present_relative"]

Parallelize = Callable[[nn.Module], nn.Module]
TAU_EDGES = (0.0, 0.25, 0.5, 0.75, 1.0)


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
        self.tau_sampler, self.task_sampler = flow_samplers(f)
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

    def _objective(self, model: nn.Module, batch: dict[str, Tensor], rng: torch.Generator,
                   dropout: bool) -> Objective:
        """-> (loss, per-sample loss (B,), tau (B,), task (B,), velocity target, loss mask); see
        ``gaia2.world_model.objective.flow_objective`` (dropout drawn from the trained model's encoder)."""
        return flow_objective(model, batch, rng, self.cfg.flow, self.tau_sampler, self.task_sampler, self.device,
                              dropout=self.model.conditioning if dropout else None, precision=self.cfg.precision)

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
