"""Minimum temporal stride between the windows selected from one drive (paper §3: no near-duplicates)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Window starts are frame times (index / fps), so two starts exactly one stride apart can differ
# from it by a float rounding error; that must not decide whether a window is kept.
STRIDE_TOLERANCE_S = 1e-6


def select_by_stride(drive_ids: Sequence[str], start_times: np.ndarray, keys: Sequence[str],
                     min_stride_s: float) -> np.ndarray:
    """Greedy per-drive thinning -> bool mask (n,) of the windows kept.

    drive_ids: (n,) recording session of each window; start_times: (n,) seconds, finite;
    keys: (n,) unique window keys, the tie-break between equal start times.
    Per drive, windows are visited in (start_time, key) order and a window is kept iff its start is at
    least ``min_stride_s`` (less ``STRIDE_TOLERANCE_S``) after the last kept window's start, so:
    - no two kept windows of one drive start closer than the stride;
    - every dropped window starts within the stride after some earlier kept window of its drive;
    - the result depends only on the (drive, start, key) set, never on the input order.
    ``min_stride_s = 0`` keeps everything.
    """
    start_times = np.asarray(start_times, dtype=np.float64)
    n = len(drive_ids)
    if start_times.shape != (n,) or len(keys) != n:
        raise ValueError(f"select_by_stride: drive_ids ({n}), start_times {start_times.shape} and keys "
                         f"({len(keys)}) must all have length n")
    if not np.isfinite(min_stride_s) or min_stride_s < 0:
        raise ValueError(f"select_by_stride: min_stride_s must be finite and >= 0, got {min_stride_s}")
    if not np.all(np.isfinite(start_times)):
        raise ValueError("select_by_stride: start_times contain NaN or inf")
    if len(set(keys)) != n:
        raise ValueError("select_by_stride: window keys must be unique (they break ties deterministically)")
    kept = np.zeros(n, dtype=bool)
    if n == 0:
        return kept
    drives = np.asarray([str(d) for d in drive_ids])
    key_arr = np.asarray([str(k) for k in keys])
    # lexsort: the last key is the primary one -> (drive, start, key).
    order = np.lexsort((key_arr, start_times, drives))
    last_drive, last_start = None, -np.inf
    for i in order:
        if drives[i] != last_drive:
            last_drive, last_start = drives[i], -np.inf
        if start_times[i] - last_start >= min_stride_s - STRIDE_TOLERANCE_S:
            kept[i] = True
            last_start = start_times[i]
    return kept
