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


def test_slice_keeps_what_a_window_needs():
    d = clip_dict(n_frames=(40, 40))
    d["boxes"] = {"timestamps": [0.0, 0.5, 1.0, 1.5], "frame_index": [0, 1, 2, 3, 3],
                  "center": [[5, 0, 1]] * 5, "size": [[4, 2, 1.5]] * 5, "yaw": [0.0, 0.1, 0.2, 0.3, 0.4],
                  "category": ["car", "car", "van", "bus", "pedestrian"]}
    clip = Clip.from_dict(d, base_dir="/x")
    part = clip.slice(1.2, 1.4, margin=0.1)
    assert part.cameras == clip.cameras
    assert part.ego.timestamps[0] <= 1.1 and part.ego.timestamps[-1] >= 1.5 and len(part.ego.timestamps) < len(clip.ego.timestamps)
    for t in (1.2, 1.3, 1.4):   # interpolation inside the window is unchanged
        assert np.interp(t, part.ego.timestamps, part.ego.speed) == np.interp(t, clip.ego.timestamps, clip.ego.speed)
        assert np.array_equal(part.boxes.at(t), clip.boxes.at(t))
    assert part.boxes.timestamps.tolist() == [1.0, 1.5]
    assert Clip.from_dict(part.to_dict()).boxes.category.tolist() == part.boxes.category.tolist()   # paths resolved
