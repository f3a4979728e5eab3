"""The Fréchet distance against its closed form and the reference implementation; FVMD on synthetic motion."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import linalg

from gaia2.evaluation.frechet import frechet, frechet_distance, gaussian
from gaia2.evaluation.fvmd import LucasKanade, fvmd


def _direct(mu1, s1, mu2, s2) -> float:
    root = linalg.sqrtm(linalg.sqrtm(s1) @ s2 @ linalg.sqrtm(s1)).real   # the symmetric form
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * root))


def test_known_gaussians_match_the_direct_computation_and_the_closed_form():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 6))
    b = rng.normal(size=(6, 6))
    s1, s2 = a @ a.T + np.eye(6), b @ b.T + 0.5 * np.eye(6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(_direct(mu1, s1, mu2, s2), rel=1e-8)
    d1, d2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])      # diagonal: a closed form
    closed = 1.0 + np.sum(d1 + d2 - 2 * np.sqrt(d1 * d2))
    assert frechet_distance(np.zeros(3), np.diag(d1), np.array([1.0, 0, 0]), np.diag(d2)) == pytest.approx(closed)


def test_a_set_to_itself_is_zero_and_the_reference_agrees():
    from pytorch_fid.fid_score import calculate_frechet_distance

    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 16)) @ rng.normal(size=(16, 16))
    y = rng.normal(size=(400, 16)) * 2.0 + 0.3
    assert abs(frechet(x, x).value) < 1e-6
    ours = frechet_distance(*gaussian(x), *gaussian(y))
    assert ours == pytest.approx(calculate_frechet_distance(*gaussian(x), *gaussian(y)), rel=1e-6)


def test_bootstrap_interval_brackets_the_distance_and_counts():
    rng = np.random.default_rng(2)
    d = frechet(rng.normal(size=(200, 4)), rng.normal(size=(150, 4)) + 1.0, bootstrap=100, seed=0)
    assert d.low < d.value < d.high and (d.n_real, d.n_fake) == (200, 150)
    assert frechet(rng.normal(size=(5, 2)), rng.normal(size=(5, 2)), bootstrap=100).low is None   # too few


def _moving(speed: float, seed: int, frames: int = 16, size: int = 64) -> np.ndarray:
    """A random smooth texture translating right by ``speed`` px per frame (with a little per-video jitter)."""
    import cv2

    rng = np.random.default_rng(seed)
    big = cv2.GaussianBlur(rng.uniform(0, 255, (size, size * 3)).astype(np.float32), (0, 0), 2.0)
    speed = speed * (1 + 0.05 * rng.normal())
    out = []
    for t in range(frames):
        m = np.float32([[1, 0, -speed * t - size], [0, 1, 0]])
        frame = cv2.warpAffine(big, m, (size, size), borderMode=cv2.BORDER_REFLECT)
        out.append(np.repeat(np.clip(frame, 0, 255).astype(np.uint8)[..., None], 3, -1))
    return np.stack(out)


def test_fvmd_is_near_zero_for_the_same_motion_and_grows_as_motion_diverges():
    tracker = LucasKanade(grid=8)
    real = [_moving(1.0, s) for s in range(24)]
    same = fvmd(real, [_moving(1.0, 100 + s) for s in range(24)], tracker, cells=1)
    assert same.tracker == "lucas-kanade" and same.distance.n_real == 24
    diverged = [fvmd(real, [_moving(speed, 200 + s) for s in range(24)], tracker, cells=1).distance.value
                for speed in (1.5, 2.5, 4.0)]
    assert diverged == sorted(diverged), diverged
    assert same.distance.value < 0.1 * diverged[0], (same.distance.value, diverged)


@pytest.mark.parametrize("n1,n2,d", [(50, 60, 200), (300, 250, 64), (40, 3000, 16)])
def test_the_bootstraps_eigen_path_equals_the_reference(n1, n2, d):
    """Each bootstrap draw's distance (symmetric eigen-decompositions; the nuclear norm of A1 A2^T when samples are
    fewer than dimensions) is the reference's sqrtm distance on the same rows."""
    from gaia2.evaluation.frechet import frechet_features

    rng = np.random.default_rng(n1)
    a = rng.normal(size=(n1, d)) @ rng.normal(size=(d, d)) * 0.1
    b = rng.normal(size=(n2, d)) + 0.3
    ref = frechet_distance(*gaussian(a), *gaussian(b))
    assert frechet_features(a, b) == pytest.approx(ref, rel=1e-6)


def test_group_bootstrap_resamples_whole_videos():
    """Frames of one video move together: with every frame of a video identical, resampling groups is resampling
    videos, so the interval equals the one over one row per video; and a group count too small gives none."""
    rng = np.random.default_rng(3)
    real, fake = rng.normal(size=(40, 3)), rng.normal(size=(30, 3)) + 0.5
    per_video = frechet(real, fake, bootstrap=200, seed=1)
    frames = frechet(np.repeat(real, 4, 0), np.repeat(fake, 4, 0), bootstrap=200, seed=1,
                     real_groups=np.repeat(np.arange(40), 4), fake_groups=np.repeat(np.arange(30), 4))
    assert frames.low < frames.value < frames.high
    width = lambda d: d.high - d.low   # noqa: E731
    assert width(frames) == pytest.approx(width(per_video), rel=0.25)
    few = frechet(real, fake, bootstrap=50, real_groups=np.arange(40) // 10, fake_groups=np.arange(30) // 10)
    assert few.low is None and few.n_real == 40
