"""Video clips for the tokenizer from shard samples: decode each camera's mp4 at the tokenizer's
resolution, as uint8 frames (T, H, W, 3).

A shard's frames are scaled (inside the decoder, FFmpeg's scaler) so that they cover the target
size, then centre-cropped; with equal aspect ratios (the presets) that is a plain resize.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from gaia2.video.decode import open_video


def cover_size(src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> tuple[int, int]:
    """Smallest (h, w) with the source's aspect ratio that covers ``dst_hw``."""
    (h0, w0), (h, w) = src_hw, dst_hw
    if min(h0, w0, h, w) < 1:
        raise ValueError(f"cover_size: sizes must be positive, got {src_hw} -> {dst_hw}")
    scale = max(h / h0, w / w0)
    return max(h, math.ceil(h0 * scale - 1e-6)), max(w, math.ceil(w0 * scale - 1e-6))


def decode_camera(data: bytes, name: str, src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> np.ndarray:
    """One camera's mp4 bytes -> all its frames (T, H, W, 3) uint8 at ``dst_hw`` (scale to cover, centre crop).

    Raises ``ClipError`` (with the reject reason) for a video that cannot be opened.
    """
    sh, sw = cover_size(src_hw, dst_hw)
    vr = open_video(bytes(data), name, width=sw, height=sh)
    frames = vr.get_batch(list(range(len(vr)))).asnumpy()
    h, w = dst_hw
    y0, x0 = (frames.shape[1] - h) // 2, (frames.shape[2] - w) // 2
    return np.ascontiguousarray(frames[:, y0:y0 + h, x0:x0 + w])


def sample_videos(row: dict, dst_hw: tuple[int, int]) -> list[tuple[str, np.ndarray]]:
    """A WebDataset row (``json`` decoded, ``<camera>.mp4`` bytes) -> [(camera, frames (T, H, W, 3) uint8)]
    in the sample's camera order."""
    meta = row["json"]
    out = []
    for cam in meta["cameras"]:
        name = cam["name"]
        field = f"{name}.mp4"
        if field not in row:
            raise KeyError(f"sample {meta.get('key')!r}: no video for camera {name!r} (expected member {field})")
        out.append((name, decode_camera(row[field], f"{meta.get('key')}/{name}",
                                        (int(cam["height"]), int(cam["width"])), dst_hw)))
    return out


def to_model_input(frames) -> torch.Tensor:
    """uint8 clips (B, T, H, W, 3) (numpy or torch) -> float32 video (B, 3, T, H, W) in [-1, 1]."""
    x = torch.as_tensor(frames)
    if x.ndim != 5 or x.shape[-1] != 3:
        raise ValueError(f"to_model_input: expected uint8 clips (B, T, H, W, 3), got {tuple(x.shape)}")
    return x.permute(0, 4, 1, 2, 3).float().div_(127.5).sub_(1.0)


def to_uint8(video: torch.Tensor) -> np.ndarray:
    """float video (B, 3, T, H, W) in [-1, 1] -> uint8 clips (B, T, H, W, 3) (rounded, clamped)."""
    x = ((video.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 4, 1).cpu().numpy()
