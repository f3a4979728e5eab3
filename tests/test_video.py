import io
import tarfile

import numpy as np
import pytest

from gaia2.schema.errors import ClipError, Reason
from gaia2.schema.sample import npy_bytes, tar_archive, tar_members
from gaia2.video.decode import check_video, decode_frames, mp4_truncation, open_video, probe_video
from gaia2.video.encode import VideoCodec, encode_video


def _frames(t=10, h=48, w=64):
    rng = np.random.default_rng(0)
    base = np.zeros((t, h, w, 3), np.uint8)
    for i in range(t):   # a moving bright square on a gradient: compressible, frame-distinct
        base[i] = np.linspace(0, 200, w, dtype=np.uint8)[None, :, None]
        base[i, 10:20, 2 * i:2 * i + 10] = 255
    return base + rng.integers(0, 3, base.shape, dtype=np.uint8)


def test_encoding_is_byte_identical_and_decodes_to_the_frames(tmp_path):
    frames = _frames()
    a, b = encode_video(frames, 25.0), encode_video(frames, 25.0)
    assert a == b
    path = tmp_path / "v.mp4"
    path.write_bytes(a)
    assert check_video(str(path), "v", 10) == (10, 64, 48, 25.0)   # frames, width, height, fps
    out = decode_frames(str(path), "v", np.arange(10), (64, 48), (0, 0), (64, 48))
    assert out.shape == (10, 48, 64, 3)
    assert np.abs(out.astype(int) - frames.astype(int)).mean() < 6   # lossy, but close


def test_decode_scales_and_crops(tmp_path):
    path = tmp_path / "v.mp4"
    path.write_bytes(encode_video(_frames(), 25.0))
    out = decode_frames(str(path), "v", np.array([0, 0, 3]), (32, 24), (4, 2), (24, 20))
    assert out.shape == (3, 20, 24, 3)
    assert np.array_equal(out[0], out[1])


@pytest.mark.parametrize("mutate,reason", [
    (lambda b: b"", Reason.EMPTY_VIDEO),
    (lambda b: b[: len(b) // 2], Reason.TRUNCATED_VIDEO),
    (lambda b: bytes(np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8)), Reason.UNREADABLE_VIDEO),
])
@pytest.mark.parametrize("check", ["container", "last_frame"])   # PyAV's probe, decord
def test_broken_videos_get_specific_reasons(tmp_path, mutate, reason, check):
    path = tmp_path / "v.mp4"
    path.write_bytes(mutate(encode_video(_frames(), 25.0)))
    with pytest.raises(ClipError) as err:
        check_video(str(path), "front", 10, check)
    assert err.value.reason == reason


@pytest.mark.parametrize("check", ["container", "last_frame"])
def test_missing_file_and_frame_count(tmp_path, check):
    with pytest.raises(ClipError) as err:
        check_video(str(tmp_path / "nope.mp4"), "front", 10, check)
    assert err.value.reason == Reason.MISSING_CAMERA
    path = tmp_path / "v.mp4"
    path.write_bytes(encode_video(_frames(8), 25.0))
    with pytest.raises(ClipError) as err:
        check_video(str(path), "front", 10, check)
    assert err.value.reason == Reason.FRAME_COUNT_MISMATCH and "10 timestamps" in err.value.detail


@pytest.mark.parametrize("fps", [10.0, 12.5, 20.0, 29.97, 30.0])
def test_the_container_probe_reports_what_decord_does(fps):
    rng = np.random.default_rng(int(fps * 100))
    for (h, w), codec in [((48, 64), VideoCodec()), ((90, 160), VideoCodec(preset="medium", gop=24)),
                          ((100, 178), VideoCodec(gop=1))]:
        data = encode_video(rng.integers(0, 255, (13, h, w, 3), dtype=np.uint8), fps, codec)
        vr = open_video(data, "front")
        assert probe_video(data, "front") == (len(vr), *vr[0].shape[1::-1], vr.get_avg_fps()) == (13, w, h, fps)


def test_the_container_probe_rejects_a_file_without_video(tmp_path):
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:   # an audio-only MP4
        stream = out.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    with pytest.raises(ClipError) as err:
        probe_video(buf.getvalue(), "front")
    assert err.value.reason == Reason.UNREADABLE_VIDEO and "no video stream" in err.value.detail


def test_truncation_check_reads_box_sizes():
    data = encode_video(_frames(), 25.0)
    assert mp4_truncation(data) is None
    assert "declares" in mp4_truncation(data[:-100])
    assert mp4_truncation(b"not an mp4 at all") is None


def test_sample_tar_fragments_concatenate_into_a_valid_deterministic_archive():
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    s1 = tar_members([("k1.json", b"{}"), ("k1.x.npy", npy_bytes(arr))])
    s2 = tar_members([("k2.json", b'{"a":1}')])
    assert s1 == tar_members([("k1.json", b"{}"), ("k1.x.npy", npy_bytes(arr))])
    data = tar_archive([s1, s2])
    assert len(data) % tarfile.RECORDSIZE == 0
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
        assert names == ["k1.json", "k1.x.npy", "k2.json"]
        m = tar.getmember("k1.x.npy")
        assert (m.mtime, m.uid, m.mode) == (0, 0, 0o444)
        assert np.array_equal(np.load(io.BytesIO(tar.extractfile(m).read())), arr)


def test_encoding_is_repeatable_at_awkward_sizes():
    # x264's AVX-512 kernels gave run-to-run differences at widths like 160 (see encode.py).
    from gaia2.synth.render import render_camera
    from gaia2.synth.scene import plan_clip

    frames = render_camera(plan_clip(0, 3, 1.0), 0, 1.25)   # (T, 90, 160, 3) driving scene
    assert frames.shape[2] == 160
    assert len({encode_video(frames, 25.0) for _ in range(12)}) == 1
