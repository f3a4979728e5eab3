"""PNG plots for the shard build's stats report: cells before/after balancing, rejects, splits, map.

Uses matplotlib's Agg canvas directly (no pyplot), so plotting touches no global backend state and
is safe inside worker processes.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.patches import Polygon as PolygonPatch

from gaia2.curation.geofence import Geofences

_REQUIRED = ("cells_before", "cells_after", "entropy_before", "entropy_after", "splits", "rejects")
_MAX_CELL_LABELS = 60        # beyond this the x tick labels are unreadable; bars alone still show the shape
_MAX_TRACKS_PER_MAP = 5000   # an evenly spaced subset keeps map rendering fast on large builds
_REGION_GRID_DEG = 0.5       # tracks in touching 0.5-degree grid cells share a map
_FENCE_SEARCH_DEG = 0.1      # geofences this close to a region's tracks are drawn on its map
_COLOURS = {"train": "tab:blue", "val": "tab:orange"}


def _save(fig: Figure, path: str) -> str:
    FigureCanvasAgg(fig)
    # No "Software" chunk: the same stats give the same bytes across matplotlib versions.
    fig.savefig(path, dpi=100, metadata={"Software": None})
    return path


def _cells_plot(before: Mapping[str, float], after: Mapping[str, float], h0: float, h1: float, path: str) -> str:
    cells = sorted(set(before) | set(after), key=lambda c: (-float(before.get(c, 0)), c))
    nb, na = (float(sum(d.values())) for d in (before, after))
    share_b = np.array([before.get(c, 0) / nb if nb else 0.0 for c in cells])
    share_a = np.array([after.get(c, 0) / na if na else 0.0 for c in cells])
    fig = Figure(figsize=(max(6.0, min(0.25 * len(cells) + 2, 24.0)), 4.5), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(cells))
    ax.bar(x - 0.2, share_b, width=0.4, label=f"before (windows, H={h0:.3f})", color="tab:gray")
    ax.bar(x + 0.2, share_a, width=0.4, label=f"after (weighted mass, H={h1:.3f})", color="tab:green")
    if cells:
        ax.set_yscale("log")
    ax.set_ylabel("share of total")
    ax.set_title(f"{len(cells)} joint metadata cells, before vs after balancing (H: normalised entropy)", fontsize=10)
    if len(cells) <= _MAX_CELL_LABELS:
        ax.set_xticks(x, cells, rotation=75, ha="right", fontsize=6)
    else:
        ax.set_xticks([])
        ax.set_xlabel("cells, most common first")
    ax.legend(fontsize=8)
    return _save(fig, path)


def _bar_plot(counts: Mapping[str, float], title: str, path: str, horizontal: bool) -> str:
    # Reasons most common first; splits in their fixed order (train, val, then any other).
    order = list(_COLOURS)
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]) if horizontal else
                   (order.index(kv[0]) if kv[0] in order else len(order), kv[0]))
    fig = Figure(figsize=(7, max(2.5, 0.35 * len(items) + 1.5)) if horizontal else (4.5, 4), layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(title)
    if not items:
        ax.text(0.5, 0.5, "none", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return _save(fig, path)
    labels, values = [k for k, _ in items], [v for _, v in items]
    if horizontal:
        y = np.arange(len(items))[::-1]
        ax.barh(y, values, color="tab:red")
        ax.set_yticks(y, labels, fontsize=8)
        ax.set_xlabel("count")
    else:
        ax.bar(labels, values, color=[_COLOURS.get(k, "tab:gray") for k in labels])
        ax.set_ylabel("windows")
        for i, v in enumerate(values):
            ax.annotate(f"{v:g}", (i, v), ha="center", va="bottom", fontsize=9)
    return _save(fig, path)


def _regions(tracks: Sequence[np.ndarray]) -> list[list[int]]:
    """Group tracks into regions: connected components of occupied 0.5-degree grid cells (8-neighbours),
    ordered by their smallest (lon, lat) corner so file numbering is deterministic."""
    cell_of_track = [tuple(np.floor(t[0] / _REGION_GRID_DEG).astype(int)) for t in tracks]
    occupied = sorted(set(cell_of_track))
    parent = {c: c for c in occupied}

    def find(c: tuple[int, int]) -> tuple[int, int]:
        while parent[c] != c:
            parent[c] = parent[parent[c]]
            c = parent[c]
        return c

    for cx, cy in occupied:
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                nb = (cx + dx, cy + dy)
                if nb in parent:
                    a, b = find((cx, cy)), find(nb)
                    if a != b:
                        parent[max(a, b)] = min(a, b)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, c in enumerate(cell_of_track):
        groups.setdefault(find(c), []).append(i)
    return [groups[k] for k in sorted(groups)]


def _map_plots(tracks: Sequence[Mapping[str, Any]], geofences: Mapping[str, Any] | None, out_dir: str) -> list[str]:
    lonlat = []
    for i, t in enumerate(tracks):
        a = np.asarray(t["lonlat"], dtype=np.float64)
        if a.ndim != 2 or a.shape[1] != 2 or len(a) < 1 or t.get("split") not in _COLOURS:
            raise ValueError(f"stats.tracks[{i}]: needs split 'train'|'val' and lonlat (K >= 1, 2), got "
                             f"split={t.get('split')!r}, lonlat shape {a.shape}")
        lonlat.append(a)
    fences = Geofences.from_geojson(geofences) if geofences is not None else Geofences([], [])
    paths = []
    for r, members in enumerate(_regions(lonlat)):
        step = max(1, math.ceil(len(members) / _MAX_TRACKS_PER_MAP))
        shown = members[::step]
        pts = np.concatenate([lonlat[i] for i in shown])
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        pad = np.maximum((hi - lo) * 0.05, 1e-3)
        lo, hi = lo - pad, hi + pad
        fig = Figure(figsize=(7, 6), layout="constrained")
        ax = fig.add_subplot()
        names, s_lo, s_hi = [], lo - _FENCE_SEARCH_DEG, hi + _FENCE_SEARCH_DEG
        for name, shape in zip(fences.names(), fences.shapes()):
            x0, y0, x1, y1 = shape.bounds
            if x1 < s_lo[0] or x0 > s_hi[0] or y1 < s_lo[1] or y0 > s_hi[1]:
                continue
            names.append(name)
            for poly in getattr(shape, "geoms", [shape]):
                ax.add_patch(PolygonPatch(np.asarray(poly.exterior.coords), closed=True, facecolor="tab:orange",
                                          alpha=0.15, edgecolor="tab:orange", linewidth=1.5))
            lo = np.minimum(lo, [x0, y0])
            hi = np.maximum(hi, [x1, y1])
        for split, colour in _COLOURS.items():
            ids = [i for i in shown if tracks[i]["split"] == split]
            lines = [lonlat[i] for i in ids if len(lonlat[i]) > 1]
            if lines:
                ax.add_collection(LineCollection(lines, colors=colour, linewidths=1.0, label=f"{split} ({len(ids)})"))
            dots = [lonlat[i][0] for i in ids if len(lonlat[i]) == 1]
            if dots:
                d = np.asarray(dots)
                ax.scatter(d[:, 0], d[:, 1], s=4, color=colour, label=None if lines else f"{split} ({len(ids)})")
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        # Equal ground distances on both axes at this latitude.
        ax.set_aspect(1.0 / max(math.cos(math.radians(float(lo[1] + hi[1]) / 2)), 1e-3))
        ax.set_xlabel("longitude")
        ax.set_ylabel("latitude")
        sub = f", {len(shown)} of {len(members)} tracks shown" if step > 1 else ""
        ax.set_title(f"Window GPS tracks vs validation geofences ({', '.join(names) or 'no geofence'}{sub})",
                     fontsize=9)
        ax.legend(fontsize=8, loc="best")
        label = re.sub(r"[^A-Za-z0-9_-]+", "_", names[0]) if names else "region"
        paths.append(_save(fig, os.path.join(out_dir, f"map_{r:02d}_{label}.png")))
    return paths


def write_report_plots(stats: Mapping[str, Any], out_dir: str) -> list[str]:
    """Stats -> PNG plots in out_dir; returns their paths in a fixed order.

    stats: 'cells_before' {cell: count}, 'cells_after' {cell: mass}, 'entropy_before',
    'entropy_after' (normalised, [0, 1]), 'splits' {split: n}, 'rejects' {reason: count}; optional
    'tracks' [{'split': 'train'|'val', 'lonlat': (K, 2) [lon, lat]}] and 'geofences' (GeoJSON dict).
    Files: cells.png, rejects.png, splits.png, and with tracks map_<NN>_<first geofence name>.png per
    region (tracks in touching 0.5-degree grid cells).
    """
    missing = [k for k in _REQUIRED if k not in stats]
    if missing:
        raise ValueError(f"write_report_plots: stats is missing {missing}")
    for k in ("cells_before", "cells_after", "splits", "rejects"):
        if not isinstance(stats[k], Mapping):
            raise ValueError(f"write_report_plots: stats.{k} must be a mapping name -> number")
    os.makedirs(out_dir, exist_ok=True)
    paths = [
        _cells_plot(stats["cells_before"], stats["cells_after"], float(stats["entropy_before"]),
                    float(stats["entropy_after"]), os.path.join(out_dir, "cells.png")),
        _bar_plot(stats["rejects"], "Rejected clips / windows by reason", os.path.join(out_dir, "rejects.png"),
                  horizontal=True),
        _bar_plot(stats["splits"], "Windows per split", os.path.join(out_dir, "splits.png"), horizontal=False),
    ]
    if stats.get("tracks"):
        paths += _map_plots(stats["tracks"], stats.get("geofences"), out_dir)
    return paths
