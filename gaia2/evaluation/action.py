"""Action adherence: does generated video move the way the ego action commanded?

The apparent ego motion of each generated clip (``gaia2.evaluation.ego_motion``: a photometric fit of speed and yaw
rate to all cameras, which never sees the command) against the commanded speed and curvature, over a set of samples:

    speed_spearman             Spearman's rank correlation of commanded and apparent mean speed (1 = the faster
                               the command, the faster the video; robust to the estimator's metric scale and bias);
    curvature_sign_agreement   among the samples that command a turn (|curvature| > ``min_curvature``), the share
                               whose apparent yaw rate turns the same way (left positive for both);

each with a percentile bootstrap interval over samples when there are enough of them (>= 8).

    speed, yaw = apparent_motion(frames, meta["cameras"], frame_rate)    # one generated sample
    result = action_adherence(cmd_speed, speeds, cmd_curvature, yaws)     # over all samples
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from gaia2.evaluation.ego_motion import (CameraCalibration, EgoMotionConfig, estimate_ego_motion, rank_correlation,
                                         sign_agreement)

MIN_BOOTSTRAP_COUNT = 8


@dataclass(frozen=True)
class ActionAdherence:
    speed_spearman: float                 # NaN for < 3 samples or a constant sequence
    speed_low: float | None               # bootstrap interval (None: too few samples, or not computed)
    speed_high: float | None
    curvature_sign_agreement: float       # NaN when no sample commands a turn
    sign_low: float | None
    sign_high: float | None
    n_samples: int
    n_turning: int                        # samples with |commanded curvature| > min_curvature

    def to_json(self) -> dict:
        def interval(low, high):
            return None if low is None else [low, high]

        return {"speed_spearman": self.speed_spearman, "speed_interval": interval(self.speed_low, self.speed_high),
                "curvature_sign_agreement": self.curvature_sign_agreement,
                "sign_interval": interval(self.sign_low, self.sign_high), "n": self.n_samples,
                "n_turning": self.n_turning}


def _means(values: Any, name: str) -> np.ndarray:
    """(S,) per-sample values, (S, T) per-sample sequences, or a list of S sequences of any lengths -> (S,) means
    (NaN entries ignored; a sample without any finite value is NaN)."""
    try:
        arr = np.asarray(values, np.float64)
    except ValueError:                       # ragged: sequences of different lengths
        arr = None
    if arr is not None and arr.ndim == 1:
        rows = arr[:, None]
    elif arr is not None and arr.ndim == 2:
        rows = arr
    elif arr is None:
        rows = [np.asarray(v, np.float64).ravel() for v in values]
    else:
        raise ValueError(f"action_adherence: {name} must be (S,), (S, T) or S sequences, got shape {arr.shape}")
    if not len(rows):
        raise ValueError(f"action_adherence: {name} has no samples")
    finite = [np.isfinite(r).any() for r in rows]
    return np.array([float(np.nanmean(r)) if ok else np.nan for r, ok in zip(rows, finite)])


def _interval(draws: list[float], level: float) -> tuple[float | None, float | None]:
    d = np.asarray(draws, np.float64)
    d = d[np.isfinite(d)]
    if not d.size:
        return None, None
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(d, [tail, 100 - tail])
    return float(low), float(high)


def action_adherence(commanded_speed: Sequence | np.ndarray, apparent_speed: Sequence | np.ndarray,
                     commanded_curvature: Sequence | np.ndarray, apparent_yaw_rate: Sequence | np.ndarray,
                     min_curvature: float = 0.002, bootstrap: int = 200, level: float = 0.95,
                     seed: int = 0) -> ActionAdherence:
    """S samples' commanded speed (m/s) and curvature (1/m) and the apparent speed and yaw rate (rad/s) of their
    generated video -> ``ActionAdherence``. Each argument is (S,), or per-sample sequences ((S, T) or S lists, e.g.
    the action per latent step) that are averaged per sample first. Spearman via ``ego_motion.rank_correlation``,
    sign agreement via ``ego_motion.sign_agreement`` on the samples with |commanded curvature| > ``min_curvature``
    (a straight command has no sign to agree with). Intervals: ``bootstrap`` resamples of the samples (the speed
    correlation) and of the turning samples (the sign agreement), each when there are at least 8 of them."""
    cs, vs = _means(commanded_speed, "commanded_speed"), _means(apparent_speed, "apparent_speed")
    cc, wy = _means(commanded_curvature, "commanded_curvature"), _means(apparent_yaw_rate, "apparent_yaw_rate")
    if not len(cs) == len(vs) == len(cc) == len(wy):
        raise ValueError(f"action_adherence: sample counts differ: commanded_speed {len(cs)}, apparent_speed "
                         f"{len(vs)}, commanded_curvature {len(cc)}, apparent_yaw_rate {len(wy)}")
    if not min_curvature >= 0:
        raise ValueError(f"action_adherence: min_curvature must be >= 0, got {min_curvature}")
    rho = rank_correlation(cs, vs)
    agree, n_turning = sign_agreement(cc, wy, min_curvature)
    turning = np.flatnonzero(np.abs(cc) > min_curvature)
    rng = np.random.default_rng(seed)
    speed_iv = sign_iv = (None, None)
    if bootstrap > 0 and len(cs) >= MIN_BOOTSTRAP_COUNT:
        picks = [rng.integers(0, len(cs), len(cs)) for _ in range(bootstrap)]
        speed_iv = _interval([rank_correlation(cs[p], vs[p]) for p in picks], level)
    if bootstrap > 0 and len(turning) >= MIN_BOOTSTRAP_COUNT:
        picks = [turning[rng.integers(0, len(turning), len(turning))] for _ in range(bootstrap)]
        sign_iv = _interval([sign_agreement(cc[p], wy[p], min_curvature)[0] for p in picks], level)
    return ActionAdherence(rho, *speed_iv, agree, *sign_iv, len(cs), n_turning)


def apparent_motion(frames: np.ndarray, cameras: Sequence[Mapping[str, Any]], frame_rate: float,
                    config: EgoMotionConfig = EgoMotionConfig()) -> tuple[float, float]:
    """One generated sample: frames (N_cams, T, H, W, 3) uint8 and the sample json's camera records (name, width,
    height, intrinsics in pixels of that size, extrinsics camera -> ego, distortion; as in the shards'
    ``<key>.json``), the first N_cams of them, in order, being the generated cameras (the world model takes the
    first cameras of the rig) -> (apparent speed m/s, apparent yaw rate rad/s, left positive).

    The records' intrinsics are brought to the frames' size as decoding does it (scale to cover, centre crop);
    ``frame_rate`` is the generated video's (Hz)."""
    frames = np.asarray(frames)
    if frames.ndim != 5 or frames.shape[-1] != 3:
        raise ValueError(f"apparent_motion: expected frames (N_cams, T, H, W, 3), got shape {frames.shape}")
    if len(cameras) < frames.shape[0]:
        raise ValueError(f"apparent_motion: {len(cameras)} camera records for {frames.shape[0]} cameras of frames")
    hw = frames.shape[2:4]
    records = list(cameras)[:frames.shape[0]]
    names = [str(c["name"]) for c in records]
    if len(set(names)) != len(names):
        raise ValueError(f"apparent_motion: camera names repeat: {names}")
    calib = {n: CameraCalibration.from_record(c, frames_hw=hw) for n, c in zip(names, records)}
    est = estimate_ego_motion(dict(zip(names, frames)), calib, frame_rate, config=config)
    return est.speed, est.yaw_rate
