"""A validated spec -> a ``Request``: every input of the sampler as arrays, over the whole output (T latent steps).

Conditioning the spec leaves out takes the values training uses for a dropped variable (NaN speed or
curvature, metadata id 0, no valid agent, NaN CLIP rows, a NaN scenario), so partial specs are in
distribution. Latents given by a source stay raw here (the sampler normalises them with the model's
statistics). Output step i is source step i (inpaint, edit, rollout from the first k latents) or source step
Ts - k + i (rollout continuing after the last k latents of a T_s-step source); inherited conditioning is
aligned the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from gaia2.generation.actions import curvature_profile, speed_profile
from gaia2.generation.agents import camera_to_grid, feature_cells, middle_frame_times, rect_cells, spec_agent_features
from gaia2.generation.rig import ResolvedRig, resolve_rig
from gaia2.generation.sources import SourceSample, Sources, check_latents
from gaia2.generation.spec import (ClipSpec, Conditioning, GenerationSpec, MaskRegion, Profile, RigSpec, SpecError,
                                   steps_for)
from gaia2.generation.timing import latent_timestamps
from gaia2.schema.metadata import METADATA_KEYS, VOCABULARY, encode_metadata
from gaia2.world_model.sample import SampleError, per_latent, world_model_sample


@dataclass(frozen=True)
class Geometry:
    """What the models fix: the world model's window and sizes, the tokenizer's frames per latent and frame size."""
    window: int                 # latent steps the world model was trained on
    cameras: int                # cameras it takes by default
    max_cameras: int
    latent_dim: int             # L
    grid_hw: tuple[int, int]    # (H, W) latent grid
    max_agents: int
    clip_dim: int
    scenario_dim: int
    temporal_factor: int        # frames per latent
    frame_hw: tuple[int, int]   # generated frame size (H * s, W * s)


@dataclass
class Request:
    """One generation, ready for the sampler (numpy, no batch axis; T = output latent steps, N = cameras)."""
    spec: GenerationSpec
    rig: ResolvedRig
    steps: int                                  # T
    cond: dict[str, np.ndarray]                 # action (T, 2), agents (T, N, A, 13), agents_valid (T, N, A),
    #                                             metadata (V,), clip (N, D), scenario (D_s,)
    negative: dict[str, np.ndarray] | None      # the unconditional branch's conditioning, when not cond
    drop: tuple[str, ...]                       # variables the unconditional branch drops
    timestamps: np.ndarray                      # (T, N) seconds from the output's start
    camera: dict[str, np.ndarray]               # intrinsics (N, 4), extrinsics (N, 4, 4), distortion (N, 5)
    given: np.ndarray | None                    # (T, N, L, H, W) raw source latents (zeros where none)
    clean: np.ndarray                           # (T, N, H, W) bool: latents kept as given
    tau_start: float = 0.0                      # edit: the flow time the source is noised to
    context: int = 0                            # rollout: given context steps at the start
    guidance_scale: float = 1.0
    guidance_time: np.ndarray | None = None     # (T,) weight per latent step
    guidance_interval: tuple[float, float] = (0.0, 1.0)
    guidance_cells: np.ndarray | None = None    # (T, N, H, W) bool: selective guidance acts here only
    info: dict = field(default_factory=dict)    # what the resolved spec reports

    @property
    def frames(self) -> int:
        return self.steps * self.info["temporal_factor"]

    @property
    def guided(self) -> bool:
        return self.guidance_scale != 1.0


ClipEncoder = Callable[[str, object], np.ndarray]   # ("text" | "image", prompt or uint8 image) -> (D,)


def _series(value, name: str, steps: int, temporal_factor: int, rate: float) -> np.ndarray:
    """A speed or curvature value of the spec -> (T,) per latent step (NaN = unknown)."""
    if value is None:
        return np.full(steps, np.nan)
    frames = steps * temporal_factor
    if isinstance(value, (int, float)):
        return np.full(steps, float(value))
    if isinstance(value, list):
        arr = np.asarray(value, np.float64)
        if len(arr) == steps:
            return arr
        if len(arr) == frames:
            return per_latent(arr, steps)
        raise SpecError(f"action.{name}: {len(arr)} values; give one per latent step ({steps}) or per frame "
                        f"({frames}) of the output")
    assert isinstance(value, Profile)
    params = {k: v for k, v in (value.model_extra or {}).items()}
    fn = speed_profile if name == "speed" else curvature_profile
    try:
        per_frame = fn(value.profile, np.arange(frames) / rate, **params)
    except ValueError as err:
        raise SpecError(f"action.{err}") from None
    return per_latent(per_frame, steps)


def _clip(spec: ClipSpec | None, names: tuple[str, ...], dim: int, encode: ClipEncoder | None,
          sources: Sources, where: str) -> np.ndarray:
    """(N, D) CLIP rows; NaN rows for cameras with none."""
    out = np.full((len(names), dim), np.nan, np.float32)
    if spec is None:
        return out

    def vector(v, what: str) -> np.ndarray:
        arr = np.asarray(v, np.float32)
        if arr.shape != (dim,):
            raise SpecError(f"{where}.{what}: {arr.shape[0] if arr.ndim == 1 else arr.shape} values, "
                            f"the world model takes CLIP embeddings of {dim}")
        return arr

    def per_camera(value, what: str, fn) -> None:
        if isinstance(value, dict):
            unknown = sorted(set(value) - set(names))
            if unknown:
                raise SpecError(f"{where}.{what}: no camera {unknown} in the rig (it has {list(names)})")
            for i, n in enumerate(names):
                if n in value:
                    out[i] = fn(value[n], f"{what}.{n}")
        else:
            out[:] = fn(value, what)

    if spec.vector is not None:
        per_camera(spec.vector, "vector", vector)
        return out
    if encode is None:
        raise SpecError(f"{where}.{'text' if spec.text else 'image'}: needs a CLIP model "
                        "(the generator was given none: pass --clip DIR)")
    if spec.text is not None:
        out[:] = vector(encode("text", spec.text), "text")
    else:
        per_camera(spec.image, "image", lambda ref, what: vector(encode("image", sources.image(ref)), what))
    return out


def _conditioning(c: Conditioning, rig: ResolvedRig, steps: int, geo: Geometry, encode: ClipEncoder | None,
                  sources: Sources, where: str) -> dict[str, np.ndarray]:
    """The explicit conditioning of ``c`` over T steps (every variable it leaves out unknown)."""
    n, a = len(rig.names), geo.max_agents
    rate, tf = rig.frame_rate, geo.temporal_factor
    action = np.stack([_series(c.action.speed if c.action else None, "speed", steps, tf, rate),
                       _series(c.action.curvature if c.action else None, "curvature", steps, tf, rate)], axis=1)
    if c.agents:
        agents, valid = spec_agent_features(c.agents, middle_frame_times(steps, tf, rate), list(rig.cameras), a)
    else:
        agents, valid = np.zeros((steps, n, a, 13), np.float32), np.zeros((steps, n, a), bool)
    ids = encode_metadata(c.metadata or {})
    if c.scenario is not None and len(c.scenario) != geo.scenario_dim:
        raise SpecError(f"{where}scenario: {len(c.scenario)} values, the world model takes {geo.scenario_dim}")
    return {
        "action": action.astype(np.float32),
        "agents": agents,
        "agents_valid": valid,
        "metadata": np.array([ids[k] for k in METADATA_KEYS], np.int64),
        "clip": _clip(c.clip, rig.names, geo.clip_dim, encode, sources, f"{where}clip"),
        "scenario": (np.asarray(c.scenario, np.float32) if c.scenario is not None
                     else np.full(geo.scenario_dim, np.nan, np.float32)),
    }


def _sample_views(sample: SourceSample, rig: ResolvedRig, where: str) -> list[int]:
    names = [c["name"] for c in sample.meta["cameras"]]
    missing = [n for n in rig.names if n not in names]
    if missing:
        raise SpecError(f"{where}: sample {sample.key!r} has cameras {names}, the rig generates {list(rig.names)}")
    return [names.index(n) for n in rig.names]


def _inherit(spec: GenerationSpec, cond: dict, sample: SourceSample, rig: ResolvedRig, geo: Geometry,
             offset: int, steps: int) -> None:
    """Overwrite the ``spec.inherit`` variables of ``cond`` with ``sample``'s, output step i = sample step i + offset."""
    views = _sample_views(sample, rig, "inherit")
    try:
        s = world_model_sample(sample.meta, sample.latents, sample.boxes, sample.boxes_valid, sample.clip,
                               len(sample.meta["cameras"]), geo.max_agents)
    except (SampleError, KeyError, ValueError) as err:
        raise SpecError(f"inherit: sample {sample.key!r} cannot be read ({err})") from None
    ts = len(s["action"])
    src = np.arange(steps) + offset
    ok = (src >= 0) & (src < ts)
    srci = np.clip(src, 0, ts - 1)
    for name in spec.inherit:
        if name == "action":
            cond["action"] = np.where(ok[:, None], s["action"][srci], np.nan).astype(np.float32)
        elif name == "agents":
            cond["agents"] = np.where(ok[:, None, None, None], s["agents"][srci][:, views], 0).astype(np.float32)
            cond["agents_valid"] = ok[:, None, None] & s["agents_valid"][srci][:, views]
        elif name == "metadata":
            cond["metadata"] = s["metadata"].astype(np.int64)
        elif name == "clip":
            if s["clip"].shape[-1] != geo.clip_dim:
                raise SpecError(f"inherit: sample {sample.key!r} has CLIP embeddings of {s['clip'].shape[-1]}, "
                                f"the world model takes {geo.clip_dim}")
            cond["clip"] = s["clip"][views].astype(np.float32)
        elif name == "scenario":
            if sample.scenario is None:
                raise SpecError(f"inherit: sample {sample.key!r} has no scenario vector (no scenario table given)")
            cond["scenario"] = np.asarray(sample.scenario, np.float32)


def _mask_regions(regions: list[MaskRegion], spec: GenerationSpec, rig: ResolvedRig, steps: int, geo: Geometry,
                  where: str) -> np.ndarray:
    """Regions to regenerate -> (T, N, H, W) bool."""
    tf, rate = geo.temporal_factor, rig.frame_rate
    start = np.arange(steps) * tf / rate
    end = (np.arange(steps) + 1) * tf / rate
    out = np.zeros((steps, len(rig.names), *geo.grid_hw), bool)
    for i, r in enumerate(regions):
        active = (end > r.start_s) & (start < (r.end_s if r.end_s is not None else np.inf))    # (T,)
        if r.rect is not None:
            cams = range(len(rig.names))
            if r.camera is not None:
                if r.camera not in rig.names:
                    raise SpecError(f"{where}[{i}].camera: no camera {r.camera!r} (the rig has {list(rig.names)})")
                cams = [rig.names.index(r.camera)]
            for j in cams:
                cam = rig.cameras[j]
                x1, y1 = camera_to_grid(np.float64(r.rect[0]), np.float64(r.rect[1]), (cam.width, cam.height),
                                        geo.frame_hw)
                x2, y2 = camera_to_grid(np.float64(r.rect[2]), np.float64(r.rect[3]), (cam.width, cam.height),
                                        geo.frame_hw)
                out[active, j] |= rect_cells(np.array([x1, y1, x2, y2]), geo.grid_hw)
            continue
        if r.agent is not None:
            if not spec.agents or r.agent >= len(spec.agents):
                raise SpecError(f"{where}[{i}].agent: index {r.agent}, the spec has {len(spec.agents or [])} agents")
            box = spec.agents[r.agent]
        else:
            box = r.box
        feats, valid = spec_agent_features([box], middle_frame_times(steps, tf, rate), list(rig.cameras), 1)
        out |= feature_cells(feats, valid, list(rig.cameras), geo.frame_hw, geo.grid_hw) & active[:, None, None, None]
    return out


def _rig_from_resolved(resolved: dict, views: list[str] | None, where: str = "mode.source.generation") -> RigSpec:
    """A previous generation's resolved rig (``ResolvedRig.to_json``) -> explicit cameras. A sample's rig may
    carry offsets below zero (measured against its frame grid); they are shifted to start at zero, which keeps
    the cameras' relative timing (timestamps are taken relative to each window's present)."""
    try:
        rig = resolved["rig"]
        cameras = [{k: c[k] for k in ("name", "width", "height", "intrinsics", "extrinsics", "distortion",
                                      "time_offset_s")} for c in rig["cameras"]]
        first = min(float(c["time_offset_s"]) for c in cameras)
        for c in cameras:
            c["time_offset_s"] = float(c["time_offset_s"]) - min(first, 0.0)
        return RigSpec(cameras=cameras, frame_rate=rig["frame_rate"], views=views)
    except (KeyError, TypeError, ValueError) as err:
        raise SpecError(f"{where}: its spec.json has no usable rig ({err})") from None


def prepare(spec: GenerationSpec, geo: Geometry, sources: Sources | None = None,
            encode_clip: ClipEncoder | None = None) -> Request:
    """Resolve ``spec`` against the models' geometry and the caller's sources -> a ``Request``."""
    sources = sources or Sources()
    mode = spec.mode
    ref = spec.source
    source = source_sample = None
    rig_spec = spec.rig
    where = f"mode.{'context' if mode.kind == 'rollout' else 'source'}"
    if ref is not None:
        if ref.sample is not None:
            source_sample = sources.sample(ref.sample)
            source = check_latents(np.asarray(source_sample.latents), f"{where}.sample {ref.sample!r}")
        elif ref.latents is not None:
            source = sources.latents(ref.latents)
        else:
            gen = sources.generation(ref.generation)
            source = gen.latents
            if rig_spec is None:
                rig_spec = _rig_from_resolved(gen.resolved, None, f"{where}.generation")
    reference = source_sample
    if spec.reference_sample is not None and (ref is None or ref.sample != spec.reference_sample):
        reference = sources.sample(spec.reference_sample)
    rig = resolve_rig(rig_spec, geo.frame_hw, geo.cameras, geo.max_cameras,
                      reference.meta if reference is not None else None)
    n = len(rig.names)

    if source is not None:
        if source_sample is not None:
            source = source[:, _sample_views(source_sample, rig, where)]
        if source.shape[1:] != (n, geo.latent_dim, *geo.grid_hw):
            raise SpecError(f"{where}: latents of shape {source.shape[1:]} per step; this rig and the world model "
                            f"need {(n, geo.latent_dim, *geo.grid_hw)} (cameras, channels, height, width)")
    ts = len(source) if source is not None else 0

    if spec.duration is not None:
        steps = steps_for(spec.duration, rig.frame_rate, geo.temporal_factor)
    else:
        steps = ts
    offset = 0
    given = None
    clean = np.zeros((steps, n, *geo.grid_hw), bool)
    context = 0
    tau_start = 0.0
    if mode.kind == "rollout":
        k = mode.context_steps
        if ts < k:
            raise SpecError(f"mode.context_steps: {k} context latents, the source has {ts}")
        if steps <= k:
            raise SpecError(f"duration: {steps} latent steps; a rollout with {k} context steps needs more")
        if k >= geo.window:
            raise SpecError(f"mode.context_steps: {k}, the world model's window is {geo.window} latent steps")
        offset = ts - k if mode.context_at == "end" else 0
        given = np.zeros((steps, *source.shape[1:]), np.float32)
        given[:k] = source[offset:offset + k]
        clean[:k] = True
        context = k
    elif mode.kind in ("inpaint", "edit"):
        if steps > ts:
            raise SpecError(f"duration: {steps} latent steps, the source has {ts}")
        given = np.ascontiguousarray(source[:steps], np.float32)
        if mode.kind == "inpaint" or mode.mask is not None:
            clean = ~_mask_regions(mode.mask, spec, rig, steps, geo, "mode.mask")
        if mode.kind == "edit":
            tau_start = float(mode.tau_start)

    cond = _conditioning(spec, rig, steps, geo, encode_clip, sources, "")
    if spec.inherit:
        _inherit(spec, cond, reference, rig, geo, offset if reference is source_sample else 0, steps)
    g = spec.guidance
    negative = None
    if g.negative is not None:
        negative = _conditioning(g.negative, rig, steps, geo, encode_clip, sources, "guidance.negative.")
    time_weight = None
    if g.over_time is not None:
        if len(g.over_time) != steps:
            raise SpecError(f"guidance.over_time: {len(g.over_time)} weights for {steps} latent steps")
        time_weight = np.asarray(g.over_time, np.float32)
    cells = None
    if g.selective:
        cells = feature_cells(cond["agents"], cond["agents_valid"], list(rig.cameras), geo.frame_hw, geo.grid_hw)

    timestamps = latent_timestamps(rig.frame_rate, steps, geo.temporal_factor, rig.offsets_s)
    info = {"temporal_factor": geo.temporal_factor, "latent_steps": steps, "frames": steps * geo.temporal_factor,
            "frame_rate": rig.frame_rate, "cameras": list(rig.names), "mode": mode.kind, "source_offset": offset,
            "metadata": {k: VOCABULARY[k][int(i)] for k, i in zip(METADATA_KEYS, cond["metadata"])},
            "dropped_in_unconditional": list(g.dropped())}
    return Request(spec=spec, rig=rig, steps=steps, cond=cond, negative=negative, drop=g.dropped(),
                   timestamps=timestamps, camera=rig.model_camera(), given=given, clean=clean, tau_start=tau_start,
                   context=context, guidance_scale=float(g.scale), guidance_time=time_weight,
                   guidance_interval=tuple(g.interval), guidance_cells=cells, info=info)
