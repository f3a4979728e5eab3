import json

import numpy as np

from gaia2.config.shards import load_shard_config
from gaia2.curation.geofence import Geofences
from pipelines.shards.plan import make_plan


def _windows(fences: Geofences) -> list[dict]:
    inside = fences.shapes()[0].representative_point()
    inside_track = [[inside.x, inside.y], [inside.x + 1e-5, inside.y]]
    outside_track = [[-0.25, 51.40], [-0.2499, 51.40]]
    rows = []
    for d, drive in enumerate(("d0", "d1")):
        for i in range(12):   # a window every 0.25 s; the middle of drive d0 crosses a geofence
            val = drive == "d0" and 5 <= i < 9
            rows.append({"key": f"{drive}-c_w{i:03d}", "clip_id": f"{drive}-c", "drive_id": drive, "window": i,
                         "start_time": 100.0 * d + 0.25 * i, "end_time": 100.0 * d + 0.25 * i + 1.6,
                         "metadata_json": json.dumps({"country": "GB", "weather": "rain" if d else "clear"}),
                         "track_json": json.dumps(inside_track if val else outside_track),
                         "cameras": 6})
    return rows


def test_plan_accounts_for_every_window_and_keeps_the_stride_across_splits():
    fences = Geofences.default()
    cfg = load_shard_config("tiny", overrides={"balance": {"min_stride_s": 1.0}, "shards": {"target_mb": 0.5}})
    rows = _windows(fences)
    plan = make_plan(rows, cfg, fences)
    keys = [r["key"] for r in plan.selected] + [r["key"] for r in plan.not_selected]
    assert sorted(keys) == sorted(r["key"] for r in rows)
    assert {r["split"] for r in plan.selected} == {"train", "val"}
    for drive in ("d0", "d1"):
        starts = sorted(r["start_time"] for r in plan.selected if r["drive_id"] == drive)
        assert np.all(np.diff(starts) >= 1.0 - 1e-9), starts
    for r in plan.selected:
        assert r["shard"].startswith(r["split"] + "/shard-")
        assert (r["split"] == "val") == fences.touches(np.asarray(json.loads(r["track_json"])))
    # Shards hold consecutive keys of one split, sized from the config.
    for split in ("train", "val"):
        names = [r["shard"] for r in sorted(plan.selected, key=lambda r: r["key"]) if r["split"] == split]
        assert names == sorted(names)
        assert max(names.count(n) for n in names) <= plan.samples_per_shard
