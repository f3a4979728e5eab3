"""Latents -> video: the tokenizer's rolling-window decoder, one mp4 per camera and a labelled mosaic of the rig.

    frames = decode_latents(tokenizer, latents)            # (T, N, L, H, W) -> (N, 8T, h, w, 3) uint8
    paths = write_outputs(out_dir, frames, latents, resolved, rig)

The decoder decodes every camera's whole latent sequence by rolling window (``Tokenizer.decode_video``), so a
rollout of any length becomes one seamless video. The mosaic puts the forward cameras in the top row and the
rear ones below (``gaia2.generation.rig.mosaic_layout``), each under its name, scaled up to be watchable.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import torch

from gaia2.generation.rig import ResolvedRig, mosaic_layout
from gaia2.schema.sample import npy_bytes
from gaia2.tokenizer.clips import to_uint8
from gaia2.video.encode import encode_video, write_atomic

MOSAIC_TILE_WIDTH = 256   # tiles are scaled up (nearest) by a whole factor to at least this width
LABEL_HEIGHT = 12


@torch.no_grad()
def decode_latents(tokenizer: torch.nn.Module, latents: np.ndarray, device: str | torch.device = "cpu",
                   cameras_per_call: int | None = None) -> np.ndarray:
    """Raw latents (T, N, L, H, W) -> frames (N, T * temporal_factor, h, w, 3) uint8, decoded per camera by
    rolling window; ``cameras_per_call`` bounds the decoder's batch (default: all cameras at once)."""
    x = torch.from_numpy(np.array(latents, np.float32)).permute(1, 2, 0, 3, 4)    # (N, L, T, H, W), a copy
    step = cameras_per_call or x.shape[0]
    out = []
    for i in range(0, x.shape[0], step):
        video = tokenizer.decode_video(x[i:i + step].to(device))                           # (n, 3, F, h, w)
        out.append(to_uint8(video))                                                         # (n, F, h, w, 3)
    return np.concatenate(out)


def _label(text: str, width: int) -> np.ndarray:
    """A (LABEL_HEIGHT, width, 3) strip with ``text`` in white on black (PIL's built-in bitmap font)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, LABEL_HEIGHT))
    ImageDraw.Draw(img).text((2, 0), text, fill=(255, 255, 255))
    return np.asarray(img)


def mosaic(frames: np.ndarray, rig: ResolvedRig) -> np.ndarray:
    """(N, F, h, w, 3) -> (F, rows * (LABEL_HEIGHT + h * s), columns * w * s, 3): the rig's cameras in their
    layout, each labelled; s = the whole scale-up factor to ``MOSAIC_TILE_WIDTH``. Even-sized for H.264."""
    n, f, h, w, _ = frames.shape
    s = max(1, math.ceil(MOSAIC_TILE_WIDTH / w))
    th, tw = h * s + LABEL_HEIGHT, w * s
    rows = mosaic_layout(rig)
    cols = max(len(r) for r in rows)
    out = np.zeros((f, len(rows) * th + (len(rows) * th) % 2, cols * tw + (cols * tw) % 2, 3), np.uint8)
    for r, row in enumerate(rows):
        pad = (cols - len(row)) * tw // 2   # shorter rows are centred
        for c, cam in enumerate(row):
            y, x = r * th, pad + c * tw
            out[:, y:y + LABEL_HEIGHT, x:x + tw] = _label(rig.names[cam], tw)
            out[:, y + LABEL_HEIGHT:y + th, x:x + tw] = frames[cam].repeat(s, axis=1).repeat(s, axis=2)
    return out


def write_outputs(out_dir: str, frames: np.ndarray, latents: np.ndarray, resolved: dict, rig: ResolvedRig
                  ) -> dict[str, str]:
    """Write ``cameras/<name>.mp4`` per camera, ``video.mp4`` (the mosaic), ``latents.npy`` (raw, (T, N, L, H, W))
    and ``spec.json`` (the resolved spec) into ``out_dir``, each atomically; returns {what: path}. The spec is
    written last, so a folder with a spec.json is complete."""
    os.makedirs(os.path.join(out_dir, "cameras"), exist_ok=True)
    paths = {}
    for name, cam_frames in zip(rig.names, frames):
        path = os.path.join(out_dir, "cameras", f"{name}.mp4")
        write_atomic(path, encode_video(_even(cam_frames), rig.frame_rate))
        paths[f"cameras/{name}"] = path
    paths["video"] = os.path.join(out_dir, "video.mp4")
    write_atomic(paths["video"], encode_video(mosaic(frames, rig), rig.frame_rate))
    paths["latents"] = os.path.join(out_dir, "latents.npy")
    write_atomic(paths["latents"], npy_bytes(np.ascontiguousarray(latents, np.float32)))
    paths["spec"] = os.path.join(out_dir, "spec.json")
    write_atomic(paths["spec"], json.dumps(resolved, indent=1, sort_keys=True).encode())
    return paths


def _even(frames: np.ndarray) -> np.ndarray:
    """Crop a row / column off odd-sized frames (H.264's yuv420p needs even sizes)."""
    h, w = frames.shape[1:3]
    return np.ascontiguousarray(frames[:, :h - h % 2, :w - w % 2])
