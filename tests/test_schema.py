import math

import numpy as np
import pytest

from gaia2.schema.clip import Clip, dumps
from gaia2.schema.errors import ClipError, Reason
from gaia2.schema.metadata import VOCABULARY, VocabularyError, decode_metadata, encode_metadata
from tests.helpers import clip_dict


def test_round_trip_is_stable():
    d = clip_dict()
    clip = Clip.from_dict(d, base_dir="/data/c0")
    assert clip.cameras[0].video == "/data/c0/cam0.mp4"
    again = Clip.from_dict(clip.to_dict(base_dir="/data/c0"), base_dir="/data/c0")
    assert dumps(again.to_dict()) == dumps(clip.to_dict())
    assert clip.metadata_ids["country"] == VOCABULARY["country"].index("GB")
    assert clip.metadata_ids["one_way"] == 0   # missing -> unknown


def _breaks(mutate, reason):
    d = clip_dict()
    mutate(d)
    with pytest.raises(ClipError) as err:
        Clip.from_dict(d, base_dir="/x")
    assert err.value.reason == reason, err.value
    return err.value


def test_each_contract_violation_has_its_reason():
    _breaks(lambda d: d["cameras"][0].update(intrinsics=[1, 2, 3]), Reason.BAD_CALIBRATION)
    _breaks(lambda d: d["cameras"][0].update(extrinsics=np.eye(3).tolist()), Reason.BAD_CALIBRATION)
    _breaks(lambda d: d["cameras"][1].update(distortion=[0.0] * 4), Reason.BAD_CALIBRATION)
    _breaks(lambda d: d["ego"]["curvature"].__setitem__(3, math.nan), Reason.NAN_EGO)
    _breaks(lambda d: d["metadata"].update(weather="sandstorm"), Reason.UNKNOWN_METADATA)
    _breaks(lambda d: d["metadata"].update(colour="red"), Reason.UNKNOWN_METADATA)
    _breaks(lambda d: d.pop("ego"), Reason.INVALID_RECORD)
    _breaks(lambda d: d.update(clip_id="a.b"), Reason.INVALID_RECORD)
    _breaks(lambda d: d.update(cameras=[]), Reason.MISSING_CAMERA)
    err = _breaks(lambda d: d["cameras"][0]["timestamps"].__setitem__(5, 0.0), Reason.TIMESTAMPS_NOT_INCREASING)
    assert "cam0" in err.detail and "timestamp 5" in err.detail


def test_vocabulary_is_strict_and_reversible():
    ids = encode_metadata({"weather": "fog", "country": None})
    assert ids["weather"] == VOCABULARY["weather"].index("fog") and ids["country"] == 0
    assert decode_metadata(ids)["weather"] == "fog"
    with pytest.raises(VocabularyError, match="metadata.weather"):
        encode_metadata({"weather": "Fog"})
    assert all(v[0] == "unknown" for v in VOCABULARY.values())


def test_gps_track_interpolates_window_ends():
    clip = Clip.from_dict(clip_dict(), base_dir="/x")
    track = clip.gps.track(0.5, 1.0)
    assert track.shape == (2, 2)
    assert np.isclose(track[0, 1], 51.5 + 0.0001 * 0.5 / 2.0)


def test_boxes_at_times_are_the_nearest_timestamps_boxes_in_record_order():
    d = clip_dict(n_frames=(40, 40))
    d["boxes"] = {"timestamps": [0.0, 0.5, 1.0, 1.5], "frame_index": [3, 0, 1, 3, 2, 1],
                  "center": [[5, 0, 1], [6, 0, 1], [7, 0, 1], [8, 0, 1], [9, 0, 1], [10, 0, 1]],
                  "size": [[4, 2, 1.5]] * 6, "yaw": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5],
                  "category": ["car", "car", "van", "bus", "pedestrian", "car"]}
    boxes = Clip.from_dict(d, base_dir="/x").boxes
    times = [-1.0, 0.2, 0.25, 0.74, 1.1, 1.3, 9.0]   # 0.25: a tie goes to the earlier timestamp
    got = boxes.at_times(np.asarray(times))
    for t, part in zip(times, got):
        k = int(np.argmin(np.abs(boxes.timestamps - t)))
        sel = boxes.frame_index == k
        expected = np.concatenate([boxes.center[sel], boxes.size[sel], boxes.yaw[sel, None],
                                   boxes.category[sel, None].astype(np.float64)], axis=1)
        assert np.array_equal(part, expected) and np.array_equal(boxes.at(t), expected)
    assert [p[:, 0].tolist() for p in got] == [[6.0], [6.0], [6.0], [7.0, 10.0], [9.0], [5.0, 8.0], [5.0, 8.0]]
