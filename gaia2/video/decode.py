"""Video decoding with decord, and the checks that turn broken files into reject reasons.

Ingest's check reads each video's frame count, size and rate with PyAV (the encoder's own FFmpeg binding),
decoding only the first frame: half of decord's cost (1.1 vs 2.3 ms per camera), which builds a frame index and
a decoding thread before it decodes anything. Later frames (``last_frame``, ``all_frames``) and the windows
themselves are decoded with decord."""

from __future__ import annotations

import io
import struct
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from gaia2.schema.errors import ClipError, Reason
from gaia2.storage import read_bytes, redact   # paths and s3://, gs:// URIs alike

if TYPE_CHECKING:
    from gaia2.config.shards import ToleranceConfig

# ISO BMFF top-level boxes; a file whose boxes run past its end was cut short.
_MP4_TOP_LEVEL = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"uuid", b"moof", b"mfra", b"meta",
                  b"styp", b"sidx", b"pdin", b"prft", b"emsg"}


def mp4_truncation(data: bytes) -> str | None:
    """If ``data`` is an MP4 whose top-level boxes run past the end, say where; else None."""
    if len(data) < 8 or data[4:8] != b"ftyp":
        return None
    pos = 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if size == 1:
            if pos + 16 > len(data):
                return f"box header at byte {pos} cut short"
            size = struct.unpack(">Q", data[pos + 8:pos + 16])[0]
        elif size == 0:      # box runs to the end of the file
            return None
        if kind not in _MP4_TOP_LEVEL or size < 8:
            return None      # not a box structure we can judge; let the decoder decide
        if pos + size > len(data):
            return f"'{kind.decode()}' box declares {size} bytes at offset {pos}, file has {len(data)}"
        pos += size
    return f"{len(data) - pos} trailing bytes after the last box" if pos != len(data) else None


class VideoInfo(NamedTuple):
    frames: int       # frames the container holds (what decord's len(VideoReader) gives)
    width: int        # of the first decoded frame
    height: int
    fps: float        # the container's average rate


def _first_line(err: Exception) -> str:
    return (str(err).splitlines() or [""])[0][:200]


def open_video(data: bytes, name: str, width: int = -1, height: int = -1):
    """decord VideoReader over in-memory bytes, with the reject reason when it cannot be opened."""
    import decord   # imported lazily: decord pulls in its own FFmpeg

    _check_bytes(data, name)
    try:
        return decord.VideoReader(io.BytesIO(data), ctx=decord.cpu(0), width=width, height=height, num_threads=1)
    except Exception as err:   # decord raises its own DECORDError (and RuntimeError) for bad streams
        raise ClipError(Reason.UNREADABLE_VIDEO, f"{name}: decoder cannot open it ({_first_line(err)})") from None


def _check_bytes(data: bytes, name: str) -> None:
    """What a video's bytes show before any decoder sees them: empty, or an MP4 cut short."""
    if len(data) == 0:
        raise ClipError(Reason.EMPTY_VIDEO, f"{name}: zero-byte video file")
    cut = mp4_truncation(data)
    if cut:
        raise ClipError(Reason.TRUNCATED_VIDEO, f"{name}: {cut}")


def probe_video(data: bytes, name: str) -> VideoInfo:
    """The frame count, first decoded frame's size and average rate of a video, as decord would report them
    (its best video stream; its packet count; ``avg_frame_rate``, else ``r_frame_rate``), read with PyAV."""
    import av   # the encoder's FFmpeg binding (gaia2.video.encode)

    _check_bytes(data, name)
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except Exception as err:   # PyAV's FFmpegError subclasses, and anything a malformed header provokes
        raise ClipError(Reason.UNREADABLE_VIDEO, f"{name}: decoder cannot open it ({_first_line(err)})") from None
    with container:
        try:
            stream = container.streams.best("video")
        except Exception:
            stream = None
        if stream is None:
            raise ClipError(Reason.UNREADABLE_VIDEO, f"{name}: decoder cannot open it (no video stream)")
        rate = stream.average_rate or stream.base_rate
        try:
            # The container's sample count; a container without one (0) has its packets counted.
            n = stream.frames
            if not n:
                n = sum(1 for p in container.demux(stream) if p.size)
                container.seek(0)
            stream.thread_type = "NONE"   # one frame: no decoding threads to start
            frame = next(container.decode(stream))
        except Exception as err:   # FFmpegError, or StopIteration for a stream with nothing to decode
            raise ClipError(Reason.UNREADABLE_VIDEO,
                            f"{name}: first frame cannot be decoded ({_first_line(err) or type(err).__name__})") from None
        return VideoInfo(int(n), int(frame.width), int(frame.height), float(rate) if rate else 0.0)


def check_video(uri: str, name: str, declared_frames: int, check: str = "last_frame", *,
                width: int | None = None, height: int | None = None, frame_rate: float | None = None,
                tolerance: ToleranceConfig | None = None) -> VideoInfo:
    """Open a camera's video and make sure it is what the record declares.

    Always: the container opens, holds ``declared_frames`` frames (``tolerance.extra_frames`` more are
    allowed: never used) and its first frame decodes. Given ``width``/``height``: the first frame has that
    size (within ``tolerance.resolution_px``); given ``frame_rate``: the container's average rate agrees
    (within ``tolerance.container_frame_rate``, relative; None in the tolerance skips it). ``check``:
    ``last_frame``/``all_frames`` decode those too (``container`` stops after the first frame).
    """
    try:
        data = read_bytes(uri)
    except FileNotFoundError:
        raise ClipError(Reason.MISSING_CAMERA, f"{name}: video file not found: {redact(uri)}") from None
    except (OSError, ValueError) as err:   # StorageError is an OSError; a malformed location a ValueError
        raise ClipError(Reason.MISSING_CAMERA, f"{name}: video file unreadable: {redact(uri)} ({_first_line(err)})") from None
    info = probe_video(data, name)
    n, w, h, fps = info
    extra = tolerance.extra_frames if tolerance is not None else 0
    if not declared_frames <= n <= declared_frames + extra:
        raise ClipError(Reason.FRAME_COUNT_MISMATCH,
                        f"{name}.timestamps: {declared_frames} timestamps declared, video has {n} frames"
                        + (f" (ingest.tolerance.extra_frames = {extra})" if n > declared_frames else ""))
    px = tolerance.resolution_px if tolerance is not None else 0
    if width is not None and height is not None and (abs(w - width) > px or abs(h - height) > px):
        raise ClipError(Reason.RESOLUTION_MISMATCH,
                        f"{name}.width/height: declared {width}x{height}, video frames are {w}x{h} "
                        f"(ingest.tolerance.resolution_px = {px}); intrinsics and boxes would be wrong")
    rel = tolerance.container_frame_rate if tolerance is not None else None
    if frame_rate is not None and rel is not None and not (fps > 0 and abs(frame_rate / fps - 1) <= rel):
        raise ClipError(Reason.FRAME_RATE_MISMATCH,
                        f"{name}.frame_rate: declared {frame_rate:g} Hz, the video container says {fps:.4g} Hz "
                        f"(ingest.tolerance.container_frame_rate = {rel:g})")
    if check == "container":
        return info
    indices = list(range(n)) if check == "all_frames" else [n - 1]
    try:
        frames = open_video(data, name).get_batch(indices).asnumpy()
    except Exception as err:
        raise ClipError(Reason.TRUNCATED_VIDEO, f"{name}: frame {indices[-1]} cannot be decoded ({_first_line(err)})") from None
    if frames.shape[0] != len(indices):
        raise ClipError(Reason.TRUNCATED_VIDEO, f"{name}: decoded {frames.shape[0]} of {len(indices)} frames")
    return info


def decode_frames(uri: str, name: str, indices: np.ndarray, scaled_wh: tuple[int, int],
                  crop_xy: tuple[int, int], out_wh: tuple[int, int], out: np.ndarray | None = None) -> np.ndarray:
    """Decode ``indices`` scaled to ``scaled_wh`` and centre-cropped to ``out_wh``: (K, H, W, 3) uint8, written
    into ``out`` when given (a camera's slice of a window's frames: one copy fewer).

    Scaling happens inside the decoder (FFmpeg's scaler), which is cheaper than resizing after.
    """
    vr = open_video(read_bytes(uri), name, width=scaled_wh[0], height=scaled_wh[1])
    unique, inverse = np.unique(np.asarray(indices, dtype=np.int64), return_inverse=True)
    try:
        frames = vr.get_batch(unique.tolist()).asnumpy()
    except Exception as err:
        raise ClipError(Reason.DECODE_FAILED, f"{name}: decoding frames failed ({str(err).splitlines()[0][:200]})") from None
    (x0, y0), (w, h) = crop_xy, out_wh
    return take_frames(frames[:, y0:y0 + h, x0:x0 + w], inverse, out)


def take_frames(frames: np.ndarray, indices: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``frames[indices]`` as a new contiguous array, or written into ``out`` (one copy either way)."""
    if out is None:
        return np.ascontiguousarray(frames[indices])
    return np.take(frames, indices, axis=0, out=out, mode="clip")   # "clip": unbuffered; indices are in range

