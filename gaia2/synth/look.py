"""How time of day and weather look: sky, light, haze, precipitation, skyline.

Colours are display RGB in [0, 1]. Night is dark with the ego's headlights on, dawn/dusk warm and
dim, clouds grey the sky and kill the sun, rain darkens and adds streaks, fog blends everything into
grey within tens of metres, snow whitens the ground and adds flakes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RGB = tuple[float, float, float]

_SKY = {  # time of day -> (horizon, zenith) on a clear day
    "day": ((0.75, 0.83, 0.92), (0.35, 0.55, 0.88)),
    "dawn_dusk": ((0.98, 0.66, 0.42), (0.30, 0.35, 0.58)),
    "night": ((0.07, 0.08, 0.14), (0.01, 0.02, 0.06)),
}
_BRIGHTNESS = {"day": 1.0, "dawn_dusk": 0.62, "night": 0.12}
_OVERCAST = {  # weather -> (grey, how much of the sky it covers)
    "clear": ((0.7, 0.7, 0.7), 0.0), "cloudy": ((0.68, 0.70, 0.73), 0.8), "rain": ((0.45, 0.47, 0.50), 0.9),
    "fog": ((0.72, 0.73, 0.74), 1.0), "snow": ((0.82, 0.83, 0.86), 0.85),
}
_AMBIENT = {"day": (0.62, (1.0, 1.0, 1.0)), "dawn_dusk": (0.45, (1.05, 0.92, 0.82)),
            "night": (0.13, (0.80, 0.86, 1.10))}
_AMBIENT_WEATHER = {"clear": 1.0, "cloudy": 1.15, "rain": 0.85, "fog": 1.05, "snow": 1.25}
_SUN = {"day": (0.55, (1.0, 0.98, 0.92)), "dawn_dusk": (0.35, (1.0, 0.72, 0.48)), "night": (0.0, (0, 0, 0))}
_SUN_WEATHER = {"clear": 1.0, "cloudy": 0.15, "rain": 0.0, "fog": 0.05, "snow": 0.1}
_FOG_DISTANCE = {"clear": 450.0, "cloudy": 320.0, "rain": 130.0, "fog": 30.0, "snow": 110.0}
SKYLINE_BINS = 96


@dataclass(frozen=True)
class Look:
    sky_horizon: RGB
    sky_zenith: RGB
    ambient: RGB                  # diffuse sky light on surfaces (brightness and tint)
    sun: RGB                      # direct light colour x strength (0 at night / overcast)
    sun_dir: tuple[float, float, float]   # road frame, unit, towards the sun
    fog_colour: RGB
    fog_distance: float           # metres: contrast falls as exp(-range / fog_distance)
    headlights: float             # ego headlight strength (night)
    lit_windows: bool             # buildings light some windows (night)
    rain: float                   # streak strength in [0, 1]
    snow: float                   # flake strength in [0, 1]
    ground_snow: float            # how white snow makes the ground
    wet: float                    # darkening of a wet road
    grain: float                  # sensor noise std (night is noisier)
    skyline: np.ndarray           # (SKYLINE_BINS,) silhouette elevation (rad) per world azimuth bin
    skyline_colour: RGB
    texture_seed: int


def build_look(rng: np.random.Generator, time_of_day: str, weather: str, road_type: str) -> Look:
    u = rng.random(6)
    grey, cover = _OVERCAST[weather]
    b = _BRIGHTNESS[time_of_day]
    horizon, zenith = (tuple(float((1 - cover) * c + cover * g * b) for c, g in zip(col, grey))
                       for col in _SKY[time_of_day])
    amb_level, tint = _AMBIENT[time_of_day]
    ambient = tuple(float(amb_level * _AMBIENT_WEATHER[weather] * t) for t in tint)
    sun_level, sun_col = _SUN[time_of_day]
    sun = tuple(float(sun_level * _SUN_WEATHER[weather] * c) for c in sun_col)
    elevation = np.radians(35 + 30 * u[0] if time_of_day == "day" else 5 + 10 * u[0])
    azimuth = 2 * np.pi * u[1]
    sun_dir = (float(np.cos(elevation) * np.cos(azimuth)), float(np.cos(elevation) * np.sin(azimuth)),
               float(np.sin(elevation)))
    fog = _FOG_DISTANCE[weather] * (0.75 + 0.5 * u[2])
    headlights = {"night": 0.7, "dawn_dusk": 0.2, "day": 0.0}[time_of_day] + (0.15 if weather in ("rain", "fog") else 0)
    skyline, sky_col = _skyline(rng, road_type)
    sky_col = tuple(float(c * (0.5 + 0.5 * b)) for c in sky_col)
    return Look(horizon, zenith, ambient, sun, sun_dir, horizon, float(fog), headlights, time_of_day == "night",
                rain=float(0.6 + 0.4 * u[3]) if weather == "rain" else 0.0,
                snow=float(0.6 + 0.4 * u[3]) if weather == "snow" else 0.0,
                ground_snow=0.65 if weather == "snow" else 0.0, wet=0.6 if weather == "rain" else 0.0,
                grain=0.008 + (0.012 if time_of_day == "night" else 0.0) + (0.006 if weather == "rain" else 0.0),
                skyline=skyline, skyline_colour=sky_col, texture_seed=int(rng.integers(2**31)))


def _skyline(rng: np.random.Generator, road_type: str) -> tuple[np.ndarray, RGB]:
    """Distant silhouette over world azimuth: blocky buildings in town, rolling trees and hills outside."""
    az = np.arange(SKYLINE_BINS) * (2 * np.pi / SKYLINE_BINS)
    if road_type == "urban":
        heights = rng.uniform(0.03, 0.17, SKYLINE_BINS) * (rng.random(SKYLINE_BINS) > 0.15)
        return heights, (0.46, 0.43, 0.41)
    k = rng.integers(1, 6, 4)
    phase = rng.uniform(0, 2 * np.pi, 4)
    amp = {"suburban": 0.035, "rural": 0.025, "motorway": 0.02}[road_type]
    hills = amp * (2.0 + sum(np.sin(kk * az + p) for kk, p in zip(k, phase)) / 2)
    bumps = rng.uniform(0, 0.012, SKYLINE_BINS) if road_type == "suburban" else 0.0
    return np.maximum(hills + bumps, 0.0), (0.16, 0.26, 0.12)
