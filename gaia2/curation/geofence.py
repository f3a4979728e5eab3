"""Validation geofences (paper §3): a window whose GPS track touches one goes to validation.

Geofences are GeoJSON polygons in [longitude, latitude] order (RFC 7946). Geometry is planar in
degrees, which is exact for "does this track touch that polygon" at city scale.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

import numpy as np
import shapely
from shapely.geometry import LineString, MultiPolygon, Point, Polygon, mapping
from shapely.strtree import STRtree
from shapely.validation import explain_validity


class GeofenceError(ValueError):
    """Invalid geofence GeoJSON; the message names the feature and the problem."""


def default_geofences_path() -> str:
    """Path of the packaged default: one validation polygon per synthetic region (gaia2/synth/regions.py)."""
    return str(resources.files("gaia2") / "data" / "geofences.geojson")


def _ring(coords: Any, where: str) -> list[tuple[float, float]]:
    if not isinstance(coords, (list, tuple)) or len(coords) < 4:
        raise GeofenceError(f"{where}: a linear ring needs a list of at least 4 positions")
    ring = []
    for j, pos in enumerate(coords):
        if (not isinstance(pos, (list, tuple)) or len(pos) not in (2, 3)
                or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in pos)):
            raise GeofenceError(f"{where}[{j}]: a position must be [lon, lat] (or [lon, lat, alt]) numbers, got {pos!r}")
        lon, lat = float(pos[0]), float(pos[1])
        if not (math.isfinite(lon) and math.isfinite(lat)) or abs(lon) > 180 or abs(lat) > 90:
            raise GeofenceError(f"{where}[{j}]: [lon, lat] = {pos[:2]} outside [-180, 180] x [-90, 90]")
        ring.append((lon, lat))
    if ring[0] != ring[-1]:
        raise GeofenceError(f"{where}: ring not closed (first position {ring[0]} != last {ring[-1]})")
    return ring


def _polygon(coords: Any, where: str) -> Polygon:
    if not isinstance(coords, (list, tuple)) or not coords:
        raise GeofenceError(f"{where}: Polygon coordinates must be a non-empty list of rings")
    rings = [_ring(r, f"{where}.coordinates[{i}]") for i, r in enumerate(coords)]
    return Polygon(rings[0], rings[1:])


def _geometry(geom: Any, where: str) -> Polygon | MultiPolygon:
    if not isinstance(geom, Mapping) or "type" not in geom or "coordinates" not in geom:
        raise GeofenceError(f"{where}.geometry: must be an object with 'type' and 'coordinates'")
    kind, coords = geom["type"], geom["coordinates"]
    if kind == "Polygon":
        shape: Polygon | MultiPolygon = _polygon(coords, f"{where}.geometry")
    elif kind == "MultiPolygon":
        if not isinstance(coords, (list, tuple)) or not coords:
            raise GeofenceError(f"{where}.geometry: MultiPolygon coordinates must be a non-empty list of polygons")
        shape = MultiPolygon([_polygon(p, f"{where}.geometry.coordinates[{i}]") for i, p in enumerate(coords)])
    else:
        raise GeofenceError(f"{where}.geometry: type {kind!r} is not a Polygon or MultiPolygon")
    if not shape.is_valid:
        raise GeofenceError(f"{where}.geometry: invalid polygon ({explain_validity(shape)})")
    if shape.area <= 0:
        raise GeofenceError(f"{where}.geometry: polygon has zero area")
    return shape


def _track_geometry(track_lonlat: np.ndarray) -> Point | LineString:
    t = np.asarray(track_lonlat, dtype=np.float64)
    if t.ndim != 2 or t.shape[1] != 2 or t.shape[0] < 1:
        raise ValueError(f"geofence: track must be (K >= 1, 2) [lon, lat], got shape {t.shape}")
    if not np.all(np.isfinite(t)):
        raise ValueError("geofence: track contains NaN or inf")
    # A stationary vehicle repeats its fix; a line of identical points is degenerate, a point is not.
    keep = np.ones(len(t), dtype=bool)
    keep[1:] = np.any(t[1:] != t[:-1], axis=1)
    t = t[keep]
    return Point(t[0]) if len(t) == 1 else LineString(t)


class Geofences:
    """Named validation polygons with a spatial index; ``touches`` decides a window's split."""

    def __init__(self, names: Sequence[str], shapes: Sequence[Polygon | MultiPolygon]):
        if len(names) != len(shapes):
            raise ValueError("Geofences: one name per shape")
        self._names = [str(n) for n in names]
        self._shapes = list(shapes)
        for s in self._shapes:
            shapely.prepare(s)   # predicates against the polygons then reuse their edge index
        self._tree = STRtree(self._shapes)

    @classmethod
    def from_geojson(cls, path_or_dict: str | os.PathLike | Mapping[str, Any]) -> "Geofences":
        """A GeoJSON FeatureCollection of Polygon/MultiPolygon features ([lon, lat]); ``properties.name``
        optional (default ``geofence-<i>``). An empty collection is valid: nothing goes to validation."""
        if isinstance(path_or_dict, Mapping):
            doc, src = path_or_dict, "geofences"
        elif isinstance(path_or_dict, (str, os.PathLike)):
            src = os.fspath(path_or_dict)
            try:
                with open(src, encoding="utf-8") as f:
                    doc = json.load(f)
            except OSError as e:
                raise GeofenceError(f"{src}: cannot read geofences ({e})") from e
            except json.JSONDecodeError as e:
                raise GeofenceError(f"{src}: not valid JSON ({e})") from e
        else:
            raise GeofenceError(f"geofences: expected a GeoJSON FeatureCollection (dict) or a path, "
                                f"got {type(path_or_dict).__name__}")
        if not isinstance(doc, Mapping) or doc.get("type") != "FeatureCollection":
            got = doc.get("type") if isinstance(doc, Mapping) else type(doc).__name__
            raise GeofenceError(f"{src}: must be a GeoJSON FeatureCollection, got type {got!r}")
        features = doc.get("features")
        if not isinstance(features, (list, tuple)):
            raise GeofenceError(f"{src}: 'features' must be a list")
        names, shapes = [], []
        for i, feat in enumerate(features):
            where = f"{src}: features[{i}]"
            if not isinstance(feat, Mapping) or feat.get("type") != "Feature":
                raise GeofenceError(f"{where}: must be an object with type 'Feature'")
            props = feat.get("properties") or {}
            if not isinstance(props, Mapping):
                raise GeofenceError(f"{where}.properties: must be an object or null")
            name = props.get("name", f"geofence-{i}")
            if not isinstance(name, str) or not name:
                raise GeofenceError(f"{where}.properties.name: must be a non-empty string, got {name!r}")
            names.append(name)
            shapes.append(_geometry(feat.get("geometry"), where))
        return cls(names, shapes)

    @classmethod
    def default(cls) -> "Geofences":
        return cls.from_geojson(default_geofences_path())

    def __len__(self) -> int:
        return len(self._shapes)

    def names(self) -> list[str]:
        return list(self._names)

    def shapes(self) -> list[Polygon | MultiPolygon]:
        """The shapely polygons, aligned with ``names()``."""
        return list(self._shapes)

    def touches(self, track_lonlat: np.ndarray) -> bool:
        """track_lonlat: (K, 2) [lon, lat] -> True iff the polyline (a point if K == 1) intersects or
        touches any polygon, boundary included."""
        geom = _track_geometry(track_lonlat)
        if not self._shapes:
            return False
        return bool(len(self._tree.query(geom, predicate="intersects")))

    def touches_many(self, tracks: Sequence[np.ndarray]) -> np.ndarray:
        """A list of (K_i, 2) [lon, lat] tracks -> (n,) bool, the same as ``touches`` on each."""
        out = np.zeros(len(tracks), dtype=bool)
        if not tracks or not self._shapes:
            for t in tracks:
                _track_geometry(t)   # still reject malformed tracks
            return out
        geoms = [_track_geometry(t) for t in tracks]
        hits = self._tree.query(geoms, predicate="intersects")   # (2, M): [track index, polygon index]
        out[np.unique(hits[0])] = True
        return out

    def to_geojson(self) -> dict[str, Any]:
        """The FeatureCollection (lists, not tuples) that ``from_geojson`` reads back to the same polygons."""
        def lists(x: Any) -> Any:
            return [lists(v) for v in x] if isinstance(x, (list, tuple)) else x
        return {"type": "FeatureCollection", "features": [
            {"type": "Feature", "properties": {"name": n},
             "geometry": {"type": g["type"], "coordinates": lists(g["coordinates"])}}
            for n, g in ((n, mapping(s)) for n, s in zip(self._names, self._shapes))]}
