"""Validation flow loss of a trained (exported) world model, by tau bucket and by task (paper §6.2, Figure 13:
"the validation loss shows the strongest correlation with human preference").

The loss is the training objective itself (``gaia2.world_model.objective.flow_objective``), without dropout, with
tau and the tasks drawn from the training distributions by a generator seeded with ``seed``: the same batches in
the same order give every model the same noise, tau and tasks, so two models' losses differ only by the models.
``task="scratch"`` draws only generation from scratch, the paper's setting for Figure 13 (the noise and tau draws
stay the same: the task sampler consumes the same randomness whatever it draws).

Every figure is element-weighted, as training's: a sum of squared errors over the latent elements in the loss
divided by their number. ``val_loss`` is therefore exactly ``WorldModelTrainer.evaluate``'s ``loss``; a bucket's
loss pools its samples the same way, so the buckets' losses weighted by their element counts average to
``val_loss`` (from scratch every sample has the same count, and the weights are the sample counts).

    samples = sample_losses(model, batches, flow_cfg, seed=0)          # per sample: a distributed job gathers these
    result = summarise(SampleLosses.concat(parts), bootstrap=200)      # value, interval, by tau bucket and task
    result.metrics()                                                    # {"val_loss": ..., "val_loss_tau_0.00_0.25": ...}
    validation_loss(model, batches, flow_cfg)                          # both at once, as a flat dict
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from gaia2.flow.tasks import TASK_NAMES, TaskSampler
from gaia2.world_model.model import WorldModel
from gaia2.world_model.objective import flow_objective, flow_samplers
from gaia2.world_model.trainer import TAU_EDGES


@dataclass(frozen=True)
class SampleLosses:
    """Per-sample validation loss, in batch order: what a distributed evaluation gathers and concatenates."""
    sse: np.ndarray        # (S,) float64 sum of squared errors over the sample's elements in the loss
    elements: np.ndarray   # (S,) float64 their number
    tau: np.ndarray        # (S,) float32 flow time drawn
    task: np.ndarray       # (S,) int64 index into TASK_NAMES

    @property
    def loss(self) -> np.ndarray:
        """(S,) each sample's own masked MSE (0 for a sample with no element in the loss)."""
        return self.sse / np.maximum(self.elements, 1.0)

    def __len__(self) -> int:
        return len(self.sse)

    @classmethod
    def concat(cls, parts: Sequence["SampleLosses"]) -> "SampleLosses":
        return cls(*(np.concatenate([getattr(p, name) for p in parts]) if parts else np.zeros(0)
                     for name in ("sse", "elements", "tau", "task")))


def _name(lo: float, hi: float) -> str:
    return f"{lo:.2f}_{hi:.2f}"   # as the training job names its loss by tau bucket


@dataclass(frozen=True)
class ValidationLoss:
    value: float                       # element-weighted validation flow loss
    low: float | None                  # percentile bootstrap interval over samples (None: too few / not computed)
    high: float | None
    n_samples: int
    by_tau: dict[str, float] = field(default_factory=dict)        # "<lo>_<hi>" -> loss, buckets with samples
    by_task: dict[str, float] = field(default_factory=dict)       # task name -> loss, tasks with samples
    tau_samples: dict[str, int] = field(default_factory=dict)
    task_samples: dict[str, int] = field(default_factory=dict)
    tau_elements: dict[str, float] = field(default_factory=dict)  # the weights that average the buckets to value
    task_elements: dict[str, float] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        """Flat, for tracking: val_loss (+ val_loss_low / val_loss_high with an interval), val_loss_tau_<lo>_<hi>,
        val_loss_task_<name>, samples."""
        out = {"val_loss": self.value}
        if self.low is not None:
            out.update(val_loss_low=self.low, val_loss_high=self.high)
        out.update({f"val_loss_tau_{k}": v for k, v in self.by_tau.items()})
        out.update({f"val_loss_task_{k}": v for k, v in self.by_task.items()})
        out["samples"] = float(self.n_samples)
        return out

    def to_json(self) -> dict:
        return {"value": self.value, "low": self.low, "high": self.high,
                "interval": None if self.low is None else [self.low, self.high], "n": self.n_samples,
                "by_tau": dict(self.by_tau), "by_task": dict(self.by_task), "tau_samples": dict(self.tau_samples),
                "task_samples": dict(self.task_samples)}


def _task_sampler(flow, task: str | None) -> TaskSampler:
    if task is None:
        return flow_samplers(flow)[1]
    if task not in TASK_NAMES:
        raise ValueError(f"validation loss: task must be one of {list(TASK_NAMES)} or None (the training mix), "
                         f"got {task!r}")
    probs = [1.0 if name == task else 0.0 for name in TASK_NAMES]
    return TaskSampler(*probs, flow.moving_inpaint)


@torch.no_grad()
def sample_losses(model: WorldModel, batches: Iterable[dict[str, Tensor]], flow_cfg, seed: int = 0,
                  max_samples: int | None = None, device: str | torch.device = "cpu", task: str | None = None,
                  precision: str = "fp32") -> SampleLosses:
    """The per-sample validation loss of ``model`` (moved to ``device``, evaluated in eval mode, no dropout) over
    ``batches`` in ``WorldModelTrainer``'s format (latents (B, T, N, L, H, W) as the tokenizer wrote them, timestamps,
    action, agents, agents_valid, metadata, clip, intrinsics, extrinsics, distortion; optional scenario), at most
    ``max_samples`` of them. ``flow_cfg``: the ``FlowConfig`` the model was trained with (its latent statistics
    travel with the export); ``task``: None draws the training mix, a name of ``TASK_NAMES`` only that task."""
    if flow_cfg.latent_mean is None or flow_cfg.latent_std is None:
        raise ValueError("validation loss: flow_cfg.latent_mean / latent_std are not set; give the statistics the "
                         "model was trained with (its export's latent_mean / latent_std)")
    device = torch.device(device)
    model = model.to(device).eval()
    tau_sampler, task_sampler = flow_samplers(flow_cfg)[0], _task_sampler(flow_cfg, task)
    rng = torch.Generator().manual_seed(seed)
    parts: list[tuple[Tensor, ...]] = []
    seen = 0
    for batch in batches:
        if max_samples is not None:
            batch = {k: v[:max_samples - seen] for k, v in batch.items()}
        b = len(batch["latents"])
        if b == 0:
            break
        out = flow_objective(model, batch, rng, flow_cfg, tau_sampler, task_sampler, device, dropout=None,
                             precision=precision)
        dims = tuple(range(1, out.target.dim()))
        elements = out.mask.expand_as(out.target).sum(dims).double()                           # (B,)
        parts.append(((out.per_sample.double() * elements).cpu(), elements.cpu(), out.tau, out.task))
        seen += b
        if max_samples is not None and seen >= max_samples:
            break
    if not parts:
        raise ValueError("validation loss: no validation samples")
    sse, elements, tau, tasks = (torch.cat(column).numpy() for column in zip(*parts))   # one host copy per batch
    return SampleLosses(sse.astype(np.float64), elements.astype(np.float64), tau.astype(np.float32),
                        tasks.astype(np.int64))


def _pooled(sse: np.ndarray, elements: np.ndarray) -> float:
    total = float(elements.sum())
    return float(sse.sum() / total) if total > 0 else float("nan")


def summarise(samples: SampleLosses, tau_edges: Sequence[float] = TAU_EDGES, bootstrap: int = 200,
              level: float = 0.95, seed: int = 0, min_bootstrap_count: int = 8) -> ValidationLoss:
    """Per-sample losses -> ``ValidationLoss``: the pooled loss, by tau bucket ([lo, hi), the last holding tau = 1)
    and by task (only those with samples), and a percentile bootstrap interval over ``bootstrap`` resamples of the
    samples when there are at least ``min_bootstrap_count``."""
    edges = [float(e) for e in tau_edges]
    if len(edges) < 2 or edges[0] != 0.0 or edges[-1] != 1.0 or any(b <= a for a, b in zip(edges, edges[1:])):
        raise ValueError(f"validation loss: tau_edges must increase strictly from 0 to 1, got {tuple(tau_edges)}")
    n = len(samples)
    if n == 0:
        raise ValueError("validation loss: no validation samples")
    value = _pooled(samples.sse, samples.elements)
    # As gaia2.flow.tau_buckets: [lo, hi), compared in tau's float32.
    bucket = np.searchsorted(np.asarray(edges[1:-1], np.float32), samples.tau.astype(np.float32), side="right")
    by_tau, tau_n, tau_e = {}, {}, {}
    for k in range(len(edges) - 1):
        sel = bucket == k
        if sel.any():
            name = _name(edges[k], edges[k + 1])
            by_tau[name] = _pooled(samples.sse[sel], samples.elements[sel])
            tau_n[name], tau_e[name] = int(sel.sum()), float(samples.elements[sel].sum())
    by_task, task_n, task_e = {}, {}, {}
    for k, name in enumerate(TASK_NAMES):
        sel = samples.task == k
        if sel.any():
            by_task[name] = _pooled(samples.sse[sel], samples.elements[sel])
            task_n[name], task_e[name] = int(sel.sum()), float(samples.elements[sel].sum())
    low = high = None
    if bootstrap > 0 and n >= min_bootstrap_count:
        rng = np.random.default_rng(seed)
        draws = np.array([_pooled(samples.sse[p], samples.elements[p])
                          for p in (rng.integers(0, n, n) for _ in range(bootstrap))])
        draws = draws[np.isfinite(draws)]
        if draws.size:
            tail = (1.0 - level) / 2 * 100
            low, high = (float(v) for v in np.percentile(draws, [tail, 100 - tail]))
    return ValidationLoss(value, low, high, n, by_tau, by_task, tau_n, task_n, tau_e, task_e)


def validation_loss(model: WorldModel, batches: Iterable[dict[str, Tensor]], flow_cfg, seed: int = 0,
                    max_samples: int | None = None, tau_edges: Sequence[float] = TAU_EDGES,
                    device: str | torch.device = "cpu", task: str | None = None, bootstrap: int = 200,
                    level: float = 0.95, precision: str = "fp32") -> dict[str, float]:
    """``summarise(sample_losses(...)).metrics()``: {"val_loss", "val_loss_low" / "val_loss_high" (from 8 samples
    on), "val_loss_tau_<lo>_<hi>" per bucket with samples, "val_loss_task_<name>" per task with samples,
    "samples"}. For the per-sample values (a bootstrap across workers), call ``sample_losses`` and ``summarise``."""
    samples = sample_losses(model, batches, flow_cfg, seed=seed, max_samples=max_samples, device=device, task=task,
                            precision=precision)
    return summarise(samples, tau_edges, bootstrap=bootstrap, level=level, seed=seed).metrics()
