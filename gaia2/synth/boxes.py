"""Ray casting of yawed 3D boxes (agents and props) into one camera's frames, with a depth buffer.

Each box is culled to the pixel rectangle its projected surface points cover in each frame (the
camera model's own projection, distortion included, plus a margin for bulging edges). Boxes are
drawn front to back, and a pixel in the rectangle is ray-cast only if nothing nearer than the box
is drawn there yet and its ray is not above the box's top: the slab test in the box's own frame
then runs for all frames of a chunk at once. ``test_box_culling_changes_no_pixel`` holds the
culling to a brute-force cast.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gaia2.camera.model import CameraModel

# Materials: how a box is painted beyond its base colour.
PLAIN, VEHICLE, BUS, PEDESTRIAN, CYCLIST, SIGNAL, FACADE = range(7)
MATERIAL_OF = {"car": VEHICLE, "van": VEHICLE, "bus": BUS, "pedestrian": PEDESTRIAN, "cyclist": CYCLIST}
_GLASS = np.array([0.10, 0.12, 0.15], np.float32)
_TYRE = np.array([0.05, 0.05, 0.05], np.float32)
_TROUSERS = np.array([0.15, 0.15, 0.20], np.float32)
_SKIN = np.array([0.85, 0.68, 0.55], np.float32)
_BIKE = np.array([0.12, 0.12, 0.12], np.float32)
LAMP_COLOURS = {"red": (1.0, 0.10, 0.07), "amber": (1.0, 0.62, 0.05), "green": (0.10, 0.95, 0.45)}
_LAMP_BANDS = {"red": (0.68, 0.95), "amber": (0.37, 0.63), "green": (0.05, 0.32)}   # height fraction on the head
_LAMP_OFF = np.array([0.14, 0.13, 0.12], np.float32)
_WINDOW = np.array([0.16, 0.20, 0.26], np.float32)
_WINDOW_LIT = np.array([0.85, 0.70, 0.42], np.float32)     # warm light behind some windows at night
_SHOPFRONT = np.array([0.22, 0.21, 0.21], np.float32)
LAMP_HALF_WIDTH = 0.3      # m, lamp half width on a 1 m wide head
# 26 points on the surface of the unit cube: corners, edge midpoints, face centres.
_SURFACE_PTS = np.array([(x, y, z) for x in (-1, 0, 1) for y in (-1, 0, 1) for z in (-1, 0, 1)
                         if (x, y, z) != (0, 0, 0)], dtype=np.float64)
_CORNERS = np.flatnonzero(np.abs(_SURFACE_PTS).sum(-1) == 3)     # the 8 corners among them
_NEAR, _CROSS_Z = 0.1, 0.12      # m: in front of the camera, and where plane crossings are placed


@dataclass(frozen=True)
class BoxBatch:
    """Boxes in the ego frame over a camera's frames."""
    centre: np.ndarray     # (B, T, 3) box centre
    yaw: np.ndarray        # (B, T)
    size: np.ndarray       # (B, 3) l, w, h
    colour: np.ndarray     # (B, 3) base colour in [0, 1]
    material: np.ndarray   # (B,) int


@dataclass(frozen=True)
class Lighting:
    ambient: np.ndarray    # (3,)
    sun: np.ndarray        # (3,)
    sun_dir: np.ndarray    # (T, 3) towards the sun, ego frame per frame
    headlights: float
    fog: np.ndarray        # (3,) haze colour
    fog_distance: float    # m
    night: bool = False    # windows light up


def headlight(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Ego headlight illumination at ego-frame ground position (x, y): a forward cone fading with range."""
    ahead = np.clip((x - 2.0) * 0.5, 0.0, 1.0)
    cone = np.clip(1.0 - (np.abs(y) - 0.35 * x - 1.2) * 0.4, 0.0, 1.0)
    return ahead * cone * np.exp(-np.maximum(x, 0.0) / 28.0)


def _rects(model: CameraModel, boxes: BoxBatch) -> np.ndarray:
    """(B, T, 4) int pixel rectangles u0, u1, v0, v1 (empty when u0 >= u1) that may see each box."""
    b, t = boxes.yaw.shape
    local = _SURFACE_PTS[None, None] * (boxes.size[:, None, None, :] / 2)          # (B, 1, 26, 3)
    c, s = np.cos(boxes.yaw)[..., None], np.sin(boxes.yaw)[..., None]               # (B, T, 1)
    pts = np.stack([c * local[..., 0] - s * local[..., 1], s * local[..., 0] + c * local[..., 1],
                    np.broadcast_to(local[..., 2], (b, t, 26))], axis=-1) + boxes.centre[:, :, None]
    cam = model.ego_to_camera_points(pts)                                          # (B, T, 26, 3)
    front = cam[..., 2] > _NEAR
    uv, _ = model.project(cam, near=_NEAR)
    bounds = _bounds(uv, front)                                                    # (4, B, T)
    partial = front.any(-1) & ~front.all(-1)
    if partial.any():
        # A box straddling the near plane: its visible part is bounded by the in-front points and
        # by where the segments between its corners cross the plane (those project far out).
        corners = cam[partial][:, _CORNERS]                                        # (P, 8, 3)
        zi, zj = corners[:, :, None, 2], corners[:, None, :, 2]
        cross = (zi > _NEAR) & (zj <= _NEAR)
        a = np.clip((zi - _CROSS_Z) / np.where(cross, zi - zj, 1.0), 0, 1)[..., None]
        hits = (corners[:, :, None] + (corners[:, None] - corners[:, :, None]) * a).reshape(-1, 64, 3)
        hits[..., 2] = _CROSS_Z
        uv_x, _ = model.project(hits, near=_NEAR)
        extra = _bounds(uv_x, cross.reshape(-1, 64))
        for k, pick in enumerate((np.minimum, np.maximum, np.minimum, np.maximum)):
            bounds[k][partial] = pick(bounds[k][partial], extra[k])
    margin = 1.5   # px: edges bulge a little between the sample points under distortion
    u0, u1 = np.floor(bounds[0] - margin), np.ceil(bounds[1] + margin)
    v0, v1 = np.floor(bounds[2] - margin), np.ceil(bounds[3] + margin)
    rect = np.stack([np.clip(u0, 0, model.width), np.clip(u1, 0, model.width),
                     np.clip(v0, 0, model.height), np.clip(v1, 0, model.height)], axis=-1)
    rect = np.where(front.any(-1)[..., None], rect, 0)
    return rect.astype(np.int64)


def _bounds(uv: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(4, ...) min u, max u, min v, max v over the last point axis of ``uv`` (..., P, 2), valid points only."""
    u, v = uv[..., 0], uv[..., 1]
    return np.stack([np.where(valid, u, np.inf).min(-1), np.where(valid, u, -np.inf).max(-1),
                     np.where(valid, v, np.inf).min(-1), np.where(valid, v, -np.inf).max(-1)])


def render_boxes(colour: np.ndarray, depth: np.ndarray, model: CameraModel, rays: np.ndarray, origin: np.ndarray,
                 boxes: BoxBatch, light: Lighting, signal: str) -> None:
    """Ray-cast ``boxes`` into ``colour`` (T, H*W, 3) and ``depth`` (T, H*W), in place (nearest wins).

    rays: (3, H*W) float32 ego-frame unit rays; origin: (3,) camera centre in the ego frame.
    """
    if boxes.yaw.size == 0:
        return
    n_pix = model.width * model.height
    rects = _rects(model, boxes).astype(np.int32)
    flat_col, flat_depth = colour.reshape(-1, 3), depth.reshape(-1)
    reach, z_max = _reach(boxes, origin)
    # Front to back; a pixel is ray-cast only if nothing drawn there is nearer than the box can be
    # and its ray is not above the box's top edge as seen from the camera.
    for b in np.argsort(reach.mean(axis=1), kind="stable"):
        r = rects[b]
        w, h = r[:, 1] - r[:, 0], r[:, 3] - r[:, 2]
        frames = np.flatnonzero((w > 0) & (h > 0))
        if frames.size == 0:
            continue
        area = (w * h)[frames]
        # Ragged list of (frame, pixel) pairs over all frames' rectangles.
        rep = np.repeat(np.arange(frames.size, dtype=np.int32), area)
        k = np.arange(rep.size, dtype=np.int32) - np.repeat(np.cumsum(area, dtype=np.int32) - area, area)
        wf = w[frames][rep]
        row = k // wf
        pix = (r[frames, 2][rep] + row) * np.int32(model.width) + r[frames, 0][rep] + (k - row * wf)
        key = frames[rep].astype(np.int64) * n_pix + pix
        open_ = (flat_depth[key] > reach[b, frames][rep]) & (rays[2].take(pix) < z_max[b, frames][rep])
        if not open_.all():
            rep, pix, key = rep[open_], pix[open_], key[open_]
        if rep.size:
            _cast(flat_col, flat_depth, key, rays, origin, boxes, b, frames, rep, pix, light, signal)


def _reach(boxes: BoxBatch, origin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(B, T) float32: distance from the camera to each box, and the largest ray z (sine of the
    elevation) that can still meet the box's top."""
    rel = origin[None, None] - boxes.centre                                          # (B, T, 3)
    c, s = np.cos(boxes.yaw), np.sin(boxes.yaw)
    local = np.stack([c * rel[..., 0] + s * rel[..., 1], -s * rel[..., 0] + c * rel[..., 1], rel[..., 2]], -1)
    half = boxes.size[:, None] / 2
    gap = local - np.clip(local, -half, half)                                       # camera to the nearest box point
    reach = np.linalg.norm(gap, axis=-1)
    rise = boxes.centre[..., 2] + half[..., 2] - origin[2]                          # box top above the camera
    # The top edge is steepest at the footprint's nearest point when above the camera, at its
    # farthest when below.
    near_flat = np.linalg.norm(gap[..., :2], axis=-1)
    far_flat = np.linalg.norm(np.abs(local[..., :2]) + half[..., :2], axis=-1)
    flat = np.where(rise > 0, near_flat, far_flat)
    z_max = np.where(flat > 1e-6, rise / np.maximum(np.hypot(flat, rise), 1e-9), 1.0) + 1e-3
    return reach.astype(np.float32), z_max.astype(np.float32)


def _cast(flat_col, flat_depth, key, rays, origin, boxes: BoxBatch, b: int, frames, rep, pix,
          light: Lighting, signal: str) -> None:
    """Slab test of box ``b`` against the rays of pixels ``pix`` in frames ``frames[rep]``; writes the
    hits nearer than ``flat_depth[key]`` (key = frame * H*W + pixel)."""
    f32 = np.float32
    yaw = boxes.yaw[b, frames]
    cy, sy = np.cos(yaw), np.sin(yaw)
    rel = origin[None] - boxes.centre[b, frames]                           # (F, 3) camera - box centre
    o_loc = np.stack([cy * rel[:, 0] + sy * rel[:, 1], -sy * rel[:, 0] + cy * rel[:, 1], rel[:, 2]], 0).astype(f32)
    half = (boxes.size[b] / 2).astype(f32)
    rx, ry, rz = (rays[a].take(pix) for a in range(3))                    # rays: (3, H*W) float32
    # ``rep`` is sorted: per-frame values expand by repetition, cheaper than a gather.
    counts = np.bincount(rep, minlength=frames.size)
    if np.all(yaw == yaw[0]):   # a static prop: one rotation for every pixel
        c, s = f32(cy[0]), f32(sy[0])
    else:
        c, s = np.repeat(cy.astype(f32), counts), np.repeat(sy.astype(f32), counts)
    dl = (c * rx + s * ry, c * ry - s * rx, rz)
    o = [np.repeat(o_loc[a], counts) for a in range(3)]
    near, far = None, None
    t_axis = []
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for a in range(3):
            # Slab a: entry/exit at -(h |1/d|) - o/d and +(h |1/d|) - o/d (an axis-parallel ray gives
            # +-inf, or nan on a face plane, which compares false: no hit).
            inv = 1.0 / dl[a]
            span, mid = half[a] * np.abs(inv), o[a] * inv
            lo, hi = -span - mid, span - mid
            t_axis.append(lo)
            near = lo if near is None else np.maximum(near, lo)
            far = hi if far is None else np.minimum(far, hi)
    hit = (near <= far) & (near > 0.05)
    hit[hit] = near[hit] < flat_depth[key[hit]]
    if not hit.any():
        return
    idx = np.flatnonzero(hit)
    t = near[idx]
    axis = np.where(t_axis[0][idx] >= t, 0, np.where(t_axis[1][idx] >= t, 1, 2))
    dsel = np.stack([dl[0][idx], dl[1][idx], dl[2][idx]], -1)
    d_ego = np.stack([rx[idx], ry[idx], rz[idx]], -1)
    sign = -np.sign(dsel[np.arange(idx.size), axis])                   # the entry face faces the ray
    ci, si, fr = (c, s, rep[idx]) if np.ndim(c) == 0 else (c[idx], s[idx], rep[idx])
    normal = np.zeros((idx.size, 3), f32)
    normal[:, 0] = np.where(axis == 0, ci, np.where(axis == 1, -si, 0)) * sign
    normal[:, 1] = np.where(axis == 0, si, np.where(axis == 1, ci, 0)) * sign
    normal[:, 2] = np.where(axis == 2, sign, 0)
    hit_pt = origin[None].astype(f32) + t[:, None] * d_ego              # ego frame
    q = (o[2][idx] + t * dl[2][idx] + half[2]) / (2 * half[2])            # height fraction on the box
    albedo = np.broadcast_to(boxes.colour[b].astype(f32), (idx.size, 3)).copy()
    side = axis != 2
    mat = int(boxes.material[b])
    emissive = None
    if mat in (VEHICLE, BUS):
        lo_w, hi_w = (0.66, 0.92)    # windows; the body colour covers the box centre's height
        albedo[side & (q > lo_w) & (q < hi_w)] = _GLASS
        albedo[side & (q < 0.14)] = _TYRE
    elif mat == PEDESTRIAN:
        albedo[q < 0.38] = _TROUSERS
        albedo[q > 0.86] = _SKIN
    elif mat == CYCLIST:
        albedo[q < 0.36] = _BIKE
        albedo[q > 0.88] = _BIKE
    elif mat == FACADE:
        # Windows on a 3.2 m x 3.1 m grid above a ground-floor shop front; the grid follows the face.
        x_loc = o[0][idx] + t * dl[0][idx]
        y_loc = o[1][idx] + t * dl[1][idx]
        along = np.where(axis == 0, y_loc, x_loc)
        z = q * (2 * half[2])
        col_i, row_i = np.floor(along / f32(3.2)), np.floor(z / f32(3.1))
        win = side & (z > 3.3) & (along - col_i * 3.2 > 0.7) & (along - col_i * 3.2 < 2.5) \
            & (z - row_i * 3.1 > 1.0) & (z - row_i * 3.1 < 2.6)
        albedo[win] = _WINDOW
        albedo[side & (z < 3.0) & (z > 0.3)] = _SHOPFRONT
        if light.night:   # about a third of the windows lit, fixed per window (an integer hash)
            cell = (col_i.astype(np.int64) * 73856093) ^ (row_i.astype(np.int64) * 19349663) ^ (b * 83492791)
            emissive = win & (cell % 100 < 35)
            albedo[emissive] = _WINDOW_LIT
    elif mat == SIGNAL:
        front = (axis == 0) & (sign < 0)
        y_loc = o[1][idx] + t * dl[1][idx]
        lamp_x = front & (np.abs(y_loc) < LAMP_HALF_WIDTH)
        emissive = np.zeros(idx.size, bool)
        for state, (q0, q1) in _LAMP_BANDS.items():
            lamp = lamp_x & (q > q0) & (q < q1)
            if state == signal:
                albedo[lamp] = np.asarray(LAMP_COLOURS[state], f32)
                emissive |= lamp
            else:
                albedo[lamp] = _LAMP_OFF
    fi = frames[fr]
    shade = light.ambient[None].astype(f32) * (0.75 + 0.25 * normal[:, 2:3])
    sun_cos = np.maximum((normal * light.sun_dir[fi].astype(f32)).sum(-1), 0.0)
    shade = shade + light.sun[None].astype(f32) * sun_cos[:, None]
    if light.headlights > 0:
        facing = np.maximum(-(normal * d_ego).sum(-1), 0.0)
        shade = shade + f32(light.headlights) * (headlight(hit_pt[:, 0], hit_pt[:, 1]) * facing)[:, None]
    lit = albedo * shade
    if emissive is not None:
        lit[emissive] = albedo[emissive]
    keep = np.exp(-t / f32(light.fog_distance))[:, None]
    lit = lit * keep + light.fog.astype(f32) * (1 - keep)
    k = key[idx]
    flat_col[k] = lit
    flat_depth[k] = t
