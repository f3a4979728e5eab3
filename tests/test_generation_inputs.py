"""Generation inputs built from what a request describes: each camera's latent timestamps exactly as training
computes a sample's, and the named speed / curvature profiles."""

from __future__ import annotations

import numpy as np
import pytest

from gaia2.generation import (CURVATURE_PROFILES, SPEED_PROFILES, curvature_profile, frame_times,
                              latent_timestamps, speed_profile)
from gaia2.world_model.sample import world_model_sample


def test_latent_timestamps_are_the_ones_a_training_sample_of_that_rig_gets():
    rate, steps, factor, offsets = 25.0, 3, 8, [0.0, 0.012, -0.007]
    frames = frame_times(rate, steps * factor, offsets)
    cams = [{"name": f"c{i}", "width": 8, "height": 4, "intrinsics": [1, 1, 1, 1], "extrinsics": np.eye(4).tolist(),
             "distortion": [0] * 5, "frame_timestamps": frames[:, i].tolist()} for i in range(3)]
    meta = {"key": "k", "timestamps": frames[:, 0].tolist(), "cameras": cams, "metadata": {},
            "ego": {"speed": [1.0] * len(frames), "curvature": [0.0] * len(frames)}}
    sample = world_model_sample(meta, np.zeros((steps, 3, 2, 1, 1), np.float32),
                                np.zeros((len(frames), 3, 1, 13), np.float32), np.zeros((len(frames), 3, 1), bool),
                                np.zeros((3, 4), np.float32), cameras=3, max_agents=1)
    got = latent_timestamps(rate, steps, factor, offsets)
    assert got.shape == (steps, 3) and got.dtype == np.float32
    np.testing.assert_array_equal(got, sample["timestamps"])
    np.testing.assert_allclose(got[1, 1] - got[0, 1], factor / rate, rtol=1e-6)   # one latent = 8 frames
    np.testing.assert_allclose(got[0], (factor - 1) / 2 / rate + np.asarray(offsets), atol=1e-6)


@pytest.mark.parametrize("call, message", [
    (lambda: frame_times(0.0, 8, [0.0]), "frame_rate"),
    (lambda: frame_times(float("nan"), 8, [0.0]), "frame_rate"),
    (lambda: frame_times(20.0, 8, []), "offsets_s"),
    (lambda: frame_times(20.0, 0, [0.0]), "frames"),
    (lambda: latent_timestamps(20.0, 0, 8, [0.0]), "latent_steps"),
])
def test_bad_timing_inputs_name_the_field(call, message):
    with pytest.raises(ValueError, match=message):
        call()


T = np.linspace(0.0, 10.0, 1001)   # 10 ms steps


def _rate(values: np.ndarray) -> np.ndarray:
    return np.diff(values) / np.diff(T)


def test_speed_profiles_keep_their_promises():
    start = speed_profile("start_from_stop", T, speed=12.0, accel=2.0, start_s=1.0)
    assert (start[T <= 1.0] == 0).all() and start[-1] == pytest.approx(12.0)
    assert (np.diff(start) >= 0).all() and _rate(start).max() <= 2.0 + 1e-9
    stop = speed_profile("slow_to_stop", T, speed=12.0)
    assert stop[0] == 12.0 and stop[-1] == 0.0 and (np.diff(stop) <= 0).all()
    brake = speed_profile("hard_brake", T)
    assert brake[0] == 15.0 and brake[-1] == 0.0 and _rate(brake).min() == pytest.approx(-7.0)
    assert brake[T >= 1.0 + 15.0 / 7.0 + 0.01].max() == 0.0          # stopped after 15 / 7 s of braking
    up, down = speed_profile("accelerate", T, speed=8, target=20), speed_profile("accelerate", T, speed=20, target=8)
    assert (up[0], up[-1], down[0], down[-1]) == (8, 20, 20, 8)
    assert (speed_profile("constant", T, speed=5.0) == 5.0).all()
    for name in SPEED_PROFILES:
        assert (speed_profile(name, T) >= 0).all() and np.abs(_rate(speed_profile(name, T))).max() <= 7.0 + 1e-9


def test_curvature_profiles_turn_the_way_they_say_and_are_continuous():
    assert (curvature_profile("straight", T) == 0).all()
    left, right = curvature_profile("turn_left", T), curvature_profile("turn_right", T)
    assert left.max() == pytest.approx(0.06) and left.min() == 0.0 and np.array_equal(right, -left)
    u = curvature_profile("u_turn_left", T)
    assert u.max() == pytest.approx(0.1) and (u >= 0).all() and u[0] == 0.0
    assert np.array_equal(curvature_profile("u_turn_right", T), -u)
    for name in CURVATURE_PROFILES:
        k = curvature_profile(name, T)
        assert np.abs(np.diff(k)).max() < 0.01, name                   # no jumps: ramps, not steps
        assert np.abs(k).max() <= 0.1 + 1e-12, name                   # within what the encoder resolves
    # held long enough at walking pace to turn about 180 degrees
    heading = np.sum(u[:-1] * np.diff(T)) * 7.0
    assert heading == pytest.approx(np.pi, rel=0.1)


@pytest.mark.parametrize("call, message", [
    (lambda: speed_profile("warp", T), "speed.profile: unknown profile 'warp'"),
    (lambda: curvature_profile("zigzag", T), "curvature.profile: unknown profile 'zigzag'"),
    (lambda: speed_profile("constant", T, sped=3.0), "speed.sped: not a parameter of profile 'constant'"),
    (lambda: speed_profile("constant", T, speed=float("inf")), "speed.speed: must be a finite number"),
    (lambda: speed_profile("constant", T, speed=-3.0), "negative speed"),
    (lambda: curvature_profile("constant", T, curvature="0.1"), "curvature.curvature: must be a finite number"),
])
def test_bad_profiles_name_the_field(call, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call()
