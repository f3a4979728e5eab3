"""Curation: stride thinning, joint-cell balancing, geofenced split, report plots."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from gaia2.curation import (GeofenceError, Geofences, balance, cell_of, default_geofences_path,
                            normalised_entropy, select_by_stride)
from gaia2.curation.report import write_report_plots
from gaia2.synth.regions import LAT_SPAN, LON_SPAN, REGIONS


# ---------------------------------------------------------------- stride

def _random_windows(rng: np.random.Generator, n: int = 400):
    drives = [f"d{int(i)}" for i in rng.integers(0, 7, n)]
    # Quantised times give exact ties and exact-stride gaps, the cases a greedy rule gets wrong.
    times = rng.integers(0, 120, n) * 0.25
    keys = [f"w{i:04d}" for i in range(n)]
    return drives, times, keys


@pytest.mark.parametrize("stride", [0.0, 0.5, 1.0, 2.3])
def test_stride_property(stride):
    rng = np.random.default_rng(0)
    drives, times, keys = _random_windows(rng)
    kept = select_by_stride(drives, times, keys, stride)
    for d in set(drives):
        idx = [i for i in range(len(drives)) if drives[i] == d]
        kept_t = np.sort(times[[i for i in idx if kept[i]]])
        assert kept_t.size >= 1
        # No two kept windows of one drive closer than the stride.
        assert np.all(np.diff(kept_t) >= stride - 1e-9)
        # Every dropped window starts within the stride after an earlier (or equal-time) kept one.
        for i in idx:
            if not kept[i]:
                gap = times[i] - kept_t[kept_t <= times[i]]
                assert gap.size and gap.min() < stride
    if stride == 0.0:
        assert kept.all()
    else:
        assert not kept.all()


def test_stride_order_independent_and_exact_boundary():
    rng = np.random.default_rng(1)
    drives, times, keys = _random_windows(rng)
    kept = select_by_stride(drives, times, keys, 1.0)
    perm = rng.permutation(len(keys))
    kept_p = select_by_stride([drives[i] for i in perm], times[perm], [keys[i] for i in perm], 1.0)
    assert np.array_equal(kept_p, kept[perm])
    # Frame-time starts (k * 12 / 30 s) one stride apart up to float rounding are kept: 0, 1.2, 2.4, ...
    t = np.arange(10) * (12 / 30) + 0.1
    k = select_by_stride(["a"] * 10, t, [str(i) for i in range(10)], 1.2)
    assert k.tolist() == [True, False, False, True, False, False, True, False, False, True]
    # Equal start times: the smallest key wins.
    assert select_by_stride(["a", "a"], np.array([0.0, 0.0]), ["k2", "k1"], 1.0).tolist() == [False, True]


def test_stride_errors():
    with pytest.raises(ValueError, match="unique"):
        select_by_stride(["a", "a"], np.array([0.0, 5.0]), ["k", "k"], 1.0)
    with pytest.raises(ValueError, match="min_stride_s"):
        select_by_stride(["a"], np.array([0.0]), ["k"], -1.0)
    with pytest.raises(ValueError, match="length"):
        select_by_stride(["a"], np.array([0.0, 1.0]), ["k"], 1.0)


# ---------------------------------------------------------------- balance

def test_cell_of():
    assert cell_of({"country": "GB", "weather": None}, ["country", "weather", "time_of_day"]) == \
        "country=GB|weather=unknown|time_of_day=unknown"
    with pytest.raises(ValueError, match="weather"):
        cell_of({"weather": 3}, ["weather"])


def test_normalised_entropy_closed_forms():
    assert normalised_entropy([5, 5, 5, 5]) == pytest.approx(1.0)
    assert normalised_entropy([7]) == 1.0              # one cell: defined as 1 (nothing to flatten)
    assert normalised_entropy([7, 0, 0]) == 1.0        # zero-mass cells are not present
    assert normalised_entropy([]) == 1.0
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) / math.log(2)
    assert normalised_entropy([3, 1]) == pytest.approx(h)
    assert normalised_entropy([1e6, 1, 1]) < 0.01
    with pytest.raises(ValueError):
        normalised_entropy([1, -1])


def _skewed(counts: dict[str, int]):
    cells = [c for c, n in counts.items() for _ in range(n)]
    keys = [f"{c}-{i:03d}" for c, n in counts.items() for i in range(n)]
    return cells, keys


def test_balance_hand_example():
    cells, keys = _skewed({"a": 90, "b": 9, "c": 1})
    r = balance(cells, keys, temperature=2.0, repeat_cap=4.0, seed=0)
    s = math.sqrt(90) + 3 + 1                   # sum of n_c^(1/2)
    d = {"a": 100 * math.sqrt(90) / s, "b": 100 * 3 / s, "c": 100 / s}   # 70.34, 22.24, 7.41
    assert d["a"] < 90 and d["b"] >= 9 and d["c"] >= 1
    cells_arr = np.array(cells)
    assert r.selected[cells_arr == "a"].sum() == 70 == round(d["a"])
    assert np.all(r.weight[(cells_arr == "a") & r.selected] == 1.0)
    assert np.all(r.weight[(cells_arr == "a") & ~r.selected] == 0.0)
    assert r.selected[cells_arr == "b"].all() and r.selected[cells_arr == "c"].all()
    assert r.weight[cells_arr == "b"] == pytest.approx(d["b"] / 9)     # 2.4716, under the cap
    assert r.weight[cells_arr == "c"] == pytest.approx(4.0)            # 7.41 capped at 4
    assert r.counts_before == {"a": 90, "b": 9, "c": 1}
    assert r.mass_after == pytest.approx({"a": 70.0, "b": d["b"], "c": 4.0})
    assert r.entropy_before == pytest.approx(normalised_entropy([90, 9, 1]))
    assert r.entropy_after == pytest.approx(normalised_entropy([70, d["b"], 4]))
    assert r.entropy_after > r.entropy_before + 0.3


def test_balance_flatter_capped_deterministic_order_independent():
    rng = np.random.default_rng(2)
    counts = {f"c{i}": int(n) for i, n in enumerate(np.maximum(1, (500 * 0.5 ** np.arange(10)).astype(int)))}
    cells, keys = _skewed(counts)
    r = balance(cells, keys, temperature=3.0, repeat_cap=2.5, seed=7)
    assert r.entropy_after > r.entropy_before
    assert r.weight.max() <= 2.5 and r.weight[r.selected].min() >= 1.0
    assert np.all((r.weight > 0) == r.selected)
    assert set(r.mass_after) == set(counts) and min(r.mass_after.values()) > 0
    r2 = balance(cells, keys, temperature=3.0, repeat_cap=2.5, seed=7)
    assert np.array_equal(r.selected, r2.selected) and np.array_equal(r.weight, r2.weight)
    perm = rng.permutation(len(keys))
    rp = balance([cells[i] for i in perm], [keys[i] for i in perm], temperature=3.0, repeat_cap=2.5, seed=7)
    assert np.array_equal(rp.selected, r.selected[perm]) and np.array_equal(rp.weight, r.weight[perm])
    # The seed changes which windows of a common cell are drawn, not how many.
    r3 = balance(cells, keys, temperature=3.0, repeat_cap=2.5, seed=8)
    assert not np.array_equal(r3.selected, r.selected) and r3.selected.sum() == r.selected.sum()


def test_balance_temperature_one_keeps_everything():
    cells, keys = _skewed({"a": 97, "b": 13, "c": 3, "d": 1})
    r = balance(cells, keys, temperature=1.0, repeat_cap=4.0, seed=0)
    assert r.selected.all() and np.all(r.weight == 1.0)
    assert r.entropy_after == pytest.approx(r.entropy_before)


def test_balance_errors_and_empty():
    with pytest.raises(ValueError, match="temperature"):
        balance(["a"], ["k"], 0.5, 4.0, 0)
    with pytest.raises(ValueError, match="repeat_cap"):
        balance(["a"], ["k"], 2.0, 0.5, 0)
    with pytest.raises(ValueError, match="unique"):
        balance(["a", "a"], ["k", "k"], 2.0, 4.0, 0)
    r = balance([], [], 2.0, 4.0, 0)
    assert r.selected.shape == (0,) and r.counts_before == {} and r.entropy_after == 1.0


# ---------------------------------------------------------------- geofences

SQUARE = {"type": "FeatureCollection", "features": [
    {"type": "Feature", "properties": {"name": "sq"},
     "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]}},
    {"type": "Feature", "properties": None,
     "geometry": {"type": "MultiPolygon", "coordinates": [[[[5, 5], [6, 5], [6, 6], [5, 5]]]]}},
]}


def test_geofence_touches():
    g = Geofences.from_geojson(SQUARE)
    assert g.names() == ["sq", "geofence-1"]
    assert g.touches(np.array([[-0.5, 0.5], [0.5, 0.5]]))            # crosses an edge
    assert g.touches(np.array([[-0.5, 0.5], [1.5, 0.5]]))            # both ends outside, passes through
    assert g.touches(np.array([[0.2, 0.2], [0.3, 0.4], [0.8, 0.9]]))  # fully inside
    assert g.touches(np.array([[0.5, 0.5]]))                         # a single point inside
    assert g.touches(np.array([[0.5, 0.5], [0.5, 0.5]]))             # stationary: repeated fix
    assert g.touches(np.array([[-1.0, 1.0], [2.0, 1.0]]))            # runs along the top edge
    assert g.touches(np.array([[5.8, 5.5], [7.0, 5.5]]))             # the multipolygon part
    assert not g.touches(np.array([[-0.5, -0.5], [-0.1, 2.0]]))      # fully outside
    assert not g.touches(np.array([[2.0, 2.0]]))
    tracks = [np.array([[0.5, 0.5]]), np.array([[3.0, 3.0], [4.0, 3.0]]), np.array([[-1.0, 0.5], [0.5, 0.5]])]
    assert g.touches_many(tracks).tolist() == [True, False, True]
    with pytest.raises(ValueError, match="track"):
        g.touches(np.zeros((0, 2)))
    assert not Geofences.from_geojson({"type": "FeatureCollection", "features": []}).touches(np.array([[0.5, 0.5]]))


def test_geofence_round_trip(tmp_path):
    g = Geofences.from_geojson(SQUARE)
    p = tmp_path / "g.geojson"
    p.write_text(json.dumps(g.to_geojson()))
    g2 = Geofences.from_geojson(str(p))
    assert g2.names() == g.names()
    assert all(a.equals(b) for a, b in zip(g.shapes(), g2.shapes()))


@pytest.mark.parametrize("doc, match", [
    ({"type": "Feature", "features": []}, "FeatureCollection"),
    ([1, 2], "FeatureCollection"),
    ({"type": "FeatureCollection", "features": {}}, "features"),
    ({"type": "FeatureCollection"}, "features"),
    ({"type": "FeatureCollection", "features": [{"type": "Feature", "geometry":
        {"type": "LineString", "coordinates": [[0, 0], [1, 1]]}}]}, "not a Polygon"),
    ({"type": "FeatureCollection", "features": [{"type": "Feature", "geometry":
        {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]]}}]}, "not closed"),
    ({"type": "FeatureCollection", "features": [{"type": "Feature", "geometry":
        {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [0, 0]]]}}]}, "at least 4"),
    ({"type": "FeatureCollection", "features": [{"type": "Feature", "geometry":   # bow-tie
        {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}}]}, "invalid polygon"),
    ({"type": "FeatureCollection", "features": [{"type": "Feature", "geometry":   # [lat, lon] mix-up
        {"type": "Polygon", "coordinates": [[[0, 0], [0, 100], [1, 100], [0, 0]]]}}]}, "outside"),
    ({"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": None}]}, "geometry"),
])
def test_geofence_invalid(doc, match):
    with pytest.raises(GeofenceError, match=match):
        Geofences.from_geojson(doc)


def test_geofence_invalid_file(tmp_path):
    p = tmp_path / "bad.geojson"
    p.write_text("{not json")
    with pytest.raises(GeofenceError, match="not valid JSON"):
        Geofences.from_geojson(str(p))


def test_default_geofences_cover_part_of_each_region():
    g = Geofences.default()
    assert default_geofences_path().endswith("geofences.geojson")
    assert len(g) == len(REGIONS)
    rng = np.random.default_rng(3)
    for name, lat, lon in REGIONS.values():
        pts = np.stack([lon + rng.uniform(-LON_SPAN, LON_SPAN, 400), lat + rng.uniform(-LAT_SPAN, LAT_SPAN, 400)], 1)
        inside = g.touches_many([p[None] for p in pts])
        assert 0.1 <= inside.mean() <= 0.5, (name, inside.mean())
    # Far from every region (and the [lon, lat] order matters: swapped, London is in the Indian Ocean).
    assert not g.touches(np.array([[51.5474, -0.1], [51.55, -0.1]]))


# ---------------------------------------------------------------- report

def test_report_writes_pngs(tmp_path):
    rng = np.random.default_rng(4)
    tracks = []
    for _ in range(30):
        lon0, lat0 = -0.1278 + rng.uniform(-0.06, 0.06), 51.5074 + rng.uniform(-0.04, 0.04)
        track = np.array([[lon0, lat0], [lon0 + 0.001, lat0 + 0.0005]])
        split = "val" if Geofences.default().touches(track) else "train"
        tracks.append({"split": split, "lonlat": track.tolist()})
    tracks.append({"split": "train", "lonlat": [[11.55, 48.12]]})   # a second region, one point
    stats = {"cells_before": {"a": 90, "b": 9, "c": 1}, "cells_after": {"a": 70.0, "b": 22.2, "c": 4.0},
             "entropy_before": 0.36, "entropy_after": 0.78, "splits": {"train": 80, "val": 21},
             "rejects": {"truncated_video": 3, "not_selected_stride": 12},
             "tracks": tracks, "geofences": json.load(open(default_geofences_path()))}
    paths = write_report_plots(stats, str(tmp_path / "plots"))
    names = [p.split("/")[-1] for p in paths]
    assert names == ["cells.png", "rejects.png", "splits.png", "map_00_london-val.png", "map_01_munich-val.png"]
    for p in paths:
        with open(p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    # Same stats -> same bytes; no tracks -> no map; empty rejects still plot.
    again = write_report_plots(stats, str(tmp_path / "again"))
    assert all(open(a, "rb").read() == open(b, "rb").read() for a, b in zip(paths, again))
    bare = {k: v for k, v in stats.items() if k not in ("tracks", "geofences")} | {"rejects": {}}
    assert len(write_report_plots(bare, str(tmp_path / "bare"))) == 3
    with pytest.raises(ValueError, match="splits"):
        write_report_plots({k: v for k, v in stats.items() if k != "splits"}, str(tmp_path / "x"))
