"""Tokenizer reconstruction metrics and preview videos: hand values, an independent SSIM reference,
the baseline's optimality, accumulator merging, and a preview mp4 that decodes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gaia2.tokenizer.clips import to_uint8
from gaia2.tokenizer.metrics import ReconstructionMetrics, mean_colour_baseline, psnr, ssim
from gaia2.tokenizer.preview import comparison_grid, write_comparison
from gaia2.video.decode import open_video


def rand_video(b=2, t=2, h=16, w=20, seed=0, lo=-1.0, hi=1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return lo + (hi - lo) * torch.rand(b, 3, t, h, w, generator=g, dtype=torch.float64)


def smooth_video(b=2, t=3, h=16, w=20, seed=0) -> torch.Tensor:
    """Random low-frequency content (bilinear up-sampled 4x5 noise), so blocks are image-like."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(b * t, 3, 4, 5, generator=g) * 1.6 - 0.8
    up = torch.nn.functional.interpolate(low, size=(h, w), mode="bilinear", align_corners=True)
    return up.reshape(b, t, 3, h, w).permute(0, 2, 1, 3, 4).contiguous()


def reference_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """SSIM of two images (H, W) on [0, 1], written from Wang et al. 2004 with explicit windows:
    weighted local statistics for every window position fully inside the image (window shrunk to
    the image along an axis shorter than 11), averaged."""
    h, w = x.shape
    kh, kw = min(11, h), min(11, w)

    def gauss(k):
        r = np.arange(k) - (k - 1) / 2
        g = np.exp(-r ** 2 / (2 * 1.5 ** 2))
        return g / g.sum()

    win = np.outer(gauss(kh), gauss(kw))
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    vals = []
    for i in range(h - kh + 1):
        for j in range(w - kw + 1):
            a, b = x[i:i + kh, j:j + kw], y[i:i + kh, j:j + kw]
            ma, mb = (win * a).sum(), (win * b).sum()
            va, vb = (win * (a - ma) ** 2).sum(), (win * (b - mb) ** 2).sum()
            cov = (win * (a - ma) * (b - mb)).sum()
            vals.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2)))
    return float(np.mean(vals))


def reference_clip_ssim(video: torch.Tensor, recon: torch.Tensor) -> np.ndarray:
    x, y = ((video.numpy() + 1) / 2), ((recon.numpy() + 1) / 2)
    b, c, t = x.shape[:3]
    return np.array([np.mean([reference_ssim(x[i, ch, f], y[i, ch, f]) for ch in range(c) for f in range(t)])
                     for i in range(b)])


# --- PSNR ------------------------------------------------------------------------------------------

def test_psnr_constant_error_is_20_db():
    video = rand_video(lo=-1.0, hi=0.8)
    recon = video + 0.2                       # 0.1 on the [0, 1] scale everywhere -> MSE 0.01
    torch.testing.assert_close(psnr(video, recon), torch.full((2,), 20.0, dtype=torch.float64))


def test_psnr_per_clip_and_identical_inputs():
    video = rand_video(lo=-0.9, hi=0.9)
    recon = video.clone()
    recon[1] += 0.1 * torch.sign(torch.randn_like(recon[1]))   # |error| 0.05 on [0, 1] -> 26.02 dB
    out = psnr(video, recon)
    assert out[0].item() == pytest.approx(100.0)                 # MSE clamped at 1e-10, not +inf
    assert out[1].item() == pytest.approx(-10 * np.log10(0.05 ** 2))


def test_psnr_clamps_overshoot_to_the_visible_range():
    video = torch.ones(1, 3, 1, 4, 4)
    assert psnr(video, video + 0.5).item() == pytest.approx(100.0)   # recon 1.5 is shown as 1.0


def test_mismatched_shapes_raise():
    with pytest.raises(ValueError, match="differ"):
        psnr(rand_video(), rand_video(w=18))
    with pytest.raises(ValueError, match=r"\(B, 3, T, H, W\)"):
        ssim(torch.zeros(2, 4, 1, 8, 8), torch.zeros(2, 4, 1, 8, 8))


# --- SSIM ------------------------------------------------------------------------------------------

def test_ssim_identical_is_one():
    video = rand_video(h=32, w=64)
    torch.testing.assert_close(ssim(video, video), torch.ones(2, dtype=torch.float64))


def test_ssim_constant_images_closed_form():
    # Flat images a, b: no variance, so SSIM = (2ab + C1) / (a^2 + b^2 + C1) exactly.
    video, recon = torch.zeros(1, 3, 2, 12, 14), torch.full((1, 3, 2, 12, 14), 0.2)   # 0.5 and 0.6 on [0, 1]
    expected = (2 * 0.5 * 0.6 + 1e-4) / (0.5 ** 2 + 0.6 ** 2 + 1e-4)
    assert ssim(video, recon).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("hw", [(16, 20), (11, 11), (6, 13), (3, 4)])   # last three shrink or fill the window
def test_ssim_matches_reference(hw):
    video = rand_video(h=hw[0], w=hw[1], seed=1)
    recon = (video + 0.3 * rand_video(h=hw[0], w=hw[1], seed=2)).clamp(-1, 1)
    np.testing.assert_allclose(ssim(video, recon).numpy(), reference_clip_ssim(video, recon), rtol=1e-9, atol=1e-12)


def test_ssim_float32_inputs_give_the_float64_result():
    video = rand_video(seed=3)
    recon = (video + 0.2 * rand_video(seed=4)).clamp(-1, 1)
    torch.testing.assert_close(ssim(video.float(), recon.float()).double(), ssim(video, recon), atol=1e-6, rtol=0)


def test_ssim_lower_for_noisier_recon():
    video = smooth_video(b=1, h=32, w=64)
    g = torch.Generator().manual_seed(5)
    noise = torch.randn(video.shape, generator=g)
    scores = [ssim(video, (video + s * noise).clamp(-1, 1)).item() for s in (0.02, 0.1, 0.4)]
    assert 1.0 > scores[0] > scores[1] > scores[2]


# --- mean-colour baseline --------------------------------------------------------------------------

def test_mean_colour_baseline_is_l2_optimal_constant():
    video = rand_video(b=3, seed=6)
    base = mean_colour_baseline(video)
    assert base.shape == video.shape
    assert torch.equal(base[:, :, :1, :1, :1].expand_as(base), base)      # constant per clip and channel

    def mse(pred):
        return (video - pred).square().flatten(1).mean(1)

    best = mse(base)
    for ch in range(3):
        for delta in (-0.05, 0.01, 0.05):
            moved = base.clone()
            moved[:, ch] += delta
            assert (mse(moved) > best).all()
    # And no other per-clip constant, e.g. the per-channel median, does better.
    median = video.flatten(2).median(dim=2).values[:, :, None, None, None].expand_as(video)
    assert (mse(median) >= best).all()


# --- accumulator -----------------------------------------------------------------------------------

def per_clip_l1(video, recon):
    return (video - recon).abs().flatten(1).mean(1)


def test_accumulator_means_and_gain():
    video = smooth_video(b=3)
    recon = (video + 0.05 * torch.randn(video.shape, generator=torch.Generator().manual_seed(7))).clamp(-1, 1)
    acc = ReconstructionMetrics()
    acc.update(video, recon, lpips=per_clip_l1)
    out = acc.compute()
    assert out["clips"] == 3
    assert out["psnr"] == pytest.approx(psnr(video, recon).mean().item())     # mean of per-clip PSNRs
    assert out["ssim"] == pytest.approx(ssim(video, recon).mean().item())
    assert out["baseline_psnr"] == pytest.approx(psnr(video, mean_colour_baseline(video)).mean().item())
    assert out["gain_db"] == pytest.approx(out["psnr"] - out["baseline_psnr"])
    assert out["gain_db"] > 0                                                 # a close recon beats a flat colour
    assert out["lpips"] == pytest.approx(per_clip_l1(video, recon).mean().item())


def test_accumulator_without_lpips_has_no_lpips_key_and_empty_raises():
    acc = ReconstructionMetrics()
    with pytest.raises(ValueError, match="no clips"):
        acc.compute()
    acc.update(rand_video(), rand_video(seed=1))
    assert "lpips" not in acc.compute()


def test_merge_equals_one_accumulator_over_all_clips():
    videos = [smooth_video(b=b, seed=s) for b, s in ((2, 0), (1, 1), (3, 2))]
    recons = [(v + 0.1 * rand_video(b=v.shape[0], t=3, seed=10 + i).float()).clamp(-1, 1)
              for i, v in enumerate(videos)]
    whole = ReconstructionMetrics()
    for v, r in zip(videos, recons):
        whole.update(v, r, lpips=per_clip_l1)
    a, b = ReconstructionMetrics(), ReconstructionMetrics()
    a.update(videos[0], recons[0], lpips=per_clip_l1)
    b.update(videos[1], recons[1], lpips=per_clip_l1)
    b.update(videos[2], recons[2], lpips=per_clip_l1)
    merged = a.merge(b).compute()
    from_state = ReconstructionMetrics().merge(a.state_dict()).compute()    # a already holds a + b
    assert merged.keys() == whole.compute().keys()
    for key, value in whole.compute().items():
        assert merged[key] == pytest.approx(value, rel=1e-12)
        assert from_state[key] == pytest.approx(value, rel=1e-12)
    assert merged["clips"] == 6


def test_scalar_lpips_counts_once_per_clip():
    # A scalar is the batch mean: batches of 1 and 3 clips with means 1.0 and 2.0 -> (1 + 6) / 4.
    acc = ReconstructionMetrics()
    acc.update(rand_video(b=1), rand_video(b=1, seed=1), lpips=lambda v, r: torch.tensor(1.0))
    acc.update(rand_video(b=3), rand_video(b=3, seed=1), lpips=lambda v, r: torch.tensor(2.0))
    acc.update(rand_video(b=2), rand_video(b=2, seed=1))                   # not measured: not counted
    out = acc.compute()
    assert out["lpips"] == pytest.approx(7 / 4)
    assert out["clips"] == 6
    with pytest.raises(ValueError, match="per-clip"):
        acc.update(rand_video(b=2), rand_video(b=2), lpips=lambda v, r: torch.zeros(3))


# --- preview ---------------------------------------------------------------------------------------

def test_comparison_grid_layout():
    video, recon = rand_video(b=5, t=2, h=6, w=7, seed=0), rand_video(b=5, t=2, h=6, w=7, seed=1)
    grid = comparison_grid(video, recon, max_clips=3)
    assert grid.shape == (2, 2 * 6 + 2, 3 * 7 + 2 * 2, 3) and grid.dtype == np.uint8
    top, bottom = to_uint8(video), to_uint8(recon)
    for i in range(3):
        x0 = i * (7 + 2)
        np.testing.assert_array_equal(grid[:, :6, x0:x0 + 7], top[i])
        np.testing.assert_array_equal(grid[:, 8:, x0:x0 + 7], bottom[i])
    assert (grid[:, 6:8] == 255).all()                    # row separator
    assert (grid[:, :, 7:9] == 255).all() and (grid[:, :, 16:18] == 255).all()   # column separators
    assert comparison_grid(video[:2], recon[:2]).shape[2] == 2 * 7 + 2    # fewer clips than max_clips


def test_write_comparison_decodes(tmp_path):
    # 3 clips of width 43: grid 133 wide, padded to 134 for yuv420p; height 2 * 32 + 2 = 66.
    video = smooth_video(b=3, t=4, h=32, w=43, seed=0)
    recon = smooth_video(b=3, t=4, h=32, w=43, seed=1)
    path = write_comparison(tmp_path / "previews" / "step_0.mp4", video, recon, fps=10.0)
    assert path == str(tmp_path / "previews" / "step_0.mp4")
    with open(path, "rb") as f:
        data = f.read()
    vr = open_video(data, "preview")
    frames = vr.get_batch(list(range(len(vr)))).asnumpy()
    assert frames.shape == (4, 66, 134, 3)
    # Lossy, but the picture laid out as the grid: far closer to it than to the rows swapped.
    decoded = frames[:, :, :133].astype(np.float64)
    err = np.abs(decoded - comparison_grid(video, recon)).mean()
    swapped = np.abs(decoded - comparison_grid(recon, video)).mean()
    assert err < 0.25 * swapped, (err, swapped)
