"""The evaluation run's pictures: metrics against training step (Fig. 13), the validation loss by tau bucket, a
grid of real vs generated frames and side-by-side real | generated videos."""

from __future__ import annotations

import math
import os

import numpy as np

CURVE_METRICS = ("val_loss", "fdd", "fid", "fvd", "fvmd", "agent_iou", "action_speed_spearman")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def metric_curves(candidates: list[dict], path: str) -> str:
    """One panel per metric: value and interval against training step."""
    plt = _pyplot()
    names = [m for m in CURVE_METRICS if any(m in c["metrics"] for c in candidates)]
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        pts = [(c["step"], c["metrics"][name]) for c in candidates if name in c["metrics"]]
        steps = [s for s, _ in pts]
        ax.plot(steps, [m["value"] for _, m in pts], "o-")
        lows = [m.get("low") for _, m in pts]
        if all(v is not None for v in lows):
            ax.fill_between(steps, lows, [m["high"] for _, m in pts], alpha=0.25)
        ax.set_title(name)
        ax.set_xlabel("training step")
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def tau_bars(candidates: list[dict], path: str) -> str:
    """The validation flow loss per tau bucket, one bar group per model."""
    plt = _pyplot()
    buckets = sorted({b for c in candidates for b in (c["metrics"].get("val_loss", {}).get("by_tau") or {})})
    fig, ax = plt.subplots(figsize=(max(5, 1.5 * len(buckets)), 3.5))
    width = 0.8 / max(1, len(candidates))
    for i, c in enumerate(candidates):
        by = c["metrics"].get("val_loss", {}).get("by_tau") or {}
        ax.bar(np.arange(len(buckets)) + i * width, [by.get(b, np.nan) for b in buckets], width,
               label=c["tag"] if c.get("step") is None else f"step {c['step']}")
    ax.set_xticks(np.arange(len(buckets)) + 0.4 - width / 2, [b.replace("_", "-") for b in buckets])
    ax.set_xlabel("flow time tau")
    ax.set_ylabel("validation flow loss")
    if len(candidates) <= 8:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _pair(shards: str, split: str, folder: str) -> tuple[np.ndarray, np.ndarray]:
    """(real, generated) frames (N, F, H, W, 3) of the generation in ``folder``, on the generation's cameras and
    its frame count, the real frames resized to the generated size."""
    import cv2

    from pipelines.evaluation.samples import ShardIndex, generated_video, real_video

    key = os.path.basename(folder)
    fake = generated_video(folder, key)
    real = real_video(ShardIndex(shards, split), key)
    names = [c["name"] for c in real.cameras]
    keep = [names.index(c["name"]) for c in fake.cameras if c["name"] in names] or list(range(len(names)))
    f = min(real.frames.shape[1], fake.frames.shape[1])
    h, w = fake.frames.shape[2:4]
    r = real.frames[keep, :f]
    if r.shape[2:4] != (h, w):
        r = np.stack([[cv2.resize(fr, (w, h), interpolation=cv2.INTER_AREA) for fr in cam] for cam in r])
    return r, fake.frames[:len(keep), :f]


def frame_grid(shards: str, split: str, gen_dir: str, keys: list[str], path: str) -> str:
    """Rows: samples; each row the first camera's middle frame, real | generated."""
    from PIL import Image

    tiles = []
    for key in keys:
        real, fake = _pair(shards, split, os.path.join(gen_dir, key))
        mid = real.shape[1] // 2
        tiles.append(np.concatenate([real[0, mid], np.full((real.shape[2], 2, 3), 255, np.uint8), fake[0, mid]], 1))
    grid = np.concatenate([np.pad(t, ((1, 1), (0, 0), (0, 0))) for t in tiles], 0)
    scale = max(1, 512 // grid.shape[1])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(grid.repeat(scale, 0).repeat(scale, 1)).save(path)
    return path


def side_by_side(shards: str, split: str, folder: str, path: str) -> str:
    """An mp4 of every camera, the real row above the generated one."""
    import json

    from gaia2.video.encode import encode_video, write_atomic

    real, fake = _pair(shards, split, folder)
    top = np.concatenate(list(real), axis=2)       # (F, H, N*W, 3)
    bottom = np.concatenate(list(fake), axis=2)
    video = np.concatenate([top, bottom], axis=1)
    scale = max(1, 256 // real.shape[3])
    video = video.repeat(scale, 1).repeat(scale, 2)
    video = video[:, :video.shape[1] - video.shape[1] % 2, :video.shape[2] - video.shape[2] % 2]
    with open(os.path.join(folder, "spec.json")) as f:
        rate = float(json.load(f).get("rig", {}).get("frame_rate") or 10.0)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_atomic(path, encode_video(np.ascontiguousarray(video), rate))
    return path
