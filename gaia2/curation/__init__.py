"""Data curation as pure functions: geofenced split, minimum stride per drive, joint-cell balancing.

The shard pipeline applies them in that order: each window's GPS track decides its split
(``Geofences.touches``), ``select_by_stride`` thins each drive within each split, then ``balance``
re-weights the joint metadata cells (train split by default). Everything is deterministic given the seed.
"""

from gaia2.curation.balance import BalanceResult, balance, cell_of, normalised_entropy
from gaia2.curation.geofence import GeofenceError, Geofences, default_geofences_path
from gaia2.curation.stride import STRIDE_TOLERANCE_S, select_by_stride

__all__ = [
    "BalanceResult", "balance", "cell_of", "normalised_entropy",
    "GeofenceError", "Geofences", "default_geofences_path",
    "STRIDE_TOLERANCE_S", "select_by_stride",
]
