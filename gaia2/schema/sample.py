"""The shard sample: WebDataset members of one window, and their deterministic tar encoding.

Members of sample ``<key>`` (keys contain no dots; cameras are extensions):
    <key>.json              calibration, timestamps, ego action, GPS, metadata ids, split, weight
    <key>.<camera>.mp4      the window's frames for that camera at shard resolution (H.264)
    <key>.boxes.npy         (T, N, A, 13) float32 agent features, A = detection.max_agents slots
    <key>.boxes_valid.npy   (T, N, A) bool: which slots hold an agent
    <key>.clip.npy          (N, D) float32 CLIP image embeddings (middle frame of each camera)

A sample is serialised as a run of tar members with fixed headers (mtime 0, uid/gid 0, mode 0444),
so a shard is just the concatenation of its samples' bytes in key order plus the end-of-archive
blocks: the same samples always give the same shard bytes, whichever worker encoded them.
"""

from __future__ import annotations

import io
import tarfile

import numpy as np

AGENT_FEATURES = 13
AGENT_FEATURE_NAMES = ("x1", "y1", "x2", "y2", "cx", "cy", "cz", "l", "w", "h", "sin_yaw", "cos_yaw", "category")
assert len(AGENT_FEATURE_NAMES) == AGENT_FEATURES
SAMPLE_VERSION = 1
_RECORD = tarfile.RECORDSIZE   # tarfile pads archives to a multiple of this


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def tar_members(files: list[tuple[str, bytes]]) -> bytes:
    """(name, data) pairs -> tar member blocks (headers + padded data), without the archive end."""
    buf = io.BytesIO()
    tar = tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT)
    for name, data in files:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), 0, 0o444
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()   # before close(): no end-of-archive blocks yet


def tar_trailer(length: int) -> bytes:
    """What follows ``length`` bytes of member fragments to make a complete tar archive (same padding as tarfile)."""
    end = 2 * tarfile.BLOCKSIZE
    return b"\0" * (end + (-(length + end)) % _RECORD)


def tar_archive(fragments: list[bytes]) -> bytes:
    """Concatenate member fragments into a complete tar archive (same padding as tarfile)."""
    return b"".join([*fragments, tar_trailer(sum(len(f) for f in fragments))])
