"""The synthetic multi-rig generator: determinism, the Clip contract, rigs, and pixels that match
the metadata and the ground-truth boxes."""

from __future__ import annotations

import dataclasses
import math
import os

import decord
import numpy as np
import pytest

from gaia2.camera.model import CameraModel, box_corners
from gaia2.schema.clip import Clip
from gaia2.schema.metadata import AGENT_CATEGORIES, VOCABULARY
from gaia2.synth import RIGS, generate_clip, generate_clips
from gaia2.synth.agents import CATEGORY_COLOURS
from gaia2.synth.boxes import LAMP_COLOURS
from gaia2.synth.conditions import sample_drive_conditions
from gaia2.synth.generate import clip_record
from gaia2.synth.ground import ground_pixels
from gaia2.synth.regions import LAT_SPAN, LON_SPAN, REGIONS
from gaia2.synth.render import camera_taus, render_camera, to_ego
from gaia2.synth.scene import CLIPS_PER_DRIVE, plan_clip

DURATION = 2.5
DAY = {"time_of_day": "day", "weather": "clear"}


def _plain(plan):
    """The same plan without agents and props other than signal heads: nothing hides road or lights."""
    return dataclasses.replace(plan, agents=(), props=tuple(p for p in plan.props if p.material == "signal"))


@pytest.fixture(scope="module")
def clip0():
    return generate_clip(0, seed=3, duration_s=DURATION)


def test_same_seed_same_bytes_different_seed_different(clip0):
    record, videos = clip0
    again_record, again_videos = generate_clip(0, seed=3, duration_s=DURATION)
    assert record == again_record and videos == again_videos
    other_record, other_videos = generate_clip(0, seed=4, duration_s=DURATION)
    assert other_record != record
    assert all(other_videos.get(k) != v for k, v in videos.items())


def test_workers_write_identical_files(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    ids = generate_clips(str(one), 2, seed=9, duration_s=1.0, workers=1)
    assert generate_clips(str(two), 2, seed=9, duration_s=1.0, workers=2) == ids == sorted(ids)
    for clip_id in ids:
        names = sorted(os.listdir(one / clip_id))
        assert names == sorted(os.listdir(two / clip_id)) and "clip.json" in names
        for name in names:
            assert (one / clip_id / name).read_bytes() == (two / clip_id / name).read_bytes()


def test_written_clip_passes_the_contract_and_decodes_to_its_frame_count(tmp_path):
    (clip_id,) = generate_clips(str(tmp_path), 1, seed=5, duration_s=DURATION)
    clip = Clip.from_json_file(str(tmp_path / clip_id / "clip.json"))
    assert clip.clip_id == clip_id and clip.boxes is not None
    for cam in clip.cameras:
        assert cam.video == str(tmp_path / clip_id / f"{cam.name}.mp4")
        reader = decord.VideoReader(cam.video)
        assert len(reader) == len(cam.timestamps) == int(DURATION * cam.frame_rate + 1e-6)
        assert reader[len(reader) - 1].shape == (cam.height, cam.width, 3)


def test_rigs_cover_5_and_6_cameras_at_20_25_30_hz():
    assert len(RIGS) >= 3
    assert {len(r.cameras) for r in RIGS.values()} == {5, 6}
    assert {r.frame_rate for r in RIGS.values()} == {20.0, 25.0, 30.0}
    for rig in RIGS.values():
        offsets = [c.time_offset_s for c in rig.cameras]
        assert len(set(offsets)) == len(offsets) and max(offsets) < 1 / rig.frame_rate
        for i, cam in enumerate(rig.cameras):
            model = rig.camera_model(i)
            # Rays round-trip through the distortion model: the calibration is invertible on the image.
            rays = model.pixel_rays()
            uv, front = model.project(rays)
            v, u = np.mgrid[0:model.height, 0:model.width]
            assert front.all() and np.abs(uv - np.stack([u, v], -1)).max() < 1e-3, (rig.rig_id, cam.name)
        k1 = {c.name: c.distortion[0] for c in rig.cameras}
        assert k1["front_left"] < k1["front"] and k1["rear_right"] < k1["front"]   # wide sides: more barrel
    # Different mounting and image size across rigs.
    assert len({r.cameras[0].position[2] for r in RIGS.values()}) == 3
    assert len({(r.width, r.height) for r in RIGS.values()}) == 3


def test_records_are_valid_and_drives_continue_in_time_and_space():
    plans = [plan_clip(1, i, DURATION) for i in range(3 * CLIPS_PER_DRIVE)]
    records = [clip_record(p) for p in plans]
    clips = [Clip.from_dict(r, base_dir="/clips") for r in records]
    assert {c.rig_id for c in clips} == set(RIGS)
    for prev, clip, rec in zip([None] + clips[:-1], clips, records):
        assert set(rec["metadata"]) == set(VOCABULARY)
        country = rec["metadata"]["country"]
        _, lat, lon = REGIONS[country]
        # A drive starts inside its country's box and moves at most a few hundred metres.
        assert abs(clip.gps.latitude[0] - lat) <= LAT_SPAN + 0.01
        assert abs(clip.gps.longitude[0] - lon) <= LON_SPAN + 0.01
        assert np.all(np.abs(clip.ego.curvature) <= 0.03 + 1e-9)
        # Ego timestamps at 50 Hz cover every camera frame; GPS at 10 Hz.
        assert np.allclose(np.diff(clip.ego.timestamps), 0.02) and np.allclose(np.diff(clip.gps.timestamps), 0.1)
        assert all(c.timestamps[0] >= clip.ego.timestamps[0] and c.timestamps[-1] <= clip.ego.timestamps[-1]
                   for c in clip.cameras)
        # Boxes at the reference camera's frames, ego frame, centre at half height, within 60 m.
        assert np.array_equal(clip.boxes.timestamps, clip.cameras[0].timestamps)
        assert np.allclose(clip.boxes.center[:, 2], clip.boxes.size[:, 2] / 2, atol=1e-3)
        assert np.all(np.hypot(clip.boxes.center[:, 0], clip.boxes.center[:, 1]) <= 60.0)
        if prev is not None and prev.drive_id == clip.drive_id:
            assert clip.start_time_s == pytest.approx(prev.start_time_s + DURATION)
            assert clip.rig_id == prev.rig_id and rec["metadata"]["country"] == prev.metadata["country"]
            # The next clip starts where, and as fast as, the previous one ended.
            assert clip.gps.latitude[0] == pytest.approx(prev.gps.latitude[-1], abs=1e-7)
            assert clip.gps.longitude[0] == pytest.approx(prev.gps.longitude[-1], abs=1e-7)
            assert clip.ego.speed[0] == pytest.approx(prev.ego.speed[-1], abs=1e-3)


def test_gps_track_integrates_the_ego_speed():
    plan = plan_clip(2, 0, 4.0)
    clip = Clip.from_dict(clip_record(plan), base_dir="/clips")
    lat0 = math.radians(clip.gps.latitude[0])
    north = np.radians(np.diff(clip.gps.latitude)) * 6_378_137.0
    east = np.radians(np.diff(clip.gps.longitude)) * 6_378_137.0 * math.cos(lat0)
    travelled = np.hypot(north, east).sum()
    integral = np.trapezoid(clip.ego.speed, clip.ego.timestamps)
    assert travelled == pytest.approx(integral, rel=0.01, abs=0.05)
    # Heading change along the GPS track = integral of speed x curvature.
    heading = np.unwrap(np.arctan2(north, east))
    yaw = np.trapezoid(clip.ego.speed * clip.ego.curvature, clip.ego.timestamps)
    if integral > 5:
        assert heading[-1] - heading[0] == pytest.approx(yaw, abs=0.02 + 0.1 * abs(yaw))


def test_metadata_distribution_is_skewed():
    rng = np.random.default_rng(0)
    draws = [sample_drive_conditions(rng) for _ in range(3000)]
    count = lambda **kv: sum(all(d[k] == v for k, v in kv.items()) for d in draws)
    assert count(weather="clear", time_of_day="day") > 20 * max(1, count(weather="fog", time_of_day="night"))
    assert count(country="GB") > count(country="DE")


def test_night_is_darker_than_day_in_the_same_scene():
    day = plan_clip(0, 4, DURATION, DAY)
    night = plan_clip(0, 4, DURATION, {**DAY, "time_of_day": "night"})
    assert night.agents == day.agents and night.metadata["num_lanes"] == day.metadata["num_lanes"]
    for cam in range(len(day.rig.cameras)):
        assert render_camera(night, cam).mean() < 0.5 * render_camera(day, cam).mean()


def test_fog_blends_distant_ground_into_the_fog_colour():
    clear = plan_clip(0, 5, DURATION, DAY)
    fog = plan_clip(0, 5, DURATION, {**DAY, "weather": "fog"})
    gp = ground_pixels(clear.rig.rig_id, 0, 1.0)
    far, near = gp.index[gp.range > 60], gp.index[gp.range < 12]
    fog_rgb = np.asarray(fog.look.fog_colour) * 255
    gap = {}
    for name, plan in (("clear", clear), ("fog", fog)):
        frames = render_camera(_plain(plan), 0)
        px = frames.reshape(frames.shape[0], -1, 3).astype(float)
        gap[name] = (np.abs(px[:, far] - fog_rgb).mean(), np.abs(px[:, near] - fog_rgb).mean())
    assert gap["fog"][0] < 0.3 * gap["clear"][0]          # far ground: haze
    assert gap["fog"][1] > 2.0 * gap["fog"][0]            # near ground still shows through


def test_snow_whitens_and_rain_darkens_the_ground():
    gp = ground_pixels(plan_clip(0, 5, DURATION).rig.rig_id, 0, 1.0)
    near = gp.index[gp.range < 25]
    ground = {}
    for weather in ("clear", "snow", "rain"):
        frames = render_camera(_plain(plan_clip(0, 5, DURATION, {**DAY, "weather": weather})), 0)
        ground[weather] = frames.reshape(frames.shape[0], -1, 3)[:, near].astype(float).mean()
    assert ground["snow"] > 1.2 * ground["clear"] > 1.4 * ground["rain"], ground


def _asphalt_fraction(frames: np.ndarray) -> float:
    """Share of the lower 40% of the image that is asphalt grey (dark, unsaturated) on a clear day."""
    rows = frames[:, int(frames.shape[1] * 0.6):].astype(int)
    spread = rows.max(-1) - rows.min(-1)
    mean = rows.mean(-1)
    return float(((spread < 20) & (mean > 40) & (mean < 115)).mean())


def test_more_lanes_mean_wider_asphalt_in_the_front_camera():
    road = {**DAY, "one_way": "no", "lane_types": "none", "intersection_type": "none", "pedestrian_crossing": "no",
            "traffic_light_state": "none"}
    fractions = [_asphalt_fraction(render_camera(_plain(plan_clip(0, 6, DURATION, {**road, "num_lanes": n})), 0))
                 for n in ("1", "2", "4")]
    assert fractions[0] < fractions[1] < fractions[2], fractions


@pytest.mark.parametrize("state", ["red", "green"])
def test_the_traffic_light_shows_its_state_where_it_projects(state):
    plan = _plain(plan_clip(0, 7, DURATION, {**DAY, "intersection_type": "crossroad", "traffic_light_state": state}))
    heads = [p for p in plan.props if p.material == "signal"]
    assert len(heads) == 2
    rig = plan.rig
    model = rig.camera_model(0)
    tau = camera_taus(plan, 0)
    ego = plan.ego_state(tau)
    frames = render_camera(plan, 0)
    band = {"red": 0.815, "green": 0.185}[state]    # lamp band centres as height fractions of the head
    best = None
    for head in heads:
        (x, y, z), (l, _, h), yaw = head.centre, head.size, head.yaw
        # Lamp centre: on the head's face towards the ego (local -x), at the lamp's height.
        lx, ly = x - math.cos(yaw) * (l / 2 + 0.01), y - math.sin(yaw) * (l / 2 + 0.01)
        ex, ey = to_ego(np.full(tau.size, lx), np.full(tau.size, ly), ego)
        pts = np.stack([ex, ey, np.full(tau.size, z - h / 2 + band * h)], -1)
        cam_pts = model.ego_to_camera_points(pts)
        uv, front = model.project(cam_pts)
        for f in range(tau.size):
            u, v = uv[f]
            if front[f] and 3 <= u < model.width - 3 and 3 <= v < model.height - 3:
                if best is None or cam_pts[f, 2] < best[0]:
                    best = (cam_pts[f, 2], f, int(round(u)), int(round(v)))
    assert best is not None, "no signal head in view of the front camera"
    _, f, u, v = best
    patch = frames[f, v - 1:v + 2, u - 1:u + 2].reshape(-1, 3).astype(int)
    want = np.asarray(LAMP_COLOURS[state]) * 255
    other = "green" if state == "red" else "red"
    assert np.abs(patch - want).sum(-1).min() < 90, (patch, want)
    assert np.abs(patch - np.asarray(LAMP_COLOURS[other]) * 255).sum(-1).min() > 200


def test_ground_truth_boxes_land_on_their_category_colour_in_the_video(tmp_path):
    cats = list(CATEGORY_COLOURS)
    chroma = np.asarray([CATEGORY_COLOURS[c] for c in cats])
    chroma = chroma / chroma.sum(1, keepdims=True)
    checked = matched = 0
    for index in (0, 1, 3):
        plan = plan_clip(11, index, DURATION, DAY)
        record, videos = generate_clip(index, 11, DURATION, overrides=DAY)
        clip = Clip.from_dict(record, base_dir="/clips")
        for cam in clip.cameras:
            model = CameraModel.from_record(cam)
            path = tmp_path / f"{index}-{cam.name}.mp4"
            path.write_bytes(videos[cam.name])
            reader = decord.VideoReader(str(path))
            for f in range(0, len(cam.timestamps), 10):
                boxes = clip.boxes.at(cam.timestamps[f])
                if not len(boxes):
                    continue
                corners = model.ego_to_camera_points(box_corners(boxes[:, :3], boxes[:, 3:6], boxes[:, 6]))
                uv_c, front_c = model.project(corners)
                centres = model.ego_to_camera_points(boxes[:, :3])
                uv, _ = model.project(centres)
                dist = np.linalg.norm(centres, axis=-1)
                frame = reader[f].asnumpy().astype(float)
                for k in range(len(boxes)):
                    u, v = np.rint(uv[k]).astype(int)
                    size = uv_c[k, :, 0].max() - uv_c[k, :, 0].min()
                    if not (front_c[k].all() and centres[k, 2] < 30 and size >= 5
                            and 2 <= u < cam.width - 2 and 2 <= v < cam.height - 2):
                        continue
                    # Skip boxes behind a nearer box's outline.
                    nearer = [m for m in range(len(boxes)) if m != k and dist[m] < dist[k] and front_c[m].any()]
                    if any(uv_c[m, :, 0].min() - 1 <= u <= uv_c[m, :, 0].max() + 1
                           and uv_c[m, :, 1].min() - 1 <= v <= uv_c[m, :, 1].max() + 1 for m in nearer):
                        continue
                    rgb = frame[v, u]
                    got = cats[int(np.argmin(((chroma - rgb / max(rgb.sum(), 1e-6)) ** 2).sum(1)))]
                    checked += 1
                    matched += got == AGENT_CATEGORIES[int(boxes[k, 7])]
        assert plan.agents   # the scenes do have traffic
    assert checked >= 20 and matched >= 0.8 * checked, (matched, checked)


def test_native_scale_scales_images_and_intrinsics():
    plan = plan_clip(0, 0, 1.0)
    small, big = clip_record(plan, 1.0), clip_record(plan, 2.0)
    for a, b in zip(small["cameras"], big["cameras"]):
        assert (b["width"], b["height"]) == (2 * a["width"], 2 * a["height"])
        assert b["intrinsics"][0] == pytest.approx(2 * a["intrinsics"][0])
        assert b["intrinsics"][2] == pytest.approx(2 * (a["intrinsics"][2] + 0.5) - 0.5)
    assert render_camera(plan, 0, 2.0).shape[1:] == (big["cameras"][0]["height"], big["cameras"][0]["width"], 3)


def test_bad_arguments_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="duration"):
        generate_clips(str(tmp_path), 1, duration_s=0.0)
    with pytest.raises(ValueError, match="weather"):
        plan_clip(0, 0, 1.0, {"weather": "sandstorm"})
    with pytest.raises(ValueError, match="not a metadata variable"):
        plan_clip(0, 0, 1.0, {"colour": "red"})
    with pytest.raises(ValueError, match="at least 2"):
        generate_clip(0, 0, duration_s=0.01)


@pytest.mark.parametrize("index", [4, 6, 10])     # urban clips on the three rigs
def test_box_culling_changes_no_pixel(monkeypatch, index):
    """Rectangles, depth and elevation culling only skip rays that cannot hit: the frames equal a
    brute-force cast of every box against every pixel."""
    from gaia2.synth import boxes as box_module

    plan = plan_clip(0, index, 0.4, DAY)
    assert any(p.material == "facade" for p in plan.props) and plan.agents
    culled = [render_camera(plan, c) for c in range(len(plan.rig.cameras))]
    model_rects = box_module._rects

    def everything(model, boxes):
        rect = model_rects(model, boxes)
        rect[...] = (0, model.width, 0, model.height)
        return rect

    monkeypatch.setattr(box_module, "_rects", everything)
    monkeypatch.setattr(box_module, "_reach", lambda boxes, origin: (np.zeros(boxes.yaw.shape, np.float32),
                                                                     np.full(boxes.yaw.shape, 2.0, np.float32)))
    for c, frames in enumerate(culled):
        assert np.array_equal(render_camera(plan, c), frames), plan.rig.cameras[c].name
