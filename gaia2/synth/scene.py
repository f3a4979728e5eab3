"""One synthetic clip as a plan: drive and clip ids, metadata, road, ego motion, agents, props, look.

Determinism: everything about clip ``i`` comes from ``np.random.default_rng([seed, i])`` (split into
independent streams for road, ego, agents and look) and from its drive's generator
``default_rng([seed, drive, 0xD21E])``; a clip that continues a drive replays the cheap motion plan of
the clips before it in the drive to start where the previous one ended (pose, speed, curvature).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Mapping

import numpy as np

from gaia2.synth.agents import Agent, TrafficRules, agent_tracks, populate
from gaia2.synth.conditions import (apply_overrides, default_speed_limit, sample_drive_conditions, sample_road)
from gaia2.synth.look import Look, build_look
from gaia2.synth.motion import EGO_CENTRE, EGO_FRONT, EgoMotion, road_curvature, speed_profile
from gaia2.synth.regions import LAT_SPAN, LON_SPAN, REGIONS
from gaia2.synth.rigs import RIGS, Rig
from gaia2.synth.road import Centreline, RoadLayout, build_layout

CLIPS_PER_DRIVE = 3
EARTH_RADIUS_M = 6_378_137.0
_DRIVE_TAG = 0xD21E
_RIG_TAG = 0x716
_COUNTRY_TAG = 0xC0
_GOLDEN = (math.sqrt(5) - 1) / 2
_DS = 0.5               # m, centreline sampling
_CROSS_WIDTH = 7.0      # m, asphalt of a crossing road (one lane each way)
_RING = (13.0, 6.5)     # m, roundabout outer / island radius


@dataclass(frozen=True)
class Drive:
    index: int
    rig: Rig
    conditions: dict[str, str]         # country, time_of_day, weather
    origin_latlon: tuple[float, float]
    heading: float                     # world (ENU) heading of the first clip's start, radians from east
    start_time_s: float                # drive clock at the start of its first clip


@dataclass(frozen=True)
class Junction:
    kind: str                 # none | t_junction | crossroad | roundabout (road geometry ahead)
    s: float                  # road s of the crossing road's axis / the roundabout's give-way line
    t_side: int               # T-junction: the side road joins at +d (1) or -d (-1)
    zebra_s: float | None     # centre of a zebra crossing
    stop_s: float | None      # stop line of a light, or the roundabout give-way line
    light: str                # none | red | amber | green
    cross_width: float = _CROSS_WIDTH
    ring: tuple[float, float] = _RING

    @property
    def ring_centre_s(self) -> float:
        return self.s + self.ring[0] + 0.5


@dataclass(frozen=True)
class Prop:
    """A static box in the road frame: light poles and signal heads, trees, lamp posts, planters."""
    centre: tuple[float, float, float]
    size: tuple[float, float, float]
    yaw: float
    colour: tuple[float, float, float]
    material: str = "plain"              # plain | signal (lamps on its -x face) | facade (windows)


@dataclass(frozen=True)
class RoadPlan:
    """What a clip's road and ego motion are: shared by the full plan and the cheap motion chain."""
    metadata: dict[str, str | None]
    road_type: str
    layout: RoadLayout
    centre: Centreline
    ego: EgoMotion
    junction: Junction | None


@dataclass(frozen=True)
class ClipPlan(RoadPlan):
    seed: int
    index: int
    clip_id: str
    drive_id: str
    rig: Rig
    start_time_s: float
    duration_s: float
    agents: tuple[Agent, ...]
    props: tuple[Prop, ...]
    look: Look
    world_start: tuple[float, float, float]    # ENU x, y (m from the drive origin) and heading at tau = 0
    origin_latlon: tuple[float, float]

    def ego_state(self, tau: np.ndarray) -> dict[str, np.ndarray]:
        return self.ego.state(tau)

    def boxes_road(self, tau: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Agents in the road frame at ``tau``: centre (A, T, 3), yaw (A, T), size (A, 3)."""
        ego_s = self.ego.state(tau)["s"]
        return agent_tracks(self.agents, np.asarray(tau, dtype=np.float64), ego_s + EGO_CENTRE, self.centre)

    def to_world(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Road frame -> ENU metres from the drive origin (the ego's start maps to ``world_start``)."""
        return road_to_world(self.world_start, self.ego.d, x, y)

    def latlon(self, east: np.ndarray, north: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Local equirectangular projection about the drive origin."""
        lat0, lon0 = self.origin_latlon
        lat = lat0 + np.degrees(north / EARTH_RADIUS_M)
        lon = lon0 + np.degrees(east / (EARTH_RADIUS_M * math.cos(math.radians(lat0))))
        return lat, lon


def clip_ids(index: int) -> tuple[str, str, int, int]:
    """(clip_id, drive_id, drive index, position in drive) of clip ``index``."""
    if index < 0:
        raise ValueError(f"clip index must be >= 0, got {index}")
    drive, pos = divmod(index, CLIPS_PER_DRIVE)
    return f"drive{drive:04d}-clip{pos:02d}", f"drive{drive:04d}", drive, pos


def drive_of(seed: int, drive: int, country: str | None = None) -> Drive:
    """Drive ``drive`` of ``seed``; ``country`` replaces the drawn one (and moves the drive there)."""
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    rng = np.random.default_rng([seed, drive, _DRIVE_TAG])
    # Rigs rotate over drives (a per-seed order), so any three consecutive drives cover all rigs.
    order = np.random.default_rng([seed, _RIG_TAG]).permutation(len(RIGS))
    rig = list(RIGS.values())[int(order[drive % len(RIGS)])]
    # Countries follow a golden-ratio sequence over drives (per-seed start): the skewed shares hold
    # even for a handful of drives, where independent draws often miss a country.
    start = float(np.random.default_rng([seed, _COUNTRY_TAG]).random())
    cond = sample_drive_conditions(rng, (start + drive * _GOLDEN) % 1.0)
    if country is not None:
        cond["country"] = country
    _, lat_c, lon_c = REGIONS[cond["country"]]
    u = rng.random(4)
    origin = (lat_c + LAT_SPAN * (2 * u[0] - 1), lon_c + LON_SPAN * (2 * u[1] - 1))
    return Drive(drive, rig, cond, origin, 2 * math.pi * u[2], round(60.0 + 3000.0 * u[3], 3))


@dataclass(frozen=True)
class _Motion(RoadPlan):
    """The cheap part of a plan: enough to chain the next clip of the drive."""
    stopping: bool
    world_start: tuple[float, float, float]
    drive: Drive
    streams: tuple[np.random.Generator, np.random.Generator]   # agents, look (unused by the chain)


def _plan_motion(seed: int, index: int, duration_s: float, overrides: Mapping[str, str | None] | None) -> _Motion:
    _, _, drive_idx, pos = clip_ids(index)
    drive = drive_of(seed, drive_idx, (overrides or {}).get("country"))
    if pos == 0:
        v_start, k_start, world_start = None, None, (0.0, 0.0, drive.heading)
    else:
        prev = _plan_motion(seed, index - 1, duration_s, None)
        end = prev.ego.state(np.array([duration_s]))
        ex, ey = road_to_world(prev.world_start, prev.ego.d, end["x"], end["y"])
        v_start, k_start = float(end["speed"][0]), float(end["curvature"][0])
        world_start = (float(ex[0]), float(ey[0]), prev.world_start[2] + float(end["theta"][0]))

    rng_road, rng_ego, rng_agents, rng_look = np.random.default_rng([seed, index]).spawn(4)
    road_type, road_meta = sample_road(rng_road, drive.conditions["country"])
    meta = apply_overrides({**drive.conditions, **road_meta}, overrides)
    layout = build_layout(meta["num_lanes"], meta["one_way"], meta["lane_types"], meta["country"], road_type)

    u = rng_ego.random(6)
    limit_ms = int(meta["speed_limit"] or default_speed_limit(road_type)) / 3.6
    light = meta["traffic_light_state"] or "none"
    stopping = light == "red" or (light == "amber" and u[0] < 0.7)
    profile = speed_profile(rng_ego, duration_s, limit_ms, v_start, stopping)
    ego_lanes = layout.centres("lane", 1) or layout.centres("lane", 0)
    ego_d = float(ego_lanes[int(u[1] * len(ego_lanes))])

    # Where the junction goes, in ego path length: at the eventual stop, or ahead of the clip's end.
    dist_end = float(np.interp(duration_s, profile.tau, profile.distance))
    intersection = meta["intersection_type"] or "none"
    has_junction = intersection != "none" or meta["pedestrian_crossing"] == "yes" or light != "none"
    if stopping:
        line_dist = profile.stop_distance + EGO_FRONT + 0.8 + 1.7 * u[2]
    else:
        v_end = float(np.interp(duration_s, profile.tau, profile.speed))
        line_dist = dist_end + EGO_FRONT + 6.0 + 24.0 * u[2] + v_end * u[3]

    s_lo, s_hi = -150.0, 1.3 * max(dist_end, line_dist) + 260.0
    s = s_lo + _DS * np.arange(int((s_hi - s_lo) / _DS) + 1)
    kappa = road_curvature(rng_road, s, road_type, float(profile.speed.max()), k_start,
                           line_dist if has_junction else None)
    centre = Centreline.from_curvature(s_lo, _DS, kappa)
    ego = EgoMotion.build(profile, centre, ego_d)

    junction = None
    if has_junction:
        stop_s = float(ego.s_of_distance(line_dist))
        if intersection in ("crossroad", "t_junction"):
            zebra = stop_s + 2.5 if meta["pedestrian_crossing"] == "yes" else None
            j_s = stop_s + (5.0 if zebra is not None else 1.0) + _CROSS_WIDTH / 2
        elif intersection == "roundabout":
            zebra = stop_s - 4.0 if meta["pedestrian_crossing"] == "yes" else None
            j_s = stop_s
        else:   # a (signalised) pedestrian crossing on an open road
            zebra = stop_s + 2.5 if meta["pedestrian_crossing"] == "yes" else None
            j_s = stop_s + 2.5
        t_side = 1 if u[4] < 0.5 else -1
        junction = Junction(intersection, j_s, t_side, zebra, stop_s, light)
    return _Motion(meta, road_type, layout, centre, ego, junction, stopping, world_start, drive,
                   (rng_agents, rng_look))


def road_to_world(world_start: tuple[float, float, float], ego_d: float, x: np.ndarray,
                  y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Road frame -> ENU metres: the ego's start, road frame (0, ego_d), maps to ``world_start``."""
    x0, y0, psi = world_start
    ex, ey = x, y - ego_d
    c, s = math.cos(psi), math.sin(psi)
    return x0 + c * ex - s * ey, y0 + s * ex + c * ey


def plan_clip(seed: int, index: int, duration_s: float = 4.0,
              overrides: Mapping[str, str | None] | None = None) -> ClipPlan:
    """The full plan of clip ``index``; ``overrides`` pins metadata values (tests, what-if renders)."""
    if not duration_s > 0:
        raise ValueError(f"duration_s must be positive, got {duration_s}")
    clip_id, drive_id, _, pos = clip_ids(index)
    m = _plan_motion(seed, index, duration_s, overrides)
    drive = m.drive
    rng_agents, rng_look = m.streams
    meta, j = m.metadata, m.junction
    limit_ms = int(meta["speed_limit"] or default_speed_limit(m.road_type)) / 3.6

    rules = TrafficRules(m.stopping, j.stop_s if j else None)
    crossers = 0
    if j is not None:
        if j.zebra_s is not None:
            crossers = int(rng_agents.integers(0, 4))
            if crossers:
                rules.zones.append((j.zebra_s - 2.5, j.zebra_s + 2.5))
        if m.stopping and j.stop_s is not None:
            far = j.s + j.cross_width / 2 + 1.0 if j.kind in ("crossroad", "t_junction") else j.s + 4.0
            rules.zones.append((j.stop_s, far))
        if j.kind == "roundabout":
            rules.zones.append((j.s - 1.0, np.inf))
    tau = m.ego.profile.tau
    ego_centre_s = m.ego.state(tau)["s"] + EGO_CENTRE
    agents = populate(rng_agents, m.layout, m.road_type, limit_ms, duration_s, tau, ego_centre_s, m.ego.d, rules,
                      j.s if j and j.kind in ("crossroad", "t_junction") else None, _CROSS_WIDTH,
                      bool(j and j.kind == "crossroad"), j.zebra_s if j else None, crossers)
    props = _props(rng_look, m, float(ego_centre_s[-1]))
    look = build_look(rng_look, meta["time_of_day"] or "day", meta["weather"] or "clear", m.road_type)
    start = drive.start_time_s + pos * duration_s
    road = {f.name: getattr(m, f.name) for f in fields(RoadPlan)}
    return ClipPlan(**road, seed=seed, index=index, clip_id=clip_id, drive_id=drive_id, rig=drive.rig,
                    start_time_s=round(start, 6), duration_s=duration_s, agents=agents, props=props, look=look,
                    world_start=m.world_start, origin_latlon=drive.origin_latlon)


_POLE = (0.22, 0.22, 0.24)
_HEAD = (0.07, 0.07, 0.08)


def _props(rng: np.random.Generator, m: _Motion, ego_end_s: float) -> tuple[Prop, ...]:
    """Traffic-light poles and heads, a roundabout planter, buildings in town, lamp posts or trees."""
    props: list[Prop] = []
    layout, j, centre = m.layout, m.junction, m.centre
    lo, hi = layout.carriageway
    kerb = hi if layout.side > 0 else lo        # the ego's kerb (left in GB, right elsewhere)
    out = 1.0 if layout.side > 0 else -1.0       # outward from the carriageway at the ego's kerb

    def put(s: float, d: float, z: float, size, colour, material: str = "plain", yaw: float = 0.0) -> None:
        x, y, th = centre.pose(np.array([s]), np.array([d]))
        props.append(Prop((float(x[0]), float(y[0]), z), tuple(size), float(th[0]) + yaw, colour, material))

    if j is not None and j.light != "none" and j.stop_s is not None:
        # Near side: a pole at the kerb by the stop line, head at 3.4 m facing the ego.
        d_pole = kerb + out * 0.3
        put(j.stop_s + 0.3, d_pole, 1.6, (0.2, 0.2, 3.2), _POLE)
        put(j.stop_s + 0.3, d_pole - out * 0.05, 3.9, (0.45, 1.0, 2.6), _HEAD, "signal")
        # Far side: a mast arm over the ego's lanes, head at ~5.6 m.
        far_s = (j.s + j.cross_width / 2 + 2.5) if j.kind in ("crossroad", "t_junction") else j.stop_s + 7.0
        lane_d = m.ego.d
        put(far_s, d_pole, 3.2, (0.3, 0.3, 6.4), _POLE)
        arm_len = abs(d_pole - lane_d) + 0.6
        put(far_s, (d_pole + lane_d) / 2 - out * 0.3, 6.55, (0.2, arm_len, 0.2), _POLE)
        put(far_s, lane_d, 5.1, (0.45, 1.0, 2.6), _HEAD, "signal")
    if j is not None and j.kind == "roundabout":
        put(j.ring_centre_s, 0.0, 0.6, (5.0, 5.0, 1.2), (0.20, 0.40, 0.16))
    if m.road_type == "urban":
        props += _buildings(rng, m, ego_end_s)
    if m.road_type in ("urban", "suburban", "rural"):
        u = rng.random(16)
        verge = [e for e in (lo - 3.6, hi + 3.6)] if m.road_type != "rural" else [lo - 2.5, hi + 2.5]
        for k in range(6):
            s = -30.0 + (ego_end_s + 90.0) * (k + u[k]) / 6
            d = verge[k % 2] + (u[6 + k] - 0.5)
            if j is not None and _in_junction(j, s):
                continue
            if m.road_type == "urban":
                put(s, d, 3.0, (0.2, 0.2, 6.0), _POLE)
            else:
                put(s, d, 1.25, (0.35, 0.35, 2.5), (0.30, 0.22, 0.14))
                put(s, d, 3.9, (2.6, 2.6, 2.8), (0.12 + 0.1 * u[12 + k % 4], 0.30, 0.10))
    return tuple(props)


_FACADES = ((0.55, 0.30, 0.22), (0.62, 0.62, 0.60), (0.72, 0.64, 0.50), (0.45, 0.50, 0.56), (0.80, 0.78, 0.74),
            (0.36, 0.34, 0.33))


def _buildings(rng: np.random.Generator, m: _Motion, ego_end_s: float) -> list[Prop]:
    """Street-front buildings behind both sidewalks: one row of blocks per side, with gaps."""
    layout, centre, j = m.layout, m.centre, m.junction
    walk = [e for e, k in zip(layout.edges[1:], layout.kinds) if k == "sidewalk"]
    lo_walk = min(layout.edges[i] for i, k in enumerate(layout.kinds) if k == "sidewalk")
    hi_walk = max(walk)
    out: list[Prop] = []
    for side, face in ((-1.0, lo_walk), (1.0, hi_walk)):
        setback = 1.3 + 2.7 * float(rng.random())      # leaves the verge to lamp posts
        s = -50.0 + 10.0 * float(rng.random())
        while s < ego_end_s + 90.0:
            length = float(rng.uniform(10.0, 28.0))
            kappa = abs(float(centre.sample(centre.kappa, np.array([s + length / 2]))[0]))
            length = min(length, math.sqrt(4.0 / max(kappa, 1e-6)))   # straight blocks on a bend
            height = float(rng.uniform(7.0, 24.0))
            depth = 12.0
            colour = tuple(c * float(rng.uniform(0.85, 1.05)) for c in _FACADES[int(rng.integers(len(_FACADES)))])
            empty = rng.random() < 0.15
            mid = s + length / 2
            if not empty and not (j is not None and _in_junction(j, mid, length / 2)):
                sag = length * length * kappa / 8            # keep the chord off the sidewalk on a bend
                d = face + side * (setback + sag + depth / 2)
                x, y, th = centre.pose(np.array([mid]), np.array([d]))
                out.append(Prop((float(x[0]), float(y[0]), height / 2), (length, depth, height), float(th[0]),
                                colour, "facade"))
            s += length + float(rng.uniform(0.5, 4.0))
    return out


def _in_junction(j: Junction, s: float, half_length: float = 0.0) -> bool:
    """Whether road positions ``s`` +- ``half_length`` touch the crossing road or the roundabout."""
    if j.kind in ("crossroad", "t_junction"):
        return abs(s - j.s) < j.cross_width / 2 + 3.5 + half_length
    if j.kind == "roundabout":
        return j.s - 2.0 - half_length < s < j.s + 2 * j.ring[0] + 3.0 + half_length
    return False
