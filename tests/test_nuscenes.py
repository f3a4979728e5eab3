"""nuScenes as a source: a small dataset in the real layout (tests/nuscenes_helpers.py), converted and built.

The conversion is checked against a hand computation (the helper's analytic ego arc, camera rig and object
motion, with the devkit's interpolation rules written out), not against the devkit itself: the devkit pins
numpy<2 and cannot share this environment.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import tarfile

import numpy as np
import pytest

from gaia2.config.shards import load_shard_config
from gaia2.curation.geofence import Geofences
from gaia2.curation.official import OfficialSplit, SplitListError
from gaia2.datasets.nuscenes_clip import scene_record
from gaia2.schema.metadata import AGENT_CATEGORIES
from pipelines.shards.ingest import IngestClips
from pipelines.shards.plan import make_plan
from pipelines.shards.sources import SourceError, list_clips, nuscenes_root, source_summary
from tests import nuscenes_helpers as nh

SHORT = {"window": {"frames": 8, "hop": 8}, "balance": {"min_stride_s": 0.0}}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> nh.Truth:
    return nh.write_dataset(str(tmp_path_factory.mktemp("nuscenes")))


def _source(truth: nh.Truth, root: str | None = None) -> str:
    return f"nuscenes://{root or truth.root}?version={truth.version}"


def _records(source: str) -> dict[str, dict]:
    return {ref.ref_id: scene_record(json.loads(ref.record)) for ref in list_clips(source)}


def _wrap(angle):
    return (np.asarray(angle) + np.pi) % (2 * np.pi) - np.pi


def test_source_uri_forms():
    assert nuscenes_root("nuscenes:///data/nuscenes?version=v1.0-mini") == ("/data/nuscenes", "v1.0-mini")
    assert nuscenes_root("nuscenes:///data/nuscenes") == ("/data/nuscenes", "v1.0-trainval")
    assert nuscenes_root("nuscenes+s3://bucket/nuscenes?version=v1.0-mini&endpoint_override=localhost:9000") == (
        "s3://bucket/nuscenes?endpoint_override=localhost%3A9000", "v1.0-mini")
    with pytest.raises(SourceError, match="version 'v2.0' is not one of"):
        nuscenes_root("nuscenes:///data?version=v2.0")
    with pytest.raises(SourceError, match="nuscenes:///<root>"):
        nuscenes_root("nuscenes+ftp://host/data")


def test_cameras_calibration_and_timestamps_are_the_tables(dataset):
    records = _records(_source(dataset))
    assert sorted(records) == ["scene-0061", "scene-0103"]
    for name, rec in records.items():
        assert [c["name"] for c in rec["cameras"]] == ["CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT",
                                                       "CAM_BACK_RIGHT", "CAM_BACK", "CAM_BACK_LEFT"]
        first = {}
        for cam in rec["cameras"]:
            stamps = sorted(t for (ch, t) in dataset.frames if ch == cam["name"]
                            and dataset.scene_of[name].t0_us <= t <= dataset.scene_of[name].t0_us + 3_000_000)
            assert cam["timestamps"] == [t / 1e6 for t in stamps]              # each camera its own times
            assert len(cam["frames"]) == len(stamps) and all(os.path.isfile(os.path.join(dataset.root, f))
                                                              for f in cam["frames"])
            assert cam["frames"][0].startswith("samples/") and cam["frames"][1].startswith("sweeps/")
            assert cam["intrinsics"] == [nh.FOCAL, nh.FOCAL, nh.WIDTH / 2, nh.HEIGHT / 2]
            extr = np.asarray(cam["extrinsics"])
            np.testing.assert_allclose(extr[:3, :3], nh.camera_rotation(cam["name"]), atol=1e-12)
            np.testing.assert_allclose(extr[:3, 3], nh.camera_translation(cam["name"]), atol=1e-12)
            assert cam["distortion"] == [0.0] * 5 and (cam["width"], cam["height"]) == (nh.WIDTH, nh.HEIGHT)
            assert cam["frame_rate"] == pytest.approx(1e6 / nh.CAMERA_PERIOD_US, rel=1e-4)
            first[cam["name"]] = cam["timestamps"][0]
        assert len(set(first.values())) == 6                                  # not synchronous
        assert rec["start_time_s"] == min(first.values())
        assert rec["drive_id"].startswith("n015-2018-07-2") and "+" not in rec["drive_id"]


def test_ego_speed_curvature_and_gps_are_the_poses_closed_form(dataset):
    records = _records(_source(dataset))
    for name, rec in records.items():
        scene = dataset.scene_of[name]
        # The ego drives a circle: the arc through two poses is exact, whatever their spacing.
        np.testing.assert_allclose(rec["ego"]["speed"], scene.speed, rtol=1e-9)
        np.testing.assert_allclose(rec["ego"]["curvature"], scene.curvature, atol=1e-9)
        lidar = np.arange(scene.t0_us, scene.t0_us + (scene.samples - 1) * nh.SAMPLE_PERIOD_US + 1, nh.LIDAR_PERIOD_US)
        np.testing.assert_allclose(rec["ego"]["timestamps"], (lidar[:-1] + lidar[1:]) / 2e6, atol=1e-6)
        # GPS: metres east / north of the map's origin; a local flat-earth table to ~1 m.
        _, lat0, lon0 = {"boston-seaport": (0, 42.336849169438615, -71.05785369873047),
                         "singapore-onenorth": (0, 1.2882100868743724, 103.78475189208984)}[scene.location]
        xy = np.stack([nh.ego_pose(scene, int(t))[0] for t in lidar])
        lat = lat0 + np.degrees(xy[:, 1] / 6.378137e6)
        lon = lon0 + np.degrees(xy[:, 0] / (6.378137e6 * math.cos(math.radians(lat0))))
        np.testing.assert_allclose(rec["gps"]["latitude"], lat, atol=1e-5)
        np.testing.assert_allclose(rec["gps"]["longitude"], lon, atol=1e-5)
    assert records["scene-0061"]["metadata"] == {"country": "US"}
    assert records["scene-0103"]["metadata"] == {"country": "SG", "time_of_day": "night", "weather": "rain"}


def test_boxes_are_the_devkit_interpolation_in_the_ego_frame(dataset):
    """At every camera timestamp, the annotations as the devkit's get_boxes gives them, moved into the ego
    frame of that instant: centre, (l, w, h), yaw and category, against the analytic scene."""
    for name, rec in _records(_source(dataset)).items():
        scene, boxes = dataset.scene_of[name], rec["boxes"]
        assert boxes["timestamps"] == sorted(t for c in rec["cameras"] for t in c["timestamps"])
        idx = np.asarray(boxes["frame_index"])
        by_time = {round(t * 1e6): i for i, t in enumerate(boxes["timestamps"])}
        checked = 0
        for (channel, t_us), (sample, key) in dataset.frames.items():
            if not scene.t0_us <= t_us <= scene.t0_us + 3_000_000:
                continue
            xy, heading = nh.ego_pose(scene, t_us)
            want = []
            for obj in scene.objects:
                cat = _category(obj)
                center = nh.box_at(scene, obj, sample, key, t_us)
                if cat is None or center is None:
                    continue
                ego = nh.to_ego(scene, t_us, center[None])[0]
                w, length, h = obj.size_wlh
                want.append((cat, *ego, length, w, h, float(_wrap(obj.yaw - heading))))
            sel = np.flatnonzero(idx == by_time[t_us])
            got = [(boxes["category"][m], *boxes["center"][m], *boxes["size"][m], boxes["yaw"][m]) for m in sel]
            assert len(got) == len(want), (channel, t_us)
            for g, w_ in zip(sorted(got, key=lambda b: (b[0], b[1])), sorted(want, key=lambda b: (b[0], b[1]))):
                assert g[0] == w_[0]
                np.testing.assert_allclose(g[1:7], w_[1:7], atol=1e-6)
                assert abs(_wrap(g[7] - w_[7])) < 1e-9
            checked += len(want)
        assert checked > 100
    # The truck appears from the third keyframe only: absent from the frames of the first two samples.
    assert "van" in _records(_source(dataset))["scene-0061"]["boxes"]["category"]


def test_categories_are_mapped_ignored_or_counted_unknown(dataset):
    summary = source_summary(list_clips(_source(dataset)))
    cats = summary["categories"]
    assert summary["kind"] == "nuscenes" and summary["scenes"] == 2
    assert cats["unknown"] == {"vehicle.hovercraft": 5}
    assert cats["ignored"] == {"movable_object.trafficcone": 5, "vehicle.bicycle (without rider)": 5}
    assert cats["mapped"]["vehicle.car -> car"] == 10 and cats["mapped"]["vehicle.truck -> van"] == 3
    assert cats["mapped"]["vehicle.bicycle -> cyclist"] == 5


def test_official_lists():
    trainval = OfficialSplit.load("nuscenes-v1.0-trainval")
    assert (len(trainval.train), len(trainval.val)) == (700, 150)
    assert trainval.split_of("scene-0103") == "val" and trainval.split_of("scene-0061") == "train"
    mini = OfficialSplit.load("nuscenes-v1.0-mini")
    assert (len(mini.train), len(mini.val)) == (8, 2)
    assert mini.split_of("scene-0553") == "train" and trainval.split_of("scene-0553") == "val"   # per version
    assert trainval.split_of("scene-0077") is None                                            # a test scene
    with pytest.raises(SplitListError, match="neither a packaged list"):
        OfficialSplit.load("/no/such/lists.json")


def test_official_split_puts_each_scene_on_its_side_and_the_rest_aside(dataset, tmp_path):
    cfg = load_shard_config("tiny", overrides={**SHORT, "split": {"kind": "official"}})
    rows = IngestClips(cfg.model_dump_json()).ingest(list_clips(_source(dataset)))
    windows = [r for r in rows if r["kind"] == "window"]
    assert len(windows) == len(rows) and {r["clip_id"] for r in windows} == {"scene-0061", "scene-0103"}
    plan = make_plan([dict(r) for r in windows], cfg, Geofences.default(), OfficialSplit.load("nuscenes-v1.0-mini"))
    assert {(r["clip_id"], r["split"]) for r in plan.selected} == {("scene-0061", "train"), ("scene-0103", "val")}
    lists = tmp_path / "lists.json"
    lists.write_text(json.dumps({"train": ["scene-0061"], "val": []}))
    plan = make_plan([dict(r) for r in windows], cfg, Geofences.default(), OfficialSplit.load(str(lists)))
    assert {r["clip_id"] for r in plan.selected} == {"scene-0061"}
    aside = [r for r in plan.not_selected if r["clip_id"] == "scene-0103"]
    assert aside and all(r["reason"] == "not_selected_split" for r in aside)
    assert len(plan.selected) + len(plan.not_selected) == len(windows)
    lists.write_text(json.dumps({"train": ["scene-0061"], "val": ["scene-0061"]}))
    with pytest.raises(SplitListError, match="in both train and val"):
        OfficialSplit.load(str(lists))


def _copy(dataset: nh.Truth, tmp_path, name: str) -> str:
    root = str(tmp_path / name)
    shutil.copytree(dataset.root, root)
    return root


def _edit_table(root: str, table: str, edit) -> None:
    path = os.path.join(root, "v1.0-mini", f"{table}.json")
    rows = json.load(open(path))
    edit(rows)
    json.dump(rows, open(path, "w"))


def _ingest_rejects(source: str, overrides: dict = SHORT) -> dict[str, tuple[str, str]]:
    cfg = load_shard_config("tiny", overrides=overrides)
    rows = IngestClips(cfg.model_dump_json()).ingest(list_clips(source))
    return {r["clip_id"]: (r["reject_reason"], r["reject_detail"]) for r in rows if r["kind"] == "reject"}


def test_bad_nuscenes_inputs_are_rejects_with_reasons(dataset, tmp_path):
    # A missing table every scene needs: each scene is a reject naming it.
    root = _copy(dataset, tmp_path, "no-annotations")
    os.remove(os.path.join(root, "v1.0-mini", "sample_annotation.json"))
    rejects = _ingest_rejects(_source(dataset, root))
    assert set(rejects) == {"scene-0061", "scene-0103"}
    assert all(r == "invalid_record" and "sample_annotation.json: missing" in d for r, d in rejects.values())
    # Without the scene table there are no scenes to account for: the source itself is refused, by name.
    root = _copy(dataset, tmp_path, "no-scenes")
    os.remove(os.path.join(root, "v1.0-mini", "scene.json"))
    with pytest.raises(SourceError, match="scene.json: missing"):
        list_clips(_source(dataset, root))
    # A dangling token: only its scene is out, and the detail names the token.
    root = _copy(dataset, tmp_path, "dangling")
    victim = {}

    def dangle(rows):
        sd = next(r for r in rows if "CAM_BACK" in r["filename"] and "n015-2018-07-25" in r["filename"])
        sd["ego_pose_token"], victim["token"] = "f" * 32, sd["token"]
    _edit_table(root, "sample_data", dangle)
    rejects = _ingest_rejects(_source(dataset, root))
    assert set(rejects) == {"scene-0103"}
    assert rejects["scene-0103"][0] == "invalid_record" and "f" * 32 in rejects["scene-0103"][1]
    # A missing image: the scene is a missing_camera reject naming the file.
    root = _copy(dataset, tmp_path, "missing-image")
    rec = _records(_source(dataset, root))["scene-0061"]
    gone = rec["cameras"][2]["frames"][5]
    os.remove(os.path.join(root, gone))
    rejects = _ingest_rejects(_source(dataset, root))
    assert set(rejects) == {"scene-0061"}
    assert rejects["scene-0061"][0] == "missing_camera" and os.path.basename(gone) in rejects["scene-0061"][1]
    # A scene shorter than one window (48 frames at 12 Hz > 2 s): too_short, for both.
    rejects = _ingest_rejects(_source(dataset), {"window": {"frames": 48, "hop": 12}})
    assert {r for r, _ in rejects.values()} == {"too_short"} and len(rejects) == 2
    # Malformed fields: a timestamp as a string, a quaternion of three numbers, an unknown location.
    root = _copy(dataset, tmp_path, "malformed")
    lidar = nh.token("sample_data", "scene-0061", "LIDAR_TOP", 3)   # an ego pose the ego motion reads
    _edit_table(root, "ego_pose", lambda rows: next(r for r in rows if r["token"] == lidar).update(
        timestamp=str(next(r for r in rows if r["token"] == lidar)["timestamp"])))
    camera = nh.token("calibrated_sensor", "scene-0103", "CAM_BACK")
    _edit_table(root, "calibrated_sensor", lambda rows: next(r for r in rows if r["token"] == camera).update(
        rotation=[1.0, 0.0, 0.0]))
    rejects = _ingest_rejects(_source(dataset, root))
    assert set(rejects) == {"scene-0061", "scene-0103"}
    assert all(r == "invalid_record" for r, _ in rejects.values())
    assert "timestamp" in rejects["scene-0061"][1] and "rotation" in rejects["scene-0103"][1]
    root = _copy(dataset, tmp_path, "elsewhere")
    _edit_table(root, "log", lambda rows: rows[0].update(location="atlantis"))
    rejects = _ingest_rejects(_source(dataset, root))
    assert set(rejects) == {"scene-0061"} and "atlantis" in rejects["scene-0061"][1]


def _members(out: str) -> dict[str, dict[str, bytes]]:
    samples: dict[str, dict[str, bytes]] = {}
    for split in ("train", "val"):
        for name in sorted(os.listdir(os.path.join(out, split))):
            with tarfile.open(os.path.join(out, split, name)) as tar:
                for m in tar.getmembers():
                    key, _, ext = m.name.partition(".")
                    samples.setdefault(key, {})[ext] = tar.extractfile(m).read()
    return samples


def _iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _build(source: str, out: str, clip_model: str):
    from pipelines.shards.build import build_shards

    cfg = load_shard_config("tiny", overrides={**SHORT, "split": {"kind": "official"},
                                               "embedding": {"clip_path": clip_model}})
    return build_shards(source, out, cfg, log=lambda _: None)


@pytest.fixture(scope="module")
def local_build(ray_session, clip_model, dataset, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("nuscenes-shards") / "shards")
    return out, _build(_source(dataset), out, clip_model)


def test_build_from_nuscenes(local_build, dataset):
    """A build accounts for every scene and window; the official split puts each scene on its side; per-camera
    timestamps survive into the shards; the shards' boxes land where the frames show the objects."""
    out, result = local_build
    report = result.report
    acc = report["accounting"]
    windows = sum(len(range(0, len(_grid(rec)) - 8 + 1, 8)) for rec in _records(_source(dataset)).values())
    assert acc["windows_written"] == windows and report["splits"]["train"] > 0 and report["splits"]["val"] > 0
    assert report["split"] == {"kind": "official", "lists": "nuscenes-v1.0-mini"}
    assert report["source"]["categories"]["unknown"] == {"vehicle.hovercraft": 5}
    from pipelines.shards.verify import verify_build

    verified = verify_build(out, _source(dataset))
    assert verified["ok"] and verified["checks"]["official_split"], verified["problems"]
    samples = _members(out)
    assert len(samples) == windows
    compared = 0
    for key, members in samples.items():
        meta = json.loads(members["json"])
        scene = dataset.scene_of[meta["clip_id"]]
        assert meta["split"] == {"scene-0061": "train", "scene-0103": "val"}[meta["clip_id"]]
        assert meta["metadata_values"]["country"] == {"scene-0061": "US", "scene-0103": "SG"}[meta["clip_id"]]
        boxes = np.load(io.BytesIO(members["boxes.npy"]))
        valid = np.load(io.BytesIO(members["boxes_valid.npy"]))
        for n, cam in enumerate(meta["cameras"]):
            assert f"{cam['name']}.mp4" in members
            times = [t for (ch, t) in dataset.frames if ch == cam["name"]]
            for k, rel in enumerate(cam["frame_timestamps"]):
                t_us = min(times, key=lambda t: abs(t - (meta["start_time_s"] + rel) * 1e6))
                assert abs(t_us / 1e6 - (meta["start_time_s"] + rel)) < 2e-6      # the camera's own frame time
                fx, fy, cx, cy = cam["intrinsics"]
                for oi, rect in dataset.rects[(cam["name"], t_us)].items():
                    obj = scene.objects[oi]
                    cat = _category(obj)
                    inside = rect[0] >= 0 and rect[1] >= 0 and rect[2] <= nh.WIDTH and rect[3] <= nh.HEIGHT
                    u = fx * (rect[[0, 2]] - nh.WIDTH / 2) / nh.FOCAL + cx
                    v = fy * (rect[[1, 3]] - nh.HEIGHT / 2) / nh.FOCAL + cy
                    want = np.array([(u[0] + .5) / cam["width"], (v[0] + .5) / cam["height"],
                                     (u[1] + .5) / cam["width"], (v[1] + .5) / cam["height"]])
                    if cat is None:      # ignored and unknown categories never become agents
                        assert not any(_iou(want, b[:4]) > 0.9 for b in boxes[k, n][valid[k, n]])
                        continue
                    if not inside or want.min() < 0 or want.max() > 1:
                        continue
                    slots = [b for b in boxes[k, n][valid[k, n]] if int(b[12]) == AGENT_CATEGORIES.index(cat)]
                    assert slots, (key, cam["name"], k, obj.category)
                    assert max(_iou(want, b[:4]) for b in slots) >= 0.9, (key, cam["name"], k, obj.category)
                    compared += 1
    assert compared >= 40


def _grid(rec: dict) -> np.ndarray:
    t0 = max(c["timestamps"][0] for c in rec["cameras"])
    t1 = min(c["timestamps"][-1] for c in rec["cameras"])
    rate = max(c["frame_rate"] for c in rec["cameras"])
    return t0 + np.arange(int(np.floor((t1 - t0) * rate + 1e-6)) + 1) / rate


def _category(obj: nh.Obj) -> str | None:
    if obj.category == "vehicle.bicycle":
        return "cyclist" if "cycle.with_rider" in obj.attributes else None
    return {"vehicle.car": "car", "human.pedestrian.adult": "pedestrian", "vehicle.bus.rigid": "bus",
            "human.pedestrian.child": "pedestrian", "vehicle.truck": "van"}.get(obj.category)


def test_a_nuscenes_root_on_object_storage_builds_the_same_shards(local_build, dataset, clip_model, s3_server,
                                                                   tmp_path):
    from gaia2 import storage

    bucket = s3_server.bucket("gaia2-nuscenes")
    for dirpath, _, names in os.walk(dataset.root):
        for name in names:
            rel = os.path.relpath(os.path.join(dirpath, name), dataset.root)
            storage.upload_file(os.path.join(dirpath, name), f"{bucket}/data/{rel}")
    source = f"nuscenes+s3://gaia2-nuscenes/data?version={dataset.version}"
    out = str(tmp_path / "shards")
    result = _build(source, out, clip_model)
    assert result.report["accounting"] == local_build[1].report["accounting"]
    local = local_build[0]
    tars = sorted(os.path.join(split, n) for split in ("train", "val") for n in os.listdir(os.path.join(local, split)))
    assert tars and tars == sorted(os.path.join(split, n) for split in ("train", "val")
                                   for n in os.listdir(os.path.join(out, split)))
    for rel in tars:
        assert open(os.path.join(out, rel), "rb").read() == open(os.path.join(local, rel), "rb").read(), rel


def test_vocabulary_v2_reads_v1_shards_and_refuses_newer_ones():
    """Singapore is vocabulary v2's "SG", appended: a v1 sample's ids mean the same, a v3 one is refused."""
    from gaia2.schema.metadata import VOCAB_VERSION, VOCABULARY, encode_metadata
    from gaia2.world_model.sample import SampleError, world_model_sample

    assert VOCAB_VERSION == 2 and VOCABULARY["country"][:4] == ("unknown", "GB", "US", "DE")
    assert encode_metadata({"country": "SG"})["country"] == 4
    cams = [{"name": "c", "width": 8, "height": 4, "intrinsics": [1, 1, 1, 1], "extrinsics": np.eye(4).tolist(),
             "distortion": [0] * 5}]

    def sample(version):
        meta = {"key": "k", "vocab_version": version, "timestamps": [0.0, 0.1], "cameras": cams,
                "metadata": {"country": 2}, "ego": {"speed": [1.0, 1.0], "curvature": [0.0, 0.0]}}
        return world_model_sample(meta, np.zeros((1, 1, 2, 1, 1), np.float32), np.zeros((2, 1, 1, 13), np.float32),
                                  np.zeros((2, 1, 1), bool), np.zeros((1, 4), np.float32), cameras=1, max_agents=1)

    assert sample(1)["metadata"][0] == 2 and sample(2)["metadata"][0] == 2   # US either way
    with pytest.raises(SampleError, match="vocab_version 3 is not readable"):
        sample(3)


def test_hostile_table_values_are_rejects_never_tracebacks(dataset, tmp_path):
    """A field of a table row replaced by a value of the wrong kind: the source lists, ingest runs, and every scene
    is accounted for (windows or one reject with a reason); scenes the row does not reach are written as before."""
    import random

    tables = {name: json.load(open(os.path.join(dataset.root, "v1.0-mini", f"{name}.json")))
              for name in ("scene", "log", "sample", "sample_data", "ego_pose", "calibrated_sensor", "sensor",
                           "sample_annotation", "instance", "category", "attribute")}
    hostile = [None, ["a", "list"], {"an": "object"}, "text", 1e308, -1, float("nan"), True, 10**30]
    rng = random.Random(0)
    good = {r["clip_id"] for r in IngestClips(load_shard_config("tiny", overrides=SHORT).model_dump_json()).ingest(
        list_clips(_source(dataset))) if r["kind"] == "window"}
    assert good == {"scene-0061", "scene-0103"}
    root = _copy(dataset, tmp_path, "hostile")
    rejected = 0
    for trial in range(100):
        name = rng.choice(sorted(tables))
        rows = [dict(r) for r in tables[name]]
        row = rows[rng.randrange(len(rows))]
        key = rng.choice(sorted(row))
        row[key] = rng.choice(hostile)
        with open(os.path.join(root, "v1.0-mini", f"{name}.json"), "w") as f:
            json.dump(rows, f)
        try:
            refs = list_clips(_source(dataset, root))
        except SourceError as err:   # only the scene and log tables can make the source unusable
            assert name in ("scene", "log") or "scene.json" in str(err), (trial, name, key, err)
        else:
            cfg = load_shard_config("tiny", overrides=SHORT)
            rows_out = IngestClips(cfg.model_dump_json()).ingest(refs)
            accounted = {r["clip_id"] for r in rows_out}
            assert len(accounted) == len(refs), (trial, name, key, row[key])
            for r in rows_out:
                if r["kind"] == "reject":
                    assert r["reject_reason"] and r["reject_detail"], (trial, name, key)
                    rejected += 1
        with open(os.path.join(root, "v1.0-mini", f"{name}.json"), "w") as f:
            json.dump(tables[name], f)
    assert rejected >= 20   # most mutations reach a field the conversion reads
