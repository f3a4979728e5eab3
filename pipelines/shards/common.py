"""Helpers shared by the shard stages."""

from __future__ import annotations

import numpy as np


def object_column(items: list) -> np.ndarray:
    """A 1-d object array of per-row arrays.

    ``np.asarray`` would stack rows of equal shape into one array, or fail on ragged ones (5- and
    6-camera rigs in one batch); Ray Data turns this into a variable-shaped tensor column.
    """
    arr = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        arr[i] = item
    return arr
