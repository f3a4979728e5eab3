"""Every record is hostile until checked (issue 13): a clip record mutated field by field -- wrong types,
non-finite, huge and negative values, missing and extra keys, wrong nesting, lies about its rate, size and
frame count, video paths leaving the source, duplicated ids -- is a reject with a reason and a detail naming
the field, never an exception past the record; the untouched clips beside it are written.

Every drawn mutation makes the record invalid by construction (the strategy knows each field's contract and
the default ``ingest.bounds``), so "must be a reject" is never asserted of a record that happens to be valid.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import shutil
import tempfile
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gaia2.config.base import ConfigError
from gaia2.config.shards import BoundsConfig, IngestConfig, ToleranceConfig, load_shard_config
from gaia2.schema.clip import BOX_KEYS, CAMERA_KEYS, CLIP_KEYS, EGO_KEYS, GPS_KEYS, Clip
from gaia2.schema.errors import ClipError, Reason
from gaia2.schema.metadata import VOCABULARY
from gaia2.video.decode import check_video
from gaia2.video.encode import encode_video
from pipelines.shards.ingest import IngestClips, dedupe_clip_ids
from pipelines.shards.sources import ClipRef, list_clips
from tests.helpers import clip_dict

WINDOW = {"window": {"frames": 16, "hop": 8}}
BOUNDS = BoundsConfig()
BAD_INPUT = {r.value for r in Reason if r.is_bad_input} - {Reason.DECODE_FAILED.value}
# The detail of an exception nobody meant to raise (map_rows' fallback): "TypeError: ..."
UNPLANNED = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Warning)\b")
NON_FINITE = (math.nan, math.inf, -math.inf)

_ingest = IngestClips(load_shard_config("tiny", overrides=WINDOW).model_dump_json())


# ---------------------------------------------------------------- mutations

def _get(rec, path):
    for p in path:
        rec = rec[p]
    return rec


def _set(rec, path, value):
    _get(rec, path[:-1])[path[-1]] = value


def _sign(data) -> float:
    return data.draw(st.sampled_from([1.0, -1.0]), label="sign")


def _big(data, lo: float) -> float:
    return data.draw(st.floats(min_value=lo, max_value=1e300), label="big")


# JSON values by kind, for "a value of the wrong kind": a field never accepts a kind it is drawn from.
KINDS = {
    "null": st.none(),
    "boolean": st.booleans(),
    "number": st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=False, allow_infinity=False)),
    "string": st.text(max_size=8),
    "numbers": st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=3),
    "strings": st.lists(st.text(max_size=3), min_size=1, max_size=3),
    "object": st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
}


def _wrong_kind(data, accepted: set[str]):
    kind = data.draw(st.sampled_from(sorted(set(KINDS) - accepted)), label="wrong kind")
    return data.draw(KINDS[kind], label="value")


def _catalogue(rec: dict) -> dict[str, list[tuple]]:
    """The record's fields by contract: what each accepts decides which mutations break it."""
    cams = [("cameras", i) for i in range(len(rec["cameras"]))]
    boxes = rec.get("boxes") or None
    has_boxes = bool(boxes and boxes["frame_index"])
    box_arrays = [("boxes", k) for k in ("timestamps", "frame_index", "center", "size", "yaw")] if has_boxes else []
    return {
        "numbers": [("start_time_s",)] + [c + (k,) for c in cams for k in ("frame_rate", "width", "height")],
        "ids": [(k,) for k in ("clip_id", "drive_id", "rig_id")] + [c + ("name",) for c in cams],
        "arrays": [c + (k,) for c in cams for k in ("timestamps", "intrinsics", "extrinsics", "distortion")]
                  + [("ego", k) for k in sorted(EGO_KEYS)] + [("gps", k) for k in sorted(GPS_KEYS)] + box_arrays,
        "objects": [("ego",), ("gps",)] + cams + ([("boxes",)] if boxes else []),
        "required": [(k,) for k in ("clip_id", "drive_id", "rig_id", "start_time_s", "cameras", "ego", "gps")]
                    + [c + (k,) for c in cams for k in sorted(CAMERA_KEYS - {"frames"})]   # video's alternative
                    + [("ego", k) for k in sorted(EGO_KEYS)] + [("gps", k) for k in sorted(GPS_KEYS)]
                    + ([("boxes", k) for k in sorted(BOX_KEYS)] if boxes else []),
        "cams": cams,
        "times": [c + ("timestamps",) for c in cams] + [("ego", "timestamps"), ("gps", "timestamps")]
                 + ([("boxes", "timestamps")] if has_boxes else []),
        "has_boxes": [("boxes",)] if has_boxes else [],
    }


def _element(data, rec, path) -> tuple:
    """A path to one number inside the array at ``path``."""
    arr = _get(rec, path)
    i = data.draw(st.integers(0, len(arr) - 1), label="index")
    if isinstance(arr[i], list):
        return path + (i, data.draw(st.integers(0, len(arr[i]) - 1), label="column"))
    return path + (i,)


def m_wrong_type(data, rec, cat, ctx):
    groups = ["numbers", "ids", "arrays", "objects", "cameras", "metadata", "video"]
    group = data.draw(st.sampled_from(groups + (["category"] if cat["has_boxes"] else [])), label="group")
    if group == "numbers":
        path = data.draw(st.sampled_from(cat["numbers"]))
        if path[-1] in ("width", "height") and data.draw(st.booleans()):   # an integer field: a fraction
            value = data.draw(st.floats(1.0, 1e6).filter(lambda x: not x.is_integer()))
        else:
            value = _wrong_kind(data, {"number"})
    elif group == "ids":
        path = data.draw(st.sampled_from(cat["ids"]))
        value = data.draw(st.one_of(_wrong_kind_strategy({"string"}),
                                    st.text(max_size=10).filter(lambda s: not re.fullmatch(r"[A-Za-z0-9_-]+", s))))
    elif group == "arrays":
        path = data.draw(st.sampled_from(cat["arrays"]))
        value = _wrong_kind(data, {"numbers"})
    elif group == "objects":
        path = data.draw(st.sampled_from(cat["objects"]))
        value = _wrong_kind(data, {"object", "null"} if path == ("boxes",) else {"object"})
    elif group == "cameras":
        path, value = ("cameras",), data.draw(st.one_of(_wrong_kind_strategy(set()), st.just([])))
    elif group == "metadata":
        path, value = ("metadata",), _wrong_kind(data, {"object", "null"})
    elif group == "video":
        path = data.draw(st.sampled_from(cat["cams"])) + ("video",)
        value = _wrong_kind(data, {"string"})
    else:
        path = ("boxes", "category")
        value = data.draw(st.one_of(_wrong_kind_strategy({"strings"}),
                                    st.lists(_wrong_kind_strategy({"string"}), min_size=1, max_size=2)))
    _set(rec, path, value)
    return _token(path), None


def m_stray_element(data, rec, cat, ctx):
    """A boolean, null or string among the numbers of an array: numpy would take True for 1."""
    path = _element(data, rec, data.draw(st.sampled_from(cat["arrays"])))
    _set(rec, path, data.draw(st.sampled_from([True, False, None, "1.5"])))
    return _token(path), None


def _wrong_kind_strategy(accepted: set[str]):
    return st.one_of(*(KINDS[k] for k in sorted(set(KINDS) - accepted)))


def _token(path: tuple) -> str:
    """The name a detail must mention: the last key of the path."""
    return [p for p in path if isinstance(p, str)][-1]


def m_non_finite(data, rec, cat, ctx):
    if data.draw(st.booleans(), label="scalar"):
        path = data.draw(st.sampled_from(cat["numbers"]))
    else:
        path = _element(data, rec, data.draw(st.sampled_from(cat["arrays"])))
    _set(rec, path, data.draw(st.sampled_from(NON_FINITE)))
    return _token(path), None


def m_huge(data, rec, cat, ctx):
    """A finite value beyond a bound of the default ``ingest.bounds`` (or of the contract)."""
    b = BOUNDS
    cam = data.draw(st.sampled_from(cat["cams"]))
    choices = ["start", "rate", "width", "height", "span", "speed", "curvature", "lat", "lon", "cx", "cy",
               "offset"] + (["size", "center", "index"] if cat["has_boxes"] else [])
    what = data.draw(st.sampled_from(choices), label="huge")
    if what == "start":
        path, value = ("start_time_s",), _sign(data) * _big(data, b.max_abs_time_s * 1.01)
    elif what == "rate":
        path = cam + ("frame_rate",)
        value = data.draw(st.one_of(st.floats(b.max_frame_rate * 1.01, 1e300), st.integers(int(b.max_frame_rate) + 1, 10**30)))
    elif what in ("width", "height"):
        path, value = cam + (what,), data.draw(st.integers(getattr(b, f"max_{what}") + 1, 10**30))
    elif what == "span":   # the last timestamp far beyond max_duration_s
        times = data.draw(st.sampled_from(cat["times"]))
        path = times + (len(_get(rec, times)) - 1,)
        value = _get(rec, path) + _big(data, b.max_duration_s * 1.01 + 10)
    elif what == "speed":
        path = _element(data, rec, ("ego", "speed"))
        value = _sign(data) * _big(data, b.max_speed_mps * 1.01)
    elif what == "curvature":
        path = _element(data, rec, ("ego", "curvature"))
        value = _sign(data) * _big(data, b.max_abs_curvature * 1.01)
    elif what in ("lat", "lon"):
        path = _element(data, rec, ("gps", "latitude" if what == "lat" else "longitude"))
        value = _sign(data) * _big(data, 90.5 if what == "lat" else 180.5)
    elif what in ("cx", "cy"):   # principal point beyond the image
        path = cam + ("intrinsics", 2 if what == "cx" else 3)
        value = _big(data, _get(rec, cam)["width" if what == "cx" else "height"] + 1.0)
    elif what == "offset":   # camera mounted kilometres from the car
        path = cam + ("extrinsics", data.draw(st.integers(0, 2)), 3)
        value = _sign(data) * _big(data, b.max_camera_offset_m * 1.01)
    elif what == "size":
        path = _element(data, rec, ("boxes", "size"))
        value = _big(data, b.max_box_size_m * 1.01)
    elif what == "center":
        path = _element(data, rec, ("boxes", "center"))
        value = _sign(data) * _big(data, b.max_box_distance_m * 1.01)
    else:
        path = _element(data, rec, ("boxes", "frame_index"))
        value = data.draw(st.integers(len(rec["boxes"]["timestamps"]), 10**15))
    _set(rec, path, value)
    return _token(path), None


def m_negative(data, rec, cat, ctx):
    cam = data.draw(st.sampled_from(cat["cams"]))
    choices = ["rate", "width", "height", "focal", "lat", "lon", "backwards"] + (["size", "index"] if cat["has_boxes"] else [])
    what = data.draw(st.sampled_from(choices), label="negative")
    if what == "rate":
        path, value = cam + ("frame_rate",), data.draw(st.floats(-1e300, 0.0))
    elif what in ("width", "height"):
        path, value = cam + (what,), data.draw(st.integers(-10**30, 0))
    elif what == "focal":
        path, value = cam + ("intrinsics", data.draw(st.integers(0, 1))), data.draw(st.floats(-1e300, 0.0))
    elif what in ("lat", "lon"):
        path = _element(data, rec, ("gps", "latitude" if what == "lat" else "longitude"))
        value = -_big(data, 90.5 if what == "lat" else 180.5)
    elif what == "backwards":   # a timestamp at or before its predecessor
        times = data.draw(st.sampled_from([t for t in cat["times"] if len(_get(rec, t)) > 1]))
        k = data.draw(st.integers(1, len(_get(rec, times)) - 1))
        path = times + (k,)
        value = _get(rec, times)[k - 1] - data.draw(st.floats(0.0, 1e300))
    elif what == "size":
        path, value = _element(data, rec, ("boxes", "size")), data.draw(st.floats(-1e300, -1e-6))
    else:
        path, value = _element(data, rec, ("boxes", "frame_index")), data.draw(st.integers(-10**15, -1))
    _set(rec, path, value)
    return _token(path), None


def m_missing(data, rec, cat, ctx):
    path = data.draw(st.sampled_from(cat["required"]))
    if data.draw(st.booleans(), label="as null"):
        _set(rec, path, None)   # null is absent
    else:
        del _get(rec, path[:-1])[path[-1]]
    return _token(path), {Reason.INVALID_RECORD.value}


_NAME = st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True)


def m_extra(data, rec, cat, ctx):
    levels = [((), CLIP_KEYS), (("ego",), EGO_KEYS), (("gps",), GPS_KEYS), (("metadata",), frozenset(VOCABULARY))]
    levels += [(c, CAMERA_KEYS) for c in cat["cams"]] + ([(("boxes",), BOX_KEYS)] if rec.get("boxes") else [])
    level, known = data.draw(st.sampled_from(levels), label="level")
    key = data.draw(_NAME.filter(lambda k: k not in known), label="key")
    value = data.draw(st.text(max_size=5) if level == ("metadata",) else _wrong_kind_strategy({"null"}))
    if level == ("metadata",) and rec.get("metadata") is None:
        rec["metadata"] = {}
    _get(rec, level)[key] = value
    return key, {Reason.INVALID_RECORD.value, Reason.UNKNOWN_METADATA.value}


def m_path_escape(data, rec, cat, ctx):
    cam = data.draw(st.sampled_from(cat["cams"]))
    video = _get(rec, cam)["video"]
    other = os.path.basename(ctx["other_dir"])
    value = data.draw(st.sampled_from([
        f"../{other}/{video}", f"../../{video}", f"sub/../../{video}", "..", f"./../{other}/{video}",
        os.path.join(ctx["clip_dir"], video),            # absolute, and the file is there
        f"file://{os.path.join(ctx['clip_dir'], video)}", f"s3://bucket/clips/{video}",
        f"gs://bucket/{video}?x=1", f"{ctx['other_dir']}/{video}"]), label="video")
    _set(rec, cam + ("video",), value)
    return "video", {Reason.VIDEO_PATH_OUTSIDE_SOURCE.value}


def m_lengths(data, rec, cat, ctx):
    """Arrays that must pair up do not: series of one record, boxes, timestamps vs the video's frames."""
    choices = ["ego", "gps", "camera"] + (["boxes"] if cat["has_boxes"] else [])
    what = data.draw(st.sampled_from(choices), label="lengths")
    if what in ("ego", "gps"):
        key = data.draw(st.sampled_from(sorted(EGO_KEYS if what == "ego" else GPS_KEYS)))
        arr = rec[what][key]
        if data.draw(st.booleans(), label="drop"):
            arr.pop()
        else:
            arr.append(arr[-1] + 1.0)   # increasing still, if it is the timestamps
        return key, {Reason.INVALID_RECORD.value}
    if what == "boxes":
        key = data.draw(st.sampled_from(["frame_index", "center", "size", "yaw", "category"]))
        rec["boxes"][key].pop()
        return key, {Reason.INVALID_RECORD.value}
    cam = _get(rec, data.draw(st.sampled_from(cat["cams"])))
    if data.draw(st.booleans(), label="append"):   # one more timestamp than the video has frames
        cam["timestamps"].append(cam["timestamps"][-1] + 1.0 / cam["frame_rate"])
    else:                                           # one fewer (extra_frames = 0)
        cam["timestamps"].pop()
    return "timestamps", {Reason.FRAME_COUNT_MISMATCH.value}


def m_rate_lie(data, rec, cat, ctx):
    cam = _get(rec, data.draw(st.sampled_from(cat["cams"])))
    factor = data.draw(st.one_of(st.floats(1.25, 3.0), st.floats(0.3, 0.8)), label="factor")
    cam["frame_rate"] *= factor   # inside [min_frame_rate, max_frame_rate] for 20-30 Hz rigs
    return "frame_rate", {Reason.FRAME_RATE_MISMATCH.value}


def m_size_lie(data, rec, cat, ctx):
    cam = _get(rec, data.draw(st.sampled_from(cat["cams"])))
    key = data.draw(st.sampled_from(["width", "height"]))
    cam[key] += data.draw(st.integers(1, 256))   # larger: the principal point stays inside the image
    return key, {Reason.RESOLUTION_MISMATCH.value}


def m_camera_name(data, rec, cat, ctx):
    i, j = data.draw(st.lists(st.integers(0, len(cat["cams"]) - 1), min_size=2, max_size=2, unique=True))
    rec["cameras"][j]["name"] = rec["cameras"][i]["name"]
    return "name", {Reason.INVALID_RECORD.value}


def m_nesting(data, rec, cat, ctx):
    paths = (cat["numbers"] + cat["ids"] + cat["arrays"] + cat["objects"] + [("cameras",)]
             + ([("metadata",)] if rec.get("metadata") else [])   # {"value": null} would be an empty metadata
             + [c + ("video",) for c in cat["cams"]] + ([("boxes", "category")] if cat["has_boxes"] else []))
    path = data.draw(st.sampled_from(paths))
    value = _get(rec, path)
    _set(rec, path, [value] if data.draw(st.booleans(), label="in a list") else {"value": value})
    return _token(path), None


def m_schema_version(data, rec, cat, ctx):
    rec["schema_version"] = data.draw(st.sampled_from([0, 2, -1, "1", True, 1.5, [1], {"v": 1}]))
    return "schema_version", {Reason.INVALID_RECORD.value}


def m_metadata_value(data, rec, cat, ctx):
    key = data.draw(st.sampled_from(sorted(VOCABULARY)))
    value = data.draw(st.one_of(st.text(max_size=80).filter(lambda v: v not in VOCABULARY[key]),
                                _wrong_kind_strategy({"string", "null"})))
    rec.setdefault("metadata", {})
    if rec["metadata"] is None:
        rec["metadata"] = {}
    rec["metadata"][key] = value
    return key, None


MUTATIONS = {f.__name__[2:]: f for f in (m_wrong_type, m_stray_element, m_non_finite, m_huge, m_negative, m_missing, m_extra,
                                         m_path_escape, m_lengths, m_rate_lie, m_size_lie, m_camera_name,
                                         m_nesting, m_schema_version, m_metadata_value)}


def mutate(data, rec: dict, ctx: dict) -> tuple[str, str, set[str] | None]:
    """Mutate ``rec`` in place, one drawn mutation -> (its kind, the field the detail must name, allowed reasons)."""
    kind = data.draw(st.sampled_from(sorted(MUTATIONS)), label="mutation")
    token, reasons = MUTATIONS[kind](data, rec, _catalogue(rec), ctx)
    return kind, token, reasons


def assert_rejected(row: dict, token: str, reasons: set[str] | None, what: str) -> None:
    assert row["kind"] == "reject", f"{what}: not rejected"
    assert row["reject_stage"] == "ingest"
    assert row["reject_reason"] in (reasons or BAD_INPUT), (what, row["reject_reason"], row["reject_detail"])
    detail = row["reject_detail"]
    assert not UNPLANNED.match(detail), f"{what}: an exception escaped the checks: {detail}"
    assert token in detail, f"{what}: detail does not name {token!r}: {detail}"
    assert len(detail) <= 1000


# ---------------------------------------------------------------- record level: many examples, no Ray

@pytest.fixture(scope="module")
def bases(synth_clips):
    """(ref, record) of each synthetic clip (three rigs: 20, 25 and 30 Hz)."""
    refs = list_clips(synth_clips)
    return [(ref, json.loads(open(ref.location).read())) for ref in refs]


def test_untouched_records_pass_every_check(bases):
    rows = _ingest.ingest([ref for ref, _ in bases])
    assert rows and all(r["kind"] == "window" for r in rows), [r["reject_detail"] for r in rows if r["kind"] != "window"]
    assert {r["clip_id"] for r in rows} == {rec["clip_id"] for _, rec in bases}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_mutated_record_is_a_reject_naming_its_field(bases, data):
    i = data.draw(st.integers(0, len(bases) - 1), label="clip")
    ref, record = bases[i]
    rec = copy.deepcopy(record)
    ctx = {"clip_dir": ref.base_dir, "other_dir": bases[(i + 1) % len(bases)][0].base_dir}
    kind, token, reasons = mutate(data, rec, ctx)
    event(kind)   # --hypothesis-show-statistics: how often each mutation was drawn
    # As a manifest row would arrive: the record as JSON (non-finite numbers as Infinity/NaN), videos
    # relative to the clip's directory.
    mutated = ClipRef("mutated", f"{ref.location}#mutated", ref.base_dir, json.dumps(rec))
    rows = _ingest.ingest([mutated])
    assert len(rows) == 1, f"{kind}: {len(rows)} rows"
    assert_rejected(rows[0], token, reasons, kind)


@settings(max_examples=60, deadline=None)
@given(content=st.one_of(
    st.binary(max_size=200),
    st.sampled_from([b"", b"{not json", b"\xff\xfe{}", b"[" * 100_000 + b"]" * 100_000, b"null", b"[]", b"1e999",
                     b'"clip"', b"{}", b'{"clip_id": "c0"}', b'{"clip_id": NaN}', b"\x00" * 64])))
def test_an_unreadable_clip_json_is_a_reject(tmp_path_factory, content):
    d = tmp_path_factory.mktemp("unreadable") / "c0"
    d.mkdir()
    (d / "clip.json").write_bytes(content)
    rows = _ingest.ingest([ClipRef("c0", str(d / "clip.json"), str(d), None)])
    assert len(rows) == 1 and rows[0]["kind"] == "reject" and rows[0]["clip_id"] == "c0"
    assert rows[0]["reject_reason"] in (Reason.INVALID_RECORD.value, Reason.MISSING_CAMERA.value)
    assert not UNPLANNED.match(rows[0]["reject_detail"]), rows[0]["reject_detail"]


def test_a_missing_clip_json_is_a_reject(tmp_path):
    rows = _ingest.ingest([ClipRef("gone", str(tmp_path / "gone" / "clip.json"), str(tmp_path / "gone"), None)])
    assert rows[0]["reject_reason"] == Reason.INVALID_RECORD.value and "cannot read" in rows[0]["reject_detail"]


@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_a_duplicated_clip_id_rejects_the_later_record_only(bases, data):
    i, j = data.draw(st.lists(st.integers(0, len(bases) - 1), min_size=2, max_size=2, unique=True))
    (first, rec_first), (later, rec_later) = sorted([bases[i], bases[j]], key=lambda b: b[0].location)
    rec = dict(copy.deepcopy(rec_later), clip_id=rec_first["clip_id"])
    copy_ref = ClipRef(later.ref_id, later.location, later.base_dir, json.dumps(rec))
    refs = [first, copy_ref]
    rows = _ingest.ingest(refs)
    # Batches come back in any order; the source order decides which record keeps the id.
    rows = data.draw(st.permutations(rows))
    kept, duplicates = dedupe_clip_ids(rows, [r.location for r in refs])
    assert len(duplicates) == 1 and duplicates[0] in kept
    assert_rejected(duplicates[0], "clip_id", {Reason.DUPLICATE_CLIP_ID.value}, "duplicate")
    assert duplicates[0]["location"] == later.location and first.location in duplicates[0]["reject_detail"]
    windows = [r for r in kept if r["kind"] == "window"]
    assert windows and {r["location"] for r in windows} == {first.location}
    assert len({r["key"] for r in windows}) == len(windows)   # no colliding keys left for the plan


# ---------------------------------------------------------------- the builds

def _build_config(clip_model):
    # Every window of a good clip is written: no stride thinning, no balancing.
    return load_shard_config("tiny", overrides={
        **WINDOW, "image": {"height": 32, "width": 64}, "detection": {"max_agents": 4},
        "balance": {"min_stride_s": 0.0, "splits": []}, "shards": {"target_mb": 0.5},
        "embedding": {"clip_path": clip_model}})


GOOD = 2      # untouched clips of a build
MUTATED = 3   # mutated copies beside them


@settings(max_examples=2, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_builds_complete_reject_every_mutated_clip_and_write_every_untouched_one(
        ray_session, clip_model, bases, tmp_path_factory, data):
    from pipelines.shards.build import build_shards

    root = tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp(), prefix="hostile-build-")
    source = os.path.join(root, "clips")
    good = bases[:GOOD]
    for ref, _ in good:
        shutil.copytree(ref.base_dir, os.path.join(source, os.path.basename(ref.base_dir)))
    expected = {}
    for k in range(MUTATED):
        ref, record = bases[data.draw(st.integers(0, len(bases) - 1), label="copy of")]
        name = f"zz-mutated-{k}"   # sorts after every untouched clip: a duplicated id is the later record
        clip_dir = os.path.join(source, name)
        shutil.copytree(ref.base_dir, clip_dir)
        rec = dict(copy.deepcopy(record), clip_id=name)
        if data.draw(st.booleans(), label="duplicate id"):
            rec["clip_id"], kind, token, reasons = good[k % GOOD][1]["clip_id"], "duplicate", "clip_id", {
                Reason.DUPLICATE_CLIP_ID.value}
        else:
            other = os.path.join(source, os.path.basename(good[0][0].base_dir))
            kind, token, reasons = mutate(data, rec, {"clip_dir": clip_dir, "other_dir": other})
        with open(os.path.join(clip_dir, "clip.json"), "w") as f:
            json.dump(rec, f)   # allow_nan: a NaN reaches the checks as NaN
        expected[os.path.join(clip_dir, "clip.json")] = (kind, token, reasons)

    started = time.perf_counter()
    result = build_shards(source, os.path.join(root, "shards"), _build_config(clip_model), log=lambda s: None)
    print(f"build of {GOOD} good + {MUTATED} mutated clips: {time.perf_counter() - started:.1f} s")
    rejects = pq.read_table(os.path.join(result.out_dir, "rejects.parquet")).to_pylist()
    ingest_rejects = {r["location"]: r for r in rejects if r["stage"] == "ingest"}
    assert set(ingest_rejects) == set(expected)
    for location, (kind, token, reasons) in expected.items():
        r = ingest_rejects[location]
        assert_rejected({"kind": "reject", "reject_stage": r["stage"], "reject_reason": r["reason"],
                         "reject_detail": r["detail"]}, token, reasons, kind)
    # Every window of every untouched clip is in the manifest, and nothing else.
    manifest = pq.read_table(os.path.join(result.out_dir, "manifest.parquet")).to_pylist()
    want = sorted(r["key"] for r in _ingest.ingest([ref for ref, _ in good]))
    assert sorted(m["key"] for m in manifest) == want
    assert result.report["accounting"]["clips_rejected"] == MUTATED


# ---------------------------------------------------------------- the checks one by one

def _checks(**ingest) -> IngestConfig:
    return IngestConfig(**ingest)


def test_a_frame_rate_of_1e7_is_rejected_at_once_not_cut_into_a_huge_grid():
    d = clip_dict(n_frames=(40, 40))   # 2 s at 20 Hz
    d["cameras"][0]["frame_rate"] = 1e7
    started = time.perf_counter()
    with pytest.raises(ClipError) as err:
        Clip.from_dict(d, base_dir="/x", ingest=_checks())
    assert err.value.reason == Reason.OUT_OF_BOUNDS
    assert "cameras[cam0].frame_rate" in err.value.detail and "ingest.bounds.max_frame_rate" in err.value.detail
    # With the bound lifted, the timestamps still give the lie away (20 Hz spacing): no grid either.
    with pytest.raises(ClipError) as err:
        Clip.from_dict(d, base_dir="/x", ingest=_checks(bounds=BoundsConfig(max_frame_rate=1e8)))
    assert err.value.reason == Reason.FRAME_RATE_MISMATCH and "ingest.tolerance.frame_rate" in err.value.detail
    assert time.perf_counter() - started < 1.0
    # The same through the ingest stage: one reject row, fast.
    started = time.perf_counter()
    rows = _ingest.ingest([ClipRef("c0", "mem#0", "/x", json.dumps(d))])
    assert [r["reject_reason"] for r in rows] == [Reason.OUT_OF_BOUNDS.value]
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize("field,value,bound", [
    ("width", 10**6, "max_width"), ("height", 10**5, "max_height"), ("frame_rate", 0.5, "min_frame_rate")])
def test_each_camera_bound_names_its_config_field(field, value, bound):
    d = clip_dict()
    d["cameras"][1][field] = value
    with pytest.raises(ClipError) as err:
        Clip.from_dict(d, base_dir="/x", ingest=_checks())
    assert err.value.reason == Reason.OUT_OF_BOUNDS and f"ingest.bounds.{bound}" in err.value.detail
    Clip.from_dict(d, base_dir="/x")   # the contract alone has no bounds


def test_record_level_bounds():
    def rejected(d, bound, **bounds):
        with pytest.raises(ClipError) as err:
            Clip.from_dict(d, base_dir="/x", ingest=_checks(bounds=BoundsConfig(**bounds)))
        assert err.value.reason == Reason.OUT_OF_BOUNDS and f"ingest.bounds.{bound}" in err.value.detail

    rejected(clip_dict(), "max_cameras", max_cameras=1)
    rejected(clip_dict(clip_id="abcdefgh"), "max_id_length", max_id_length=6)
    rejected(clip_dict(), "max_frames_per_camera", max_frames_per_camera=10)
    rejected(clip_dict(), "max_duration_s", max_duration_s=1.0)
    rejected(dict(clip_dict(), start_time_s=2e10), "max_abs_time_s")
    d = clip_dict()
    d["ego"]["speed"][3] = 250.0
    rejected(d, "max_speed_mps")
    Clip.from_dict(d, base_dir="/x")   # the contract alone has no bounds
    with pytest.raises(ClipError, match="max_record_mb"):
        IngestClips(load_shard_config("tiny", overrides={"ingest": {"bounds": {"max_record_mb": 0.001}}})
                    .model_dump_json()).read(ClipRef("c0", "mem#0", "/x", json.dumps(clip_dict())))


def test_bounds_config_is_ordered_and_named():
    with pytest.raises(ConfigError, match="ingest.bounds.min_width"):
        load_shard_config("tiny", overrides={"ingest": {"bounds": {"min_width": 100, "max_width": 50}}})
    with pytest.raises(ConfigError, match="ingest.bounds.max_fps"):
        load_shard_config("tiny", overrides={"ingest": {"bounds": {"max_fps": 50}}})


def test_declared_rate_is_checked_against_the_timestamps():
    d = clip_dict(rates=(20.0, 20.0))
    d["cameras"][1]["frame_rate"] = 25.0   # timestamps are 50 ms apart
    with pytest.raises(ClipError) as err:
        Clip.from_dict(d, base_dir="/x", ingest=_checks())
    assert err.value.reason == Reason.FRAME_RATE_MISMATCH
    assert "cameras[cam1].frame_rate: declared 25 Hz" in err.value.detail and "20 Hz" in err.value.detail
    d["cameras"][1]["frame_rate"] = 20.2   # 1 %: inside the default 2 %
    Clip.from_dict(d, base_dir="/x", ingest=_checks())
    d["cameras"][1]["frame_rate"] = 25.0
    Clip.from_dict(d, base_dir="/x", ingest=_checks(tolerance=ToleranceConfig(frame_rate=0.3)))
    # The median spacing: one dropped frame does not move it.
    d = clip_dict(rates=(20.0, 20.0))
    del d["cameras"][0]["timestamps"][10]
    Clip.from_dict(d, base_dir="/x", ingest=_checks())


def _video(tmp_path, frames=10, w=64, h=48, fps=25.0) -> str:
    rng = np.random.default_rng(0)
    path = tmp_path / "v.mp4"
    path.write_bytes(encode_video(rng.integers(0, 255, (frames, h, w, 3), dtype=np.uint8), fps))
    return str(path)


def test_declared_resolution_rate_and_frame_count_are_checked_against_the_container(tmp_path):
    path = _video(tmp_path)
    tol = ToleranceConfig()
    assert check_video(path, "front", 10, "container", width=64, height=48, frame_rate=25.0, tolerance=tol) == (
        10, 64, 48, 25.0)
    with pytest.raises(ClipError) as err:   # frames would be stretched, intrinsics and boxes silently wrong
        check_video(path, "front", 10, "container", width=66, height=48, frame_rate=25.0, tolerance=tol)
    assert err.value.reason == Reason.RESOLUTION_MISMATCH and "declared 66x48, video frames are 64x48" in err.value.detail
    check_video(path, "front", 10, width=66, height=48, tolerance=ToleranceConfig(resolution_px=2))
    with pytest.raises(ClipError) as err:
        check_video(path, "front", 10, width=64, height=48, frame_rate=30.0, tolerance=tol)
    assert err.value.reason == Reason.FRAME_RATE_MISMATCH and "container says 25 Hz" in err.value.detail
    check_video(path, "front", 10, frame_rate=30.0, tolerance=ToleranceConfig(container_frame_rate=None))
    with pytest.raises(ClipError) as err:   # one frame more than timestamps
        check_video(path, "front", 9, tolerance=tol)
    assert err.value.reason == Reason.FRAME_COUNT_MISMATCH and "extra_frames" in err.value.detail
    check_video(path, "front", 9, tolerance=ToleranceConfig(extra_frames=1))
    with pytest.raises(ClipError, match="11 timestamps declared"):   # fewer frames: never tolerated
        check_video(path, "front", 11, tolerance=ToleranceConfig(extra_frames=5))


def test_ingest_rejects_a_clip_whose_video_size_is_not_the_declared_one(bases):
    ref, record = bases[0]
    rec = copy.deepcopy(record)
    rec["cameras"][2]["height"] += 2
    rows = _ingest.ingest([ClipRef("c", f"{ref.location}#h", ref.base_dir, json.dumps(rec))])
    assert [r["reject_reason"] for r in rows] == [Reason.RESOLUTION_MISMATCH.value]
    assert f"cameras[{rec['cameras'][2]['name']}].width/height" in rows[0]["reject_detail"]


def test_video_paths_stay_inside_the_source():
    d = clip_dict()
    d["cameras"][0]["video"] = "sub/cam0.mp4"
    assert Clip.from_dict(d, base_dir="/data/c0").cameras[0].video == "/data/c0/sub/cam0.mp4"
    uri = Clip.from_dict(d, base_dir="s3://bucket/clips/c0?endpoint_override=h:9000").cameras[0].video
    assert uri == "s3://bucket/clips/c0/sub/cam0.mp4?endpoint_override=h:9000"   # the store's options stay on
    for video in ("../c1/cam0.mp4", "a/../../cam0.mp4", "/data/c1/cam0.mp4", "s3://other/cam0.mp4", "..",
                  "file:///data/c1/cam0.mp4"):
        d["cameras"][0]["video"] = video
        with pytest.raises(ClipError) as err:
            Clip.from_dict(d, base_dir="/data/c0")
        assert err.value.reason == Reason.VIDEO_PATH_OUTSIDE_SOURCE and "cameras[cam0].video" in err.value.detail
    d["cameras"][0]["video"] = "s3://other/cam0.mp4"
    assert Clip.from_dict(d, base_dir="/data/c0", ingest=_checks(allow_absolute_videos=True)).cameras[0].video == \
        "s3://other/cam0.mp4"
    d["cameras"][0]["video"] = "../c1/cam0.mp4"   # allowing absolute locations never allows climbing out
    with pytest.raises(ClipError, match="climbs out"):
        Clip.from_dict(d, base_dir="/data/c0", ingest=_checks(allow_absolute_videos=True))
    # A record the pipeline wrote itself (no base_dir) keeps its resolved paths.
    d["cameras"][0]["video"] = "/data/c1/cam0.mp4"
    assert Clip.from_dict(d).cameras[0].video == "/data/c1/cam0.mp4"


def test_to_dict_writes_relative_paths_only_inside_the_base():
    clip = Clip.from_dict(clip_dict(), base_dir="/data/clips/c0")
    assert clip.to_dict(base_dir="/data/clips")["cameras"][0]["video"] == "c0/cam0.mp4"
    assert clip.to_dict(base_dir="/data/other")["cameras"][0]["video"] == "/data/clips/c0/cam0.mp4"


def test_extra_keys_are_rejected_by_name_or_ignored_by_config():
    d = clip_dict()
    d["cameras"][0]["frame_rat"] = 20.0
    with pytest.raises(ClipError, match=r"cameras\[0\]: unknown key\(s\) \['frame_rat'\]"):
        Clip.from_dict(d, base_dir="/x")
    Clip.from_dict(d, base_dir="/x", ingest=_checks(extra_keys="ignore"))
    d = clip_dict()
    d["boxs"] = {"timestamps": []}   # a typo that would silently drop every box
    with pytest.raises(ClipError, match="boxs"):
        Clip.from_dict(d, base_dir="/x")
    d["boxs"] = None   # null is absent
    Clip.from_dict(d, base_dir="/x")


@pytest.mark.parametrize("path,value,reason", [
    (("cameras", 0, "width"), "abc", Reason.INVALID_RECORD),
    (("cameras", 0, "width"), True, Reason.INVALID_RECORD),           # a bool is an int to Python, not here
    (("cameras", 0, "width"), 64.5, Reason.INVALID_RECORD),
    (("cameras", 0, "frame_rate"), [20.0], Reason.INVALID_RECORD),
    (("cameras", 0, "frame_rate"), math.inf, Reason.INVALID_RECORD),
    (("cameras", 0, "frame_rate"), "20", Reason.INVALID_RECORD),
    (("start_time_s",), 10**400, Reason.INVALID_RECORD),
    (("ego", "speed"), [True] * 101, Reason.INVALID_RECORD),
    (("cameras", 0, "intrinsics"), [50.0, 50.0, 31.5, "23.5"], Reason.BAD_CALIBRATION),
    (("schema_version",), True, Reason.INVALID_RECORD),
    (("clip_id",), 7, Reason.INVALID_RECORD),
    (("clip_id",), "c0\n", Reason.INVALID_RECORD),
    (("metadata",), [], Reason.INVALID_RECORD),
    (("metadata", "weather"), 3, Reason.INVALID_RECORD),
])
def test_types_are_strict_and_named(path, value, reason):
    d = clip_dict()
    _set(d, path, value)
    with pytest.raises(ClipError) as err:
        Clip.from_dict(d, base_dir="/x")
    assert err.value.reason == reason and _token(path) in err.value.detail


def test_boxes_of_mismatched_lengths_name_each_array():
    d = clip_dict()
    d["boxes"] = {"timestamps": [0.0, 0.5], "frame_index": [0, 1, 1], "center": [[5, 0, 1]] * 3,
                  "size": [[4, 2, 1.5]] * 2, "yaw": [0.0] * 3, "category": ["car"] * 3}
    with pytest.raises(ClipError) as err:
        Clip.from_dict(d, base_dir="/x")
    assert "'size': 2" in err.value.detail and "'center': 3" in err.value.detail
    d["boxes"]["size"] = [[4, -2, 1.5]] * 3
    with pytest.raises(ClipError, match="boxes.size: negative"):
        Clip.from_dict(d, base_dir="/x")


def test_a_huge_hostile_value_leaves_a_short_detail():
    d = clip_dict()
    d["clip_id"] = "x." * 1_000_000
    with pytest.raises(ClipError) as err:
        Clip.from_dict(d, base_dir="/x")
    assert len(err.value.detail) < 200
    d = clip_dict()
    d["metadata"] = {f"k{i}": "v" for i in range(100_000)}
    with pytest.raises(ClipError) as err:
        Clip.from_dict(d, base_dir="/x")
    assert err.value.reason == Reason.UNKNOWN_METADATA and len(err.value.detail) <= 1000


def _row(kind, clip_id, location, drive_id="d0", key=""):
    return {"kind": kind, "clip_id": clip_id, "location": location, "drive_id": drive_id, "key": key,
            "reject_stage": "ingest" if kind == "reject" else "", "reject_reason": "", "reject_detail": ""}


def test_dedupe_follows_source_order_and_only_parsed_records_hold_an_id():
    m = "/src/clips.parquet#row="
    rows = [_row("window", "a", f"{m}10", key="a_w000"), _row("window", "a", f"{m}9", key="a_w000"),
            _row("window", "a", f"{m}9", key="a_w001"), _row("window", "b", f"{m}2", key="b_w000"),
            # A row 1 that never parsed is named "b" by its directory or row: no claim on the id.
            _row("reject", "b", f"{m}1", drive_id=""), _row("reject", "a", f"{m}11")]
    for order in (None, [f"{m}{i}" for i in range(12)]):   # numbers compare as numbers without an order too
        kept, dupes = dedupe_clip_ids(rows, order)
        assert [(d["clip_id"], d["location"], d["reject_reason"]) for d in dupes] == [
            ("a", f"{m}10", "duplicate_clip_id")]
        assert f"{m}9" in dupes[0]["reject_detail"]
        assert {(r["location"], r["key"]) for r in kept if r["kind"] == "window"} == {
            (f"{m}9", "a_w000"), (f"{m}9", "a_w001"), (f"{m}2", "b_w000")}
        assert _row("reject", "a", f"{m}11") in kept and _row("reject", "b", f"{m}1", drive_id="") in kept
    # The source order decides, not the text: with row 10 listed first, row 10 keeps the id.
    kept, dupes = dedupe_clip_ids(rows, [f"{m}10", f"{m}9"])
    assert [d["location"] for d in dupes] == [f"{m}9"]
    assert dedupe_clip_ids([], None) == ([], [])


def test_clip_json_on_object_storage_resolves_its_videos_there(s3_server, bases):
    from gaia2 import storage

    ref, record = bases[0]
    root = f"{s3_server.bucket('gaia2-hostile')}/clips/{record['clip_id']}"
    for name in os.listdir(ref.base_dir):
        storage.upload_file(os.path.join(ref.base_dir, name), storage.join(root, name))
    clip = Clip.from_json_file(storage.join(root, "clip.json"), _checks())
    assert clip.cameras[0].video == storage.join(root, record["cameras"][0]["video"])
    rows = _ingest.ingest([ClipRef(ref.ref_id, storage.join(root, "clip.json"), root, None)])
    assert rows and all(r["kind"] == "window" for r in rows)
