"""Helpers shared by the shard stages."""

from __future__ import annotations

import json
from functools import lru_cache

import numpy as np

from gaia2.schema.clip import Clip


def object_column(items: list) -> np.ndarray:
    """A 1-d object array of per-row arrays.

    ``np.asarray`` would stack rows of equal shape into one array, or fail on ragged ones (5- and
    6-camera rigs in one batch); Ray Data turns this into a variable-shaped tensor column.
    """
    arr = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        arr[i] = item
    return arr


@lru_cache(maxsize=16)
def parse_clip(clip_json: str) -> Clip:
    """A window's clip record (its slice, already checked at ingest), parsed once per task however many
    stages of the fused window task read it. Callers only read the Clip."""
    return Clip.from_dict(json.loads(clip_json))
