"""The synthetic metadata distribution: a skewed joint over every vocabulary variable.

Real fleets see clear daytime city driving far more often than fog at night; the synthetic drop is
skewed the same way so that balancing has something to flatten. Country, time of day and weather
belong to the drive; the road variables belong to the clip. A hidden road type (urban, suburban,
rural, motorway) ties speed limit, lanes, junctions and crossings together.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from gaia2.schema.metadata import METADATA_KEYS, VOCABULARY

ROAD_TYPES = ("urban", "suburban", "rural", "motorway")

_COUNTRY = {"GB": 0.45, "US": 0.35, "DE": 0.20}
_TIME = {"day": 0.68, "dawn_dusk": 0.18, "night": 0.14}
_WEATHER = {
    "GB": {"clear": 0.33, "cloudy": 0.37, "rain": 0.20, "fog": 0.06, "snow": 0.04},
    "US": {"clear": 0.62, "cloudy": 0.23, "rain": 0.10, "fog": 0.04, "snow": 0.01},
    "DE": {"clear": 0.40, "cloudy": 0.30, "rain": 0.15, "fog": 0.07, "snow": 0.08},
}
_ROAD = {"urban": 0.50, "suburban": 0.25, "rural": 0.13, "motorway": 0.12}
# Posted limits in km/h bins (mph limits rounded as at ingest: 20 mph -> 30, 30 mph -> 50, 70 mph -> 120).
_SPEED = {
    "GB": {"urban": {"30": 0.55, "50": 0.40, "20": 0.05}, "suburban": {"50": 0.3, "60": 0.4, "70": 0.3},
           "rural": {"80": 0.3, "100": 0.7}, "motorway": {"120": 1.0}},
    "US": {"urban": {"40": 0.6, "50": 0.3, "30": 0.1}, "suburban": {"50": 0.3, "60": 0.4, "70": 0.3},
           "rural": {"80": 0.6, "100": 0.4}, "motorway": {"100": 0.5, "120": 0.5}},
    "DE": {"urban": {"50": 0.6, "30": 0.35, "20": 0.05}, "suburban": {"50": 0.4, "60": 0.2, "70": 0.4},
           "rural": {"100": 0.8, "80": 0.2}, "motorway": {"130": 0.5, "120": 0.3, "100": 0.2}},
}
_LANES = {"urban": {"1": 0.18, "2": 0.52, "3": 0.12, "4": 0.18}, "suburban": {"2": 0.6, "3": 0.15, "4": 0.25},
          "rural": {"1": 0.08, "2": 0.92}, "motorway": {"2": 0.3, "3": 0.45, "4": 0.2, "5+": 0.05}}
_LANE_TYPES = {"GB": {"none": 0.55, "bus": 0.30, "cycle": 0.08, "bus_and_cycle": 0.07},
               "US": {"none": 0.70, "bus": 0.12, "cycle": 0.12, "bus_and_cycle": 0.06},
               "DE": {"none": 0.55, "bus": 0.10, "cycle": 0.27, "bus_and_cycle": 0.08}}
_CROSSING = {"urban": 0.35, "suburban": 0.15, "rural": 0.03, "motorway": 0.0}
_INTERSECTION = {
    "urban": {"GB": {"none": 0.42, "t_junction": 0.22, "crossroad": 0.20, "roundabout": 0.16},
              "US": {"none": 0.40, "t_junction": 0.20, "crossroad": 0.36, "roundabout": 0.04},
              "DE": {"none": 0.45, "t_junction": 0.22, "crossroad": 0.25, "roundabout": 0.08}},
    "suburban": {"none": 0.60, "t_junction": 0.20, "crossroad": 0.10, "roundabout": 0.10},
    "rural": {"none": 0.85, "t_junction": 0.10, "roundabout": 0.05},
    "motorway": {"none": 1.0},
}
_LIGHT = {"crossroad": {"none": 0.25, "red": 0.33, "amber": 0.07, "green": 0.35},
          "t_junction": {"none": 0.55, "red": 0.18, "amber": 0.05, "green": 0.22},
          "crossing": {"none": 0.60, "red": 0.20, "amber": 0.04, "green": 0.16}}
MISSING_SPEED_LIMIT_P = 0.03   # some clips carry no posted limit: exercises the ``unknown`` id


def _pick(table: Mapping[str, float], x: float) -> str:
    """The value of ``table`` (value -> weight) at quantile ``x`` in [0, 1)."""
    keys = list(table)
    cdf = np.cumsum([table[k] for k in keys])
    return keys[min(int(np.searchsorted(cdf / cdf[-1], x, side="right")), len(keys) - 1)]


def sample_drive_conditions(rng: np.random.Generator, country_quantile: float | None = None) -> dict[str, str]:
    """Country, time of day and weather of a drive (fog is rarer at night). ``country_quantile`` in
    [0, 1) picks the country instead of a random draw."""
    u = rng.random(3)
    country = _pick(_COUNTRY, u[0] if country_quantile is None else country_quantile)
    time_of_day = _pick(_TIME, u[1])
    weather = dict(_WEATHER[country])
    if time_of_day == "night":
        weather["fog"] *= 0.35
    return {"country": country, "time_of_day": time_of_day, "weather": _pick(weather, u[2])}


def sample_road(rng: np.random.Generator, country: str) -> tuple[str, dict[str, str | None]]:
    """(hidden road type, the clip's road metadata). Every draw happens whatever the outcome, so the
    random stream after this call does not depend on the values drawn."""
    u = rng.random(9)
    road_type = _pick(_ROAD, u[0])
    speed = _pick(_SPEED[country][road_type], u[1]) if u[8] >= MISSING_SPEED_LIMIT_P else None
    lanes = _pick(_LANES[road_type], u[2])
    one_way_p = 1.0 if road_type == "motorway" else {"urban": 0.6 if lanes == "1" else 0.12,
                                                     "suburban": 0.05, "rural": 0.0}[road_type]
    one_way = "yes" if u[3] < one_way_p else "no"
    if road_type == "urban":
        lane_types = _pick(_LANE_TYPES[country], u[4])
    elif road_type == "suburban":
        lane_types = _pick({"none": 0.8, "cycle": 0.15, "bus": 0.05}, u[4])
    else:
        lane_types = "none"
    crossing = "yes" if u[5] < _CROSSING[road_type] else "no"
    table = _INTERSECTION[road_type]
    intersection = _pick(table[country] if road_type == "urban" else table, u[6])
    if intersection in ("crossroad", "t_junction"):
        light = _pick(_LIGHT[intersection], u[7])
    elif intersection == "none" and crossing == "yes":
        light = _pick(_LIGHT["crossing"], u[7])
    else:
        light = "none"
    meta = {"speed_limit": speed, "num_lanes": lanes, "lane_types": lane_types, "pedestrian_crossing": crossing,
            "traffic_light_state": light, "one_way": one_way, "intersection_type": intersection}
    return road_type, meta


def apply_overrides(metadata: dict[str, str | None],
                    overrides: Mapping[str, str | None] | None) -> dict[str, str | None]:
    """Replace drawn values by ``overrides`` (tests pin a scene's conditions); names and values are checked."""
    out = dict(metadata)
    for name, value in (overrides or {}).items():
        if name not in VOCABULARY:
            raise ValueError(f"override {name!r}: not a metadata variable; choose from {list(METADATA_KEYS)}")
        if value is not None and value not in VOCABULARY[name][1:]:
            raise ValueError(f"override {name}={value!r}: allowed {list(VOCABULARY[name][1:])}")
        out[name] = value
    return out


def default_speed_limit(road_type: str) -> str:
    """Limit assumed for driving when the clip carries none."""
    return {"urban": "50", "suburban": "60", "rural": "80", "motorway": "120"}[road_type]
