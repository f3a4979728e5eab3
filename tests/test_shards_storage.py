"""The shard build on object storage and its output guards: sources and outputs on a real S3 API (the session's
moto server), byte-identical to the same build on local files; one writer per output (lock with owner and
heartbeat, stale locks taken over); a fingerprint over what decides the bytes; the gate's non-zero exit."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time

import pyarrow.parquet as pq
import pytest

from gaia2 import storage
from tests.test_shards_build import _config

CLIPS = 4   # of the session's nine synthetic clips: enough for both splits' machinery, quick to build


@pytest.fixture(scope="module")
def local_source(synth_clips, tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("storage-source")
    for name in sorted(os.listdir(synth_clips))[:CLIPS]:
        shutil.copytree(os.path.join(synth_clips, name), root / name)
    return str(root)


def upload_tree(local: str, uri: str) -> None:
    for dirpath, _, files in os.walk(local):
        for name in files:
            rel = os.path.relpath(os.path.join(dirpath, name), local).replace(os.sep, "/")
            storage.upload_file(os.path.join(dirpath, name), storage.join(uri, rel))


def tree_digests(location: str, names=("manifest.parquet",)) -> dict[str, str]:
    """sha256 of every shard tar and index, and of the named files, by path relative to ``location``."""
    files = [r for r in storage.list_files(location)
             if (r.endswith(".tar") and "/shard-" in r) or r.startswith("index/") or r in names]
    return {r: hashlib.sha256(storage.read_bytes(storage.join(location, r))).hexdigest() for r in files}


@pytest.fixture(scope="module")
def local_build(ray_session, local_source, clip_model, tmp_path_factory):
    from pipelines.shards.build import build_shards

    out = str(tmp_path_factory.mktemp("storage-local") / "shards")
    return build_shards(local_source, out, _config(clip_model), log=lambda s: None)


def test_a_build_from_and_to_s3_is_byte_identical_to_the_local_build(local_build, local_source, clip_model,
                                                                       s3_server):
    from pipelines.shards.build import build_shards

    bucket = s3_server.bucket("gaia2-clips")
    upload_tree(local_source, f"{bucket}/clips")
    out = f"{s3_server.bucket('gaia2-shards')}/v1"
    result = build_shards(f"{bucket}/clips", out, _config(clip_model), log=lambda s: None)
    local = tree_digests(local_build.out_dir)
    assert [k for k in local if k.endswith(".tar")], "the local build wrote no shards"
    assert tree_digests(out) == local
    assert result.report["accounting"] == local_build.report["accounting"]
    keys = s3_server.keys("gaia2-shards", "v1/")
    assert not [k for k in keys if k.endswith(storage.PARTIAL) or "/_staging/" in k or k.endswith("_lock.json")]
    assert {"v1/build.json", "v1/report.json", "v1/rejects.parquet", "v1/config.yaml", "v1/plots/cells.png"} <= set(keys)
    assert json.loads(storage.read_bytes(f"{out}/build.json"))["complete"] is True
    # Nothing was written locally under a name made of the URI.
    assert not os.path.exists("s3:") and not os.path.exists(os.path.join(os.getcwd(), "s3:"))


def test_a_parquet_manifest_on_s3_with_relative_videos_builds_the_same(local_build, local_source, clip_model,
                                                                        s3_server, tmp_path):
    from pipelines.shards.build import build_shards
    from pipelines.shards.sources import write_manifest

    bucket = s3_server.bucket("gaia2-manifest")
    upload_tree(local_source, f"{bucket}/drop/clips")   # videos at drop/clips/<clip>/..., manifest at drop/
    manifest = tmp_path / "manifest.parquet"
    staged = tmp_path / "drop"
    shutil.copytree(local_source, staged / "clips")
    write_manifest(str(staged / "clips"), str(staged / "manifest.parquet"))
    storage.upload_file(str(staged / "manifest.parquet"), f"{bucket}/drop/manifest.parquet")
    assert not manifest.exists()
    out = f"{bucket}/shards"
    build_shards(f"{bucket}/drop/manifest.parquet", out, _config(clip_model), log=lambda s: None)
    assert tree_digests(out) == tree_digests(local_build.out_dir)


def test_a_missing_bucket_or_empty_prefix_is_a_source_error(s3_server):
    from pipelines.shards.sources import SourceError, list_clips

    for bad in ("s3://no-such-bucket-here/clips", f"{s3_server.bucket('gaia2-empty')}/nothing",
                "s3://no-such-bucket-here/clips/manifest.parquet"):
        with pytest.raises(SourceError, match="source|manifest"):
            list_clips(bad)


def test_two_concurrent_builds_into_one_output_one_proceeds_the_other_is_refused(local_source, clip_model,
                                                                                  ray_session, tmp_path):
    from pipelines.shards.build import OutputLocked, build_shards
    from pipelines.shards.output import LOCK_FILE

    out = str(tmp_path / "shared")
    first: dict = {}

    def run_first() -> None:
        try:
            first["result"] = build_shards(local_source, out, _config(clip_model), log=lambda s: None)
        except BaseException as err:   # reported by the assertion below
            first["error"] = err

    thread = threading.Thread(target=run_first)
    thread.start()
    lock = os.path.join(out, LOCK_FILE)
    deadline = time.time() + 60
    while not os.path.exists(lock) and time.time() < deadline and thread.is_alive():
        time.sleep(0.05)
    owner = json.load(open(lock))["owner"]
    with pytest.raises(OutputLocked, match=owner.replace(".", r"\.")):
        build_shards(local_source, out, _config(clip_model), log=lambda s: None)
    thread.join(timeout=600)
    assert "error" not in first, first.get("error")
    assert first["result"].report["accounting"]["windows_written"] > 0
    assert not os.path.exists(lock)   # released at the end


def test_a_stale_lock_is_taken_over_and_a_live_one_is_not(tmp_path):
    from pipelines.shards.output import LOCK_FILE, OutputLock, OutputLocked

    out = str(tmp_path / "out")
    os.makedirs(out)
    with open(os.path.join(out, LOCK_FILE), "w") as f:
        json.dump({"owner": "elsewhere:123:dead", "started": 0.0, "heartbeat": time.time() - 3600}, f)
    said = []
    with OutputLock(out, heartbeat_s=0.1, stale_s=60, log=said.append) as lock:
        assert "elsewhere:123:dead" in said[0]
        first = json.load(open(os.path.join(out, LOCK_FILE)))["heartbeat"]
        time.sleep(0.35)
        assert json.load(open(os.path.join(out, LOCK_FILE)))["heartbeat"] > first   # the heartbeat runs
        with pytest.raises(OutputLocked, match=lock.owner):
            OutputLock(out, heartbeat_s=0.1, stale_s=60).acquire()
        # Another build taking the lock over (ours looked stale to it): we stop before publishing.
        with open(os.path.join(out, LOCK_FILE), "w") as f:
            json.dump({"owner": "thief:1:x", "started": 0.0, "heartbeat": time.time()}, f)
        time.sleep(0.35)
        with pytest.raises(OutputLocked, match="thief"):
            lock.check()
    assert json.load(open(os.path.join(out, LOCK_FILE)))["owner"] == "thief:1:x"   # not ours to release


def test_a_lock_on_object_storage_names_its_owner(s3_server):
    from pipelines.shards.output import OutputLock, OutputLocked

    out = f"{s3_server.bucket('gaia2-lock')}/out"
    with OutputLock(out, heartbeat_s=5, stale_s=60, settle_s=0.1) as lock:
        with pytest.raises(OutputLocked, match=lock.owner):
            OutputLock(out, heartbeat_s=5, stale_s=60, settle_s=0.1).acquire()
    assert not [k for k in s3_server.keys("gaia2-lock", "out/") if not k.endswith("/")]   # pyarrow leaves "out/"


def test_the_fingerprint_follows_content_not_resources(local_source, clip_model, tmp_path):
    from gaia2.curation.geofence import Geofences
    from pipelines.shards.output import fingerprint
    from pipelines.shards.sources import list_clips

    src = str(tmp_path / "src")
    shutil.copytree(local_source, src)
    refs = list_clips(src)
    video = json.load(open(refs[0].location))["cameras"][0]["video"]
    rows = [{"kind": "window", "files_json": json.dumps([os.path.join(src, refs[0].ref_id, video)])}]
    fences = Geofences.default()

    def fp(cfg, fences=fences):
        return fingerprint(cfg, refs, rows, fences)

    base = fp(_config(clip_model))
    # Resources, batch sizes, retries and gates do not change the bytes: a resume may change them.
    assert fp(_config(clip_model, resources={"window_batch_size": 1, "window_cpus": 1.0},
                      embedding={"batch_size": 2, "concurrency": 2}, ingest={"batch_size": 1},
                      retry={"attempts": 5}, gate={"max_reject_fraction": 0.1})) == base
    # What decides the bytes does.
    assert fp(_config(clip_model, seed=3)) != base
    assert fp(_config(clip_model), Geofences.from_geojson(_one_fence(tmp_path))) != base
    weights = [f for f in os.listdir(clip_model) if f.endswith((".safetensors", ".bin"))][0]
    model = str(tmp_path / "clip")
    shutil.copytree(clip_model, model)
    assert fp(_config(model)) == base                     # the same weights elsewhere
    with open(os.path.join(model, weights), "r+b") as f:  # other weights
        f.seek(-8, os.SEEK_END)
        f.write(b"\x01" * 8)
    assert fp(_config(model)) != base
    path = os.path.join(src, refs[0].ref_id, video)       # a re-encoded video: other size or time
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10**9))
    assert fp(_config(clip_model)) != base


def _one_fence(tmp_path) -> str:
    path = tmp_path / "fence.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [{
        "type": "Feature", "properties": {"name": "x"},
        "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [0, 1], [1, 1], [1, 0], [0, 0]]]}}]}))
    return str(path)


def test_a_build_past_the_reject_gate_exits_non_zero_and_keeps_its_output(local_source, clip_model, ray_session,
                                                                           tmp_path, capsys):
    from jobs.build_shards import main

    src = str(tmp_path / "src")
    shutil.copytree(local_source, src)
    bad = sorted(os.listdir(src))[0]
    with open(os.path.join(src, bad, "clip.json"), "w") as f:
        f.write("{not json")
    out, work = str(tmp_path / "out"), str(tmp_path / "work")
    args = ["--source", src, "--out", out, "--workdir", work, "--clip-path", clip_model, "--set",
            "window.frames=16", "--set", "window.hop=8", "--set", "image.height=32", "--set", "image.width=64",
            "--set", "balance.min_stride_s=0.5"]
    code = main([*args, "--max-reject-fraction", "0.2"])
    captured = capsys.readouterr()
    assert code == 2
    assert "failed its gate" in captured.err and "25.0% of clips rejected > gate.max_reject_fraction 20.0%" in captured.err
    assert "gate:     FAILED" in captured.out
    manifest = pq.read_table(os.path.join(out, "manifest.parquet"))
    assert manifest.num_rows > 0 and os.path.exists(os.path.join(out, "rejects.parquet"))
    # The same output with a looser gate passes without redoing anything (the gate is not fingerprinted).
    assert main([*args, "--max-reject-fraction", "0.5"]) == 0
    assert main([*args, "--min-samples", "100000"]) == 2
    assert "samples written < gate.min_samples 100000" in capsys.readouterr().err
