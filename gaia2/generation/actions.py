"""Named ego-action profiles (paper §6.1, Fig. 8: "start from stopped", "slow to a stop", a U-turn) as speed
(m/s) and curvature (1/m) over time, each on its own: a request may give either without the other (the
one left out is unknown, exactly as dropped in training).

    speed_profile("start_from_stop", times, speed=12.0)       # (len(times),) m/s
    curvature_profile("u_turn_left", times)                    # (len(times),) 1/m, left > 0

Times are seconds from the start of the generated clip. Evaluate a profile at each camera frame's time and
average per latent (``gaia2.world_model.sample.per_latent``), as training brings actions to the latent rate.
Curvature is positive to the left (heading turns counter-clockwise, x forward, y left), as in the shards.
Every profile is continuous, and ramps keep |acceleration| and the change of curvature physical.
"""

from __future__ import annotations

import inspect
from typing import Callable

import numpy as np

Profile = Callable[..., np.ndarray]


def _ramp(t: np.ndarray, start: float, duration: float) -> np.ndarray:
    """0 before ``start``, 1 after ``start + duration``, smoothstep in between (continuous slope)."""
    x = np.clip((t - start) / max(duration, 1e-9), 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _trapezoid(t: np.ndarray, start: float, hold: float, ramp: float) -> np.ndarray:
    """0 -> 1 over ``ramp`` from ``start``, 1 for ``hold`` seconds, 1 -> 0 over ``ramp``."""
    return _ramp(t, start, ramp) - _ramp(t, start + ramp + hold, ramp)


def _constant(t: np.ndarray, speed: float = 10.0) -> np.ndarray:
    return np.full(t.shape, float(speed))


def _start_from_stop(t: np.ndarray, speed: float = 12.0, accel: float = 2.0, start_s: float = 1.0) -> np.ndarray:
    """Standing until ``start_s``, then accelerating at ``accel`` m/s^2 up to ``speed``."""
    return np.clip(accel * (t - start_s), 0.0, speed)


def _slow_to_stop(t: np.ndarray, speed: float = 12.0, decel: float = 2.5, start_s: float = 1.0) -> np.ndarray:
    """``speed`` until ``start_s``, then braking at ``decel`` m/s^2 to a stop, and standing."""
    return np.clip(speed - decel * (t - start_s), 0.0, speed)


def _hard_brake(t: np.ndarray, speed: float = 15.0, decel: float = 7.0, start_s: float = 1.0) -> np.ndarray:
    """An emergency stop: ``slow_to_stop`` at about 0.7 g."""
    return _slow_to_stop(t, speed, decel, start_s)


def _accelerate(t: np.ndarray, speed: float = 8.0, target: float = 20.0, accel: float = 2.0,
                start_s: float = 1.0) -> np.ndarray:
    """``speed`` until ``start_s``, then accelerating (or slowing) at ``accel`` m/s^2 to ``target``."""
    lo, hi = sorted((speed, target))
    return np.clip(speed + np.sign(target - speed) * accel * np.maximum(t - start_s, 0.0), lo, hi)


def _straight(t: np.ndarray) -> np.ndarray:
    return np.zeros(t.shape)


def _constant_curvature(t: np.ndarray, curvature: float = 0.01) -> np.ndarray:
    return np.full(t.shape, float(curvature))


def _turn(t: np.ndarray, curvature: float, start_s: float, hold_s: float, ramp_s: float) -> np.ndarray:
    return curvature * _trapezoid(t, start_s, hold_s, ramp_s)


def _turn_left(t: np.ndarray, curvature: float = 0.06, start_s: float = 0.5, hold_s: float = 2.0,
               ramp_s: float = 0.5) -> np.ndarray:
    """A left turn at an intersection: curvature ramps up to ``curvature`` (1/m), holds, ramps back to 0."""
    return _turn(t, abs(curvature), start_s, hold_s, ramp_s)


def _turn_right(t: np.ndarray, curvature: float = 0.06, start_s: float = 0.5, hold_s: float = 2.0,
                ramp_s: float = 0.5) -> np.ndarray:
    return _turn(t, -abs(curvature), start_s, hold_s, ramp_s)


def _u_turn_left(t: np.ndarray, curvature: float = 0.1, start_s: float = 0.5, hold_s: float = 4.0,
                 ramp_s: float = 0.5) -> np.ndarray:
    """A U-turn to the left: the tightest curvature the conditioning encodes (0.1 1/m, a 10 m radius) held long
    enough at walking pace to turn about 180 degrees (paper Fig. 8 pairs it with a slow ramping speed)."""
    return _turn(t, abs(curvature), start_s, hold_s, ramp_s)


def _u_turn_right(t: np.ndarray, curvature: float = 0.1, start_s: float = 0.5, hold_s: float = 4.0,
                  ramp_s: float = 0.5) -> np.ndarray:
    return _turn(t, -abs(curvature), start_s, hold_s, ramp_s)


SPEED_PROFILES: dict[str, Profile] = {"constant": _constant, "start_from_stop": _start_from_stop,
                                      "slow_to_stop": _slow_to_stop, "hard_brake": _hard_brake,
                                      "accelerate": _accelerate}
CURVATURE_PROFILES: dict[str, Profile] = {"straight": _straight, "constant": _constant_curvature,
                                          "turn_left": _turn_left, "turn_right": _turn_right,
                                          "u_turn_left": _u_turn_left, "u_turn_right": _u_turn_right}


def _evaluate(kind: str, profiles: dict[str, Profile], name: str, times: np.ndarray, params: dict) -> np.ndarray:
    if name not in profiles:
        raise ValueError(f"{kind}.profile: unknown profile {name!r}; choose one of {sorted(profiles)}")
    fn = profiles[name]
    allowed = list(inspect.signature(fn).parameters)[1:]   # after the times
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"{kind}.{unknown[0]}: not a parameter of profile {name!r} (it takes {list(allowed)})")
    bad = [k for k, v in params.items() if not (isinstance(v, (int, float)) and np.isfinite(v))]
    if bad:
        raise ValueError(f"{kind}.{bad[0]}: must be a finite number, got {params[bad[0]]!r}")
    t = np.asarray(times, np.float64)
    if not np.isfinite(t).all():
        raise ValueError(f"{kind}: times must be finite seconds")
    return fn(t, **params)


def speed_profile(name: str, times: np.ndarray, **params: float) -> np.ndarray:
    """Speed (m/s, >= 0) of the named profile at ``times`` (s); ``params`` override the profile's defaults."""
    out = _evaluate("speed", SPEED_PROFILES, name, times, params)
    if (out < 0).any():
        raise ValueError(f"speed: profile {name!r} with {params} gives a negative speed")
    return out


def curvature_profile(name: str, times: np.ndarray, **params: float) -> np.ndarray:
    """Curvature (1/m, left > 0) of the named profile at ``times`` (s); ``params`` override its defaults."""
    return _evaluate("curvature", CURVATURE_PROFILES, name, times, params)
