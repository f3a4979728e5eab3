"""Flow-matching time distribution (paper §2.2.4): a bimodal logit-normal.

Convention (paper eq. 1): tau = 1 is data, tau = 0 is pure noise. A draw picks a mode k with probability
``weights[k]``, samples z ~ N(means[k], stds[k]) and returns tau = sigmoid(z). The paper's modes (``flow``
of the world model's paper training preset): 0.8 x N(0.5, 1.4) (mostly low-to-moderate noise) and
0.2 x N(-3.0, 1.0) (tau near 0, nearly pure noise).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

# sigmoid(z) rounds to exactly 0 or 1 in float32 for |z| > ~17 (and to 0 for z < -88); keep tau in the
# open interval so that logit(tau) and 1 / (tau (1 - tau)) stay finite. The clamp moves < 1e-12 of the mass.
TAU_EPS = 1e-6


class TauSampler:
    """Mixture of logit-normals over tau in (0, 1); deterministic given a ``torch.Generator``."""

    def __init__(self, weights: Sequence[float], means: Sequence[float], stds: Sequence[float]) -> None:
        if not (len(weights) == len(means) == len(stds) >= 1):
            raise ValueError(f"TauSampler: weights, means and stds need the same length >= 1 "
                             f"(got {len(weights)}, {len(means)}, {len(stds)})")
        if any(w < 0 for w in weights) or not math.isclose(sum(weights), 1.0, abs_tol=1e-6):
            raise ValueError(f"TauSampler: weights must be >= 0 and sum to 1 (got {tuple(weights)})")
        if any(not s > 0 for s in stds):
            raise ValueError(f"TauSampler: stds must be > 0 (got {tuple(stds)})")
        if any(not math.isfinite(m) for m in means):
            raise ValueError(f"TauSampler: means must be finite (got {tuple(means)})")
        self.weights = tuple(float(w) for w in weights)
        self.means = tuple(float(m) for m in means)
        self.stds = tuple(float(s) for s in stds)

    def sample_with_modes(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """-> tau (n,) float32 in (0, 1), mode (n,) long in [0, num modes). On the generator's device."""
        if n < 0:
            raise ValueError(f"TauSampler.sample: n must be >= 0 (got {n})")
        device = generator.device if generator is not None else torch.device("cpu")
        # Sampled in float64 so the clamp, not float32 rounding, decides how close tau gets to 0 and 1.
        u = torch.rand(n, generator=generator, device=device, dtype=torch.float64)
        z = torch.randn(n, generator=generator, device=device, dtype=torch.float64)
        cdf = torch.tensor(self.weights, dtype=torch.float64, device=device).cumsum(0)
        mode = torch.searchsorted(cdf, u, right=True).clamp_max(len(self.weights) - 1)
        mean = torch.tensor(self.means, dtype=torch.float64, device=device)[mode]
        std = torch.tensor(self.stds, dtype=torch.float64, device=device)[mode]
        tau = torch.sigmoid(mean + std * z).clamp(TAU_EPS, 1.0 - TAU_EPS)
        return tau.float(), mode

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """-> tau (n,) float32 in (0, 1)."""
        return self.sample_with_modes(n, generator)[0]

    def log_prob(self, tau: Tensor) -> Tensor:
        """Closed-form log density of tau (any shape, values in (0, 1)):
        log sum_k w_k N(logit tau; mu_k, s_k) - log(tau (1 - tau)) (change of variables through the sigmoid)."""
        t = tau.double()
        if bool(((t <= 0) | (t >= 1)).any()):
            raise ValueError("TauSampler.log_prob: tau must lie in the open interval (0, 1)")
        z = torch.log(t) - torch.log1p(-t)
        terms = []
        for w, m, s in zip(self.weights, self.means, self.stds):
            if w == 0:
                continue
            terms.append(math.log(w) - math.log(s) - 0.5 * math.log(2 * math.pi) - 0.5 * ((z - m) / s) ** 2)
        log_pz = torch.logsumexp(torch.stack(terms), dim=0)
        return (log_pz - torch.log(t) - torch.log1p(-t)).to(tau.dtype if tau.is_floating_point() else torch.float64)

    def pdf(self, tau: Tensor) -> Tensor:
        """Density of tau (same shape as ``tau``)."""
        return self.log_prob(tau).exp()

    def __repr__(self) -> str:
        return f"TauSampler(weights={self.weights}, means={self.means}, stds={self.stds})"
