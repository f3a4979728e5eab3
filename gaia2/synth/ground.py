"""The road surface seen by one camera: road coordinates and colour of every ground pixel per frame.

Ground pixels are fixed per camera (flat ground, camera rigid on the ego), so their ego-frame hit
points, ranges and footprints are computed once; each frame only moves them into the road frame.
Road coordinates (s, d) start from the road's local circular arc at the ego (exact for a constant
curvature) and are refined twice against the nearest centreline sample, so bends that tighten or
open up keep their lanes. Markings are box-filtered with each pixel's ground footprint, so thin
lines fade with distance instead of flickering.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from gaia2.synth.rigs import RIGS, camera_rays
from gaia2.synth.look import Look
from gaia2.synth.road import CARRIAGEWAY_KINDS, SURFACE, WHITE, YELLOW, RoadLayout
from gaia2.synth.scene import ClipPlan

GROUND_RANGE_M = 400.0      # farther ground is left to the horizon haze
KINDS = ("lane", "bus", "cycle", "shoulder", "kerb", "sidewalk", "grass", "verge")
LANE, BUS, CYCLE, SHOULDER, KERB_K, SIDEWALK_K, GRASS_K, VERGE = range(len(KINDS))
_TEXTURE = np.array([0.05, 0.05, 0.05, 0.06, 0.03, 0.08, 0.16, 0.10], np.float32)
_ON_ROAD = np.array([k in CARRIAGEWAY_KINDS for k in KINDS])
_LUT_RANGE, _LUT_STEP = 80.0, 0.02      # d lookup tables cover [-80, 80] m every 2 cm
_MARK_COLOURS = np.array([WHITE, YELLOW], np.float32)
F32 = np.float32


@dataclass(frozen=True)
class GroundPixels:
    """Pixels of one camera that see the ground within ``GROUND_RANGE_M``."""
    index: np.ndarray      # (G,) flat pixel index
    x: np.ndarray          # (G,) ego-frame hit point, metres (float32)
    y: np.ndarray
    range: np.ndarray      # (G,) distance from the camera centre
    du: np.ndarray         # (G, 2) ego-frame ground step to the next pixel along u (footprint)
    dv: np.ndarray         # (G, 2) along v


@lru_cache(maxsize=64)
def ground_pixels(rig_id: str, index: int, scale: float) -> GroundPixels:
    rig = RIGS[rig_id]
    w, h = rig.image_size(scale)
    rays, o = camera_rays(rig_id, index, scale)
    dz = rays[:, 2]
    t = np.where(dz < -1e-6, -o[2] / np.minimum(dz, -1e-6), np.inf)
    hit = t < GROUND_RANGE_M
    pts = np.stack([np.where(hit, o[0] + t * rays[:, 0], np.nan), np.where(hit, o[1] + t * rays[:, 1], np.nan)],
                   axis=-1).reshape(h, w, 2)
    # One-sided differences, falling back to the other side at the ground's border; pixels with no
    # ground neighbour get a large footprint (they are haze anyway).
    du = np.full_like(pts, np.nan)
    dv = np.full_like(pts, np.nan)
    du[:, :-1] = pts[:, 1:] - pts[:, :-1]
    du[:, -1] = du[:, -2]
    du = np.where(np.isnan(du), np.roll(du, 1, axis=1), du)
    dv[1:] = pts[1:] - pts[:-1]
    dv[0] = dv[1]
    du, dv = (np.nan_to_num(a, nan=5.0).reshape(-1, 2) for a in (du, dv))
    idx = np.flatnonzero(hit)
    flat = pts.reshape(-1, 2)
    return GroundPixels(idx, flat[idx, 0].astype(F32), flat[idx, 1].astype(F32), t[idx].astype(F32),
                        du[idx].astype(F32), dv[idx].astype(F32))


def _overlap(a: np.ndarray, half, fp: np.ndarray) -> np.ndarray:
    """Fraction of a footprint of width ``fp`` centred at ``a`` >= 0 covered by a stripe of half width ``half``."""
    hi = np.minimum(a + fp * F32(0.5), half)
    lo = np.maximum(a - fp * F32(0.5), -half)
    return np.clip((hi - lo) / fp, F32(0.0), F32(1.0))


def _wrap(x: np.ndarray, period) -> np.ndarray:
    """Distance from ``x`` to the nearest multiple of ``period``."""
    return np.abs(x - period * np.floor(x / period + F32(0.5)))


@dataclass(frozen=True)
class RoadStyle:
    """Per-clip lookup tables: d -> surface kind and nearest marking; centreline samples in float32."""
    kind_lut: np.ndarray       # (N,) int8 into KINDS
    mark_lut: np.ndarray       # (N,) int8 into layout.markings (0 when there are none)
    mark_pos: np.ndarray       # (L,) float32
    mark_half: np.ndarray
    mark_period: np.ndarray
    mark_dash: np.ndarray      # half of the painted length per period
    mark_solid: np.ndarray     # (L,) bool
    mark_colour: np.ndarray    # (L,) int8 into _MARK_COLOURS
    cx: np.ndarray             # (n,) centreline samples
    cy: np.ndarray
    cos: np.ndarray
    sin: np.ndarray
    s0: float
    ds: float


def road_style(plan: ClipPlan) -> RoadStyle:
    layout: RoadLayout = plan.layout
    d = (np.arange(int(2 * _LUT_RANGE / _LUT_STEP) + 1) * _LUT_STEP - _LUT_RANGE)
    strip = np.clip(np.searchsorted(layout.edges, d, side="right") - 1, 0, len(layout.kinds) - 1)
    kind_lut = np.asarray([KINDS.index(k) for k in layout.kinds], np.int8)[strip]
    marks = layout.markings or ()
    if marks:
        pos = np.asarray([m.d for m in marks])
        mark_lut = np.searchsorted((pos[1:] + pos[:-1]) / 2, d).astype(np.int8)
    else:
        pos, mark_lut = np.array([1e6]), np.zeros(d.shape, np.int8)
    c = plan.centre
    solid = np.asarray([m.period <= 0 for m in marks] or [True])
    return RoadStyle(
        kind_lut, mark_lut, pos.astype(F32),
        np.asarray([m.half_width for m in marks] or [0.0], F32),
        np.asarray([m.period if m.period > 0 else 1.0 for m in marks] or [1.0], F32),
        np.asarray([m.dash / 2 if m.period > 0 else 1.0 for m in marks] or [1.0], F32), solid,
        np.asarray([0 if m.colour == WHITE else 1 for m in marks] or [0], np.int8),
        c.x.astype(F32), c.y.astype(F32), np.cos(c.theta).astype(F32), np.sin(c.theta).astype(F32),
        float(c.s0), float(c.ds))


def road_coordinates(plan: ClipPlan, style: RoadStyle, gp: GroundPixels,
                     ego: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """(T, G) road s and d of every ground pixel at each of the T ego poses, and pixel footprints
    across (fp_d) and along (fp_s) the road, in metres."""
    s_e = ego["s"].astype(F32)[:, None]
    ce, se = np.cos(ego["theta"]).astype(F32)[:, None], np.sin(ego["theta"]).astype(F32)[:, None]
    xe, ye = ego["x"].astype(F32)[:, None], ego["y"].astype(F32)[:, None]
    k0 = plan.centre.sample(plan.centre.kappa, ego["s"])
    k0 = np.where(np.abs(k0) < 1e-7, 1e-7, k0).astype(F32)[:, None]
    x, y = gp.x[None], gp.y[None]
    # Circular arc through the reference point beside the ego with the road's curvature there.
    s = s_e + np.arctan2(k0 * x, 1 - k0 * (y + F32(plan.ego.d))) / k0
    px, py = xe + ce * x - se * y, ye + se * x + ce * y          # road-frame hit points
    n = style.cx.size
    inv_ds, s0 = F32(1.0 / style.ds), F32(style.s0)
    for _ in range(2):
        # Project onto the nearest centreline sample: exact up to curvature x (sample spacing)^2.
        k = np.clip(np.rint((s - s0) * inv_ds), 0, n - 1).astype(np.int32)
        dx, dy = px - style.cx.take(k), py - style.cy.take(k)
        c, sn = style.cos.take(k), style.sin.take(k)
        s = s0 + k.astype(F32) * F32(style.ds) + dx * c + dy * sn
    d = dy * c - dx * sn
    # Road direction in the ego frame -> each pixel's footprint across and along the road.
    cr, sr = c * ce + sn * se, sn * ce - c * se
    du, dv = gp.du[None], gp.dv[None]
    fp_d = np.abs(cr * du[..., 1] - sr * du[..., 0]) + np.abs(cr * dv[..., 1] - sr * dv[..., 0])
    fp_s = np.abs(cr * du[..., 0] + sr * du[..., 1]) + np.abs(cr * dv[..., 0] + sr * dv[..., 1])
    return {"s": s, "d": d, "fp_d": np.maximum(fp_d, F32(0.01)), "fp_s": np.maximum(fp_s, F32(0.01))}


def surface(plan: ClipPlan, style: RoadStyle,
            rc: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per (T, G) pixel: surface kind (int8 into KINDS), texture factor, marking coverage in [0, 1]
    and marking colour index (into WHITE, YELLOW)."""
    s, d, fp_d, fp_s = rc["s"], rc["d"], rc["fp_d"], rc["fp_s"]
    di = np.clip((d + F32(_LUT_RANGE)) * F32(1 / _LUT_STEP), 0, style.kind_lut.size - 1).astype(np.int32)
    kind = style.kind_lut.take(di)
    on_road = _ON_ROAD.take(kind)
    keep_marks = None
    white = None                    # coverage of white paint beyond the lane lines
    j = plan.junction
    if j is not None and j.kind in ("crossroad", "t_junction"):
        u = np.abs(s - F32(j.s))
        in_x = u < F32(j.cross_width / 2)
        side_ok = True if j.kind == "crossroad" else (d * F32(j.t_side) > 0)
        keep_marks = ~(in_x & on_road)
        beyond = (kind == GRASS_K) | (kind == VERGE)
        kind = np.where((u < F32(j.cross_width / 2 + 3.0)) & beyond & side_ok, np.int8(SIDEWALK_K), kind)
        cross = in_x & ~on_road & side_ok
        kind = np.where(cross, np.int8(LANE), kind)
        white = _overlap(u, F32(0.07), fp_s) * _overlap(_wrap(d - F32(1.5), F32(6.0)), F32(1.5), fp_d) * cross
    elif j is not None and j.kind == "roundabout":
        r_out, r_in = j.ring
        rho = np.sqrt((s - F32(j.ring_centre_s)) ** 2 + d * d)
        ring = rho < F32(r_out)
        keep_marks = ~ring
        kind = np.where(ring, np.where(rho < F32(r_in), np.int8(GRASS_K),
                                       np.where(rho < F32(r_in + 0.4), np.int8(KERB_K), np.int8(LANE))), kind)
    if j is not None and j.zebra_s is not None:
        # Zebra: 0.5 m stripes across a 3 m band; the stripes run along the road.
        z = _overlap(np.abs(s - F32(j.zebra_s)), F32(1.5), fp_s)
        z *= _overlap(_wrap(d - F32(0.25), F32(1.0)), F32(0.25), fp_d) * on_road
        white = z if white is None else np.maximum(white, z)
    if j is not None and j.stop_s is not None and (j.light != "none" or j.kind == "roundabout"):
        ego_side = (d * F32(plan.layout.side) >= 0) if _two_way(plan.layout) else True
        line = _overlap(np.abs(s - F32(j.stop_s + 0.2)), F32(0.2), fp_s) * (on_road & ego_side)
        if j.kind == "roundabout":   # give-way: a dashed line
            line *= _overlap(_wrap(d, F32(1.2)), F32(0.3), fp_d)
        white = line if white is None else np.maximum(white, line)

    # Lane lines: the nearest one to each pixel, box-filtered across and dashed along the road.
    m = style.mark_lut.take(di)
    cov = _overlap(np.abs(d - style.mark_pos.take(m)), style.mark_half.take(m), fp_d)
    period, dash = style.mark_period.take(m), style.mark_dash.take(m)
    along = _overlap(_wrap(s - dash, period), dash, fp_s)
    # A footprint longer than the dash period sees the duty cycle.
    blend = np.clip(fp_s / period - F32(0.5), 0, 1)
    along += (np.minimum(2 * dash / period, 1) - along) * blend
    cov *= np.where(style.mark_solid.take(m), F32(1.0), along)
    if keep_marks is not None:
        cov *= keep_marks
    colour_idx = style.mark_colour.take(m)
    if white is not None:
        colour_idx = np.where(white > cov, np.int8(0), colour_idx)
        cov = np.maximum(cov, white)
    tex = np.sin(F32(1.3) * s + F32(2.1) * d) + np.sin(F32(0.41) * s - F32(0.77) * d + F32(1.3))
    texture = 1 + _TEXTURE.take(kind) * tex / (1 + fp_s + fp_d)
    return kind, texture, cov, colour_idx


def surface_palette(look: Look) -> tuple[np.ndarray, np.ndarray]:
    """(len(KINDS), 3) and (2, 3) albedo of surfaces and paint under this look (snow, wet road)."""
    pal = np.asarray([SURFACE[k] for k in KINDS], F32)
    paint = _MARK_COLOURS.copy()
    if look.ground_snow > 0:
        amount = np.where(_ON_ROAD, look.ground_snow * 0.35, look.ground_snow).astype(F32)[:, None]
        pal += (F32(0.92) - pal) * amount
        paint += (F32(0.92) - paint) * F32(look.ground_snow * 0.35)
    if look.wet > 0:
        pal *= F32(1 - 0.35 * look.wet)
        paint *= F32(1 - 0.35 * look.wet)
    return pal, paint


def _two_way(layout: RoadLayout) -> bool:
    return any(k == "lane" and dr <= 0 for k, dr in zip(layout.kinds, layout.directions))
