"""3D detection: agent feature layout, ground-truth pass-through, the mono3d network, the Ray stage."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from gaia2.camera.model import CameraModel
from gaia2.detection import DetectionError, GroundTruthDetector, agent_features, build_detector
from gaia2.detection.mono3d import (Mono3DConfig, MonoDetector3D, NetworkDetector, bev_nms)
from gaia2.schema.clip import Clip
from gaia2.schema.metadata import AGENT_CATEGORIES
from pipelines.rejects import REJECT_COLUMNS, Reject, batch_rejects
from pipelines.shards.detect import DetectAgents

W, H, F = 200, 100, 100.0   # a 90-degree horizontal field of view
CAM_POS = np.array([1.5, 0.0, 1.5])


def camera(heading: float = 0.0, position=CAM_POS, width: int = W, height: int = H, f: float = F,
           distortion=(0, 0, 0, 0, 0)) -> CameraModel:
    """A level camera at ``position`` whose optical axis has ego heading ``heading`` (0 = ego +x)."""
    front = np.array([[0.0, 0, 1], [-1, 0, 0], [0, -1, 0]])      # columns: cam x, y, z in the ego frame
    c, s = math.cos(heading), math.sin(heading)
    rz = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    cam_to_ego = np.eye(4)
    cam_to_ego[:3, :3], cam_to_ego[:3, 3] = rz @ front, position
    intr = np.array([f, f, (width - 1) / 2, (height - 1) / 2])
    return CameraModel(width, height, intr, np.asarray(distortion, dtype=np.float64), cam_to_ego)


def box(x, y, z=1.5, l=4.0, w=2.0, h=1.5, yaw=0.0, cat=1) -> list[float]:
    return [x, y, z, l, w, h, yaw, cat]


def clip_dict(cams: list[CameraModel], box_times: list[float], boxes: list[list[list[float]]] | None) -> dict:
    ts = np.arange(0, 1.0, 0.1).tolist()
    return {
        "clip_id": "c0", "drive_id": "d0", "rig_id": "r0", "start_time_s": 0.0,
        "cameras": [{"name": f"cam{i}", "frame_rate": 10.0, "timestamps": ts, "width": c.width, "height": c.height,
                     "intrinsics": c.intrinsics.tolist(), "extrinsics": c.cam_to_ego.tolist(),
                     "distortion": c.distortion.tolist(), "video": f"cam{i}.mp4"} for i, c in enumerate(cams)],
        "ego": {"timestamps": ts, "speed": [5.0] * len(ts), "curvature": [0.0] * len(ts)},
        "gps": {"timestamps": ts, "latitude": [51.5] * len(ts), "longitude": [-0.12] * len(ts)},
        "metadata": {},
        "boxes": None if boxes is None else {
            "timestamps": box_times,
            "frame_index": [k for k, frame in enumerate(boxes) for _ in frame],
            "center": [b[:3] for frame in boxes for b in frame], "size": [b[3:6] for frame in boxes for b in frame],
            "yaw": [b[6] for frame in boxes for b in frame],
            "category": [AGENT_CATEGORIES[int(b[7])] for frame in boxes for b in frame]},
    }


# ---------------------------------------------------------------- agent features

def test_box_straight_ahead_hand_computed():
    # Centre 10 m ahead on the optical axis; l along the axis (z 8..12), w across (x -1..1), h (y -0.75..0.75).
    feats, valid = agent_features([np.array([box(11.5, 0.0, cat=3)])], [camera()], max_agents=2)
    assert feats.shape == (1, 1, 2, 13) and feats.dtype == np.float32 and valid.shape == (1, 1, 2)
    assert valid[0, 0].tolist() == [True, False]
    f = feats[0, 0, 0]
    # Nearest face z = 8: u = cx -/+ F * 1 / 8 -> ((u + 0.5) / W); v = cy -/+ F * 0.75 / 8.
    np.testing.assert_allclose(f[:4], [87.5 / 200, 40.625 / 100, 112.5 / 200, 59.375 / 100], atol=1e-6)
    assert f[0] + f[2] == pytest.approx(1.0) and f[1] + f[3] == pytest.approx(1.0)   # symmetric about the centre
    np.testing.assert_allclose(f[4:7], [0, 0, 10], atol=1e-6)
    np.testing.assert_allclose(f[7:10], [4, 2, 1.5])
    np.testing.assert_allclose(f[10:12], [0, 1], atol=1e-7)   # yaw 0, camera heading 0
    assert f[12] == 3
    assert not np.any(feats[0, 0, 1])


def test_yaw_is_relative_to_camera_heading():
    heading, yaw = 0.5, 0.8
    direction = np.array([math.cos(heading), math.sin(heading), 0.0])
    centre = CAM_POS + 12 * direction
    feats, valid = agent_features([np.array([box(*centre, yaw=yaw)])], [camera(heading)], max_agents=1)
    assert valid[0, 0, 0]
    np.testing.assert_allclose(feats[0, 0, 0, 4:7], [0, 0, 12], atol=1e-5)
    np.testing.assert_allclose(feats[0, 0, 0, 10:12], [math.sin(yaw - heading), math.cos(yaw - heading)], atol=1e-6)


def test_box_behind_camera_excluded():
    # Far behind; and centre 0.5 m behind the lens with its front half (z up to 1.5 m) in view.
    boxes = np.array([box(-10.0, 0.0), box(1.0, 0.0, l=4.0)])
    feats, valid = agent_features([boxes], [camera()], max_agents=4)
    assert not valid.any() and not feats.any()


def test_box_crossing_near_plane_spans_image():
    # Centre 1 m ahead, 4 m long: the rear corners are behind the camera. The near-plane crossing
    # of its sides lies far outside the image, so the clipped box covers the whole width.
    feats, valid = agent_features([np.array([box(2.5, 0.0)])], [camera()], max_agents=1)
    assert valid[0, 0, 0]
    assert feats[0, 0, 0, 0] == 0.0 and feats[0, 0, 0, 2] == 1.0


def test_box_outside_one_image_is_kept_for_the_camera_that_sees_it():
    # 63 degrees left of the front camera's axis (its half field of view is 45), ahead of the left camera.
    b = np.array([box(11.5, 20.0)])
    feats, valid = agent_features([b], [camera(0.0), camera(math.pi / 2)], max_agents=1)
    assert valid[0].tolist() == [[False], [True]]
    np.testing.assert_allclose(feats[0, 1, 0, 4:7], [10.0, 0.0, 20.0], atol=1e-6)
    # In front of the front camera, but its projection (u < 0) misses the image: excluded, not clipped.
    assert not feats[0, 0].any()


def test_slots_nearest_first_padding_and_cap():
    frame0 = np.array([box(31.5, 0.5, cat=1), box(11.5, -0.5, cat=2), box(21.5, 0.0, cat=3), box(41.5, 0.0, cat=4)])
    frames = [frame0, np.zeros((0, 8)), np.array([box(16.5, 0.0, cat=5)])]
    feats, valid = agent_features(frames, [camera()], max_agents=6)
    assert valid[:, 0].tolist() == [[True] * 4 + [False] * 2, [False] * 6, [True] + [False] * 5]
    np.testing.assert_allclose(feats[0, 0, :4, 6], [10, 20, 30, 40], atol=1e-6)
    assert feats[0, 0, :4, 12].tolist() == [2, 3, 1, 4]
    assert not feats[0, 0, 4:].any() and not feats[1].any()
    assert feats[2, 0, 0, 12] == 5 and feats[2, 0, 0, 6] == pytest.approx(15)
    capped, cvalid = agent_features(frames, [camera()], max_agents=3)
    assert capped.shape == (3, 1, 3, 13) and cvalid[0, 0].all()
    np.testing.assert_array_equal(capped[0, 0], feats[0, 0, :3])   # the farthest box is the one dropped


def test_a_rig_of_cameras_gets_exactly_the_boxes_each_one_sees():
    # Only boxes ahead of a camera are projected (agent_features); the slots must be those of projecting every box.
    from gaia2.detection.features import NEAR, _camera_features

    rng = np.random.default_rng(3)
    cams = [camera(h, distortion=(-0.05, 0.01, 0.001, -0.001, 0.0)) for h in np.linspace(0, 2 * np.pi, 6, endpoint=False)]
    frames = [np.array([box(*rng.uniform(-40, 40, 2), rng.uniform(0, 2), *rng.uniform(0.5, 5, 3), rng.uniform(-3, 3),
                            rng.integers(1, len(AGENT_CATEGORIES))) for _ in range(int(rng.integers(0, 30)))]).reshape(-1, 8)
              for _ in range(12)]
    feats, valid = agent_features(frames, cams, max_agents=8)
    assert valid.any(axis=(0, 2)).all()   # every camera sees something
    for n, cam in enumerate(cams):
        for t, boxes in enumerate(frames):
            f, visible, dist = _camera_features(boxes, cam, NEAR) if len(boxes) else (None, np.zeros(0, bool), None)
            seen = np.flatnonzero(visible)
            seen = seen[np.argsort(dist[seen], kind="stable")][:8] if seen.size else seen
            assert valid[t, n].sum() == seen.size
            np.testing.assert_array_equal(feats[t, n, :seen.size], f[seen].astype(np.float32) if seen.size else feats[t, n, :0])


def test_bad_boxes_raise():
    with pytest.raises(DetectionError, match="category"):
        agent_features([np.array([box(10, 0, cat=0)])], [camera()], max_agents=1)
    with pytest.raises(DetectionError, match=r"\(M, 8\)"):
        agent_features([np.zeros((2, 7))], [camera()], max_agents=1)


# ---------------------------------------------------------------- ground truth

def frames_for(cams: list[CameraModel], t: int) -> np.ndarray:
    return np.zeros((len(cams), t, cams[0].height, cams[0].width, 3), np.uint8)


def test_ground_truth_nearest_timestamp():
    cams = [camera()]
    per_frame = [[box(10, 0, cat=1)], [box(20, 0, cat=2), box(30, 1, cat=3)], [box(40, 0, cat=4)]]
    clip = Clip.from_dict(clip_dict(cams, [0.0, 0.1, 0.2], per_frame))
    out = GroundTruthDetector().detect(frames_for(cams, 3), cams, np.array([0.04, 0.16, 0.21]), clip)
    assert [o.shape for o in out] == [(1, 8), (1, 8), (1, 8)]
    np.testing.assert_array_equal(out[0], [box(10, 0, cat=1)])
    np.testing.assert_array_equal(out[1], [box(40, 0, cat=4)])   # 0.16 is nearer 0.2 than 0.1
    with pytest.raises(DetectionError, match="within 1.0 s"):
        GroundTruthDetector().detect(frames_for(cams, 1), cams, np.array([5.0]), clip)


def test_ground_truth_without_boxes_raises():
    cams = [camera()]
    clip = Clip.from_dict(clip_dict(cams, [], None))
    with pytest.raises(DetectionError, match="no ground-truth boxes"):
        GroundTruthDetector().detect(frames_for(cams, 2), cams, np.array([0.0, 0.1]), clip)
    with pytest.raises(DetectionError, match=r"expected \(2,\) for 2 frames"):
        GroundTruthDetector().detect(frames_for(cams, 2), cams, np.array([0.0, 0.1, 0.2]), clip)


# ---------------------------------------------------------------- mono3d network

TINY = Mono3DConfig(width=4, depth=1, stride=4, top_k=8)


def tiny_model(seed: int = 0, config: Mono3DConfig = TINY) -> MonoDetector3D:
    torch.manual_seed(seed)
    model = MonoDetector3D(config)
    with torch.no_grad():   # the zero/prior init would make every heatmap flat; perturb it
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model.eval()


def test_save_load_round_trip(tmp_path):
    model = tiny_model()
    model.save_pretrained(str(tmp_path / "ckpt"))
    loaded = MonoDetector3D.from_pretrained(str(tmp_path / "ckpt"))
    assert loaded.config == model.config and not loaded.training
    x = torch.randn(2, 3, 30, 62)
    with torch.no_grad():
        a, b = model(x), loaded(x)
    assert a["heatmap"].shape == (2, 5, 8, 16) and a["log_size"].shape == (2, 3, 8, 16)
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_from_pretrained_wrong_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        MonoDetector3D.from_pretrained(str(tmp_path / "nope"))
    tiny_model().save_pretrained(str(tmp_path / "ckpt"))
    (tmp_path / "ckpt" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="missing model.safetensors"):
        MonoDetector3D.from_pretrained(str(tmp_path / "ckpt"))
    (tmp_path / "ckpt" / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="missing config.json"):
        build_detector("network", str(tmp_path / "ckpt"))


def test_config_names_bad_field():
    with pytest.raises(ValueError, match="stride"):
        Mono3DConfig(stride=6)
    with pytest.raises(ValueError, match="unknown field"):
        Mono3DConfig.from_dict({"widht": 3})


def test_decode_recovers_known_centre():
    stride = 8
    cam = camera(heading=0.4, position=np.array([1.0, 0.5, 1.6]), width=160, height=96, f=90.0,
                 distortion=(-0.05, 0.01, 0.001, -0.0005, 0.0))
    centre_ego, size, yaw, cls = np.array([9.0, 6.5, 0.9]), np.array([4.5, 1.9, 1.6]), 1.0, 2
    centre_cam = cam.ego_to_camera_points(centre_ego)
    (u, v), front = cam.project(centre_cam)
    assert front and 0 <= u < 160 and 0 <= v < 96
    ray = centre_ego - cam.cam_to_ego[:3, 3]
    alpha = yaw - math.atan2(ray[1], ray[0])
    h, w = 96 // stride, 160 // stride
    i, j = int(v // stride), int(u // stride)
    out = {"heatmap": torch.full((1, 5, h, w), -10.0), "offset": torch.zeros(1, 2, h, w),
           "log_depth": torch.zeros(1, 1, h, w), "log_size": torch.zeros(1, 3, h, w), "yaw": torch.zeros(1, 2, h, w)}
    out["heatmap"][0, cls, i, j] = 5.0
    out["offset"][0, :, i, j] = torch.tensor([u / stride - j, v / stride - i], dtype=torch.float64)
    out["log_depth"][0, 0, i, j] = math.log(centre_cam[2])
    out["log_size"][0, :, i, j] = torch.from_numpy(np.log(size))
    out["yaw"][0, :, i, j] = torch.tensor([math.sin(alpha), math.cos(alpha)])
    model = MonoDetector3D(Mono3DConfig(width=4, depth=0, stride=stride))
    (dets,) = model.decode(out, [cam], score_threshold=0.5)
    assert dets.shape == (1, 9)
    # Tolerances: the head maps are float32 (depth to ~1e-6 relative, pixel to ~1e-5).
    np.testing.assert_allclose(dets[0, :3], centre_ego, atol=2e-4)
    np.testing.assert_allclose(dets[0, 3:6], size, rtol=1e-5)
    assert dets[0, 6] == pytest.approx(yaw, abs=1e-5)
    assert dets[0, 7] == cls + 1 and dets[0, 8] == pytest.approx(1 / (1 + math.exp(-5)), rel=1e-6)


def test_bev_nms_merges_cameras_per_class():
    boxes = np.array([box(10.0, 0.0, cat=1) + [0.6], box(10.4, 0.3, cat=1) + [0.9],
                      box(10.2, 0.1, cat=5) + [0.5], box(14.0, 0.0, cat=1) + [0.4]])
    kept = bev_nms(boxes, radius_m=1.0)
    np.testing.assert_array_equal(kept, boxes[[1, 2, 3]])


def test_network_detector_batches_like_per_image_decode(tmp_path):
    tiny_model(seed=1).save_pretrained(str(tmp_path / "ckpt"))
    cams = [camera(0.0, width=32, height=24, f=16.0), camera(math.pi / 2, width=32, height=24, f=16.0)]
    frames = np.random.default_rng(0).integers(0, 256, (2, 3, 24, 32, 3), dtype=np.uint8)
    det = NetworkDetector(str(tmp_path / "ckpt"), score_threshold=0.05, device="cpu")
    out = det.detect(frames, cams, np.array([0.0, 0.1, 0.2]))
    assert len(out) == 3 and sum(len(o) for o in out) > 0
    model = det.model
    with torch.no_grad():
        for t in range(3):
            per_cam = [model.decode(model(model.preprocess(torch.from_numpy(frames[n, t:t + 1]))), [cams[n]], 0.05)[0]
                       for n in range(2)]
            expected = bev_nms(np.concatenate(per_cam), 1.0)[:, :8]
            np.testing.assert_allclose(out[t], expected, rtol=1e-5, atol=1e-5)
            assert np.all(np.isin(out[t][:, 7], [1, 2, 3, 4, 5]))


# ---------------------------------------------------------------- Ray stage

def _row(cams: list[CameraModel], t: int, boxes: list[list[list[float]]] | None,
         reject: Reject | None = None) -> dict:
    if reject is not None:
        return {"frames": np.zeros((0, 0, 0, 0, 3), np.uint8), "cameras_json": "[]", "timestamps": np.zeros(0),
                "clip_json": "", **reject.columns()}
    cam_json = [{"name": f"cam{i}", "width": c.width, "height": c.height, "intrinsics": c.intrinsics.tolist(),
                 "extrinsics": c.cam_to_ego.tolist(), "distortion": c.distortion.tolist(), "native_frame_rate": 10.0}
                for i, c in enumerate(cams)]
    times = [0.1 * k for k in range(t)]
    return {"frames": frames_for(cams, t), "cameras_json": json.dumps(cam_json), "timestamps": np.array(times),
            "clip_json": json.dumps(clip_dict(cams, times, boxes)), **dict.fromkeys(REJECT_COLUMNS, "")}


def _batch(rows: list[dict]) -> dict[str, np.ndarray]:
    out = {}
    for key in rows[0]:
        col = np.empty(len(rows), dtype=object)
        for i, r in enumerate(rows):
            col[i] = r[key]
        out[key] = col
    return out


def test_detect_agents_stage_shapes_and_error_rows():
    two, three = [camera(0.0), camera(math.pi / 2)], [camera(0.0), camera(math.pi / 2), camera(math.pi)]
    per_frame = [[box(11.5, 0.0), box(1.5, 15.0, cat=5)], [box(21.5, 0.0, cat=2)]]
    truncated = Reject("decode", "truncated_video", "cam1: frame 3")
    rows = [_row(two, 2, per_frame), _row(two, 0, None, truncated), _row(three, 2, per_frame), _row(two, 2, None)]
    batch = _batch(rows)
    out = DetectAgents("ground_truth", None, max_agents=4, score_threshold=0.3)(batch)
    assert out["boxes"][0].shape == (2, 2, 4, 13) and out["boxes"][0].dtype == np.float32
    assert out["boxes_valid"][0].shape == (2, 2, 4) and out["boxes_valid"][0].dtype == bool
    assert out["boxes"][2].shape == (2, 3, 4, 13)
    expected, expected_valid = agent_features([np.array(f) for f in per_frame], two, 4)
    np.testing.assert_array_equal(out["boxes"][0], expected)
    np.testing.assert_array_equal(out["boxes_valid"][0], expected_valid)
    assert expected_valid[0, :, :2].tolist() == [[True, False], [True, False]]   # each camera sees one box
    # The rejected row passes through untouched with empty features.
    rejects = batch_rejects(out, 4)
    assert rejects[1] == truncated
    assert out["boxes"][1].shape == (0, 0, 4, 13) and out["boxes_valid"][1].shape == (0, 0, 4)
    assert out["frames"][1] is batch["frames"][1]
    # A clip without labels is rejected by this stage, not an exception.
    assert (rejects[3].stage, rejects[3].reason) == ("detect", "decode_failed")
    assert rejects[3].detail.startswith("DetectionError: ") and "no ground-truth boxes" in rejects[3].detail
    assert out["boxes"][3].shape == (0, 0, 4, 13)
    assert rejects[0] is None and rejects[2] is None
    assert [out[c][0] for c in REJECT_COLUMNS] == ["", "", ""]


def test_detect_agents_network_kind(tmp_path):
    tiny_model(seed=2).save_pretrained(str(tmp_path / "ckpt"))
    cams = [camera(0.0, width=32, height=24, f=16.0)]
    row = _row(cams, 2, None)
    row["frames"] = np.random.default_rng(1).integers(0, 256, (1, 2, 24, 32, 3), dtype=np.uint8)
    row["clip_json"] = "not parsed by the network detector"
    out = DetectAgents("network", str(tmp_path / "ckpt"), max_agents=3, score_threshold=0.0)(_batch([row]))
    assert batch_rejects(out, 1) == [None]
    assert out["boxes"][0].shape == (2, 1, 3, 13) and out["boxes_valid"][0].shape == (2, 1, 3)
    feats, valid = out["boxes"][0], out["boxes_valid"][0]
    assert np.all(np.isfinite(feats)) and np.all(feats[valid][:, 12] >= 1) and not feats[~valid].any()
