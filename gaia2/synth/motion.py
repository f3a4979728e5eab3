"""Ego motion: a speed profile in time and a road curvature profile in distance, integrated together.

The ego keeps its lane: it drives at a fixed lateral offset ``d`` from the road's reference line, so
its path curvature is kappa / (1 - kappa d) and its heading is the road heading. Speeds are smooth
(|accel| <~ 3 m/s^2), consistent with the posted limit, and stop before a red light.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gaia2.synth.road import Centreline

KAPPA_MAX = 0.03            # 1/m, the tightest bend a clip may have
LATERAL_ACCEL_MAX = 2.5     # m/s^2: bends are gentler at speed
EGO_REAR_OVERHANG = 1.0     # the ego origin is the rear axle; its box is 4.7 m long
EGO_LENGTH = 4.7
EGO_CENTRE = EGO_LENGTH / 2 - EGO_REAR_OVERHANG     # 1.35 m ahead of the rear axle
EGO_FRONT = EGO_LENGTH - EGO_REAR_OVERHANG          # 3.7 m
_DT = 0.01                  # s, internal integration step
_KAPPA_RANGE = {"urban": 0.03, "suburban": 0.015, "rural": 0.008, "motorway": 0.002}
_WAVELENGTH = {"urban": (90.0, 300.0), "suburban": (150.0, 450.0), "rural": (200.0, 600.0),
               "motorway": (800.0, 2500.0)}


@dataclass(frozen=True)
class SpeedProfile:
    tau: np.ndarray         # (n,) seconds from clip start, step _DT, covering the clip
    speed: np.ndarray       # (n,) m/s
    distance: np.ndarray    # (n,) metres along the ego path
    stop_distance: float    # where a stopping ego comes to rest (inf when not stopping)

    def at(self, tau: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(speed, distance) at ``tau`` (seconds from the clip start)."""
        return np.interp(tau, self.tau, self.speed), np.interp(tau, self.tau, self.distance)


def speed_profile(rng: np.random.Generator, duration_s: float, limit_ms: float, v_start: float | None,
                  stopping: bool) -> SpeedProfile:
    """Smooth speed for ``duration_s`` seconds (+ a margin): cruise near the limit, or brake to a stop.

    Always draws the same number of random values, so later draws do not depend on the branch.
    """
    u = rng.random(6)
    cruise = limit_ms * (0.72 + 0.28 * u[0])
    v0 = cruise * (0.6 + 0.45 * u[1]) if v_start is None else float(v_start)
    tau = np.arange(int(np.ceil((duration_s + 0.2) / _DT)) + 1) * _DT
    if stopping:
        decel = 2.2 + 1.3 * u[2]
        t_stop = max(1.5 * v0 / decel, 1e-3)                   # smoothstep: peak decel = 1.5 v0 / t_stop
        t_roll = max(0.0, duration_s - t_stop) * 0.5 * u[3]    # a short roll before braking, if time allows
        x = np.clip((tau - t_roll) / t_stop, 0.0, 1.0)
        speed = v0 * (1.0 - x * x * (3.0 - 2.0 * x)) if v0 > 0.3 else np.zeros_like(tau)
        stop = v0 * (t_roll + t_stop / 2) if v0 > 0.3 else 0.0
    else:
        t_a = max(1.5, abs(v0 - cruise) / 2.0)                 # approach the cruise speed at <= ~2 m/s^2
        wobble = 0.4 * np.sin(2 * np.pi * tau / (3.0 + 3.0 * u[4]) + 2 * np.pi * u[5]) * (1 - np.exp(-tau))
        speed = np.maximum(cruise + (v0 - cruise) * np.exp(-tau / t_a) + wobble, 0.0)
        stop = float("inf")
    distance = np.concatenate([[0.0], np.cumsum((speed[1:] + speed[:-1]) * (_DT / 2))])
    return SpeedProfile(tau, speed, distance, stop)


def road_curvature(rng: np.random.Generator, s: np.ndarray, road_type: str, v_max: float,
                   kappa_start: float | None, flat_at: float | None) -> np.ndarray:
    """(n,) curvature of the road's reference line at arc lengths ``s``.

    A sum of three sinusoids in distance (bends of realistic length), bounded by the road type and by
    lateral acceleration at ``v_max``; it starts at ``kappa_start`` (continuity with the previous
    clip) and is straight for ~60 m around a junction at ``flat_at``.
    """
    u = rng.random(10)
    lo, hi = _WAVELENGTH[road_type]
    wavelengths = lo + (hi - lo) * u[:3]
    phases = 2 * np.pi * u[3:6]
    amps = 0.3 + 0.7 * u[6:9]
    kappa = sum(a * np.sin(2 * np.pi * s / lam + p) for a, lam, p in zip(amps, wavelengths, phases))
    bound = min(_KAPPA_RANGE[road_type], LATERAL_ACCEL_MAX / max(v_max, 1.0) ** 2)
    straight = u[9] < 0.25
    kappa = kappa / max(np.abs(kappa).max(), 1e-9) * bound * (0.05 if straight else 0.35 + 0.65 * u[9])
    if kappa_start is not None:
        k0 = float(np.interp(0.0, s, kappa))
        kappa = kappa + (np.clip(kappa_start, -bound, bound) - k0) * np.exp(-np.abs(s) / 40.0)
    if flat_at is not None:
        x = np.clip((np.abs(s - flat_at) - 60.0) / 60.0, 0.0, 1.0)
        kappa = kappa * (x * x * (3 - 2 * x))
    return np.clip(kappa, -KAPPA_MAX, KAPPA_MAX)


@dataclass(frozen=True)
class EgoMotion:
    """The ego's path on the road: road arc length ``s`` of the rear axle over time, at lane offset ``d``."""
    profile: SpeedProfile
    centre: Centreline
    d: float
    sigma: np.ndarray    # (n_s,) ego path length from s = 0 at each centreline sample (monotonic)

    @classmethod
    def build(cls, profile: SpeedProfile, centre: Centreline, d: float) -> "EgoMotion":
        s = centre.s0 + centre.ds * np.arange(len(centre.kappa))
        stretch = 1.0 - centre.kappa * d     # d(path length)/ds of the lane at offset d
        if np.any(stretch <= 0.1):
            raise ValueError(f"lane offset {d:.1f} m is beyond the centre of curvature of the road")
        sigma = np.concatenate([[0.0], np.cumsum((stretch[1:] + stretch[:-1]) * (centre.ds / 2))])
        sigma -= np.interp(0.0, s, sigma)
        return cls(profile, centre, d, sigma)

    def s_of_distance(self, distance: np.ndarray | float) -> np.ndarray:
        s = self.centre.s0 + self.centre.ds * np.arange(len(self.centre.kappa))
        return np.interp(distance, self.sigma, s)

    def state(self, tau: np.ndarray) -> dict[str, np.ndarray]:
        """Ego at ``tau``: road s, road-frame x, y, heading theta, speed, path curvature."""
        tau = np.asarray(tau, dtype=np.float64)
        speed, dist = self.profile.at(tau)
        s = self.s_of_distance(dist)
        x, y, theta = self.centre.pose(s, self.d)
        k = self.centre.sample(self.centre.kappa, s)
        return {"s": s, "x": x, "y": y, "theta": theta, "speed": speed, "curvature": k / (1.0 - k * self.d)}
