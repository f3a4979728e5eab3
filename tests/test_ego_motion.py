"""Apparent ego motion from video: ray-cast scenes with a known speed and yaw rate through a real rig's cameras."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gaia2.evaluation import (CameraCalibration, EgoMotionConfig, estimate_ego_motion, rank_correlation,
                              sign_agreement)
from gaia2.synth.rigs import RIGS

_RNG = np.random.default_rng(3)
# Ground texture: random plane waves, wavelengths 1.5 - 8 m (visible at 64 px wide, no aliasing nearby).
_K = _RNG.normal(size=(24, 2))
_K *= (2 * np.pi / _RNG.uniform(1.5, 8.0, size=24) / np.linalg.norm(_K, axis=1))[:, None]
_PHASE = _RNG.uniform(0, 2 * np.pi, size=24)
_HILLS = _RNG.uniform(0, 2 * np.pi, size=10)        # skyline at infinity: phases of azimuth harmonics 3..12


def _render(speed: float, yaw_rate: float, frames: int = 9, rig_id: str = "sedan6_30hz", scale: float = 0.5,
            cameras: tuple[str, ...] | None = None) -> tuple[dict, dict, float]:
    """Ego driving an arc at ``speed`` m/s turning at ``yaw_rate`` rad/s (left > 0) over textured flat ground
    under a skyline: ({camera: (T, H, W, 3) uint8}, {camera: CameraCalibration}, frame rate)."""
    rig = RIGS[rig_id]
    t = np.arange(frames) / rig.frame_rate
    theta = yaw_rate * t
    if abs(yaw_rate) > 1e-9:
        px, py = speed / yaw_rate * np.sin(theta), speed / yaw_rate * (1 - np.cos(theta))
    else:
        px, py = speed * t, np.zeros_like(t)
    videos, calibs = {}, {}
    for i, cam in enumerate(rig.cameras):
        if cameras is not None and cam.name not in cameras:
            continue
        model = rig.camera_model(i, scale)
        rays = model.pixel_rays().reshape(-1, 3) @ model.cam_to_ego[:3, :3].T       # ego frame
        centre = model.cam_to_ego[:3, 3]
        out = np.empty((frames, model.height * model.width), np.float64)
        for k in range(frames):
            c, s = math.cos(theta[k]), math.sin(theta[k])
            rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
            ray_w = rays @ rot.T
            origin = rot @ centre + np.array([px[k], py[k], 0.0])
            down = ray_w[:, 2] < -1e-3
            lam = np.where(down, -origin[2] / np.where(down, ray_w[:, 2], -1.0), 0.0)
            gx, gy = origin[0] + lam * ray_w[:, 0], origin[1] + lam * ray_w[:, 1]
            tex = np.sin(np.stack([gx, gy], -1) @ _K.T + _PHASE).sum(-1) / np.sqrt(12)
            ground = 110 + 45 * tex * np.exp(-lam / 30.0)
            az = np.arctan2(ray_w[:, 1], ray_w[:, 0])
            hill = 0.06 + 0.03 * np.sin(np.arange(3, 13)[None] * az[:, None] + _HILLS).sum(-1) / 3
            sky = np.where(ray_w[:, 2] < hill, 70.0, 200.0)
            out[k] = np.where(down, ground, sky)
        grey = np.clip(out, 0, 255).astype(np.uint8).reshape(frames, model.height, model.width)
        videos[cam.name] = np.repeat(grey[..., None], 3, axis=-1)
        calibs[cam.name] = CameraCalibration(model.intrinsics, model.cam_to_ego, model.distortion)
    return videos, calibs, rig.frame_rate


def _estimate(speed: float, yaw_rate: float, **kw):
    videos, calibs, rate = _render(speed, yaw_rate, **kw)
    return estimate_ego_motion(videos, calibs, rate)


def test_speed_is_metric_and_grows_with_motion():
    slow, fast = _estimate(5.0, 0.0), _estimate(15.0, 0.0)
    assert fast.speed > slow.speed + 5.0
    assert slow.speed == pytest.approx(5.0, rel=0.25)
    assert fast.speed == pytest.approx(15.0, rel=0.25)
    assert abs(slow.yaw_rate) < 0.03 and abs(fast.yaw_rate) < 0.03


def test_turn_sign_left_positive():
    left, right = _estimate(10.0, 0.15), _estimate(10.0, -0.15)
    assert left.yaw_rate > 0.05 and right.yaw_rate < -0.05
    assert left.yaw_rate == pytest.approx(0.15, abs=0.06)
    assert left.curvature > 0 > right.curvature
    assert left.speed == pytest.approx(10.0, rel=0.25)


def test_static_scene_is_still():
    est = _estimate(0.0, 0.0)
    assert abs(est.speed) < 1.0
    assert abs(est.yaw_rate) < 0.03
    assert math.isnan(est.curvature)          # no curvature without motion


def test_blank_video_shows_no_motion():
    videos, calibs, rate = _render(5.0, 0.0, frames=9, cameras=("front", "rear"))
    est = estimate_ego_motion({n: np.full_like(v, 128) for n, v in videos.items()}, calibs, rate)
    assert est.speed == 0.0 and est.yaw_rate == 0.0 and math.isnan(est.curvature)


def test_chunks_follow_the_clip():
    est = _estimate(8.0, 0.1, frames=17, cameras=("front", "front_left", "front_right"))
    assert est.chunk_speed.shape == est.chunk_yaw_rate.shape == est.chunk_curvature.shape == (2,)
    assert np.all(np.abs(est.chunk_speed - 8.0) < 2.0)
    assert np.all(est.chunk_yaw_rate > 0)
    assert est.speed == pytest.approx(est.chunk_speed.mean())
    assert est.to_dict()["chunk"] == 8


def test_small_blurry_frames():
    """32 x 64 frames, blurred like the tiny tokenizer's reconstructions, still show speed and turn."""
    import cv2

    videos, calibs, rate = _render(12.0, -0.2, rig_id="suv6_20hz", scale=0.4)
    videos = {n: np.stack([cv2.GaussianBlur(f, (0, 0), 1.0) for f in v]) for n, v in videos.items()}
    assert next(iter(videos.values())).shape[1:3] == (38, 64)
    est = estimate_ego_motion(videos, calibs, rate)
    assert est.speed == pytest.approx(12.0, rel=0.35)
    assert est.yaw_rate < -0.05


@pytest.mark.parametrize("index", [0, 27])     # seed 7: a right-hand bend at 18 m/s, a left-hand one at 11 m/s
def test_synthetic_clip_through_the_video_codec(index):
    """The synthetic generator's own clip (boxes, agents, lighting), x264-encoded and decoded at the shards'
    64 x 128: speed within 30 %, the bend's side right."""
    from gaia2.synth.generate import generate_clip
    from gaia2.tokenizer.clips import decode_camera

    record, mp4 = generate_clip(index, seed=7, duration_s=1.0)
    frames = 17                                   # two chunks of 8 steps
    cams = record["cameras"]
    videos = {c["name"]: decode_camera(mp4[c["name"]], c["name"], (c["height"], c["width"]), (64, 128))[:frames]
              for c in cams}
    calibs = {c["name"]: CameraCalibration.from_record(c, (64, 128)) for c in cams}
    est = estimate_ego_motion(videos, calibs, cams[0]["frame_rate"])
    times = np.asarray(cams[0]["timestamps"][:frames])
    speed = np.interp(times, record["ego"]["timestamps"], record["ego"]["speed"]).mean()
    curvature = np.interp(times, record["ego"]["timestamps"], record["ego"]["curvature"]).mean()
    assert abs(curvature) > 0.004 and speed > 10            # the clips are what the test means
    assert est.speed == pytest.approx(speed, rel=0.3)
    assert np.sign(est.yaw_rate) == np.sign(curvature) and abs(est.yaw_rate) > 0.03
    assert np.sign(est.curvature) == np.sign(curvature)


def test_normalised_and_record_calibration_agree():
    rig = RIGS["van5_25hz"]
    model = rig.camera_model(0, 0.5)
    w, h = model.width, model.height
    a = CameraCalibration(model.intrinsics, model.cam_to_ego, model.distortion)
    b = CameraCalibration.from_normalised(model.intrinsics / [w, h, w, h], model.cam_to_ego, (h, w), model.distortion)
    np.testing.assert_allclose(a.intrinsics, b.intrinsics)
    record = {"width": rig.width, "height": rig.height, "intrinsics": rig.intrinsics(0).tolist(),
              "extrinsics": model.cam_to_ego.tolist(), "distortion": list(model.distortion)}
    c = CameraCalibration.from_record(record, (h, w))
    np.testing.assert_allclose(c.intrinsics, a.intrinsics, rtol=1e-6)


def test_bad_inputs_raise_value_errors():
    videos, calibs, rate = _render(5.0, 0.0, frames=3, cameras=("front", "rear"))
    with pytest.raises(ValueError, match="missing from the calibration.*rear"):
        estimate_ego_motion(videos, {"front": calibs["front"]}, rate)
    with pytest.raises(ValueError, match=r"expected frames \(T, H, W, 3\)"):
        estimate_ego_motion({**videos, "front": videos["front"][..., 0]}, calibs, rate)
    with pytest.raises(ValueError, match="uint8"):
        estimate_ego_motion({**videos, "front": videos["front"].astype(np.float32)}, calibs, rate)
    with pytest.raises(ValueError, match="too few frames"):
        estimate_ego_motion({n: v[:1] for n, v in videos.items()}, calibs, rate)
    with pytest.raises(ValueError, match="different frame counts"):
        estimate_ego_motion({**videos, "front": videos["front"][:2]}, calibs, rate)
    with pytest.raises(ValueError, match="no camera videos"):
        estimate_ego_motion({}, calibs, rate)
    with pytest.raises(ValueError, match="frame_rate"):
        estimate_ego_motion(videos, calibs, 0.0)
    with pytest.raises(ValueError, match="chunk"):
        estimate_ego_motion(videos, calibs, rate, chunk=0)
    with pytest.raises(ValueError, match="extrinsics"):
        CameraCalibration(np.ones(4), np.eye(3))
    with pytest.raises(ValueError, match="camera height"):
        CameraCalibration(np.ones(4), np.eye(4))
    with pytest.raises(ValueError, match="max_speed_mps"):
        EgoMotionConfig(max_speed_mps=0.0)


def test_rank_correlation_against_hand_values():
    assert rank_correlation([1, 2, 3, 4], [10, 20, 30, 45]) == pytest.approx(1.0)
    assert rank_correlation([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # Ties take their average rank: ranks (1, 2.5, 2.5, 4) and (1, 2, 3, 4) -> Pearson of those = 0.9487.
    assert rank_correlation([0, 1, 1, 2], [5, 6, 7, 8]) == pytest.approx(3 / math.sqrt(10), abs=1e-12)
    # Monotone, not linear: a cube keeps the ranks; NaN pairs are dropped.
    assert rank_correlation([1, 2, 3, np.nan, 5], [1, 8, 27, 0, 125]) == pytest.approx(1.0)
    assert math.isnan(rank_correlation([1, 2], [3, 4])) and math.isnan(rank_correlation([1, 1, 1], [1, 2, 3]))


def test_sign_agreement_counts_only_clear_turns():
    frac, n = sign_agreement([0.01, -0.01, 0.0001, 0.005, -0.003], [0.2, 0.1, -0.3, 0.05, -0.02], min_abs=0.002)
    assert n == 4 and frac == pytest.approx(0.75)
    frac, n = sign_agreement([0.0001], [1.0], min_abs=0.002)
    assert n == 0 and math.isnan(frac)
