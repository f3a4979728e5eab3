"""Reconstruction metrics for the video tokenizer: PSNR, SSIM, the mean-colour baseline, and an
accumulator that averages them over clips and combines across workers.

All functions take videos (B, 3, T, H, W) in [-1, 1] and measure on the [0, 1] scale (data range 1).
Both inputs are clamped to [-1, 1] first: a decoder can overshoot, and the metrics judge the video
a viewer would see (``clips.to_uint8`` clamps the same way).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

# Identical clips have MSE 0 and PSNR +inf; the MSE is clamped here so they score 100 dB instead and
# averages over clips stay finite.
MIN_MSE = 1e-10

# Wang et al. 2004: Gaussian window 11 x 11, sigma 1.5, K1 = 0.01, K2 = 0.03 (data range 1).
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_C1 = 0.01 ** 2
SSIM_C2 = 0.03 ** 2

LpipsFn = Callable[[Tensor, Tensor], Tensor]


def _check_pair(video: Tensor, recon: Tensor, what: str) -> None:
    if video.ndim != 5 or video.shape[1] != 3:
        raise ValueError(f"{what}: video must be (B, 3, T, H, W), got {tuple(video.shape)}")
    if video.shape != recon.shape:
        raise ValueError(f"{what}: video {tuple(video.shape)} and recon {tuple(recon.shape)} differ")


def _unit(x: Tensor) -> Tensor:
    """[-1, 1] -> [0, 1] (clamped), float32 (float64 kept)."""
    x = x.detach()
    x = x if x.dtype == torch.float64 else x.float()   # bf16 statistics would lose the small differences
    return x.clamp(-1, 1).add(1).mul(0.5)


def psnr(video: Tensor, recon: Tensor) -> Tensor:
    """video, recon (B, 3, T, H, W) in [-1, 1] -> PSNR (B,) in dB on the [0, 1] scale (peak 1).

    The MSE is over all values of each clip; it is clamped at ``MIN_MSE`` (1e-10), so identical clips
    give 100 dB rather than +inf.
    """
    _check_pair(video, recon, "psnr")
    mse = (_unit(video) - _unit(recon)).square().flatten(1).mean(1)
    return -10 * torch.log10(mse.clamp_min(MIN_MSE))


def _gaussian(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Normalised 1-D Gaussian (size,) centred on the window's middle."""
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-x.square() / (2 * sigma ** 2))
    return g / g.sum()


def ssim(video: Tensor, recon: Tensor) -> Tensor:
    """video, recon (B, 3, T, H, W) in [-1, 1] -> SSIM (B,) on the [0, 1] scale (data range 1), float32
    (float64 for float64 inputs).

    Wang et al. 2004: an 11 x 11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, local statistics
    with population (1/N-weighted) variances, "valid" filtering (no padding: only windows that lie
    inside the frame), computed per frame and channel and averaged over channels, frames and window
    positions of each clip. A frame smaller than 11 pixels along an axis gets its window shrunk to the
    frame along that axis (the same sigma, renormalised), so it still yields at least one value.
    """
    _check_pair(video, recon, "ssim")
    b, c, t, h, w = video.shape
    # float64: the variances E[x^2] - mu^2 cancel badly in float32 on flat regions (a 3e-5 relative
    # error in the SSIM of two flat frames); the filtering is cheap next to the tokenizer itself.
    x = _unit(video).double().permute(0, 2, 1, 3, 4).reshape(b * t * c, 1, h, w)   # each frame-channel an image
    y = _unit(recon).double().permute(0, 2, 1, 3, 4).reshape(b * t * c, 1, h, w)
    # The five local statistics filtered together: one separable Gaussian, 5 groups.
    stats = torch.cat([x, y, x * x, y * y, x * y], dim=1)                 # (N, 5, H, W)
    kh, kw = min(SSIM_WINDOW, h), min(SSIM_WINDOW, w)
    gh = _gaussian(kh, SSIM_SIGMA, x.dtype, x.device).view(1, 1, kh, 1).expand(5, 1, kh, 1)
    gw = _gaussian(kw, SSIM_SIGMA, x.dtype, x.device).view(1, 1, 1, kw).expand(5, 1, 1, kw)
    mu_x, mu_y, e_xx, e_yy, e_xy = F.conv2d(F.conv2d(stats, gh, groups=5), gw, groups=5).unbind(1)
    var_x, var_y, cov = e_xx - mu_x * mu_x, e_yy - mu_y * mu_y, e_xy - mu_x * mu_y
    s = ((2 * mu_x * mu_y + SSIM_C1) * (2 * cov + SSIM_C2)
         / ((mu_x * mu_x + mu_y * mu_y + SSIM_C1) * (var_x + var_y + SSIM_C2)))   # (N, H', W')
    # Equal window counts per frame-channel, so the mean over everything equals the nested mean.
    return s.reshape(b, -1).mean(1).to(torch.promote_types(video.dtype, torch.float32))


def mean_colour_baseline(video: Tensor) -> Tensor:
    """video (B, 3, T, H, W) -> (B, 3, T, H, W): each clip's mean colour (per channel, over all frames
    and pixels), broadcast. It is the best prediction under L2 that is constant per clip and channel,
    so a tokenizer's PSNR gain over it says how much of the clip it encodes beyond its average colour.
    """
    if video.ndim != 5 or video.shape[1] != 3:
        raise ValueError(f"mean_colour_baseline: video must be (B, 3, T, H, W), got {tuple(video.shape)}")
    return video.mean(dim=(2, 3, 4), keepdim=True).expand_as(video)


_SUMS = ("psnr", "ssim", "baseline_psnr", "lpips")


class ReconstructionMetrics:
    """Accumulates per-clip reconstruction metrics; ``compute`` gives their means over clips.

    Average PSNR is the mean of per-clip PSNRs (not the PSNR of the pooled MSE), so every clip counts
    equally whatever its content. Sums stay on the inputs' device as float64 until ``compute`` /
    ``state_dict``, so ``update`` adds no CPU-GPU sync. Workers combine with ``merge`` (another
    accumulator or its ``state_dict``), which adds sums and counts: the result equals one accumulator
    fed every clip.
    """

    def __init__(self) -> None:
        self._sums: dict[str, Tensor | float] = {k: 0.0 for k in _SUMS}
        self._clips = 0
        self._lpips_clips = 0

    @torch.no_grad()
    def update(self, video: Tensor, recon: Tensor, lpips: LpipsFn | None = None) -> None:
        """video, recon (B, 3, T, H, W) in [-1, 1]. ``lpips(video, recon)`` gives per-clip values (B,)
        or their batch mean (a scalar, as ``losses.LPIPSLoss`` returns), which counts once per clip."""
        _check_pair(video, recon, "ReconstructionMetrics.update")
        b = video.shape[0]
        self._add("psnr", psnr(video, recon).double().sum())
        self._add("ssim", ssim(video, recon).double().sum())
        self._add("baseline_psnr", psnr(video, mean_colour_baseline(video)).double().sum())
        self._clips += b
        if lpips is not None:
            value = torch.as_tensor(lpips(video, recon)).detach().double()
            if value.ndim == 0:
                value = value * b
            elif value.shape != (b,):
                raise ValueError(f"lpips must return a scalar or per-clip values ({b},), got {tuple(value.shape)}")
            self._add("lpips", value.sum())
            self._lpips_clips += b

    def _add(self, key: str, value: Tensor | float) -> None:
        cur = self._sums[key]
        if isinstance(cur, Tensor) and isinstance(value, Tensor):
            value = value.to(cur.device)
        self._sums[key] = cur + value

    def state_dict(self) -> dict[str, float]:
        """Plain sums and counts (floats), e.g. to return from a Ray worker."""
        state = {f"{k}_sum": float(v) for k, v in self._sums.items()}
        state.update(clips=float(self._clips), lpips_clips=float(self._lpips_clips))
        return state

    def merge(self, other: "ReconstructionMetrics | Mapping[str, float]") -> "ReconstructionMetrics":
        """Add ``other``'s sums and counts (an accumulator or its ``state_dict``) into this one; returns self."""
        state = other.state_dict() if isinstance(other, ReconstructionMetrics) else other
        missing = [k for k in (*(f"{k}_sum" for k in _SUMS), "clips", "lpips_clips") if k not in state]
        if missing:
            raise ValueError(f"ReconstructionMetrics.merge: state lacks {missing}")
        for k in _SUMS:
            self._add(k, float(state[f"{k}_sum"]))
        self._clips += int(state["clips"])
        self._lpips_clips += int(state["lpips_clips"])
        return self

    def compute(self) -> dict[str, float]:
        """Means over clips: ``psnr``, ``ssim``, ``baseline_psnr`` (dB), ``gain_db`` = psnr - baseline_psnr,
        ``clips`` (count), and ``lpips`` when it was measured (mean over the clips it was measured on)."""
        if self._clips == 0:
            raise ValueError("ReconstructionMetrics.compute: no clips were added")
        n = self._clips
        out = {k: float(self._sums[k]) / n for k in ("psnr", "ssim", "baseline_psnr")}
        out["gain_db"] = out["psnr"] - out["baseline_psnr"]
        out["clips"] = float(n)
        if self._lpips_clips:
            out["lpips"] = float(self._sums["lpips"]) / self._lpips_clips
        return out
