"""Road model: the cross-section (lanes, markings, sidewalks) and the centreline it is swept along.

Road coordinates (s, d): s is arc length along the reference line, d the lateral offset from it,
left positive. The road frame is the plane the reference line lives in: s = 0 at the origin,
heading 0 along +x there. Vehicles keep left in GB, right in the US and Germany: the ego's lanes lie
on that side of the reference line (``RoadLayout.side``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LANE_W = 3.5
BUS_W = 3.3
CYCLE_W = 1.6
KERB_W = 0.25

# Surface colours, RGB in [0, 1] before lighting.
ASPHALT = (0.30, 0.30, 0.32)
BUS_RED = (0.58, 0.20, 0.18)
CYCLE_GREEN = (0.22, 0.52, 0.30)
KERB = (0.72, 0.72, 0.70)
SIDEWALK = (0.58, 0.56, 0.53)
GRASS = (0.26, 0.42, 0.17)
VERGE_URBAN = (0.50, 0.44, 0.36)
WHITE = (0.93, 0.93, 0.91)
YELLOW = (0.92, 0.74, 0.12)

SURFACE = {"lane": ASPHALT, "bus": BUS_RED, "cycle": CYCLE_GREEN, "shoulder": ASPHALT, "kerb": KERB,
            "sidewalk": SIDEWALK, "grass": GRASS, "verge": VERGE_URBAN}
CARRIAGEWAY_KINDS = ("lane", "bus", "cycle", "shoulder")


@dataclass(frozen=True)
class Marking:
    d: float              # lateral position of the line centre
    half_width: float
    period: float         # dash period along s (solid lines: 0)
    dash: float           # painted length per period
    colour: tuple[float, float, float]


@dataclass(frozen=True)
class RoadLayout:
    """Cross-section: strips between ``edges`` (ascending d), each of a kind and a travel direction."""
    edges: np.ndarray                 # (K + 1,) d of strip boundaries, ascending
    kinds: tuple[str, ...]            # (K,) lane | bus | cycle | shoulder | kerb | sidewalk | grass | verge
    directions: tuple[int, ...]       # (K,) +1 with the ego, -1 oncoming, 0 shared / not a lane
    markings: tuple[Marking, ...]     # ascending d
    side: int                         # +1: ego lanes left of the reference line (keep left), -1: right

    @property
    def carriageway(self) -> tuple[float, float]:
        """(d_min, d_max) of the drivable surface."""
        return _span(self.edges, self.kinds)

    def centres(self, kind: str, direction: int | None = None) -> list[float]:
        """Centre d of every strip of ``kind`` (and ``direction``), from the reference line outwards."""
        out = [(self.edges[i] + self.edges[i + 1]) / 2 for i, k in enumerate(self.kinds)
               if k == kind and (direction is None or self.directions[i] == direction)]
        return sorted(out, key=abs)


def build_layout(num_lanes: str | None, one_way: str | None, lane_types: str | None, country: str | None,
                 road_type: str) -> RoadLayout:
    """Cross-section from the metadata: lane count, one-way, bus/cycle lanes and the side of driving."""
    n = {"1": 1, "2": 2, "3": 3, "4": 4, "5+": 5}.get(num_lanes or "2", 2)
    bus = lane_types in ("bus", "bus_and_cycle")
    cycle = lane_types in ("cycle", "bus_and_cycle")
    side = 1 if country == "GB" else -1
    us = country == "US"
    # Strips in w = d * side (ego side positive), innermost first: (w_lo, w_hi, kind, direction).
    strips: list[tuple[float, float, str, int]] = []

    def extras(w: float, sign: int, direction: int) -> float:
        for on, kind, width in ((bus, "bus", BUS_W), (cycle, "cycle", CYCLE_W)):
            if on:
                lo, hi = sorted((w, w + sign * width))
                strips.append((lo, hi, kind, direction))
                w += sign * width
        return w

    if one_way == "yes":
        total = n * LANE_W + bus * BUS_W + cycle * CYCLE_W
        w = -total / 2
        for _ in range(n):
            strips.append((w, w + LANE_W, "lane", 1))
            w += LANE_W
        w_out, w_in = extras(w, 1, 1), -total / 2
    elif n == 1:
        strips.append((-2.0, 2.0, "lane", 0))
        w_out, w_in = extras(2.0, 1, 1), extras(-2.0, -1, -1)
    else:
        n_ego = (n + 1) // 2
        for i in range(n_ego):
            strips.append((i * LANE_W, (i + 1) * LANE_W, "lane", 1))
        for i in range(n - n_ego):
            strips.append((-(i + 1) * LANE_W, -i * LANE_W, "lane", -1))
        w_out, w_in = extras(n_ego * LANE_W, 1, 1), extras(-(n - n_ego) * LANE_W, -1, -1)

    if road_type == "motorway":
        outer = [("shoulder", 2.5), ("grass", 1e3)]
    elif road_type == "rural":
        outer = [("grass", 1e3)]
    else:
        outer = [("kerb", KERB_W), ("sidewalk", 2.8 if road_type == "urban" else 2.0),
                 ("verge" if road_type == "urban" else "grass", 1e3)]
    for w0, sign in ((w_out, 1), (w_in, -1)):
        w = w0
        for kind, width in outer:
            lo, hi = sorted((w, w + sign * width))
            strips.append((lo, hi, kind, 0))
            w += sign * width

    # To d, ascending.
    d_strips = sorted(((min(a * side, b * side), max(a * side, b * side), k, dr) for a, b, k, dr in strips),
                      key=lambda x: x[0])
    edges = np.asarray([d_strips[0][0]] + [s[1] for s in d_strips], dtype=np.float64)
    kinds = tuple(s[2] for s in d_strips)
    dirs = tuple(s[3] for s in d_strips)

    dash_lane = (13.5, 4.5) if road_type == "motorway" else (9.0, 3.0)
    marks: list[Marking] = []
    for i in range(len(kinds) - 1):
        a, b, d = kinds[i], kinds[i + 1], float(edges[i + 1])
        if a == "lane" and b == "lane":
            if dirs[i] == dirs[i + 1]:
                marks.append(Marking(d, 0.07, *dash_lane, WHITE))
            elif us:    # double solid yellow
                marks += [Marking(d - 0.13, 0.06, 0.0, 0.0, YELLOW), Marking(d + 0.13, 0.06, 0.0, 0.0, YELLOW)]
            else:
                marks.append(Marking(d, 0.07, 6.0, 4.0, WHITE))
        elif {a, b} == {"lane", "bus"}:
            marks.append(Marking(d, 0.13, 0.0, 0.0, WHITE))
        elif "cycle" in (a, b) and a in CARRIAGEWAY_KINDS and b in CARRIAGEWAY_KINDS:
            marks.append(Marking(d, 0.08, 0.0, 0.0, WHITE))
        elif "shoulder" in (a, b) and a in CARRIAGEWAY_KINDS and b in CARRIAGEWAY_KINDS:
            marks.append(Marking(d, 0.10, 0.0, 0.0, WHITE))   # motorway edge line before the hard shoulder
    if road_type != "motorway":
        lo, hi = _span(edges, kinds)
        # A US one-way street has its left edge in yellow (left = high d when driving on the right).
        marks += [Marking(lo + 0.25, 0.07, 0.0, 0.0, WHITE),
                  Marking(hi - 0.25, 0.07, 0.0, 0.0, YELLOW if (us and one_way == "yes") else WHITE)]
    marks.sort(key=lambda m: m.d)
    return RoadLayout(edges, kinds, dirs, tuple(marks), side)


@dataclass(frozen=True)
class Centreline:
    """The reference line sampled every ``ds`` metres from ``s0``; heading 0 and position 0 at s = 0."""
    s0: float
    ds: float
    kappa: np.ndarray   # (n,) 1/m, positive turns left
    theta: np.ndarray   # (n,) heading, radians
    x: np.ndarray       # (n,) road frame, metres
    y: np.ndarray

    @classmethod
    def from_curvature(cls, s0: float, ds: float, kappa: np.ndarray) -> "Centreline":
        if s0 > 0 or s0 + ds * (len(kappa) - 1) <= 0:
            raise ValueError("centreline samples must straddle s = 0")
        i0 = int(round(-s0 / ds))
        theta = _cumtrapz(kappa, ds)
        theta -= theta[i0]
        x, y = _cumtrapz(np.cos(theta), ds), _cumtrapz(np.sin(theta), ds)
        return cls(s0, ds, kappa, theta, x - x[i0], y - y[i0])

    def sample(self, table: np.ndarray, s: np.ndarray) -> np.ndarray:
        """Linear interpolation of a per-sample ``table`` at ``s`` (clamped to the sampled range)."""
        i = np.clip((np.asarray(s) - self.s0) / self.ds, 0.0, len(table) - 1.000001)
        i0 = i.astype(np.int64)
        return table[i0] + (table[i0 + 1] - table[i0]) * (i - i0)

    def pose(self, s: np.ndarray, d: np.ndarray | float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Road-frame position of (s, d) and the reference heading there: (x, y, theta)."""
        th = self.sample(self.theta, s)
        x = self.sample(self.x, s) - np.sin(th) * d
        y = self.sample(self.y, s) + np.cos(th) * d
        return x, y, th


def _span(edges: np.ndarray, kinds: tuple[str, ...]) -> tuple[float, float]:
    idx = [i for i, k in enumerate(kinds) if k in CARRIAGEWAY_KINDS]
    return float(edges[idx[0]]), float(edges[idx[-1] + 1])


def _cumtrapz(f: np.ndarray, dx: float) -> np.ndarray:
    out = np.zeros_like(f, dtype=np.float64)
    out[1:] = np.cumsum((f[1:] + f[:-1]) * (dx / 2))
    return out
