"""Action adherence: rank correlation of speeds, turn-sign agreement on turning samples, bootstrap intervals, and
the apparent motion of a rendered clip read through the shards' camera records."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gaia2.evaluation.action import action_adherence, apparent_motion
from gaia2.synth.rigs import RIGS
from tests.test_ego_motion import _render


def test_a_monotone_speed_relation_ranks_one_and_a_reversed_one_minus_one():
    cmd = np.array([2.0, 5.0, 8.0, 11.0, 15.0, 20.0])
    curv = np.zeros(6)
    up = action_adherence(cmd, 0.5 * cmd ** 2 + 1.0, curv, curv)       # any increasing function
    down = action_adherence(cmd, 30.0 - cmd, curv, curv)
    assert up.speed_spearman == pytest.approx(1.0) and down.speed_spearman == pytest.approx(-1.0)
    assert up.n_samples == 6 and up.n_turning == 0 and math.isnan(up.curvature_sign_agreement)
    # Per-sample sequences (e.g. per latent step, ragged) are averaged per sample first.
    seq = [np.full(3, v) for v in cmd[:5]] + [np.array([19.0, 21.0])]
    assert action_adherence(seq, cmd, curv, curv).speed_spearman == pytest.approx(1.0)
    two_d = np.stack([cmd, cmd + 2.0], axis=1)                            # (S, T)
    assert action_adherence(two_d, 30.0 - cmd, curv, curv).speed_spearman == pytest.approx(-1.0)


def test_sign_agreement_counts_only_the_turning_samples():
    speed = np.arange(6.0)
    curv = np.array([0.01, -0.01, 0.0005, -0.0005, 0.02, 0.0])           # four turns, two straight-ahead
    yaw = np.array([0.1, -0.1, -0.3, 0.3, -0.2, 0.5])                     # turns: right, right, (ignored x2), wrong
    r = action_adherence(speed, speed, curv, yaw, min_curvature=0.002)
    assert r.n_turning == 3 and r.curvature_sign_agreement == pytest.approx(2 / 3)
    assert r.to_json()["n_turning"] == 3 and r.to_json()["sign_interval"] is None


def test_intervals_from_eight_samples_on():
    rng = np.random.default_rng(0)
    cmd = rng.uniform(2, 25, size=40)
    apparent = cmd + rng.normal(0, 4, size=40)
    curv = rng.choice([-0.01, 0.01], size=40)
    yaw = np.where(rng.uniform(size=40) < 0.8, np.sign(curv), -np.sign(curv)) * 0.1
    r = action_adherence(cmd, apparent, curv, yaw, bootstrap=200, seed=3)
    assert r.speed_low <= r.speed_spearman <= r.speed_high and r.speed_high - r.speed_low > 0.01
    assert r.sign_low <= r.curvature_sign_agreement <= r.sign_high and r.n_turning == 40
    assert action_adherence(cmd, apparent, curv, yaw, bootstrap=200, seed=3) == r       # seeded
    small = action_adherence(cmd[:7], apparent[:7], curv[:7], yaw[:7])
    assert small.speed_low is None and small.speed_high is None and small.sign_low is None
    assert np.isfinite(small.speed_spearman) and small.to_json()["speed_interval"] is None
    eight = action_adherence(cmd[:8], apparent[:8], curv[:8], yaw[:8])
    assert eight.speed_low is not None and eight.sign_low is not None
    with pytest.raises(ValueError, match="sample counts differ"):
        action_adherence(cmd, apparent[:5], curv, yaw)


def _records(names):
    """The shards' camera records at the rig's native size (128 x 72): apparent_motion brings them to the frames'."""
    rig = RIGS["sedan6_30hz"]
    out = []
    for i, cam in enumerate(rig.cameras):
        if cam.name in names:
            m = rig.camera_model(i, 1.0)
            out.append({"name": cam.name, "width": m.width, "height": m.height, "intrinsics": m.intrinsics.tolist(),
                        "extrinsics": m.cam_to_ego.tolist(), "distortion": m.distortion.tolist()})
    return out


@pytest.mark.parametrize("yaw_rate", [0.15, -0.15])
def test_apparent_motion_of_a_forward_clip(yaw_rate):
    names = ("front", "front_left", "front_right")
    videos, _, rate = _render(10.0, yaw_rate, frames=9, cameras=names)    # 64 x 36 frames, half the native size
    frames = np.stack([videos[n] for n in names])                         # (N_cams, T, H, W, 3)
    speed, yaw = apparent_motion(frames, _records(names) + _records(("rear",)), rate)   # extra records unused
    assert np.isfinite(speed) and np.isfinite(yaw)
    assert speed == pytest.approx(10.0, rel=0.3)
    assert np.sign(yaw) == np.sign(yaw_rate) and abs(yaw) > 0.05
    with pytest.raises(ValueError, match="camera records"):
        apparent_motion(frames, _records(("front",)), rate)
