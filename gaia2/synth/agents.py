"""Moving agents as 3D boxes: cars, vans and buses in lanes, cyclists, pedestrians on sidewalks and
zebra crossings, and cross traffic at a junction while the ego waits at red.

Every agent moves in road coordinates, so it keeps its lane through bends:
- ``follow``: s = s_ego_centre(t) + s0 + v t (same-direction traffic keeping pace with the ego)
- ``along``:  s = s0 + v t                    (oncoming traffic, cyclists, pedestrians on sidewalks)
- ``cross``:  s = s0, d = d0 + v t            (pedestrians on a zebra, cross traffic at a junction)
Placement rejects any agent whose swept track over the clip overlaps another agent in its lane (the
ego included) or enters a blocked zone (past a red stop line, into a roundabout, over an occupied
zebra).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gaia2.synth.motion import EGO_LENGTH
from gaia2.synth.road import Centreline, RoadLayout

CATEGORY_COLOURS: dict[str, tuple[float, float, float]] = {
    "car": (0.16, 0.35, 0.86),        # blue
    "van": (0.93, 0.50, 0.12),        # orange
    "bus": (0.90, 0.80, 0.08),        # yellow
    "cyclist": (0.76, 0.16, 0.76),    # magenta
    "pedestrian": (0.10, 0.74, 0.66),  # teal
}
_SIZE = {  # (l, w, h) mean and +- jitter
    "car": ((4.5, 1.85, 1.50), (0.4, 0.10, 0.10)),
    "van": ((5.4, 2.05, 2.30), (0.4, 0.08, 0.20)),
    "bus": ((11.5, 2.55, 3.40), (1.0, 0.05, 0.60)),
    "cyclist": ((1.8, 0.65, 1.75), (0.1, 0.05, 0.08)),
    "pedestrian": ((0.55, 0.55, 1.72), (0.08, 0.08, 0.14)),
}
BOX_RANGE_M = 60.0
_N_CHECK = 25          # time samples for the overlap checks


@dataclass(frozen=True)
class Agent:
    category: str
    size: tuple[float, float, float]      # l, w, h in metres
    colour: tuple[float, float, float]    # RGB in [0, 1] before lighting
    mode: str                             # follow | along | cross
    s0: float
    v: float
    d0: float
    facing: float                         # yaw relative to the road heading (0 along +s, pi against)


def agent_tracks(agents: tuple[Agent, ...], tau: np.ndarray, ego_centre_s: np.ndarray,
                 centre: Centreline) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Road-frame boxes over time: centre (A, T, 3) at half height, yaw (A, T), size (A, 3)."""
    a, t = len(agents), len(tau)
    xyz, yaw = np.zeros((a, t, 3)), np.zeros((a, t))
    for i, ag in enumerate(agents):
        s, d = _s_d(ag, tau, ego_centre_s)
        x, y, th = centre.pose(s, d)
        xyz[i, :, 0], xyz[i, :, 1], xyz[i, :, 2] = x, y, ag.size[2] / 2
        yaw[i] = th + ag.facing
    size = np.asarray([ag.size for ag in agents], dtype=np.float64).reshape(a, 3)
    return xyz, yaw, size


def _s_d(ag: Agent, tau: np.ndarray, ego_centre_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if ag.mode == "follow":
        return ego_centre_s + ag.s0 + ag.v * tau, np.full_like(tau, ag.d0)
    if ag.mode == "along":
        return ag.s0 + ag.v * tau, np.full_like(tau, ag.d0)
    if ag.mode == "cross":
        return np.full_like(tau, ag.s0), ag.d0 + ag.v * tau
    raise ValueError(f"agent mode {ag.mode!r}: expected follow, along or cross")


@dataclass
class TrafficRules:
    """Where agents may not go during the clip (road s intervals) and what the ego does."""
    stopping: bool                                  # the ego brakes for a red/amber light
    stop_s: float | None                            # stop line (or give-way line)
    zones: list[tuple[float, float]] = field(default_factory=list)   # blocked for along-road traffic


class Population:
    """Draws agents one by one, keeping those that fit (no overlap in a lane, no blocked zone)."""

    def __init__(self, rng: np.random.Generator, duration_s: float, ego_tau: np.ndarray, ego_centre_s: np.ndarray,
                 ego_d: float, rules: TrafficRules):
        self.rng = rng
        self.tau = np.linspace(0.0, duration_s, _N_CHECK)
        self.ego_centre_s = np.interp(self.tau, ego_tau, ego_centre_s)
        self.rules = rules
        self.agents: list[Agent] = []
        speed = np.abs(np.gradient(self.ego_centre_s, self.tau))
        # Following distance behind/ahead of the ego: ~0.9 s of headway, at least 4 m.
        self.ego_gap = 4.0 + 0.9 * float(speed.max())
        # Per lane (keyed by d): swept (s(t), half length, is the ego) tracks.
        self._lanes: dict[float, list[tuple[np.ndarray, float, bool]]] = {
            round(ego_d, 2): [(self.ego_centre_s, EGO_LENGTH / 2, True)]}

    def size(self, category: str) -> tuple[float, float, float]:
        mean, jitter = _SIZE[category]
        u = self.rng.uniform(-1.0, 1.0, 3)
        return tuple(float(m + j * x) for m, j, x in zip(mean, jitter, u))

    def colour(self, category: str) -> tuple[float, float, float]:
        # Shade varies, hue stays: the category stays recognisable from pixels.
        k = float(self.rng.uniform(0.85, 1.0))
        return tuple(c * k for c in CATEGORY_COLOURS[category])

    def try_add(self, ag: Agent, gap_m: float | None = None, check_lane: bool = True, road: bool = True) -> bool:
        """Keep ``ag`` if it fits; ``gap_m``: least bumper gap to others in its lane (default: by speed);
        ``road``: it drives on the carriageway, so the blocked zones apply (not to sidewalk walkers)."""
        s, _ = _s_d(ag, self.tau, self.ego_centre_s)
        if gap_m is None:
            gap_m = 2.5 + 0.6 * float(np.abs(np.diff(s)).max() / (self.tau[1] - self.tau[0]))
        half = ag.size[0] / 2
        if road and ag.mode != "cross":
            for lo, hi in self.rules.zones:
                if np.any((s + half > lo) & (s - half < hi)):
                    return False
        if check_lane and ag.mode != "cross":
            key = round(ag.d0, 2)
            for other_s, other_half, is_ego in self._lanes.get(key, []):
                if np.any(np.abs(s - other_s) < half + other_half + (max(gap_m, self.ego_gap) if is_ego else gap_m)):
                    return False
            self._lanes.setdefault(key, []).append((s, half, False))
        self.agents.append(ag)
        return True


def populate(rng: np.random.Generator, layout: RoadLayout, road_type: str, limit_ms: float, duration_s: float,
             ego_tau: np.ndarray, ego_centre_s: np.ndarray, ego_d: float, rules: TrafficRules,
             junction_s: float | None, cross_width: float, crossroad: bool, zebra_s: float | None,
             zebra_crossers: int) -> tuple[Agent, ...]:
    """All agents of a clip. ``ego_centre_s``: road s of the ego's box centre at ``ego_tau``."""
    pop = Population(rng, duration_s, ego_tau, ego_centre_s, ego_d, rules)
    density = {"urban": 1.3, "suburban": 1.0, "rural": 0.5, "motorway": 1.4}[road_type]
    ego_s0 = float(ego_centre_s[0])
    same = layout.centres("lane", 1) or layout.centres("lane", 0)
    opp = layout.centres("lane", -1)

    def vehicle(bus_lane: bool = False) -> str:
        if bus_lane:
            return "bus" if rng.random() < 0.8 else "cyclist"
        return str(rng.choice(["car", "van", "bus"], p=[0.74, 0.19, 0.07]))

    # Same direction: pace the ego with a per-lane drift (none while everyone waits at a red light).
    for d in same:
        drift = 0.0 if (rules.stopping or abs(d - ego_d) < 0.01) else float(rng.uniform(-1.5, 1.5))
        for _ in range(int(rng.poisson(density * 1.2))):
            cat = vehicle()
            size = pop.size(cat)
            gap = float(rng.uniform(-45.0, 70.0))
            pop.try_add(Agent(cat, size, pop.colour(cat), "follow", gap, drift, d, 0.0))
    for d in layout.centres("bus", 1):
        drift = 0.0 if rules.stopping else float(rng.uniform(-2.0, 1.0))
        for _ in range(int(rng.poisson(0.8))):
            cat = vehicle(bus_lane=True)
            size = pop.size(cat)
            pop.try_add(Agent(cat, size, pop.colour(cat), "follow", float(rng.uniform(-40.0, 60.0)), drift, d, 0.0))
    # Oncoming: each lane at its own speed; queued behind the far stop line while the ego has red.
    for d in opp:
        v = limit_ms * float(rng.uniform(0.7, 1.0))
        n = int(rng.poisson(density * 1.4))
        for k in range(n):
            cat = vehicle()
            size = pop.size(cat)
            if rules.stopping and junction_s is not None:
                s0 = junction_s + cross_width / 2 + 2.0 + size[0] / 2 + k * 7.0 + float(rng.uniform(0, 4))
                pop.try_add(Agent(cat, size, pop.colour(cat), "along", s0, 0.0, d, np.pi), check_lane=True)
            else:
                s0 = ego_s0 + float(rng.uniform(-25.0, 70.0 + v * duration_s))
                pop.try_add(Agent(cat, size, pop.colour(cat), "along", s0, -v, d, np.pi))
    for d in layout.centres("bus", -1):
        for _ in range(int(rng.poisson(0.5))):
            v = limit_ms * float(rng.uniform(0.5, 0.9))
            s0 = ego_s0 + float(rng.uniform(-20.0, 60.0 + v * duration_s))
            cat = "bus"
            pop.try_add(Agent(cat, pop.size(cat), pop.colour(cat), "along", s0, -v, d, np.pi))
    # Cyclists in cycle lanes, both directions.
    for direction in (1, -1):
        for d in layout.centres("cycle", direction):
            for _ in range(int(rng.poisson(1.2))):
                v = float(rng.uniform(3.5, 6.5))
                size = pop.size("cyclist")
                if direction == 1 and rules.stopping and rules.stop_s is not None:
                    s0, v = rules.stop_s - 1.0 - size[0] / 2 - float(rng.uniform(0, 25)), 0.0
                else:
                    s0 = ego_s0 + float(rng.uniform(-30.0, 60.0))
                pop.try_add(Agent("cyclist", size, pop.colour("cyclist"), "along", s0, direction * v, d,
                                  0.0 if direction == 1 else np.pi))
    # Pedestrians on the sidewalks, walking or standing.
    walk_density = {"urban": 4.5, "suburban": 1.5, "rural": 0.0, "motorway": 0.0}[road_type]
    walks = layout.centres("sidewalk")
    for _ in range(int(rng.poisson(walk_density)) if walks else 0):
        # Two walking lines per sidewalk, 0.7 m apart (pedestrians are ~0.55 m wide), clear of kerb poles.
        d = walks[int(rng.integers(len(walks)))] + (0.35 if rng.random() < 0.5 else -0.35)
        v = float(rng.uniform(0.8, 1.6)) * (1 if rng.random() < 0.5 else -1) * (rng.random() > 0.2)
        facing = (0.0 if v >= 0 else np.pi) if v != 0 else float(rng.uniform(-np.pi, np.pi))
        s0 = ego_s0 + float(rng.uniform(-30.0, 80.0))
        pop.try_add(Agent("pedestrian", pop.size("pedestrian"), pop.colour("pedestrian"), "along", s0, v, d, facing),
                    gap_m=0.3, road=False)
    # Pedestrians on the zebra, walking across the carriageway.
    if zebra_s is not None:
        lo, hi = layout.carriageway
        for _ in range(zebra_crossers):
            sign = 1.0 if rng.random() < 0.5 else -1.0
            v = sign * float(rng.uniform(1.0, 1.5))
            d0 = float(rng.uniform(lo - 1.5, hi + 1.5))
            s0 = zebra_s + float(rng.uniform(-1.0, 1.0))
            pop.try_add(Agent("pedestrian", pop.size("pedestrian"), pop.colour("pedestrian"), "cross", s0, v, d0,
                              sign * np.pi / 2))
    # Cross traffic through a crossroad while the ego waits at red: lanes at +-1.75 m from the axis.
    if crossroad and rules.stopping and junction_s is not None:
        for lane_u in (-1.75, 1.75):
            # Driving on the right: the lane nearer the ego (u < 0) heads to +d; mirrored on the left.
            direction = (1.0 if lane_u < 0 else -1.0) * (-layout.side)
            v = float(rng.uniform(7.0, 12.0))
            offsets = np.sort(rng.uniform(-60.0, 60.0, int(rng.integers(1, 4))))
            last = -np.inf
            for off in offsets:
                cat = vehicle()
                size = pop.size(cat)
                if off - last < size[0] + 6.0:
                    continue
                last = off
                pop.try_add(Agent(cat, size, pop.colour(cat), "cross", junction_s + lane_u, direction * v,
                                  float(off) - direction * v * duration_s / 2, direction * np.pi / 2), check_lane=False)
    return tuple(pop.agents)
