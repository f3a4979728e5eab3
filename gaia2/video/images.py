"""Cameras stored as one image per timestamp (JPEG or PNG, e.g. nuScenes' ``samples/CAM_FRONT/*.jpg``).

The same two jobs as ``gaia2.video.decode`` does for a video, with the same reject reasons, so a clip's
rejects read alike whatever its cameras are stored as: ``check_images`` at ingest (files there, not empty,
decodable, not cut short, of the declared size) and ``decode_images`` for a window (scaled and
centre-cropped like ``decode_frames``). Files are read through ``gaia2.storage``: paths and ``s3://``,
``gs://`` URIs alike.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Sequence

import numpy as np
from PIL import Image

from gaia2 import storage
from gaia2.schema.errors import ClipError, Reason
from gaia2.video.decode import VideoInfo, take_frames

if TYPE_CHECKING:
    from gaia2.config.shards import ToleranceConfig

# The formats a camera image may have. Pillow would open dozens; a hostile file gets two parsers, not all.
FORMATS = ("JPEG", "PNG")
# How far from a file's end its closing marker may sit: some writers pad after it.
_TAIL = 1024


def _first_line(err: Exception) -> str:
    return (str(err).splitlines() or [""])[0][:200]


def image_truncation(data: bytes) -> str | None:
    """If ``data`` is a JPEG without its end-of-image marker or a PNG without its IEND chunk near the end, say
    so; else None. Pillow reports most cut files itself, but fills them with grey instead where anything in the
    process has set ``ImageFile.LOAD_TRUNCATED_IMAGES``."""
    # In a JPEG's coded data FF is always followed by 00 or a restart marker: FF D9 near the end is the marker.
    if data[:2] == b"\xff\xd8" and b"\xff\xd9" not in data[-_TAIL:]:
        return "JPEG without its end-of-image marker: cut short"
    if data[:8] == b"\x89PNG\r\n\x1a\n" and b"IEND" not in data[-_TAIL:]:
        return "PNG without its IEND chunk: cut short"
    return None


def open_image(data: bytes, where: str) -> Image.Image:
    """The image's header parsed (its size known, nothing decoded), with the reject reason when it is not one."""
    if len(data) == 0:
        raise ClipError(Reason.EMPTY_VIDEO, f"{where}: zero-byte image file")
    cut = image_truncation(data)
    if cut:
        raise ClipError(Reason.TRUNCATED_VIDEO, f"{where}: {cut}")
    try:
        return Image.open(io.BytesIO(data), formats=FORMATS)
    except Exception as err:   # UnidentifiedImageError, DecompressionBombError, a plugin's own
        raise ClipError(Reason.UNREADABLE_VIDEO, f"{where}: not a readable JPEG or PNG ({_first_line(err)})") from None


def _pixels(img: Image.Image, where: str) -> Image.Image:
    """``img`` decoded to RGB; a file cut short is TRUNCATED_VIDEO, any other failure UNREADABLE_VIDEO."""
    try:
        img.load()
        return img.convert("RGB")
    except Exception as err:
        reason = Reason.TRUNCATED_VIDEO if "truncated" in str(err).lower() else Reason.UNREADABLE_VIDEO
        raise ClipError(reason, f"{where}: cannot be decoded ({_first_line(err)})") from None


def file_sizes(locations: Sequence[str]) -> list[int | None]:
    """Bytes of each file, None where there is none.

    A local file is a stat (microseconds). On object storage each is a metadata request, sent 16 at a time:
    listing the parent instead would cost more where it matters, since nuScenes keeps every scene's images of
    a camera in one prefix (~34,000 objects, 34 listing requests per scene and camera, against its ~240 lookups).
    """
    if not any(storage.is_uri(loc) for loc in locations):
        return [storage.size(loc) for loc in locations]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(storage.size, locations))


def check_images(frames: Sequence[str], name: str, declared_frames: int, check: str = "last_frame", *,
                 width: int | None = None, height: int | None = None,
                 tolerance: ToleranceConfig | None = None) -> VideoInfo:
    """Make sure a camera's images are what the record declares; ``name`` is the camera's field
    (``cameras[front]``). ``check`` mirrors ``ingest.decode_check`` for videos:

    ``container``: there are ``declared_frames`` images, every one exists and is not empty (a listing or a
    lookup, nothing read), and the first decodes with the declared ``width``/``height`` (within
    ``tolerance.resolution_px``). ``last_frame`` decodes the last one too, ``all_frames`` every one (each
    size checked). An image has no container rate to compare, so ``fps`` is 0.
    """
    if len(frames) != declared_frames or not frames:
        raise ClipError(Reason.FRAME_COUNT_MISMATCH,
                        f"{name}.frames: {len(frames)} images, {declared_frames} timestamps declared")
    for i, (location, size) in enumerate(zip(frames, file_sizes(frames))):
        if size is None:
            raise ClipError(Reason.MISSING_CAMERA, f"{name}.frames[{i}]: image file not found: {storage.redact(location)}")
        if size == 0:
            raise ClipError(Reason.EMPTY_VIDEO, f"{name}.frames[{i}]: zero-byte image file: {storage.redact(location)}")
    n = len(frames)
    indices = {"container": [0], "last_frame": sorted({0, n - 1}), "all_frames": range(n)}[check]
    px = tolerance.resolution_px if tolerance is not None else 0
    declared = width is not None and height is not None
    want, first = ((width, height) if declared else None), None
    for i in indices:   # the first image always: it gives the size
        where = f"{name}.frames[{i}]"
        try:
            data = storage.read_bytes(frames[i])
        except FileNotFoundError:   # listed a moment ago, gone now
            raise ClipError(Reason.MISSING_CAMERA, f"{where}: image file not found: {storage.redact(frames[i])}") from None
        except (OSError, ValueError) as err:   # StorageError is an OSError; a malformed location a ValueError
            raise ClipError(Reason.MISSING_CAMERA, f"{where}: image file unreadable: {storage.redact(frames[i])} "
                                                   f"({_first_line(err)})") from None
        img = open_image(data, where)
        w, h = img.size   # from the header: a huge image is refused before it is decoded
        first = first or (w, h)
        want = want or first   # undeclared: every image checked has the first one's size
        if abs(w - want[0]) > px or abs(h - want[1]) > px:
            raise ClipError(Reason.RESOLUTION_MISMATCH,
                            f"{name}.width/height: {'declared' if declared else 'the first image is'} "
                            f"{want[0]}x{want[1]}, image frames[{i}] is {w}x{h} (ingest.tolerance.resolution_px = "
                            f"{px}); intrinsics and boxes would be wrong")
        _pixels(img, where)
    return VideoInfo(n, first[0], first[1], 0.0)


def decode_images(frames: Sequence[str], name: str, indices: np.ndarray, scaled_wh: tuple[int, int],
                  crop_xy: tuple[int, int], out_wh: tuple[int, int], *, native_wh: tuple[int, int] | None = None,
                  tolerance_px: int = 0, out: np.ndarray | None = None) -> np.ndarray:
    """Decode images ``indices`` (repeats allowed) scaled to ``scaled_wh`` and centre-cropped to ``out_wh``:
    (K, H, W, 3) uint8, as ``decode_frames`` does for a video (into ``out`` when given).

    Bicubic scaling (Pillow's, which widens its kernel when shrinking, so no aliasing; deterministic), after a
    JPEG's own DCT-domain reduction where the target is at most half its size (``Image.draft``). Given
    ``native_wh`` (the declared size), an image of another size beyond ``tolerance_px`` fails: ingest decoded
    only some of them, and a resized one would put every box and projection in the wrong place.
    A missing file is MISSING_CAMERA, a broken one DECODE_FAILED; other read errors (a flaky network read)
    are raised as they are, for the stage's retries.
    """
    unique, inverse = np.unique(np.asarray(indices, dtype=np.int64), return_inverse=True)
    (x0, y0), (w, h) = crop_xy, out_wh
    decoded = np.empty((len(unique), h, w, 3), np.uint8)
    for k, i in enumerate(unique.tolist()):
        where = f"{name}.frames[{i}]"
        try:
            data = storage.read_bytes(frames[i])
        except FileNotFoundError:   # ingest saw it: deleted or moved since, which no retry undoes
            raise ClipError(Reason.MISSING_CAMERA, f"{where}: image file not found: {storage.redact(frames[i])} "
                                                   f"(present at ingest)") from None
        try:
            img = open_image(data, where)
            if native_wh is not None and (abs(img.size[0] - native_wh[0]) > tolerance_px
                                          or abs(img.size[1] - native_wh[1]) > tolerance_px):
                raise ClipError(Reason.RESOLUTION_MISMATCH, f"{where}: {img.size[0]}x{img.size[1]}, declared "
                                                            f"{native_wh[0]}x{native_wh[1]}")
            if img.format == "JPEG":   # decode at 1/2, 1/4 or 1/8 in the DCT where that still covers scaled_wh:
                img.draft("RGB", scaled_wh)   # 3.5x faster for a 1600x900 frame to 128x72, ~1.6 levels apart
            rgb = _pixels(img, where).resize(scaled_wh, Image.Resampling.BICUBIC)
        except ClipError as err:   # at this stage every broken image is a failed decode; the detail says how
            raise ClipError(Reason.DECODE_FAILED, f"{err.detail} ({err.reason.value})") from None
        decoded[k] = np.asarray(rgb)[y0:y0 + h, x0:x0 + w]
    return take_frames(decoded, inverse, out)
