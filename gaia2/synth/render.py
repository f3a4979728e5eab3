"""Render one camera of a planned clip: sky and skyline, road surface, boxes, light, haze, weather.

Everything is ray-cast through the rig's real camera model: ``CameraModel.pixel_rays`` once per
camera (distortion included), rotated into the ego frame; per frame only the ego pose changes.
Frames are rendered in chunks of (t, H*W) float32 arrays small enough to stay in cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from gaia2.camera.model import CameraModel
from gaia2.synth.boxes import FACADE, MATERIAL_OF, PLAIN, SIGNAL, BoxBatch, Lighting, headlight, render_boxes
from gaia2.synth.ground import GroundPixels, ground_pixels, road_coordinates, road_style, surface, surface_palette
from gaia2.synth.look import SKYLINE_BINS, Look
from gaia2.synth.rigs import RIGS, camera_rays
from gaia2.synth.scene import ClipPlan

SKYLINE_RANGE_M = 300.0     # how far the skyline is, for haze
_SKYLINE_MAX_ELEV = 0.2     # rad: no skyline above this
_CHUNK = 20                 # frames per chunk
F32 = np.float32


def frame_count(duration_s: float, frame_rate: float) -> int:
    """Frames a camera takes in ``duration_s``: all of them start before the clip ends."""
    n = int(np.floor(duration_s * frame_rate + 1e-6))
    if n < 2:
        raise ValueError(f"duration {duration_s} s gives {n} frame(s) at {frame_rate} Hz; need at least 2")
    return n


def camera_taus(plan: ClipPlan, index: int) -> np.ndarray:
    """(F,) seconds from the clip start of camera ``index``'s frames: rig trigger + the camera's delay."""
    rig = plan.rig
    n = frame_count(plan.duration_s, rig.frame_rate)
    return rig.cameras[index].time_offset_s + np.arange(n) / rig.frame_rate


def to_ego(x: np.ndarray, y: np.ndarray, ego: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Road-frame (..., T) positions -> ego frame at each of the T ego poses."""
    c, s = np.cos(ego["theta"]), np.sin(ego["theta"])
    dx, dy = x - ego["x"], y - ego["y"]
    return c * dx + s * dy, -s * dx + c * dy


def ego_boxes(plan: ClipPlan, ego: dict[str, np.ndarray], tau: np.ndarray) -> BoxBatch:
    """Agents and props as boxes in the ego frame at each ``tau``."""
    xyz, yaw, size = plan.boxes_road(tau)
    colour = [a.colour for a in plan.agents]
    material = [MATERIAL_OF[a.category] for a in plan.agents]
    if plan.props:
        t = len(tau)
        pc = np.asarray([p.centre for p in plan.props])                      # (P, 3)
        xyz = np.concatenate([xyz, np.broadcast_to(pc[:, None], (len(pc), t, 3))], axis=0)
        yaw = np.concatenate([yaw, np.broadcast_to(np.asarray([p.yaw for p in plan.props])[:, None], (len(pc), t))])
        size = np.concatenate([size, np.asarray([p.size for p in plan.props])])
        colour += [p.colour for p in plan.props]
        material += [{"signal": SIGNAL, "facade": FACADE}.get(p.material, PLAIN) for p in plan.props]
    ex, ey = to_ego(xyz[..., 0], xyz[..., 1], ego)
    centre = np.stack([ex, ey, xyz[..., 2]], axis=-1)
    return BoxBatch(centre, yaw - ego["theta"], size.reshape(-1, 3), np.asarray(colour, np.float64).reshape(-1, 3),
                    np.asarray(material, np.int64))


@dataclass(frozen=True)
class _Camera:
    model: CameraModel
    rays: np.ndarray          # (HW, 3) ego frame
    rays_t: np.ndarray        # (3, HW) float32, component-major for gathers
    origin: np.ndarray        # (3,)
    ground: GroundPixels
    elevation: np.ndarray     # (HW,) rad
    skyline_px: np.ndarray    # (K,) sky pixels low enough to be behind the skyline
    skyline_az: np.ndarray    # (K,) their ego-frame azimuth
    vignette: np.ndarray      # (HW,) lens falloff x 255


@lru_cache(maxsize=64)
def _camera(rig_id: str, index: int, scale: float) -> _Camera:
    rig = RIGS[rig_id]
    rays, origin = camera_rays(rig_id, index, scale)
    gp = ground_pixels(rig_id, index, scale)
    elev = np.arcsin(np.clip(rays[:, 2], -1, 1)).astype(F32)
    sky = np.ones(rays.shape[0], bool)
    sky[gp.index] = False
    low = np.flatnonzero(sky & (elev < _SKYLINE_MAX_ELEV))
    axis_cos = rays @ rig.cameras[index].cam_to_ego()[:3, 2]
    return _Camera(rig.camera_model(index, scale), rays, np.ascontiguousarray(rays.T, dtype=F32), origin, gp, elev, low,
                   np.arctan2(rays[low, 1], rays[low, 0]).astype(F32),
                   (255.0 * (0.78 + 0.22 * axis_cos * axis_cos)).astype(F32))


def render_camera(plan: ClipPlan, index: int, scale: float = 1.0) -> np.ndarray:
    """Camera ``index`` of ``plan.rig`` over the clip -> (T, H, W, 3) uint8 RGB."""
    rig, look = plan.rig, plan.look
    cam = _camera(rig.rig_id, index, scale)
    w, h = cam.model.width, cam.model.height
    tau = camera_taus(plan, index)
    t = tau.size
    ego = plan.ego_state(tau)
    boxes = ego_boxes(plan, ego, tau)
    style = road_style(plan)

    # Per clip and camera: sky gradient, skyline colour, lit surface palettes, ground haze.
    horizon, zenith = np.asarray(look.sky_horizon, F32), np.asarray(look.sky_zenith, F32)
    sky = horizon + (zenith - horizon) * np.clip(cam.elevation * 2.5, 0, 1)[:, None]       # (HW, 3)
    fog = np.asarray(look.fog_colour, F32)
    haze = F32(np.exp(-SKYLINE_RANGE_M / look.fog_distance))
    # The skyline is lit like everything else (relative to daylight ambient 0.62) and hazed at its range.
    skyline_col = np.asarray(look.skyline_colour, F32) * np.asarray(look.ambient, F32) / F32(0.62)
    skyline_col = skyline_col * haze + fog * (1 - haze)
    light = np.asarray(look.ambient, F32) + np.asarray(look.sun, F32) * F32(max(look.sun_dir[2], 0.0))
    pal, paint = surface_palette(look)
    pal, paint = pal * light, paint * light
    keep = np.exp(-cam.ground.range / F32(look.fog_distance)).astype(F32)                   # (G,)
    gain = keep * (1 + F32(look.headlights / float(light.mean())) * headlight(cam.ground.x, cam.ground.y))
    fog_add = fog[None] * (1 - keep)[:, None]                                             # (G, 3)
    c, s = np.cos(ego["theta"]), np.sin(ego["theta"])
    sd = np.asarray(look.sun_dir)
    sun_ego = np.stack([c * sd[0] + s * sd[1], -s * sd[0] + c * sd[1], np.full(t, sd[2])], axis=-1)
    signal = plan.junction.light if plan.junction is not None else "none"
    rng = np.random.default_rng([look.texture_seed, index])
    overlays = _precipitation(rng, look, h, w)
    grain = (rng.standard_normal((4, h * w)) * (255.0 * look.grain) + 0.5).astype(F32)

    out = np.empty((t, h, w, 3), np.uint8)
    for f0 in range(0, t, _CHUNK):
        sl = slice(f0, min(f0 + _CHUNK, t))
        frames = np.arange(sl.start, sl.stop)
        e = {k: v[sl] for k, v in ego.items()}
        colour = np.empty((frames.size, h * w, 3), F32)
        colour[:] = sky
        # Skyline: world azimuth bins turn with the ego's heading.
        az = cam.skyline_az[None] + e["theta"].astype(F32)[:, None]
        bins = np.floor(az * F32(SKYLINE_BINS / (2 * np.pi))).astype(np.int64) % SKYLINE_BINS
        under = cam.elevation[cam.skyline_px][None] < look.skyline.astype(F32).take(bins)
        fi, ki = np.nonzero(under)
        colour.reshape(-1, 3)[fi * (h * w) + cam.skyline_px[ki]] = skyline_col
        depth = np.full((frames.size, h * w), np.inf, F32)
        gp = cam.ground
        if gp.index.size:
            rc = road_coordinates(plan, style, gp, e)
            kind, texture, cov, paint_idx = surface(plan, style, rc)
            col = np.take(pal, kind, axis=0)                                  # (t, G, 3)
            painted = cov > 0
            if painted.any():
                base = col[painted]
                col[painted] = base + (paint[paint_idx[painted]] - base) * cov[painted][:, None]
            col *= (texture * gain)[..., None]
            col += fog_add
            colour[:, gp.index] = col
            depth[:, gp.index] = gp.range
        lighting = Lighting(np.asarray(look.ambient), np.asarray(look.sun), sun_ego[sl], look.headlights,
                            fog, look.fog_distance, night=look.lit_windows)
        chunk_boxes = BoxBatch(boxes.centre[:, sl], boxes.yaw[:, sl], boxes.size, boxes.colour, boxes.material)
        render_boxes(colour, depth, cam.model, cam.rays_t, cam.origin, chunk_boxes, lighting, signal)
        for tex, fall, drift, strength, tone in overlays:
            rows = (np.arange(h)[None] - (frames * fall)[:, None]) % h
            cols = (np.arange(w)[None] - (frames * drift)[:, None]) % w
            over = tex[rows[:, :, None], cols[:, None, :]].reshape(frames.size, h * w, 1) * F32(0.5 * strength)
            colour *= 1 - over
            colour += over * F32(tone)
        colour *= cam.vignette[None, :, None]
        colour += grain[frames % 4][..., None]
        np.clip(colour, 0, 255, out=colour)
        out[sl] = colour.astype(np.uint8).reshape(frames.size, h, w, 3)
    return out


def _precipitation(rng: np.random.Generator, look: Look, h: int,
                   w: int) -> list[tuple[np.ndarray, int, int, float, float]]:
    """Rain streak / snow flake textures: (texture (H, W), rows per frame, columns per frame, strength, tone)."""
    out = []
    # Drops and flakes catch the ambient light: bright by day, dim at night.
    dim = min(1.0, 0.25 + 0.75 * float(np.mean(look.ambient)) / 0.62)
    for strength, length, fall, drift, density, tone in ((look.rain, max(3, h // 10), h // 5, 2, 0.006, 0.75),
                                                        (look.snow, 1, max(1, h // 40), 1, 0.012, 0.95)):
        if strength <= 0:
            continue
        tex = np.zeros((h, w), F32)
        n = int(density * h * w)
        r0, c0 = rng.integers(0, h, n), rng.integers(0, w, n)
        for k in range(length):
            tex[(r0 + k) % h, (c0 + k // 4) % w] = 1.0
        if length == 1:   # flakes: 2x2 px
            tex = np.maximum.reduce([tex, np.roll(tex, 1, 0), np.roll(tex, 1, 1), np.roll(tex, (1, 1), (0, 1))])
        out.append((tex, fall, drift, strength, tone * dim))
    return out
