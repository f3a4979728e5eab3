"""End to end: synthetic + broken clips -> shards, on the session's local Ray."""

from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import shutil
import tarfile

import numpy as np
import pyarrow.parquet as pq
import pytest

from gaia2.config.shards import load_shard_config
from gaia2.curation.geofence import Geofences
from gaia2.schema.errors import Reason
from gaia2.synth.faults import make_bad_clips
from pipelines.rejects import (REJECT_COLUMNS, REJECTS_SCHEMA, Reject, batch_rejects, map_rows, reject_columns,
                               reject_row, rejects_table)
from pipelines.shards.common import record_text

OVERRIDES = {"window": {"frames": 16, "hop": 8}, "image": {"height": 32, "width": 64},
             "balance": {"min_stride_s": 0.5}, "shards": {"target_mb": 0.4}, "detection": {"max_agents": 8}}


def _config(clip_model, **extra):
    from gaia2.config.base import deep_merge

    return load_shard_config("tiny", overrides=deep_merge(deep_merge(OVERRIDES, {"embedding": {"clip_path": clip_model}}), extra))


@pytest.fixture(scope="module")
def source(synth_clips, tmp_path_factory):
    from gaia2.synth.generate import generate_clip

    root = tmp_path_factory.mktemp("source")
    for name in os.listdir(synth_clips):
        shutil.copytree(os.path.join(synth_clips, name), root / name)
    expected = make_bad_clips(synth_clips, str(root), generate_clip(99, seed=7, duration_s=0.4))
    return str(root), expected


@pytest.fixture(scope="module")
def build(ray_session, source, clip_model, tmp_path_factory):
    from gaia2.config.base import deep_merge
    from jobs.build_shards import load_config, run

    root, _ = source
    work = tmp_path_factory.mktemp("work")
    job = {"source": root, "out": str(work / "shards"), "workdir": str(work)}
    result, run_id = run(load_config("tiny", overrides=deep_merge(
        OVERRIDES, {"embedding": {"clip_path": clip_model}, "job": job})))
    return result, run_id, str(work)


def _sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_every_clip_and_window_is_accounted_for_exactly_once(build, source, synth_clips):
    result, _, _ = build
    _, expected = source
    out = result.out_dir
    manifest = pq.read_table(os.path.join(out, "manifest.parquet")).to_pylist()
    table = pq.read_table(os.path.join(out, "rejects.parquet"))
    assert table.schema == REJECTS_SCHEMA and {"stage", "reason", "detail"} <= set(table.column_names)
    rejects = table.to_pylist()
    assert rejects and all(r["stage"] and r["reason"] and r["detail"] for r in rejects)
    assert {r["reason"] for r in rejects} <= {x.value for x in Reason}   # the reason alone, never "reason: detail"
    clip_rejects = {r["clip_id"]: r["reason"] for r in rejects if r["stage"] == "ingest"}
    # Each broken clip rejected with its specific reason ...
    assert clip_rejects == expected
    # ... and every good clip written or deliberately not selected, window by window.
    good = set(os.listdir(synth_clips))
    window_rows = manifest + [r for r in rejects if r["stage"] != "ingest"]
    keys = [r["key"] for r in window_rows]
    assert len(keys) == len(set(keys)) == result.report["accounting"]["windows_cut"]
    assert {r["clip_id"] for r in window_rows} == good
    assert {r["reason"] for r in rejects if r["stage"] == "select"} <= {
        Reason.NOT_SELECTED_STRIDE.value, Reason.NOT_SELECTED_BALANCE.value}
    acc = result.report["accounting"]
    assert acc["clips_in"] == len(good) + len(expected) == acc["clips_rejected"] + acc["clips_with_windows"]
    assert acc["windows_failed"] == 0
    assert acc["windows_written"] == len(manifest) > 0


def test_verify_passes_on_the_build(build, source, capsys):
    from jobs.cli import main as cli

    result, _, _ = build
    assert cli(["shards", "verify", "--out", result.out_dir, "--source", source[0]]) == 0, capsys.readouterr()


def test_splits_respect_geofences_and_stride(build):
    result, _, _ = build
    out = result.out_dir
    fences = Geofences.from_geojson(os.path.join(out, "geofences.geojson"))
    manifest = pq.read_table(os.path.join(out, "manifest.parquet")).to_pylist()
    assert {m["split"] for m in manifest} == {"train", "val"}
    import webdataset as wds

    stride = 0.5   # OVERRIDES' balance.min_stride_s
    by_drive: dict[str, list[float]] = {}
    for tar in sorted(glob.glob(os.path.join(out, "*", "shard-*.tar"))):
        for sample in wds.WebDataset(tar, shardshuffle=False):
            meta = json.loads(sample["json"])
            track = np.stack([meta["gps"]["longitude"], meta["gps"]["latitude"]], axis=1)
            assert fences.touches(track) == (meta["split"] == "val"), meta["key"]
            assert os.path.basename(os.path.dirname(tar)) == meta["split"]
            by_drive.setdefault(meta["drive_id"], []).append(meta["start_time_s"])   # across splits
    for starts in by_drive.values():
        starts.sort()
        assert np.all(np.diff(starts) >= stride - 1e-6)


def test_balancing_flattens_the_joint_cells(build):
    result, _, _ = build
    bal = result.report["balance"]["train"]
    assert bal["entropy_after"] > bal["entropy_before"]
    manifest = pq.read_table(os.path.join(result.out_dir, "manifest.parquet")).to_pylist()
    train = [m for m in manifest if m["split"] == "train"]
    assert max(m["weight"] for m in train) > 1.0 and min(m["weight"] for m in train) >= 1.0 - 1e-9
    assert os.path.exists(os.path.join(result.out_dir, "plots", "cells.png"))


def test_shards_read_back_with_webdataset_keys_dtypes_shapes(build):
    import webdataset as wds

    result, _, _ = build
    tars = sorted(glob.glob(os.path.join(result.out_dir, "*", "shard-*.tar")))
    assert len(tars) >= 2
    n = with_agents = 0
    for sample in wds.WebDataset(tars, shardshuffle=False).decode():
        meta = sample["json"]
        cams = [c["name"] for c in meta["cameras"]]
        assert "." not in sample["__key__"]
        t, b = 16, 8
        boxes, valid, clip = sample["boxes.npy"], sample["boxes_valid.npy"], sample["clip.npy"]
        assert boxes.dtype == np.float32 and boxes.shape == (t, len(cams), b, 13)
        assert valid.dtype == bool and valid.shape == (t, len(cams), b)
        assert clip.dtype == np.float32 and clip.shape[0] == len(cams)
        assert np.all(boxes[~valid] == 0)
        with_agents += bool(valid.any())
        assert np.all((boxes[valid][:, :4] >= 0) & (boxes[valid][:, :4] <= 1))
        for cam in cams:
            assert isinstance(sample[f"{cam}.mp4"], bytes)
        assert len(meta["timestamps"]) == len(meta["ego"]["speed"]) == t
        assert meta["cameras"][0]["width"] == 64 and meta["cameras"][0]["height"] == 32
        n += 1
    assert n == result.report["accounting"]["windows_written"]
    assert with_agents > n // 2   # the synthetic scenes have traffic: most windows see agents


def test_shards_read_back_with_ray_data(build, ray_session):
    import ray

    from gaia2.video.decode import open_video

    result, _, _ = build
    # Ray's default WebDataset decoder: .json -> dict, .npy -> ndarray, .mp4 stays bytes.
    rows = ray.data.read_webdataset(os.path.join(result.out_dir, "train")).take_all()
    assert len(rows) == result.report["splits"]["train"]
    for row in rows:
        meta = row["json"]
        n = len(meta["cameras"])
        assert row["boxes.npy"].shape == (16, n, 8, 13) and row["boxes.npy"].dtype == np.float32
        assert row["boxes_valid.npy"].shape == (16, n, 8) and row["boxes_valid.npy"].dtype == bool
        assert row["clip.npy"].shape[0] == n and row["clip.npy"].dtype == np.float32
    mp4 = rows[0][f"{rows[0]['json']['cameras'][0]['name']}.mp4"]
    frames = open_video(mp4, "front").get_batch(list(range(16))).asnumpy()
    assert frames.shape == (16, 32, 64, 3)


def test_same_inputs_and_seed_give_byte_identical_shards(build, source, clip_model, ray_session, tmp_path):
    from pipelines.shards.build import build_shards

    result, _, _ = build
    again = build_shards(source[0], str(tmp_path / "again"), _config(clip_model), log=lambda s: None)
    first = sorted(glob.glob(os.path.join(result.out_dir, "*", "shard-*.tar")))
    second = sorted(glob.glob(os.path.join(again.out_dir, "*", "shard-*.tar")))
    assert [os.path.relpath(p, result.out_dir) for p in first] == [os.path.relpath(p, again.out_dir) for p in second]
    assert [_sha(p) for p in first] == [_sha(p) for p in second]
    assert _sha(os.path.join(result.out_dir, "manifest.parquet")) == _sha(os.path.join(again.out_dir, "manifest.parquet"))


def _members(tar_path):
    with tarfile.open(tar_path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def test_clip_in_an_actor_pool_gives_the_samples_of_clip_in_the_window_task(build, source, clip_model, ray_session,
                                                                            tmp_path):
    """embedding.placement: the tiny preset runs CLIP inside the window task (auto on CPUs); an actor pool, as on
    GPUs, must give the same samples: every member byte for byte, the embeddings to float rounding."""
    from pipelines.shards.build import build_shards

    result, _, _ = build
    assert _config(clip_model).embedding.in_task()
    actor = build_shards(source[0], str(tmp_path / "actor"), _config(clip_model, embedding={"placement": "actor"}),
                         log=lambda s: None)
    first = sorted(glob.glob(os.path.join(result.out_dir, "*", "shard-*.tar")))
    second = sorted(glob.glob(os.path.join(actor.out_dir, "*", "shard-*.tar")))
    assert [os.path.relpath(p, result.out_dir) for p in first] == [os.path.relpath(p, actor.out_dir) for p in second]
    embeddings = 0
    for a, b in zip(first, second):
        ma, mb = _members(a), _members(b)
        assert list(ma) == list(mb)
        for name in ma:
            if name.endswith(".clip.npy"):
                ea, eb = np.load(io.BytesIO(ma[name])), np.load(io.BytesIO(mb[name]))
                assert ea.shape == eb.shape and ea.shape[0] >= 5
                np.testing.assert_allclose(ea, eb, rtol=0, atol=1e-5)
                embeddings += 1
            else:
                assert ma[name] == mb[name], name
    assert embeddings == result.report["accounting"]["windows_written"] > 0
    assert actor.report["accounting"] == result.report["accounting"]


def test_resume_keeps_complete_shards_and_redoes_partial_ones(build, source, clip_model, ray_session, tmp_path):
    from pipelines.shards.build import OutputConflict, build_shards

    result, _, _ = build
    out = str(tmp_path / "resume")
    shutil.copytree(result.out_dir, out)
    tars = sorted(glob.glob(os.path.join(out, "*", "shard-*.tar")))
    kept, broken = tars[0], tars[-1]
    kept_mtime, digest = os.stat(kept).st_mtime_ns, _sha(broken)
    with open(broken, "r+b") as f:       # a shard cut short by a crash ...
        f.truncate(1000)
    open(broken.replace(".tar", ".tar.partial"), "wb").write(b"junk")   # ... and a leftover temp file
    build_shards(source[0], out, _config(clip_model), log=lambda s: None)
    assert os.stat(kept).st_mtime_ns == kept_mtime
    assert _sha(broken) == digest
    assert not glob.glob(os.path.join(out, "**", "*.partial"), recursive=True)
    with pytest.raises(OutputConflict):
        build_shards(source[0], out, _config(clip_model, seed=5), log=lambda s: None)


def test_build_is_one_mlflow_run_with_config_counts_and_report(build):
    import mlflow

    result, run_id, work = build
    mlflow.set_tracking_uri(f"sqlite:///{work}/mlflow.db")
    run = mlflow.get_run(run_id)
    assert run.data.params["window.frames"] == "16"
    assert run.data.metrics["count.windows_written"] == result.report["accounting"]["windows_written"]
    assert run.data.metrics["train.entropy_after"] > run.data.metrics["train.entropy_before"]
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id, "build")}
    assert {"build/report.json", "build/config.yaml", "build/rejects.parquet", "build/plots"} <= arts


# ---------------------------------------------------------------- rejects: per-row failures as values

def test_map_rows_turns_failures_into_rejects_and_passes_good_rows():
    from gaia2.schema.errors import ClipError

    def fn(i: int) -> int:
        if i == 1:
            raise ClipError(Reason.TRUNCATED_VIDEO, "cam_front: frame 7")
        if i == 2:
            raise KeyError("boxes")
        if i == 4:
            raise AssertionError("row 4 arrived rejected: fn must not see it")
        return 10 * i

    earlier = Reject("decode", Reason.UNREADABLE_VIDEO.value, "cam_left: cannot open")
    results, rejects = map_rows(fn, 5, "detect", Reason.DECODE_FAILED, -1, [None, None, None, None, earlier])
    assert results == [0, -1, -1, 30, -1]
    assert rejects == [None, Reject("detect", "truncated_video", "cam_front: frame 7"),
                       Reject("detect", "decode_failed", "KeyError: 'boxes'"), None, earlier]
    assert map_rows(lambda i: i, 3, "pack", Reason.DECODE_FAILED, None) == ([0, 1, 2], [None] * 3)


def test_reject_columns_round_trip_and_rows_follow_the_one_schema():
    rejects = [None, Reject("encode", "decode_failed", "ValueError: no frames")]
    cols = reject_columns(rejects)
    assert set(cols) == set(REJECT_COLUMNS) and list(cols["reject_reason"]) == ["", "decode_failed"]
    assert batch_rejects({"key": np.asarray(["a", "b"]), **cols}, 2) == rejects
    assert batch_rejects({"key": np.asarray(["a", "b"])}, 2) == [None, None]   # before any stage
    row = reject_row(rejects[1], "clip0", "clip0_000001", 1, "train/shard-000000", "train")
    table = rejects_table([row])
    assert table.schema == REJECTS_SCHEMA
    assert table.to_pylist()[0] == {**row, "location": ""} and row["stage"] == "encode"
    with pytest.raises(ValueError):   # a reason outside the vocabulary is a bug, not a reject
        reject_row(Reject("encode", "bad_luck", "x"), "clip0")


def test_staged_rejects_become_index_reject_rows(tmp_path):
    from pipelines.shards.write import assemble_shard, read_index, stage_batch

    shard, reject = "train/shard-000000", Reject("embed", "decode_failed", "RuntimeError: out of memory")
    rows = [{"key": k, "clip_id": "c", "drive_id": "d", "window": w, "start_time": 0.0, "split": "train",
             "cell": "x", "weight": 1.0} for w, k in enumerate(("c_000000", "c_000001"))]
    out = stage_batch({"key": np.asarray([r["key"] for r in rows], dtype=object),
                       "shard": np.asarray([shard] * 2, dtype=object),
                       "sample": np.asarray([b"", b""], dtype=object), **reject_columns([reject, None])},
                      str(tmp_path))
    assert batch_rejects(out, 2) == [reject, None]
    index = assemble_shard(str(tmp_path), shard, rows)
    assert index["failed"] == [reject_row(reject, "c", "c_000000", 0, shard, "train")]
    assert [s["key"] for s in index["samples"]] == ["c_000001"] and read_index(str(tmp_path), shard) == index


def test_window_stages_reject_a_bad_window_and_pass_the_good_one(synth_clips):
    from gaia2.schema.sample import tar_archive
    from pipelines.shards.encode import PLAN_COLUMNS
    from pipelines.shards.ingest import IngestClips
    from pipelines.shards.sources import list_clips
    from pipelines.shards.window import window_batch

    cfg = load_shard_config("tiny", overrides=OVERRIDES)
    good = IngestClips(cfg.model_dump_json()).ingest(list_clips(synth_clips)[:1])[0]
    plan = {"shard": "train/shard-000000", "split": "train", "weight": 1.0, "cell": "x"}
    rows = [{**good, **plan}, {**good, **plan, "key": good["key"] + "x", "window": 99}]   # the clip has fewer windows
    batch = {c: np.asarray([r[c] for r in rows], dtype=object) for c in (*PLAN_COLUMNS, "clip_json", "track_json")}
    detect = {"kind": "ground_truth", "checkpoint": None, "max_agents": 8, "score_threshold": 0.3}
    out = window_batch(batch, cfg.model_dump_json(), detect)
    ok, bad = batch_rejects(out, 2)
    assert (bad.stage, bad.reason) == ("decode", Reason.DECODE_FAILED.value) and bad.detail.startswith("IndexError: ")
    # Past the window task: the plan, the sample's members but the CLIP one, and the middle frames only.
    assert set(out) == {*PLAN_COLUMNS, "members", "frames", *REJECT_COLUMNS}
    cameras = [c["name"] for c in json.loads(record_text(good["clip_json"]))["cameras"]]
    with tarfile.open(fileobj=io.BytesIO(tar_archive([out["members"][0]]))) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    assert ok is None and list(members) == [f"{good['key']}.{s}" for s in (
        "json", *(f"{c}.mp4" for c in cameras), "boxes.npy", "boxes_valid.npy")]
    assert np.load(io.BytesIO(members[f"{good['key']}.boxes.npy"])).shape[2:] == (8, 13)
    assert out["frames"][0].shape[:2] == (len(cameras), 1)
    assert out["members"][1] == b"" and out["frames"][1].size == 0


@pytest.mark.parametrize("n,most,slots", [(317, 8, 2), (112, 16, 2), (5, 8, 2), (1, 8, 4), (40, 8, 1), (1000, 1, 8)])
def test_task_blocks_cover_every_row_within_the_batch_size_and_shrink_at_the_end(n, most, slots):
    from pipelines.shards.build import task_blocks

    sizes = task_blocks([1] * n, most, slots)
    assert sum(sizes) == n and all(1 <= s <= most for s in sizes)
    assert sizes == sorted(sizes, reverse=True)   # full blocks first, the smaller ones last
    assert sum(s < most for s in sizes) <= slots * most.bit_length()   # only a short tail is below most
    assert task_blocks([], most, slots) == []


def test_task_blocks_keep_a_clips_windows_together_unless_they_do_not_fit():
    from pipelines.shards.build import task_blocks

    assert task_blocks([2] * 10, 8, 2) == [8, 6, 2, 2, 1, 1]   # the tail's share of a slot splits the last run
    assert task_blocks([2, 1, 2, 2, 2, 1], 8, 1) == [7, 3]      # ends at 7 rather than split a clip
    assert task_blocks([3, 3, 3], 4, 1) == [3, 3, 3]
    assert task_blocks([10], 4, 2) == [4, 3, 2, 1]              # one clip longer than a block is split
    assert task_blocks([0, 2, 0], 8, 1) == [2]
