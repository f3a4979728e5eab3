"""H.264/MP4 encoding with PyAV, byte-for-byte reproducible.

Reproducibility: the encoder's thread count is fixed (x264 output depends on it), the muxer
runs with ``fflags=+bitexact`` so no timestamps or library versions leak into the file, and on
CPUs with AVX-512 x264 is held to its AVX2 code paths: its AVX-512 kernels were seen to give
run-to-run differences for the same frames (7 distinct outputs in 30 encodes of one clip).
"""

from __future__ import annotations

import io
import os
import platform
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import av
import numpy as np


# Every AVX-512 CPU has all of these, so pinning them cannot select an unsupported instruction.
_X264_NO_AVX512 = "asm=MMX2,SSE,SSE2,SSE2Fast,SSE3,SSSE3,SSE4.1,SSE4.2,LZCNT,AVX,FMA3,BMI1,BMI2,AVX2"


@lru_cache(maxsize=1)
def _cpu_has_avx512() -> bool:
    if platform.machine() not in ("x86_64", "AMD64"):
        return False
    try:
        with open("/proc/cpuinfo") as f:
            return " avx512f" in f.read()
    except OSError:
        return False


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
        options = {"crf": str(codec.crf), "preset": codec.preset, "g": str(codec.gop),
                   "threads": str(codec.threads), "flags": "+bitexact"}
        if codec.codec == "libx264" and _cpu_has_avx512():
            options["x264-params"] = _X264_NO_AVX512
        stream = container.add_stream(codec.codec, rate=rate, options=options)
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
