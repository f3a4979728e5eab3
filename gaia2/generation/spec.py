"""The generation spec: what a person (or a client of the service) describes, validated at the edge.

    spec = load_spec("scenario.yaml")                          # YAML or JSON file
    spec = GenerationSpec.model_validate({...})                # or a Python mapping / object

Every error is a ``SpecError`` naming the field (``action.speed.accel: ...``). Units: seconds, metres,
m/s, 1/m (curvature, left > 0), degrees for yaw; the ego frame is ISO 8855 (x forward, y left, z up,
origin on the ground below the rear axle), as in the shards. A conditioning variable the spec leaves out
is unknown, exactly as dropped in training (``gaia2.conditioning``); ``inherit`` takes variables from the
real sample the spec refers to instead.

References to data (a shard sample, a latents file, a previous generation, a CLIP image) are names that
the caller's ``Sources`` resolves (``gaia2.generation.sources``): the spec itself never opens a file.
"""

from __future__ import annotations

import json
import math
import os
import re
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from gaia2.conditioning.encoder import VARIABLES
from gaia2.config.base import StrictModel
from gaia2.generation.actions import CURVATURE_PROFILES, SPEED_PROFILES
from gaia2.schema.metadata import AGENT_CATEGORIES, METADATA_KEYS, UNKNOWN, VocabularyError, encode_metadata

MAX_FRAME_RATE = 240.0
INHERITABLE = ("action", "agents", "metadata", "clip", "scenario")
# Names a guidance ``drop`` list may use besides the variables themselves.
DROP_GROUPS = {"action": ("speed", "curvature"), "metadata": METADATA_KEYS, "all": VARIABLES}
Finite = Annotated[float, Field(allow_inf_nan=False)]


class SpecError(ValueError):
    """A generation spec that does not validate, or that does not fit the models / sources; names the field."""


def _exactly_one(model: StrictModel, names: tuple[str, ...], what: str) -> None:
    given = [n for n in names if getattr(model, n) is not None]
    if len(given) != 1:
        raise ValueError(f"give exactly one of {list(names)} (got {given or 'none'})")


# ----------------------------------------------------------------------------------------------- the rig
class CameraParams(StrictModel):
    """One camera given explicitly. Intrinsics in pixels of ``width`` x ``height``."""
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    width: int = Field(gt=0, le=8192)
    height: int = Field(gt=0, le=8192)
    intrinsics: tuple[Finite, Finite, Finite, Finite] = Field(description="fx, fy, cx, cy in pixels")
    extrinsics: tuple[tuple[Finite, Finite, Finite, Finite], ...] = Field(
        description="4 x 4 camera -> ego (camera x right, y down, z forward)")
    distortion: tuple[Finite, Finite, Finite, Finite, Finite] = (0.0, 0.0, 0.0, 0.0, 0.0)
    time_offset_s: Finite = Field(0.0, ge=0.0, description="exposure delay after the rig trigger, < one frame")

    @field_validator("intrinsics")
    @classmethod
    def _focal(cls, v):
        if v[0] <= 0 or v[1] <= 0:
            raise ValueError("fx and fy must be positive")
        return v

    @field_validator("extrinsics")
    @classmethod
    def _rigid(cls, v):
        if len(v) != 4:
            raise ValueError(f"must be 4 rows of 4 (got {len(v)} rows)")
        rot = [row[:3] for row in v[:3]]
        for i in range(3):
            for j in range(3):
                dot = sum(rot[k][i] * rot[k][j] for k in range(3))
                if abs(dot - (1.0 if i == j else 0.0)) > 1e-3:
                    raise ValueError("the upper-left 3 x 3 block must be a rotation (orthonormal columns)")
        if tuple(v[3]) != (0.0, 0.0, 0.0, 1.0):
            raise ValueError("the last row must be (0, 0, 0, 1)")
        return v


class RigSpec(StrictModel):
    """A known rig by name (``gaia2.synth.rigs.RIGS``), explicit cameras with a frame rate, or the rig of a
    sample of the latent shards the generator was given."""
    name: str | None = None
    cameras: list[CameraParams] | None = Field(None, min_length=1, max_length=16)
    sample: str | None = Field(None, min_length=1, max_length=256)
    frame_rate: Finite | None = Field(None, gt=0.0, le=MAX_FRAME_RATE, description="Hz; required with cameras")
    views: list[str] | None = Field(None, min_length=1, max_length=16,
                                    description="cameras to generate, in order (default: the first the model takes)")

    @model_validator(mode="after")
    def _check(self) -> "RigSpec":
        _exactly_one(self, ("name", "cameras", "sample"), "rig")
        if self.cameras is not None:
            if self.frame_rate is None:
                raise ValueError("rig.frame_rate: required with explicit cameras")
            names = [c.name for c in self.cameras]
            if len(set(names)) != len(names):
                raise ValueError(f"rig.cameras: names must be unique (got {names})")
            late = [c.name for c in self.cameras if c.time_offset_s >= 1.0 / self.frame_rate]
            if late:
                raise ValueError(f"rig.cameras: time_offset_s of {late} must be below one frame (1 / frame_rate)")
        elif self.frame_rate is not None:
            raise ValueError("rig.frame_rate: only with explicit cameras (a named rig or a sample has its own)")
        if self.views is not None and len(set(self.views)) != len(self.views):
            raise ValueError(f"rig.views: names must be unique (got {self.views})")
        return self


class Duration(StrictModel):
    seconds: Finite | None = Field(None, gt=0.0, le=3600.0)
    latent_steps: int | None = Field(None, gt=0, le=10_000)

    @model_validator(mode="after")
    def _check(self) -> "Duration":
        _exactly_one(self, ("seconds", "latent_steps"), "duration")
        return self


# ------------------------------------------------------------------------------------- the conditioning
class Profile(StrictModel):
    """A named profile of ``gaia2.generation.actions`` and its parameters (any others are errors)."""
    model_config = {**StrictModel.model_config, "extra": "allow"}
    profile: str


Series = Union[Finite, list[Finite], Profile]


class ActionSpec(StrictModel):
    """Speed (m/s) and curvature (1/m, left > 0), each optional on its own: a constant, one value per latent
    step or per frame of the output, or a named profile (``{profile: start_from_stop, speed: 12}``)."""
    speed: Series | None = None
    curvature: Series | None = None

    @model_validator(mode="after")
    def _check(self) -> "ActionSpec":
        for name, profiles in (("speed", SPEED_PROFILES), ("curvature", CURVATURE_PROFILES)):
            value = getattr(self, name)
            if isinstance(value, Profile) and value.profile not in profiles:
                raise ValueError(f"{name}.profile: unknown profile {value.profile!r}; choose one of {sorted(profiles)}")
            if isinstance(value, list) and not value:
                raise ValueError(f"{name}: an empty list")
        speed = self.speed
        if isinstance(speed, (int, float)) and speed < 0 or isinstance(speed, list) and min(speed) < 0:
            raise ValueError("speed: must be >= 0 m/s")
        return self


class Pose(StrictModel):
    center: tuple[Finite, Finite] | tuple[Finite, Finite, Finite] = Field(
        description="ego frame, metres: (x, y) puts the box on the ground (z = height / 2)")
    yaw_deg: Finite = Field(0.0, description="heading about ego z, 0 = facing the way the ego faces")


class Keyframe(Pose):
    t: Finite = Field(ge=0.0, description="seconds from the start of the output")


class AgentSpec(StrictModel):
    """A 3D box in the ego frame: keyframes (``track``, linearly interpolated, held before the first and after
    the last) or a start pose moving at a constant velocity relative to the ego vehicle."""
    category: str
    size: tuple[Finite, Finite, Finite] = Field(description="length, width, height in metres")
    track: list[Keyframe] | None = Field(None, min_length=1, max_length=10_000)
    start: Pose | None = None
    velocity: tuple[Finite, Finite] = Field((0.0, 0.0), description="m/s in the ego frame, with start")
    yaw_rate_deg: Finite = Field(0.0, description="degrees per second, with start")
    visible: tuple[Finite, Finite] | None = Field(None, description="(from, to) seconds the agent exists")

    @model_validator(mode="after")
    def _check(self) -> "AgentSpec":
        if self.category not in AGENT_CATEGORIES or self.category == UNKNOWN:
            raise ValueError(f"category: unknown agent category {self.category!r}; allowed {list(AGENT_CATEGORIES[1:])}")
        if min(self.size) <= 0:
            raise ValueError(f"size: length, width and height must be positive (got {self.size})")
        _exactly_one(self, ("track", "start"), "agent")
        if self.track is not None:
            times = [k.t for k in self.track]
            if any(b <= a for a, b in zip(times, times[1:])):
                raise ValueError("track: keyframe times t must increase")
            if self.velocity != (0.0, 0.0) or self.yaw_rate_deg:
                raise ValueError("velocity / yaw_rate_deg: only with start (a track gives its own motion)")
        if self.visible is not None and not self.visible[0] < self.visible[1]:
            raise ValueError(f"visible: (from, to) with from < to (got {self.visible})")
        return self


class ClipSpec(StrictModel):
    """The CLIP conditioning: a text prompt (CLIP text model), an image (CLIP vision model), or raw vectors;
    one for every camera or one per camera (a camera left out of a mapping is unknown)."""
    text: str | None = Field(None, min_length=1, max_length=1000)
    image: str | dict[str, str] | None = None
    vector: list[Finite] | dict[str, list[Finite]] | None = None

    @model_validator(mode="after")
    def _check(self) -> "ClipSpec":
        _exactly_one(self, ("text", "image", "vector"), "clip")
        for name in ("image", "vector"):
            value = getattr(self, name)
            if isinstance(value, dict) and not value:
                raise ValueError(f"clip.{name}: an empty mapping")
        return self


class Conditioning(StrictModel):
    """Conditioning variables; each one left out is unknown (dropped)."""
    action: ActionSpec | None = None
    agents: list[AgentSpec] | None = Field(None, max_length=1024)
    metadata: dict[str, str] | None = None
    clip: ClipSpec | None = None
    scenario: list[Finite] | None = Field(None, min_length=1)

    @field_validator("metadata")
    @classmethod
    def _vocabulary(cls, v):
        if v is not None:
            try:
                encode_metadata(v)
            except VocabularyError as err:
                raise ValueError(str(err).removeprefix("metadata.")) from None
        return v


# --------------------------------------------------------------------------------------- the mode
class SourceRef(StrictModel):
    """Latents to start from: a sample of the latent shards, a latents file (``.npy``, (T, N, L, H, W)) or a
    previous generation (its output directory or id). The caller's ``Sources`` decides what it may open."""
    sample: str | None = Field(None, min_length=1, max_length=256)
    latents: str | None = Field(None, min_length=1, max_length=1024)
    generation: str | None = Field(None, min_length=1, max_length=1024)

    @model_validator(mode="after")
    def _check(self) -> "SourceRef":
        _exactly_one(self, ("sample", "latents", "generation"), "source")
        return self


class MaskRegion(StrictModel):
    """A region to regenerate: an image rectangle (x1, y1, x2, y2 as fractions of the image, on one camera or
    all), a spec agent's projected box (by index), or a 3D box projected into every camera; over a time range."""
    rect: tuple[Finite, Finite, Finite, Finite] | None = None
    camera: str | None = None
    agent: int | None = Field(None, ge=0)
    box: AgentSpec | None = None
    start_s: Finite = Field(0.0, ge=0.0)
    end_s: Finite | None = None

    @model_validator(mode="after")
    def _check(self) -> "MaskRegion":
        _exactly_one(self, ("rect", "agent", "box"), "mask region")
        if self.rect is not None:
            x1, y1, x2, y2 = self.rect
            if not (0.0 <= x1 < x2 <= 1.0 and 0.0 <= y1 < y2 <= 1.0):
                raise ValueError(f"rect: need 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1 (got {self.rect})")
        elif self.camera is not None:
            raise ValueError("camera: only with rect (boxes are projected into every camera)")
        if self.end_s is not None and not self.end_s > self.start_s:
            raise ValueError(f"end_s: must be after start_s ({self.start_s})")
        return self


class Scratch(StrictModel):
    kind: Literal["scratch"] = "scratch"


class Rollout(StrictModel):
    kind: Literal["rollout"]
    context: SourceRef
    context_steps: int = Field(3, ge=1, description="k: context latents")
    context_at: Literal["end", "start"] = Field("end", description="continue after the source's last k latents, "
                                                                   "or regenerate it from its first k")


class Inpaint(StrictModel):
    kind: Literal["inpaint"]
    source: SourceRef
    mask: list[MaskRegion] = Field(min_length=1, max_length=256)


class Edit(StrictModel):
    kind: Literal["edit"]
    source: SourceRef
    tau_start: Finite = Field(0.5, ge=0.0, le=1.0, description="flow time to noise the source to (1 = unchanged)")
    mask: list[MaskRegion] | None = Field(None, min_length=1, max_length=256,
                                          description="regions to edit (default: everything)")


Mode = Annotated[Union[Scratch, Rollout, Inpaint, Edit], Field(discriminator="kind")]
MODES = ("scratch", "rollout", "inpaint", "edit")


# ------------------------------------------------------------------------------------ sampler, guidance
class SamplerSpec(StrictModel):
    steps: int = Field(50, ge=1, le=1000)
    schedule: Literal["linear_quadratic", "linear"] = "linear_quadratic"
    seed: int = Field(0, ge=0, lt=2**63)


class GuidanceSpec(StrictModel):
    """Classifier-free guidance: v = v_cond + (w - 1) (v_cond - v_uncond), w = 1 + (scale - 1) x the time
    weight of the latent step x [flow time in ``interval``]. ``scale`` 1 is off (the default)."""
    scale: Finite = Field(1.0, ge=0.0, le=50.0)
    drop: list[str] | None = Field(None, description="variables the unconditional branch drops "
                                                     "(default: all, or none with a negative conditioning)")
    selective: bool = Field(False, description="guide only the latent tokens the agents' projected boxes cover")
    over_time: list[Finite] | None = Field(None, min_length=1,
                                           description="guidance weight per latent step of the output (0..1)")
    interval: tuple[Finite, Finite] = Field((0.0, 1.0), description="flow times (0 = noise) where guidance acts")
    negative: Conditioning | None = Field(None, description="the unconditional branch conditions on this instead")

    @model_validator(mode="after")
    def _check(self) -> "GuidanceSpec":
        if self.drop is not None:
            bad = [d for d in self.drop if d not in VARIABLES and d not in DROP_GROUPS]
            if bad:
                raise ValueError(f"drop: unknown variable(s) {bad}; allowed {sorted(DROP_GROUPS)} and {list(VARIABLES)}")
        lo, hi = self.interval
        if not 0.0 <= lo < hi <= 1.0:
            raise ValueError(f"interval: need 0 <= from < to <= 1 (got {self.interval})")
        if self.over_time is not None and any(not 0.0 <= w <= 1.0 for w in self.over_time):
            raise ValueError("over_time: weights must lie in [0, 1]")
        return self

    @property
    def enabled(self) -> bool:
        return self.scale != 1.0

    def dropped(self) -> tuple[str, ...]:
        """The variables the unconditional branch drops, expanded, in ``VARIABLES`` order."""
        names = self.drop if self.drop is not None else ([] if self.negative is not None else ["all"])
        out = set()
        for name in names:
            out.update(DROP_GROUPS.get(name, (name,)))
        return tuple(v for v in VARIABLES if v in out)


# ------------------------------------------------------------------------------------------- the spec
class GenerationSpec(Conditioning):
    name: str | None = Field(None, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$",
                             description="names the output (a folder of the batch job)")
    rig: RigSpec | None = Field(None, description="default: the rig of the mode's source sample / generation")
    duration: Duration | None = Field(None, description="required except for inpaint / edit (the source's)")
    inherit: list[Literal["action", "agents", "metadata", "clip", "scenario"]] = Field(
        default_factory=list, description="conditioning taken from the sample the spec refers to")
    mode: Mode = Field(default_factory=Scratch)
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    guidance: GuidanceSpec = Field(default_factory=GuidanceSpec)

    @model_validator(mode="before")
    @classmethod
    def _mode_shorthand(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("mode"), str):
            data = {**data, "mode": {"kind": data["mode"]}}
        return data

    @model_validator(mode="after")
    def _check(self) -> "GenerationSpec":
        source = self.source
        if self.rig is None and (source is None or source.latents is not None):
            raise ValueError("rig: required (only a source sample or generation brings its own rig)")
        if self.duration is None and self.mode.kind in ("scratch", "rollout"):
            raise ValueError(f"duration: required for mode {self.mode.kind}")
        both = sorted(v for v in self.inherit if getattr(self, v) is not None)
        if both:
            raise ValueError(f"inherit: {both} also given explicitly; give each variable one way")
        if self.inherit and self.reference_sample is None:
            raise ValueError("inherit: needs a sample (rig.sample or the mode's source sample)")
        if len(set(self.inherit)) != len(self.inherit):
            raise ValueError("inherit: duplicate names")
        if self.guidance.selective and not self.agents and "agents" not in self.inherit:
            raise ValueError("guidance.selective: needs agents (guidance acts on the tokens their boxes cover)")
        return self

    @property
    def source(self) -> SourceRef | None:
        return getattr(self.mode, "context", None) or getattr(self.mode, "source", None)

    @property
    def reference_sample(self) -> str | None:
        """The shard sample the spec refers to (its rig, its conditioning for ``inherit``)."""
        if self.rig is not None and self.rig.sample is not None:
            return self.rig.sample
        return self.source.sample if self.source is not None else None


def parse_spec(data: Any, where: str = "spec") -> GenerationSpec:
    """A mapping (or a spec) -> ``GenerationSpec``; raises ``SpecError`` naming every bad field."""
    if isinstance(data, GenerationSpec):
        return data
    if not isinstance(data, dict):
        raise SpecError(f"{where}: the top level must be a mapping (got {type(data).__name__})")
    try:
        return GenerationSpec.model_validate(data)
    except ValidationError as err:
        raise SpecError(f"{where}: {describe_errors(err)}") from None


_SUBFIELD = re.compile(r"^([A-Za-z_][\w.\[\]]*): ")


def describe_errors(err: ValidationError) -> str:
    """Pydantic's errors as "field.path: message" lines joined by "; ", a validator's own field prefix merged
    into the path (``metadata`` + "weather: unknown value" -> "metadata.weather: unknown value")."""
    lines = []
    for e in err.errors():
        loc = [str(p) for p in e["loc"] if not str(p).startswith("function-")]
        if len(loc) >= 2 and loc[0] == "mode" and loc[1] in MODES:
            del loc[1]   # the discriminated union's branch name
        msg = e["msg"].removeprefix("Value error, ")
        m = _SUBFIELD.match(msg)
        if m:
            sub = m.group(1)
            if loc and (sub == loc[-1] or sub.startswith(loc[-1] + ".")):
                loc = loc[:-1]
            loc, msg = [*loc, sub], msg[m.end():]
        field = ".".join(loc) or "(root)"
        got = f" (got {e['input']!r})" if "input" in e and not isinstance(e["input"], (dict, list)) else ""
        lines.append(f"{field}: {msg}{got}")
    return "; ".join(lines)


def load_spec(path: str) -> GenerationSpec:
    """A YAML or JSON spec file -> ``GenerationSpec``."""
    try:
        with open(path) as f:
            text = f.read()
        data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as err:
        raise SpecError(f"{path}: cannot read the spec ({str(err).splitlines()[0]})") from None
    return parse_spec(data, os.path.basename(path))


def steps_for(duration: Duration, frame_rate: float, temporal_factor: int) -> int:
    """Latent steps covering ``duration`` at ``frame_rate`` (seconds rounded up to whole latents)."""
    if duration.latent_steps is not None:
        return duration.latent_steps
    return max(1, math.ceil(duration.seconds * frame_rate / temporal_factor - 1e-9))


def spec_for_sample(key: str, latent_steps: int, mode: str = "scratch", seed: int = 0, tau_start: float = 0.5,
                    context_steps: int = 3, sampler_steps: int = 50,
                    variables: tuple[str, ...] = ("action", "agents", "metadata", "clip")) -> GenerationSpec:
    """A spec that regenerates shard sample ``key`` under its own recorded conditioning (``variables``): from
    scratch on its rig, rolled out from its first ``context_steps`` latents, or edited from ``tau_start``. What
    the batch job runs per sample of a split, and what evaluation compares with the real video."""
    if mode not in MODES or mode == "inpaint":
        raise SpecError(f"mode: {mode!r}; a sample's own conditioning regenerates it by scratch, rollout or edit")
    ref = {"sample": key}
    modes = {"scratch": {"kind": "scratch"},
             "rollout": {"kind": "rollout", "context": ref, "context_steps": context_steps, "context_at": "start"},
             "edit": {"kind": "edit", "source": ref, "tau_start": tau_start}}
    data = {"name": key, "rig": {"sample": key}, "duration": {"latent_steps": latent_steps},
            "inherit": list(variables), "mode": modes[mode], "sampler": {"steps": sampler_steps, "seed": seed}}
    return parse_spec(data, f"sample {key!r}")
