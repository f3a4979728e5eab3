"""The Fréchet distance between two sets of features, each modelled as a Gaussian (FID, FDD, FVD, FVMD all end here).

    d = frechet_distance(*gaussian(real), *gaussian(fake))            # ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2)
    fd = frechet(real, fake, bootstrap=200, seed=0)                   # with a 95 % bootstrap interval and the counts

The matrix square root is scipy's ``sqrtm``, computed as in the reference implementation (pytorch-fid's
``calculate_frechet_distance``): a nearly singular product gets ``eps`` on the diagonals, and a tiny imaginary part
from numerical error is dropped (a large one is an error). The interval resamples each set with replacement and
takes the percentiles of the distances; a distance is biased upwards at small counts, so compare figures of equal
counts only.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import linalg


def gaussian(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, d) features -> mean (d,) and covariance (d, d) (unbiased, as the references compute it)."""
    x = np.asarray(features, np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"gaussian: need (n >= 2, d) features, got shape {x.shape}")
    return x.mean(axis=0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"frechet_distance: shapes differ ({mu1.shape} vs {mu2.shape}, {sigma1.shape} vs "
                         f"{sigma2.shape})")
    diff = mu1 - mu2
    with warnings.catch_warnings():   # a singular product is handled below, as the reference does
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean, _ = linalg.sqrtm(sigma1.dot(sigma2), disp=False)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"frechet_distance: imaginary component {np.max(np.abs(covmean.imag))}")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


@dataclass(frozen=True)
class Distance:
    value: float
    low: float | None        # the bootstrap interval (None when not computed)
    high: float | None
    n_real: int
    n_fake: int

    def to_json(self) -> dict:
        return {"value": self.value, "interval": None if self.low is None else [self.low, self.high],
                "n_real": self.n_real, "n_fake": self.n_fake}


def frechet(real: np.ndarray, fake: np.ndarray, bootstrap: int = 0, level: float = 0.95, seed: int = 0,
            min_bootstrap_count: int = 8) -> Distance:
    """The Fréchet distance of two feature sets, with a percentile bootstrap interval at ``level`` over
    ``bootstrap`` resamples when each set has at least ``min_bootstrap_count`` rows."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    value = frechet_distance(*gaussian(real), *gaussian(fake))
    low = high = None
    if bootstrap > 0 and min(len(real), len(fake)) >= min_bootstrap_count:
        rng = np.random.default_rng(seed)
        draws = [frechet_distance(*gaussian(real[rng.integers(0, len(real), len(real))]),
                                  *gaussian(fake[rng.integers(0, len(fake), len(fake))]))
                 for _ in range(bootstrap)]
        tail = (1.0 - level) / 2 * 100
        low, high = (float(v) for v in np.percentile(draws, [tail, 100 - tail]))
    return Distance(value, low, high, len(real), len(fake))
