"""Measured latent statistics: the per-channel mean and standard deviation of a tokenizer's latents.

The world model sees (x - mean) / std so that its data has the magnitude of the unit Gaussian noise it is
interpolated with (paper §4). The paper's 0 / 0.32 belong to the paper's tokenizer; any other tokenizer's
latents must be measured. ``gaia2 encode-latents`` (and ``gaia2 latents stats`` for existing latent shards)
accumulates ``ChannelMoments`` over the latents it writes and stores the resulting ``LatentStats`` beside
them (``latent_stats.json``) and on the tokenizer's registered version; world-model training reads them
from there and its export carries them to generation.

Accumulation is in float64 sums (count, sum, sum of squares per channel), which merge exactly across
shards and workers in any order.
"""

from __future__ import annotations

import json
import math
from typing import Any, Sequence

import numpy as np
from pydantic import Field, ValidationError, model_validator

from gaia2.config.base import StrictModel

STATS_FILE = "latent_stats.json"
CHANNEL_AXIS = 2   # latent arrays of the latent shards: (T_latent, N_cameras, L, H, W)


class LatentStatsError(ValueError):
    """Latent statistics that are missing, malformed, or that disagree with another model's."""


class LatentStats(StrictModel):
    """Per-channel statistics of a tokenizer's latents (L channels)."""
    mean: list[float] = Field(min_length=1, description="per-channel mean")
    std: list[float] = Field(min_length=1, description="per-channel standard deviation (population)")
    count: int = Field(ge=0, description="values per channel the statistics were measured over (0: declared)")
    samples: int = Field(0, ge=0, description="latent samples measured")
    source: str = Field("", description="what was measured: split and directory, or where declared values come from")

    @model_validator(mode="after")
    def _check(self) -> "LatentStats":
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean has {len(self.mean)} channels, std has {len(self.std)}")
        bad = [i for i, (m, s) in enumerate(zip(self.mean, self.std)) if not (math.isfinite(m) and math.isfinite(s))]
        if bad:
            raise ValueError(f"channels {bad[:8]}: mean and std must be finite")
        low = [i for i, s in enumerate(self.std) if not s > 0]
        if low:
            raise ValueError(f"std: channels {low[:8]} are not > 0 (a constant channel cannot be normalised)")
        return self

    @property
    def channels(self) -> int:
        return len(self.mean)

    def summary(self) -> str:
        """One line: the channel count and the range of the means and standard deviations."""
        return (f"{self.channels} channels, mean {min(self.mean):+.3f}..{max(self.mean):+.3f}, "
                f"std {min(self.std):.3f}..{max(self.std):.3f} over {self.count} values per channel")

    def write(self, directory: str, name: str = STATS_FILE) -> str:
        """Write ``directory/name`` (``latent_stats.json``: the statistics training uses) atomically; returns
        its path."""
        from gaia2 import storage

        path = storage.join(directory, name)
        storage.write_text(path, json.dumps(self.model_dump(), indent=1))
        return path


def stats_file(split: str = "train") -> str:
    """The file name of a split's statistics: ``latent_stats.json`` for the training split (what the world
    model normalises with), ``latent_stats.<split>.json`` for another (for inspection only)."""
    return STATS_FILE if split == "train" else f"latent_stats.{split}.json"


def read_stats(directory: str, name: str = STATS_FILE) -> LatentStats | None:
    """``directory/name`` (default ``latent_stats.json``) -> LatentStats; None when the file does not exist."""
    from gaia2 import storage

    path = storage.join(directory, name)
    try:
        data = storage.read_bytes(path)
    except FileNotFoundError:
        return None
    try:
        return LatentStats.model_validate(json.loads(data))
    except (json.JSONDecodeError, ValueError) as err:
        raise LatentStatsError(f"{path}: not valid latent statistics ({str(err).splitlines()[0]})") from None


class ChannelMoments:
    """Running per-channel count, sum and sum of squares (float64), mergeable."""

    def __init__(self) -> None:
        self.count = 0
        self.samples = 0
        self.s1 = self.s2 = None   # (L,) float64 once the first latents are added

    def add(self, latents: np.ndarray, axis: int = CHANNEL_AXIS) -> "ChannelMoments":
        """Add one sample's latents; ``axis`` is the channel axis (2 for (T, N, L, H, W))."""
        x = np.moveaxis(np.asarray(latents, dtype=np.float64), axis, 0).reshape(latents.shape[axis], -1)
        if not np.isfinite(x).all():
            raise LatentStatsError("latents hold NaN or infinite values")
        if self.s1 is None:
            self.s1, self.s2 = np.zeros(len(x)), np.zeros(len(x))
        elif len(x) != len(self.s1):
            raise LatentStatsError(f"latents have {len(x)} channels, earlier ones {len(self.s1)}")
        self.s1 += x.sum(axis=1)
        self.s2 += np.square(x).sum(axis=1)
        self.count += x.shape[1]
        self.samples += 1
        return self

    def merge(self, other: "ChannelMoments") -> "ChannelMoments":
        if other.s1 is None:
            return self
        if self.s1 is None:
            self.s1, self.s2 = np.zeros_like(other.s1), np.zeros_like(other.s2)
        elif len(other.s1) != len(self.s1):
            raise LatentStatsError(f"cannot merge moments of {len(other.s1)} and {len(self.s1)} channels")
        self.s1 = self.s1 + other.s1
        self.s2 = self.s2 + other.s2
        self.count += other.count
        self.samples += other.samples
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain values (lists) that cross process boundaries; ``from_dict`` gives the moments back exactly."""
        return {"count": self.count, "samples": self.samples,
                "s1": None if self.s1 is None else self.s1.tolist(),
                "s2": None if self.s2 is None else self.s2.tolist()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ChannelMoments":
        out = cls()
        out.count, out.samples = int(values["count"]), int(values["samples"])
        if values["s1"] is not None:
            out.s1, out.s2 = np.asarray(values["s1"], np.float64), np.asarray(values["s2"], np.float64)
        return out

    def stats(self, source: str = "") -> LatentStats:
        if self.s1 is None or self.count == 0:
            raise LatentStatsError(f"no latents to measure statistics over ({source or 'nothing added'})")
        mean = self.s1 / self.count
        var = np.maximum(self.s2 / self.count - np.square(mean), 0.0)
        try:
            return LatentStats(mean=mean.tolist(), std=np.sqrt(var).tolist(), count=self.count,
                               samples=self.samples, source=source)
        except ValidationError as err:   # a constant channel: one line that says where it was measured
            raise LatentStatsError(f"{source or 'latents'}: {err.errors()[0]['msg']}") from None


def as_channels(value: float | Sequence[float], channels: int) -> list[float]:
    """A scalar or a per-channel list -> a list of ``channels`` floats."""
    if isinstance(value, (int, float)):
        return [float(value)] * channels
    values = [float(v) for v in value]
    if len(values) != channels:
        raise LatentStatsError(f"{len(values)} values for {channels} channels")
    return values


def same_stats(mean_a: float | Sequence[float], std_a: float | Sequence[float], b: LatentStats,
               rtol: float = 1e-5, atol: float = 1e-6) -> bool:
    """Whether (mean_a, std_a), scalars or per-channel, equal ``b`` (to float32 round-off)."""
    try:
        ma, sa = as_channels(mean_a, b.channels), as_channels(std_a, b.channels)
    except LatentStatsError:
        return False
    return (np.allclose(ma, b.mean, rtol=rtol, atol=atol) and np.allclose(sa, b.std, rtol=rtol, atol=atol))


def describe(mean: float | Sequence[float], std: float | Sequence[float]) -> str:
    """Short text of statistics for error messages: scalars as they are, lists by their range."""
    def one(v: float | Sequence[float]) -> str:
        if isinstance(v, (int, float)):
            return f"{v:g}"
        v = list(v)
        return f"[{len(v)} channels, {min(v):.4g}..{max(v):.4g}]"
    return f"mean {one(mean)}, std {one(std)}"


def require_same(mean: float | Sequence[float], std: float | Sequence[float], stats: LatentStats, ours: str,
                 theirs: str) -> None:
    """Refuse a model whose latent statistics are not its tokenizer's: ``LatentStatsError`` naming both
    (``ours``: e.g. "world model models:/gaia2-world-model-tiny/3"; ``theirs``: e.g. "tokenizer ...")."""
    if not same_stats(mean, std, stats):
        raise LatentStatsError(f"{ours} normalises latents with {describe(mean, std)}, but {theirs} has "
                               f"{describe(stats.mean, stats.std)} ({stats.source or 'measured'}): a world model "
                               f"only works with the tokenizer whose latent statistics it was trained on")
