"""Cameras stored as one image per timestamp (``"frames": [...]``, JPEG or PNG) instead of a video file: the
record's contract, the ingest checks with the same reject reasons as videos, the window decode, and a shard
build over image clips beside broken copies of them."""

from __future__ import annotations

import copy
import glob
import io
import json
import os
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageFile

from gaia2 import storage
from gaia2.config.shards import BoundsConfig, IngestConfig, ToleranceConfig, load_shard_config
from gaia2.schema.clip import Camera, Clip
from gaia2.schema.errors import ClipError, Reason
from gaia2.video.camera_io import check_camera, decode_camera
from gaia2.video.images import check_images, decode_images
from tests.helpers import clip_dict

W, H = 64, 48


def _raises(reason: Reason, field: str, fn, *args, **kwargs) -> ClipError:
    with pytest.raises(ClipError) as err:
        fn(*args, **kwargs)
    assert err.value.reason == reason, err.value
    assert field in err.value.detail, err.value.detail
    return err.value


# ---------------------------------------------------------------- the record

def _image_record(n: int = 40) -> dict:
    """``clip_dict`` with camera 0 stored as images ``cam0/000.jpg`` ... (camera 1 stays a video)."""
    d = clip_dict(n_frames=(n, n))
    cam = d["cameras"][0]
    del cam["video"]
    cam["frames"] = [f"cam0/{i:03d}.jpg" for i in range(n)]
    return d


def test_a_camera_is_exactly_one_of_a_video_or_images():
    d = _image_record()
    d["cameras"][0]["video"] = "cam0.mp4"
    err = _raises(Reason.INVALID_RECORD, "cameras[cam0]: exactly one of video or frames", Clip.from_dict, d, "/data/c0")
    assert "both" in err.detail
    del d["cameras"][0]["video"], d["cameras"][0]["frames"]
    assert "neither" in _raises(Reason.INVALID_RECORD, "cameras[cam0]: exactly one", Clip.from_dict, d, "/data/c0").detail
    d["cameras"][0]["frames"] = None   # null is absent
    _raises(Reason.INVALID_RECORD, "cameras[cam0]: exactly one", Clip.from_dict, d, "/data/c0")
    with pytest.raises(ValueError, match="exactly one"):
        Camera("x", 20.0, np.zeros(1), W, H, np.ones(4), np.eye(4), np.zeros(5), "x.mp4", ("x.jpg",))


def test_images_pair_up_with_timestamps_and_are_strings():
    d = _image_record()
    d["cameras"][0]["frames"].pop()
    err = _raises(Reason.FRAME_COUNT_MISMATCH, "cameras[cam0].frames", Clip.from_dict, d, "/data/c0")
    assert "39 images, 40 timestamps" in err.detail
    for value in ("cam0/000.jpg", {"0": "a.jpg"}, 3):
        d = _image_record()
        d["cameras"][0]["frames"] = value
        _raises(Reason.INVALID_RECORD, "cameras[cam0].frames: expected an array of strings", Clip.from_dict, d, "/x")
    for bad in (3, None, ["a.jpg"], "", "a\nb.jpg"):
        d = _image_record()
        d["cameras"][0]["frames"][7] = bad
        _raises(Reason.INVALID_RECORD, "cameras[cam0].frames[7]", Clip.from_dict, d, "/x")
    # Bounded like the timestamps, before any entry is looked at.
    ingest = IngestConfig(bounds=BoundsConfig(max_frames_per_camera=40))
    d = _image_record()
    d["cameras"][0]["frames"] += [None] * 10**5
    _raises(Reason.OUT_OF_BOUNDS, "cameras[cam0].frames: 100040 values", Clip.from_dict, d, "/x", ingest)


def test_image_paths_stay_inside_the_source():
    d = _image_record()
    assert Clip.from_dict(d, base_dir="/data/c0").cameras[0].frames[3] == "/data/c0/cam0/003.jpg"
    uri = Clip.from_dict(d, base_dir="s3://bucket/c0?endpoint_override=h:9000").cameras[0].frames[0]
    assert uri == "s3://bucket/c0/cam0/000.jpg?endpoint_override=h:9000"
    for path in ("../c1/000.jpg", "cam0/../../x.jpg", "/data/c1/000.jpg", "s3://other/000.jpg", "file:///x.jpg"):
        d["cameras"][0]["frames"][3] = path
        _raises(Reason.VIDEO_PATH_OUTSIDE_SOURCE, "cameras[cam0].frames[3]", Clip.from_dict, d, "/data/c0")
    d["cameras"][0]["frames"][3] = "s3://other/000.jpg"
    allow = IngestConfig(allow_absolute_videos=True)
    assert Clip.from_dict(d, "/data/c0", allow).cameras[0].frames[3] == "s3://other/000.jpg"
    d["cameras"][0]["frames"][3] = "../c1/000.jpg"   # allowing absolute locations never allows climbing out
    _raises(Reason.VIDEO_PATH_OUTSIDE_SOURCE, "climbs out", Clip.from_dict, d, "/data/c0", allow)


def test_round_trip_keeps_images_and_leaves_video_cameras_as_they_were():
    d = _image_record()
    clip = Clip.from_dict(d, base_dir="/data/c0")
    image, video = clip.cameras
    assert image.video is None and len(image.frames) == 40 and video.frames is None
    out = clip.to_dict(base_dir="/data/c0")
    assert out["cameras"] == d["cameras"]   # relative again; no "video" key for images, no "frames" for videos
    assert list(out["cameras"][1]) == list(clip_dict()["cameras"][1])   # the video camera's keys, in order
    again = Clip.from_dict(json.loads(json.dumps(clip.to_dict())))   # as a window's record: paths resolved
    assert again.cameras[0].frames == image.frames and again.cameras[1].video == "/data/c0/cam1.mp4"
    assert clip.to_dict(base_dir="/data/other")["cameras"][0]["frames"][0] == "/data/c0/cam0/000.jpg"


def test_the_build_fingerprint_sees_every_image():
    from pipelines.shards.ingest import camera_files

    clip = Clip.from_dict(_image_record(), base_dir="/data/c0")
    assert camera_files(clip) == [*(f"/data/c0/cam0/{i:03d}.jpg" for i in range(40)), "/data/c0/cam1.mp4"]


# ---------------------------------------------------------------- check_images

def _pixels(n: int, w: int = W, h: int = H, seed: int = 0) -> np.ndarray:
    """(n, h, w, 3) uint8 smooth gradients plus a little noise: an image codec's usual content."""
    y, x = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(seed)
    base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (w + h)], axis=-1)
    return np.stack([np.clip(base + 40 * k / max(n, 1) + rng.normal(0, 4, base.shape), 0, 255)
                     for k in range(n)]).astype(np.uint8)


def _encode(pixels: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _write_images(directory, pixels: np.ndarray, fmt: str = "JPEG") -> list[str]:
    os.makedirs(directory, exist_ok=True)
    ext = "jpg" if fmt == "JPEG" else "png"
    paths = [os.path.join(directory, f"{i:04d}.{ext}") for i in range(len(pixels))]
    for path, frame in zip(paths, pixels):
        with open(path, "wb") as f:
            f.write(_encode(frame, fmt))
    return paths


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_check_images_passes_good_files_at_every_level(tmp_path, fmt):
    paths = _write_images(tmp_path, _pixels(5), fmt)
    for level in ("container", "last_frame", "all_frames"):
        assert check_images(paths, "cameras[front]", 5, level, width=W, height=H) == (5, W, H, 0.0)
    assert check_images(paths, "cameras[front]", 5) == (5, W, H, 0.0)   # no declared size: the first one's


def test_check_images_rejects_broken_files_with_the_reasons_of_videos(tmp_path):
    def fresh(name: str, fmt: str = "JPEG") -> list[str]:
        return _write_images(tmp_path / name, _pixels(5), fmt)

    def check(paths, level="container", **kwargs):
        kwargs = {"width": W, "height": H, "tolerance": ToleranceConfig()} | kwargs
        return check_images(paths, "cameras[front]", 5, level, **kwargs)

    paths = fresh("missing")
    os.remove(paths[3])   # not decoded at this level: found missing by the lookup alone
    err = _raises(Reason.MISSING_CAMERA, "cameras[front].frames[3]: image file not found", check, paths)
    assert paths[3] in err.detail
    paths = fresh("empty")
    open(paths[2], "wb").close()
    _raises(Reason.EMPTY_VIDEO, "cameras[front].frames[2]: zero-byte", check, paths)
    paths = fresh("garbage")
    open(paths[0], "wb").write(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    _raises(Reason.UNREADABLE_VIDEO, "cameras[front].frames[0]", check, paths)
    for fmt in ("JPEG", "PNG"):
        paths = fresh(f"truncated-{fmt}", fmt)
        data = open(paths[4], "rb").read()
        open(paths[4], "wb").write(data[:len(data) // 2])
        check(paths, "container")   # only the first image is decoded at this level
        _raises(Reason.TRUNCATED_VIDEO, "cameras[front].frames[4]", check, paths, "last_frame")
    paths = fresh("size")
    err = _raises(Reason.RESOLUTION_MISMATCH, "cameras[front].width/height", check, paths, width=W + 2)
    assert f"declared {W + 2}x{H}, image frames[0] is {W}x{H}" in err.detail
    check(paths, width=W + 2, tolerance=ToleranceConfig(resolution_px=2))
    open(paths[2], "wb").write(_encode(_pixels(1, W // 2, H // 2)[0], "JPEG"))   # one image of another size
    check(paths, "last_frame")
    _raises(Reason.RESOLUTION_MISMATCH, f"image frames[2] is {W // 2}x{H // 2}", check, paths, "all_frames")
    _raises(Reason.FRAME_COUNT_MISMATCH, "cameras[front].frames: 5 images, 6 timestamps", check_images, paths,
            "cameras[front]", 6)


def test_a_cut_image_is_caught_even_where_pillow_is_told_to_accept_it(tmp_path, monkeypatch):
    paths = _write_images(tmp_path, _pixels(2))
    data = open(paths[0], "rb").read()
    open(paths[0], "wb").write(data[:len(data) // 2])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)   # as some libraries set it, process-wide
    _raises(Reason.TRUNCATED_VIDEO, "cut short", check_images, paths, "cameras[front]", 2)
    _raises(Reason.DECODE_FAILED, "front.frames[0]: JPEG without its end-of-image marker: cut short (truncated_video)", decode_images, paths, "front", [0],
            (W, H), (0, 0), (W, H))


def test_check_images_on_object_storage(s3_server, tmp_path):
    root = storage.join(s3_server.bucket("image-sequences"), "clip0", "front")
    frames = [storage.join(root, f"{i:04d}.png") for i in range(4)]
    for frame, pixels in zip(frames, _pixels(4)):
        storage.write_atomic(frame, _encode(pixels, "PNG"))
    assert check_images(frames, "cameras[front]", 4, "all_frames", width=W, height=H) == (4, W, H, 0.0)
    storage.remove(frames[1])
    _raises(Reason.MISSING_CAMERA, "cameras[front].frames[1]: image file not found", check_images, frames,
            "cameras[front]", 4, "container")


# ---------------------------------------------------------------- decode_images

@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_decode_images_scales_and_crops_like_pillow(tmp_path, fmt):
    paths = _write_images(tmp_path, _pixels(4, 96, 72), fmt)
    scaled, crop, out_wh = (48, 36), (8, 2), (32, 32)
    out = decode_images(paths, "front", np.array([3, 0, 3, 1]), scaled, crop, out_wh)
    assert out.shape == (4, 32, 32, 3) and out.dtype == np.uint8
    for k, i in enumerate([3, 0, 3, 1]):
        want = np.asarray(Image.open(paths[i]).convert("RGB").resize(scaled, Image.Resampling.BICUBIC))
        want = want[crop[1]:crop[1] + out_wh[1], crop[0]:crop[0] + out_wh[0]]
        diff = np.abs(out[k].astype(int) - want)
        if fmt == "PNG":
            assert diff.max() <= 1
        else:   # a JPEG halved in the DCT first (Image.draft): close to the full decode, not equal
            assert diff.mean() < 3
    assert np.array_equal(out[0], out[2])   # a repeated index, decoded once
    again = decode_images(paths, "front", np.array([3, 0, 3, 1]), scaled, crop, out_wh)
    assert np.array_equal(out, again)


def test_decode_images_failures_name_the_frame(tmp_path):
    paths = _write_images(tmp_path, _pixels(4))
    args = ((W, H), (0, 0), (W, H))
    data = open(paths[2], "rb").read()
    open(paths[2], "wb").write(data[:len(data) // 2])
    decode_images(paths, "front", [0, 1, 3], *args)   # the broken one not asked for
    _raises(Reason.DECODE_FAILED, "front.frames[2]", decode_images, paths, "front", [1, 2], *args)
    open(paths[1], "wb").write(_encode(_pixels(1, W + 8, H)[0], "JPEG"))
    _raises(Reason.DECODE_FAILED, f"front.frames[1]: {W + 8}x{H}, declared {W}x{H} (resolution_mismatch)",
            decode_images, paths, "front", [1], *args, native_wh=(W, H))
    decode_images(paths, "front", [1], *args, native_wh=(W, H), tolerance_px=8)
    os.remove(paths[3])
    _raises(Reason.MISSING_CAMERA, "front.frames[3]: image file not found", decode_images, paths, "front", [3], *args)


def test_one_call_for_either_kind_of_camera(tmp_path):
    from gaia2.video.encode import encode_video

    pixels = _pixels(6)
    (tmp_path / "cam1.mp4").write_bytes(encode_video(pixels, 20.0))
    _write_images(tmp_path / "cam0", pixels, "PNG")
    d = clip_dict(n_frames=(6, 6))
    del d["cameras"][0]["video"]
    d["cameras"][0]["frames"] = [f"cam0/{i:04d}.png" for i in range(6)]
    clip = Clip.from_dict(d, base_dir=str(tmp_path))
    for cam in clip.cameras:
        assert check_camera(cam, f"cameras[{cam.name}]", "all_frames", ToleranceConfig())[:3] == (6, W, H)
    images, video = (decode_camera(cam, np.arange(6), (W, H), (0, 0), (W, H)) for cam in clip.cameras)
    assert np.array_equal(images, pixels)   # PNG is lossless and there is nothing to scale
    assert np.abs(video.astype(int) - pixels).mean() < 6   # H.264 is not


# ---------------------------------------------------------------- a build over image clips

DURATION_S = 1.2   # three 16-frame windows (hop 8) at 30 Hz
WINDOW = {"frames": 16, "hop": 8}


def _images_from_videos(clip_dir: str, record: dict, videos: dict[str, bytes]) -> dict:
    """Write each camera's frames as images under ``<clip_dir>/<camera>/`` (even cameras PNG, odd JPEG) and
    return the record pointing at them."""
    from gaia2.video.decode import open_video

    record = copy.deepcopy(record)
    for c, cam in enumerate(record["cameras"]):
        vr = open_video(videos[cam["name"]], cam["name"])
        pixels = vr.get_batch(list(range(len(vr)))).asnumpy()[:len(cam["timestamps"])]
        fmt = "PNG" if c % 2 == 0 else "JPEG"
        paths = _write_images(os.path.join(clip_dir, cam["name"]), pixels, fmt)
        del cam["video"]
        cam["frames"] = [os.path.relpath(p, clip_dir) for p in paths]
    return record


def _save(clip_dir: str, record: dict, clip_id: str) -> dict:
    record = dict(record, clip_id=clip_id)
    with open(os.path.join(clip_dir, "clip.json"), "w") as f:
        json.dump(record, f)
    return record


@pytest.fixture(scope="module")
def image_source(tmp_path_factory):
    """A source of one clip stored as images, broken copies of it, and the same clip as videos (kept apart).

    Returns (source root, {clip id: record}, the video clip's directory, the image clip's windows)."""
    from gaia2.curation.windows import cut_windows
    from gaia2.synth.generate import generate_clip

    record, videos = generate_clip(0, seed=7, duration_s=DURATION_S)
    root = tmp_path_factory.mktemp("image-clips")
    source = root / "source"
    good = str(source / "img-good")
    os.makedirs(good)
    images = _images_from_videos(good, record, videos)
    records = {"img-good": _save(good, images, "img-good")}
    names = [c["name"] for c in images["cameras"]]
    windows = cut_windows(Clip.from_dict(images, base_dir=good), WINDOW["frames"], WINDOW["hop"])
    last = int(windows[-1].frame_indices[0, -1])   # camera 0's last frame of the last window: in no other
    assert len(windows) >= 2 and all(last not in w.frame_indices[0] for w in windows[:-1])

    def broken(clip_id: str, camera: int, index: int, how: str) -> None:
        dst = str(source / clip_id)
        shutil.copytree(good, dst)
        path = os.path.join(dst, images["cameras"][camera]["frames"][index])
        if how == "delete":
            os.remove(path)
        else:
            data = open(path, "rb").read()
            open(path, "wb").write(data[:len(data) // 2])
        records[clip_id] = _save(dst, images, clip_id)

    broken("img-missing", 1, 5, "delete")          # found by the lookup of every image
    broken("img-truncated", 2, 0, "truncate")      # the first image: decoded at ingest
    broken("img-late-cut", 0, last, "truncate")    # only the last window decodes it
    video_dir = str(root / "video" / "vid-good")
    os.makedirs(video_dir)
    for name in names:
        open(os.path.join(video_dir, f"{name}.mp4"), "wb").write(videos[name])
    _save(video_dir, record, "vid-good")
    return str(source), records, video_dir, windows


def _config(clip_model=None):
    overrides = {"window": WINDOW, "image": {"height": 32, "width": 64},
                 "detection": {"max_agents": 4}, "balance": {"min_stride_s": 0.0, "splits": []},
                 "shards": {"target_mb": 0.5}}
    if clip_model:
        overrides["embedding"] = {"clip_path": clip_model}
    return load_shard_config("tiny", overrides=overrides)


def test_image_clip_decodes_to_the_pixels_of_its_video(image_source):
    from pipelines.shards.decode import DecodeWindows
    from pipelines.shards.ingest import IngestClips
    from pipelines.shards.sources import list_clips

    source, _, video_dir, windows = image_source
    stage = IngestClips(_config().model_dump_json())
    image_rows = stage.ingest([r for r in list_clips(source) if r.ref_id == "img-good"])
    video_rows = stage.ingest(list_clips(os.path.dirname(video_dir)))
    assert [r["kind"] for r in image_rows] == [r["kind"] for r in video_rows] == ["window"] * len(windows)
    decode = DecodeWindows(_config().model_dump_json())
    for image_row, video_row in zip(image_rows, video_rows):
        images, cams, t = decode.decode(image_row["clip_json"], image_row["window"])
        video, cams_v, t_v = decode.decode(video_row["clip_json"], video_row["window"])
        assert images.shape == video.shape and cams == cams_v and np.array_equal(t, t_v)
        # The same decoded pixels, scaled by Pillow instead of FFmpeg (and JPEG-coded on odd cameras).
        diff = np.abs(images.astype(int) - video.astype(int)).mean(axis=(1, 2, 3, 4))
        assert np.all(diff < 3), diff


def test_build_writes_image_clips_and_rejects_their_broken_copies(ray_session, clip_model, image_source, tmp_path):
    import webdataset as wds

    from gaia2.curation.windows import window_key
    from gaia2.video.decode import open_video
    from pipelines.shards.build import build_shards

    source, records, _, windows = image_source
    result = build_shards(source, str(tmp_path / "shards"), _config(clip_model), log=lambda s: None)
    rejects = pq.read_table(os.path.join(result.out_dir, "rejects.parquet")).to_pylist()
    at_ingest = {r["clip_id"]: r for r in rejects if r["stage"] == "ingest"}
    assert {k: r["reason"] for k, r in at_ingest.items()} == {
        "img-missing": Reason.MISSING_CAMERA.value, "img-truncated": Reason.TRUNCATED_VIDEO.value}
    names = [c["name"] for c in records["img-good"]["cameras"]]
    assert f"cameras[{names[1]}].frames[5]: image file not found" in at_ingest["img-missing"]["detail"]
    assert f"cameras[{names[2]}].frames[0]" in at_ingest["img-truncated"]["detail"]
    # The image cut past the first passes ingest's container check; the window that needs it fails alone.
    late = [r for r in rejects if r["clip_id"] == "img-late-cut"]
    assert [(r["stage"], r["reason"]) for r in late] == [("decode", Reason.DECODE_FAILED.value)]
    assert f"{names[0]}.frames[" in late[0]["detail"] and "cut short" in late[0]["detail"]

    assert late[0]["key"] == window_key("img-late-cut", len(windows) - 1)
    manifest = pq.read_table(os.path.join(result.out_dir, "manifest.parquet")).to_pylist()
    want = [window_key("img-good", w.index) for w in windows] + [window_key("img-late-cut", w.index)
                                                                   for w in windows[:-1]]
    assert sorted(m["key"] for m in manifest) == sorted(want)
    timestamps = [np.asarray(c["timestamps"]) for c in records["img-good"]["cameras"]]
    samples = [s for tar in sorted(glob.glob(os.path.join(result.out_dir, "*", "shard-*.tar")))
               for s in wds.WebDataset(tar, shardshuffle=False)]
    assert sorted(s["__key__"] for s in samples) == sorted(want)
    for sample in samples:
        meta = json.loads(sample["json"])
        window = windows[meta["window"]]
        assert [c["name"] for c in meta["cameras"]] == names
        for c, cam in enumerate(meta["cameras"]):   # each camera's own times (relative to the window's start)
            np.testing.assert_allclose(np.asarray(cam["frame_timestamps"]) + meta["start_time_s"],
                                       timestamps[c][window.frame_indices[c]], atol=2e-6)
            frames = open_video(sample[f"{cam['name']}.mp4"], cam["name"]).get_batch(list(range(16))).asnumpy()
            assert frames.shape == (16, 32, 64, 3) and frames.std() > 5   # pictures, not a grey fill
