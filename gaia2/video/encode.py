"""H.264/MP4 encoding with PyAV, byte-for-byte reproducible.

Reproducibility: the encoder's thread count is fixed (x264 output depends on it) and the muxer
runs with ``fflags=+bitexact`` so no timestamps or library versions leak into the file.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np


@dataclass(frozen=True)
class VideoCodec:
    codec: str = "libx264"
    crf: int = 23
    preset: str = "veryfast"
    gop: int = 12
    threads: int = 1

    @classmethod
    def from_config(cls, cfg) -> "VideoCodec":
        return cls(cfg.codec, cfg.crf, cfg.preset, cfg.gop, cfg.threads)


def encode_video(frames: np.ndarray, fps: float, codec: VideoCodec = VideoCodec()) -> bytes:
    """frames: (T, H, W, 3) uint8 RGB, H and W even -> MP4 bytes."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    t, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"frame size must be even for yuv420p, got {w}x{h}")
    buf = io.BytesIO()
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(buf, mode="w", format="mp4", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream(codec.codec, rate=rate, options={
            "crf": str(codec.crf), "preset": codec.preset, "g": str(codec.gop),
            "threads": str(codec.threads), "flags": "+bitexact"})
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.thread_count = codec.threads
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


def write_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary name, so a reader never sees a partial file."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
